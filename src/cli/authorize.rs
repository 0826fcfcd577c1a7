//! `hookline authorize`: run a destination's OAuth2 authorization code flow (PKCE,
//! loopback redirect, system browser) and keep the refresh token in the keyring, so
//! later sends can renew access tokens on their own.

use std::path::PathBuf;
use std::time::Duration;

use super::{destination, load_workspace, usage};
use crate::core::model::Auth;
use crate::core::secret::Secrets;
use crate::runtime::oauth2::{self, TokenCache};

#[derive(Debug, clap::Args)]
pub struct AuthorizeArgs {
    /// The workspace file.
    #[arg(long, short)]
    pub workspace: PathBuf,
    /// A destination whose auth kind is `oauth2_authorization_code`.
    #[arg(long, short)]
    pub destination: String,
    /// How long to wait for the browser to come back.
    #[arg(long, default_value_t = 300)]
    pub timeout_s: u64,
    /// Print the authorization URL instead of opening a browser (headless machines).
    #[arg(long)]
    pub no_browser: bool,
}

pub fn authorize(args: &AuthorizeArgs, secrets: &Secrets) -> anyhow::Result<u8> {
    let ws = load_workspace(&args.workspace)?;
    let (dest, _) = destination(&ws, &args.workspace, &args.destination)?;
    if !matches!(dest.auth, Auth::Oauth2AuthorizationCode { .. }) {
        return Err(usage(format!(
            "destination \"{}\" does not use oauth2_authorization_code",
            dest.name
        )));
    }
    let client = crate::runtime::delivery::http_client(dest.accept_invalid_certs)
        .map_err(|e| anyhow::anyhow!(e))?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let no_browser = args.no_browser;
    let open = move |url: &str| {
        eprintln!("hookline: open this URL to authorize:\n{url}");
        if no_browser {
            Ok(())
        } else {
            oauth2::default_open_browser(url)
        }
    };
    let set = rt.block_on(oauth2::authorize(
        &dest.name,
        &dest.auth,
        &client,
        secrets,
        &TokenCache::default(),
        open,
        Duration::from_secs(args.timeout_s),
    ))?;
    println!(
        "authorized \"{}\": access token received{}{}",
        dest.name,
        set.expires_in
            .map(|d| format!(", valid for {} s", d.as_secs()))
            .unwrap_or_default(),
        if set.refresh_token.is_some() {
            "; refresh token stored in the keyring"
        } else {
            "; the server sent no refresh token"
        }
    );
    Ok(0)
}
