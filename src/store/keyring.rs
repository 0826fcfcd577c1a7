//! The OS keyring as a [`SecretSource`]: Secret Service on Linux, Keychain on macOS,
//! Credential Manager on Windows, through `keyring-core`. Entries live under the
//! service `hookline` with the secret's name as the account. A machine without a
//! keyring (no D-Bus session, say) gives `SecretError::NoKeyring`, never a panic.

use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

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

/// How long one keyring call may take before the keyring is taken as unavailable:
/// a session bus that accepts a connection and never answers must not hang anything.
/// `HOOKLINE_KEYRING_TIMEOUT_MS` overrides it.
pub const KEYRING_TIMEOUT: Duration = Duration::from_secs(5);

type Job = Box<dyn FnOnce(&Result<KeyringSecrets, SecretError>) + Send>;

/// The OS keyring, opened on first use on a thread of its own, every call bounded by
/// a timeout. A keyring that timed out once is not waited for again.
pub struct LazyKeyring {
    service: String,
    timeout: Duration,
    worker: Mutex<Option<mpsc::Sender<Job>>>,
    dead: Mutex<Option<String>>,
}

impl LazyKeyring {
    pub fn new(service: &str) -> Self {
        let timeout = std::env::var("HOOKLINE_KEYRING_TIMEOUT_MS")
            .ok()
            .and_then(|v| v.parse::<u64>().ok())
            .map_or(KEYRING_TIMEOUT, Duration::from_millis);
        Self {
            service: service.to_owned(),
            timeout,
            worker: Mutex::new(None),
            dead: Mutex::new(None),
        }
    }

    fn sender(&self) -> Result<mpsc::Sender<Job>, SecretError> {
        let mut w = self
            .worker
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(tx) = &*w {
            return Ok(tx.clone());
        }
        let (tx, rx) = mpsc::channel::<Job>();
        let service = self.service.clone();
        std::thread::Builder::new()
            .name("hookline-keyring".into())
            .spawn(move || {
                let store = KeyringSecrets::open_service(&service);
                while let Ok(job) = rx.recv() {
                    job(&store);
                }
            })
            .map_err(|e| SecretError::NoKeyring(format!("cannot start the keyring thread: {e}")))?;
        *w = Some(tx.clone());
        Ok(tx)
    }

    fn call<T: Send + 'static>(
        &self,
        f: impl FnOnce(&KeyringSecrets) -> Result<T, SecretError> + Send + 'static,
    ) -> Result<T, SecretError> {
        if let Some(why) = &*self
            .dead
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
        {
            return Err(SecretError::NoKeyring(why.clone()));
        }
        let (rtx, rrx) = mpsc::sync_channel(1);
        let job: Job = Box::new(move |store| {
            let r = match store {
                Ok(k) => f(k),
                Err(e) => Err(e.clone()),
            };
            let _ = rtx.send(r);
        });
        self.sender()?
            .send(job)
            .map_err(|_| SecretError::NoKeyring("the keyring thread stopped".into()))?;
        if let Ok(r) = rrx.recv_timeout(self.timeout) {
            r
        } else {
            {
                let why = format!(
                    "the keyring (D-Bus Secret Service) did not answer within {} ms",
                    self.timeout.as_millis()
                );
                *self
                    .dead
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(why.clone());
                Err(SecretError::NoKeyring(why))
            }
        }
    }

    /// Open the keyring now (within the timeout): `Err` says why there is none.
    pub fn check(&self) -> Result<(), SecretError> {
        self.call(|_| Ok(()))
    }
}

impl SecretSource for LazyKeyring {
    fn get(&self, name: &str) -> Result<Option<Secret>, SecretError> {
        let n = name.to_owned();
        self.call(move |k| k.get(&n))
    }
    fn set(&self, name: &str, value: &Secret) -> Result<(), SecretError> {
        let (n, v) = (name.to_owned(), value.clone());
        self.call(move |k| k.set(&n, &v))
    }
    fn delete(&self, name: &str) -> Result<(), SecretError> {
        let n = name.to_owned();
        self.call(move |k| k.delete(&n))
    }
    fn describe(&self) -> String {
        "keyring".into()
    }
    fn writable(&self) -> Result<(), SecretError> {
        self.check()
    }
}

/// The environment first (so the CLI and CI can override), then the OS keyring. The
/// keyring is opened lazily, on the first secret the environment does not have, so a
/// broken session bus costs nothing when every secret is in the environment. The
/// second value is reserved for a reason known up front (none on supported systems).
pub fn default_secrets() -> (Secrets, Option<String>) {
    let env: Arc<dyn SecretSource> = Arc::new(EnvSecrets);
    let keyring: Arc<dyn SecretSource> = Arc::new(LazyKeyring::new(SERVICE));
    (
        Secrets::new(Arc::new(ChainSecrets(vec![env, keyring]))),
        None,
    )
}
