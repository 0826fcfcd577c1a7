//! `hookline authorize`: run a destination's OAuth2 authorization code flow (PKCE,
//! loopback redirect, system browser) and keep the refresh token in the keyring, so
//! later sends can renew access tokens on their own.

use std::path::PathBuf;
use std::time::Duration;

use super::{destination, load_workspace, usage};
use crate::core::model::Auth;
use crate::core::secret::Secrets;
use crate::runtime::{Command, Runtime, RuntimeConfig, Update};

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
    // Through the runtime, as the app does it: the URL and the result come back as updates.
    let (rt, updates) = Runtime::start(RuntimeConfig::new(secrets.clone()), || {})
        .map_err(|e| anyhow::anyhow!(e))?;
    let timeout = Duration::from_secs(args.timeout_s);
    if !rt.send(Command::Authorize {
        destination: Box::new(dest.clone()),
        timeout,
        open_browser: !args.no_browser,
    }) {
        anyhow::bail!("the runtime stopped before the authorization started");
    }
    // The flow ends by itself within `timeout`; the margin covers the token request.
    let deadline = std::time::Instant::now() + timeout + Duration::from_mins(1);
    let set = loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match updates.recv_timeout(left) {
            Ok(Update::AuthorizeUrl { url, .. }) => {
                eprintln!("hookline: open this URL to authorize:\n{url}");
            }
            Ok(Update::Authorized { result, .. }) => {
                break result.map_err(|e| anyhow::anyhow!(e))?;
            }
            Ok(Update::Error { message, .. }) => anyhow::bail!(message),
            Ok(_) => {}
            Err(_) => anyhow::bail!("the authorization did not finish"),
        }
    };
    println!(
        "authorized \"{}\": access token received{}{}",
        dest.name,
        set.expires_in
            .map(|d| format!(", valid for {} s", d.as_secs()))
            .unwrap_or_default(),
        if set.refresh_token_stored {
            "; refresh token stored in the keyring"
        } else {
            "; the server sent no refresh token"
        }
    );
    Ok(0)
}
