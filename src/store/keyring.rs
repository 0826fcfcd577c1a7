//! The OS keyring as a [`SecretSource`]: Secret Service on Linux, Keychain on macOS,
//! Credential Manager on Windows, through `keyring-core`. Entries live under the
//! service `hookline` with the secret's name as the account. A machine without a
//! keyring (no D-Bus session, say) gives `SecretError::NoKeyring`, never a panic.

use std::sync::Arc;

use keyring_core::{CredentialStore, Entry, Error};

use crate::core::secret::{ChainSecrets, EnvSecrets, Secret, SecretError, SecretSource, Secrets};

/// The keyring service name Hookline's entries use.
pub const SERVICE: &str = "hookline";

pub struct KeyringSecrets {
    store: Arc<CredentialStore>,
    service: String,
}

impl std::fmt::Debug for KeyringSecrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "KeyringSecrets({})", self.store.vendor())
    }
}

#[cfg(target_os = "linux")]
fn platform_store() -> Result<Arc<CredentialStore>, Error> {
    let s: Arc<CredentialStore> = zbus_secret_service_keyring_store::Store::new()?;
    Ok(s)
}

#[cfg(target_os = "macos")]
fn platform_store() -> Result<Arc<CredentialStore>, Error> {
    let s: Arc<CredentialStore> = apple_native_keyring_store::keychain::Store::new()?;
    Ok(s)
}

#[cfg(target_os = "windows")]
fn platform_store() -> Result<Arc<CredentialStore>, Error> {
    let s: Arc<CredentialStore> = windows_native_keyring_store::Store::new()?;
    Ok(s)
}

#[cfg(not(any(target_os = "linux", target_os = "macos", target_os = "windows")))]
fn platform_store() -> Result<Arc<CredentialStore>, Error> {
    Err(Error::NotSupportedByStore(
        "this operating system has no supported keyring".into(),
    ))
}

impl KeyringSecrets {
    /// Connect to the OS keyring.
    pub fn open() -> Result<Self, SecretError> {
        Self::open_service(SERVICE)
    }

    /// Connect with another service name (tests use their own, so they never touch real entries).
    pub fn open_service(service: &str) -> Result<Self, SecretError> {
        let store = platform_store().map_err(|e| SecretError::NoKeyring(describe(&e)))?;
        Ok(Self {
            store,
            service: service.to_owned(),
        })
    }

    /// Any `keyring-core` store under `service`, e.g. `keyring_core::mock::Store` in
    /// tests that need to inject store failures.
    pub fn with_store(store: Arc<CredentialStore>, service: &str) -> Self {
        Self {
            store,
            service: service.to_owned(),
        }
    }

    fn entry(&self, name: &str) -> Result<Entry, SecretError> {
        self.store
            .build(&self.service, name, None)
            .map_err(|e| store_err(name, &e))
    }
}

fn describe(e: &Error) -> String {
    match e {
        Error::PlatformFailure(p) | Error::NoStorageAccess(p) => format!("{p}"),
        other => other.to_string(),
    }
}

fn store_err(name: &str, e: &Error) -> SecretError {
    match e {
        Error::PlatformFailure(_) | Error::NoStorageAccess(_) => {
            SecretError::NoKeyring(describe(e))
        }
        other => SecretError::Store {
            name: name.to_owned(),
            message: other.to_string(),
        },
    }
}

impl SecretSource for KeyringSecrets {
    fn get(&self, name: &str) -> Result<Option<Secret>, SecretError> {
        match self.entry(name)?.get_password() {
            Ok(v) => Ok(Some(Secret::new(v))),
            Err(Error::NoEntry) => Ok(None),
            Err(e) => Err(store_err(name, &e)),
        }
    }

    fn set(&self, name: &str, value: &Secret) -> Result<(), SecretError> {
        self.entry(name)?
            .set_password(value.expose())
            .map_err(|e| store_err(name, &e))
    }

    fn delete(&self, name: &str) -> Result<(), SecretError> {
        match self.entry(name)?.delete_credential() {
            Ok(()) | Err(Error::NoEntry) => Ok(()),
            Err(e) => Err(store_err(name, &e)),
        }
    }

    fn describe(&self) -> String {
        format!("keyring ({})", self.store.vendor())
    }
}

/// The environment first (so the CLI and CI can override), then the OS keyring when
/// there is one. The second value says why there is no keyring, for the UI to show.
pub fn default_secrets() -> (Secrets, Option<String>) {
    let env: Arc<dyn SecretSource> = Arc::new(EnvSecrets);
    match KeyringSecrets::open() {
        Ok(k) => (
            Secrets::new(Arc::new(ChainSecrets(vec![env, Arc::new(k)]))),
            None,
        ),
        Err(e) => (Secrets::new(env), Some(e.to_string())),
    }
}
