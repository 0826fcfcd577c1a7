//! Secrets in the operating system's keyring (Secret Service on Linux, Keychain on
//! macOS, Credential Manager on Windows) through `keyring-core`, and the default secret
//! chain the app and the CLI use: environment first, then the keyring.
//!
//! Each secret is an entry with service `hookline` and user = the secret's name. The
//! store is held by [`KeyringSecrets`] rather than installed as `keyring-core`'s global
//! default, so tests can run it over `keyring_core::mock` side by side with the real one.
//! Error messages never include a secret value: `keyring-core` errors that carry the
//! stored bytes (`BadEncoding`, `BadDataFormat`) are reduced to a plain sentence.

use std::sync::Arc;

use keyring_core::{CredentialStore, Entry, Error as KeyringError};

use crate::core::secret::{ChainSecrets, EnvSecrets, Secret, SecretError, SecretSource, Secrets};

/// The keyring service every Hookline secret is stored under.
pub const SERVICE: &str = "hookline";

/// A [`SecretSource`] over a `keyring-core` credential store.
pub struct KeyringSecrets {
    store: Arc<CredentialStore>,
    description: String,
}

impl std::fmt::Debug for KeyringSecrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "KeyringSecrets({})", self.description)
    }
}

impl KeyringSecrets {
    /// The operating system's keyring. Fails with [`SecretError::NoKeyring`] when there
    /// is none to talk to (e.g. no D-Bus session or no Secret Service on Linux).
    pub fn os() -> Result<Self, SecretError> {
        let (store, name) = os_store()?;
        Ok(Self {
            store,
            description: format!("keyring ({name})"),
        })
    }

    /// Any `keyring-core` store, e.g. `keyring_core::mock::Store::new()` in tests.
    pub fn with_store(store: Arc<CredentialStore>, description: impl Into<String>) -> Self {
        Self {
            store,
            description: description.into(),
        }
    }

    fn entry(&self, name: &str) -> Result<Entry, SecretError> {
        self.store
            .build(SERVICE, name, None)
            .map_err(|e| to_secret_error(name, &e))
    }
}

#[cfg(target_os = "linux")]
fn os_store() -> Result<(Arc<CredentialStore>, &'static str), SecretError> {
    let store = zbus_secret_service_keyring_store::Store::new().map_err(|e| {
        SecretError::NoKeyring(format!(
            "cannot reach the Secret Service (is a D-Bus session and gnome-keyring or KWallet running?): {}",
            describe(&e)
        ))
    })?;
    Ok((store, "Secret Service"))
}

#[cfg(target_os = "macos")]
fn os_store() -> Result<(Arc<CredentialStore>, &'static str), SecretError> {
    let store = apple_native_keyring_store::keychain::Store::new()
        .map_err(|e| SecretError::NoKeyring(describe(&e)))?;
    Ok((store, "macOS Keychain"))
}

#[cfg(target_os = "windows")]
fn os_store() -> Result<(Arc<CredentialStore>, &'static str), SecretError> {
    let store = windows_native_keyring_store::Store::new()
        .map_err(|e| SecretError::NoKeyring(describe(&e)))?;
    Ok((store, "Windows Credential Manager"))
}

#[cfg(not(any(target_os = "linux", target_os = "macos", target_os = "windows")))]
fn os_store() -> Result<(Arc<CredentialStore>, &'static str), SecretError> {
    Err(SecretError::NoKeyring(
        "this platform has no supported keyring".into(),
    ))
}

/// A message for a keyring error that never includes stored bytes.
fn describe(e: &KeyringError) -> String {
    match e {
        KeyringError::BadEncoding(_) => "the stored value is not valid UTF-8".into(),
        KeyringError::BadDataFormat(_, _) => "the stored value is malformed".into(),
        KeyringError::Ambiguous(items) => {
            format!("{} keyring entries match; remove the extras", items.len())
        }
        KeyringError::PlatformFailure(inner) | KeyringError::NoStorageAccess(inner) => {
            inner.to_string()
        }
        other => other.to_string(),
    }
}

fn to_secret_error(name: &str, e: &KeyringError) -> SecretError {
    match e {
        // The platform itself is unavailable: the user needs "no keyring", not a per-secret error.
        KeyringError::PlatformFailure(_) | KeyringError::NoDefaultStore => {
            SecretError::NoKeyring(describe(e))
        }
        KeyringError::NoStorageAccess(_) => SecretError::Store {
            name: name.to_owned(),
            message: format!(
                "the keyring is locked or access was denied: {}",
                describe(e)
            ),
        },
        _ => SecretError::Store {
            name: name.to_owned(),
            message: describe(e),
        },
    }
}

impl SecretSource for KeyringSecrets {
    fn get(&self, name: &str) -> Result<Option<Secret>, SecretError> {
        match self.entry(name)?.get_password() {
            Ok(value) => Ok(Some(Secret::new(value))),
            Err(KeyringError::NoEntry) => Ok(None),
            Err(e) => Err(to_secret_error(name, &e)),
        }
    }

    fn set(&self, name: &str, value: &Secret) -> Result<(), SecretError> {
        self.entry(name)?
            .set_password(value.expose())
            .map_err(|e| to_secret_error(name, &e))
    }

    /// Deleting a secret that is not there is not an error: the outcome is the same.
    fn delete(&self, name: &str) -> Result<(), SecretError> {
        match self.entry(name)?.delete_credential() {
            Ok(()) | Err(KeyringError::NoEntry) => Ok(()),
            Err(e) => Err(to_secret_error(name, &e)),
        }
    }

    fn describe(&self) -> String {
        self.description.clone()
    }
}

/// The secrets the app and the CLI use: `HOOKLINE_SECRET_<NAME>` variables first (so CI
/// and a shell can override), then the OS keyring when one is reachable. With no keyring
/// the environment is the only source, and a missing secret says which variable to set.
pub fn default_secrets() -> Secrets {
    let mut sources: Vec<Arc<dyn SecretSource>> = vec![Arc::new(EnvSecrets)];
    if let Ok(keyring) = KeyringSecrets::os() {
        sources.push(Arc::new(keyring));
    }
    Secrets::new(Arc::new(ChainSecrets(sources)))
}
