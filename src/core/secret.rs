//! Secrets: the `Secret` value type (never printed), the `SecretSource` trait every
//! store implements (OS keyring, environment, memory), and `Secrets`, the cached
//! resolver that rendering uses so a frame or a hot loop never waits on the keyring.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};

/// A secret value. `Debug` and `Display` print `Secret(***)`; read it with [`Secret::expose`].
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The value itself. Call only where it goes on the wire or into a store.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum SecretError {
    #[error("secret \"{name}\" is not set (store it in the keyring, or set {env})")]
    NotSet { name: String, env: String },
    #[error("no keyring available: {0}")]
    NoKeyring(String),
    #[error("keyring error for secret \"{name}\": {message}")]
    Store { name: String, message: String },
}

/// A place secrets live. Implementations: the OS keyring, the environment, memory.
pub trait SecretSource: Send + Sync {
    /// `Ok(None)` when this source has no entry of that name.
    fn get(&self, name: &str) -> Result<Option<Secret>, SecretError>;
    fn set(&self, name: &str, value: &Secret) -> Result<(), SecretError>;
    fn delete(&self, name: &str) -> Result<(), SecretError>;
    /// Where the secrets come from, for messages ("environment", "keyring (Secret Service)").
    fn describe(&self) -> String;
    /// Whether [`set`](Self::set) can work now; `Err` says why not (checked before an
    /// action whose result must be stored, such as an OAuth2 authorization).
    fn writable(&self) -> Result<(), SecretError> {
        Ok(())
    }
}

/// The environment variable that holds secret `name`: `HOOKLINE_SECRET_` + upper-cased name, `-`/`.`/space → `_`.
pub fn env_var_name(name: &str) -> String {
    let mut s = String::from("HOOKLINE_SECRET_");
    s.extend(name.chars().map(|c| {
        if c.is_ascii_alphanumeric() {
            c.to_ascii_uppercase()
        } else {
            '_'
        }
    }));
    s
}

/// Secrets from `HOOKLINE_SECRET_<NAME>` variables, for the CLI and CI. Read-only.
#[derive(Debug, Default, Clone, Copy)]
pub struct EnvSecrets;

impl SecretSource for EnvSecrets {
    fn get(&self, name: &str) -> Result<Option<Secret>, SecretError> {
        Ok(std::env::var(env_var_name(name)).ok().map(Secret::new))
    }
    fn set(&self, name: &str, _value: &Secret) -> Result<(), SecretError> {
        Err(SecretError::Store {
            name: name.to_owned(),
            message: "the environment is read-only".into(),
        })
    }
    fn delete(&self, name: &str) -> Result<(), SecretError> {
        Err(SecretError::Store {
            name: name.to_owned(),
            message: "the environment is read-only".into(),
        })
    }
    fn describe(&self) -> String {
        "environment (HOOKLINE_SECRET_*)".into()
    }
    fn writable(&self) -> Result<(), SecretError> {
        Err(SecretError::NoKeyring(
            "the environment is read-only and there is no other secret store".into(),
        ))
    }
}

/// An in-memory store, for tests and for a session with no keyring.
#[derive(Debug, Default)]
pub struct MemorySecrets(Mutex<HashMap<String, Secret>>);

impl MemorySecrets {
    pub fn with(pairs: &[(&str, &str)]) -> Self {
        let s = Self::default();
        for (k, v) in pairs {
            s.lock().insert((*k).to_owned(), Secret::new(*v));
        }
        s
    }
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Secret>> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl SecretSource for MemorySecrets {
    fn get(&self, name: &str) -> Result<Option<Secret>, SecretError> {
        Ok(self.lock().get(name).cloned())
    }
    fn set(&self, name: &str, value: &Secret) -> Result<(), SecretError> {
        self.lock().insert(name.to_owned(), value.clone());
        Ok(())
    }
    fn delete(&self, name: &str) -> Result<(), SecretError> {
        self.lock().remove(name);
        Ok(())
    }
    fn describe(&self) -> String {
        "memory".into()
    }
}

/// Sources tried in order; the first that has the name wins. Writes go to the first writable one.
pub struct ChainSecrets(pub Vec<Arc<dyn SecretSource>>);

impl SecretSource for ChainSecrets {
    fn get(&self, name: &str) -> Result<Option<Secret>, SecretError> {
        let mut first_err = None;
        for s in &self.0 {
            match s.get(name) {
                Ok(Some(v)) => return Ok(Some(v)),
                Ok(None) => {}
                Err(e) => {
                    first_err.get_or_insert(e);
                }
            }
        }
        first_err.map_or(Ok(None), Err)
    }
    fn set(&self, name: &str, value: &Secret) -> Result<(), SecretError> {
        let mut last = None;
        for s in &self.0 {
            match s.set(name, value) {
                Ok(()) => return Ok(()),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or(SecretError::NoKeyring("no secret store configured".into())))
    }
    fn delete(&self, name: &str) -> Result<(), SecretError> {
        let mut last = None;
        for s in &self.0 {
            match s.delete(name) {
                Ok(()) => return Ok(()),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or(SecretError::NoKeyring("no secret store configured".into())))
    }
    fn writable(&self) -> Result<(), SecretError> {
        let mut last = None;
        for s in &self.0 {
            match s.writable() {
                Ok(()) => return Ok(()),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or(SecretError::NoKeyring("no secret store configured".into())))
    }
    fn describe(&self) -> String {
        self.0
            .iter()
            .map(|s| s.describe())
            .collect::<Vec<_>>()
            .join(", then ")
    }
}

/// The resolver rendering uses: a source plus a cache, so each secret is fetched once.
#[derive(Clone)]
pub struct Secrets {
    source: Arc<dyn SecretSource>,
    cache: Arc<Mutex<HashMap<String, Secret>>>,
}

impl fmt::Debug for Secrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secrets({})", self.source.describe())
    }
}

impl Secrets {
    pub fn new(source: Arc<dyn SecretSource>) -> Self {
        Self {
            source,
            cache: Arc::default(),
        }
    }

    pub fn memory(pairs: &[(&str, &str)]) -> Self {
        Self::new(Arc::new(MemorySecrets::with(pairs)))
    }

    pub fn source(&self) -> &Arc<dyn SecretSource> {
        &self.source
    }

    pub fn get(&self, name: &str) -> Result<Secret, SecretError> {
        if let Some(s) = self
            .cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(name)
        {
            return Ok(s.clone());
        }
        let s = self.source.get(name)?.ok_or_else(|| SecretError::NotSet {
            name: name.to_owned(),
            env: env_var_name(name),
        })?;
        self.cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(name.to_owned(), s.clone());
        Ok(s)
    }

    /// Forget cached values, e.g. after the user edits a secret.
    pub fn invalidate(&self) {
        self.cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_debug_and_display_never_show_the_value() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s:?}"), "Secret(***)");
        assert_eq!(format!("{s}"), "***");
        assert!(!format!("{:?}", Some(&s)).contains("hunter2"));
    }

    #[test]
    fn env_var_name_uppercases_and_replaces_dashes() {
        assert_eq!(
            env_var_name("orders-signing"),
            "HOOKLINE_SECRET_ORDERS_SIGNING"
        );
        assert_eq!(env_var_name("a.b c"), "HOOKLINE_SECRET_A_B_C");
    }

    #[test]
    fn missing_secret_names_the_secret_and_the_variable() {
        let s = Secrets::memory(&[]);
        let e = s.get("orders-password").expect_err("missing");
        let msg = e.to_string();
        assert!(
            msg.contains("orders-password") && msg.contains("HOOKLINE_SECRET_ORDERS_PASSWORD"),
            "{msg}"
        );
    }

    #[test]
    fn chain_falls_through_to_later_sources() {
        let a = Arc::new(MemorySecrets::with(&[("a", "1")]));
        let b = Arc::new(MemorySecrets::with(&[("b", "2")]));
        let c = ChainSecrets(vec![a, b]);
        assert_eq!(
            c.get("b").ok().flatten().map(|s| s.expose().to_owned()),
            Some("2".into())
        );
        assert_eq!(c.get("zz"), Ok(None));
    }
}
