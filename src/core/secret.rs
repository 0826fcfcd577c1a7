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
    #[error("secret `{name}` is not set (store it in the keyring, or set {env})")]
    NotSet { name: String, env: String },
    /// A cache-only resolver (see [`Secrets::cache_only`]) has not been given this name yet.
    #[error("secret `{name}` is not loaded yet (the runtime is reading it)")]
    NotLoaded { name: String },
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

/// What the resolver knows of one name: a value, "not set", or the error the source gave.
type Entry = Result<Option<Secret>, SecretError>;

/// The resolver rendering uses: a source plus a cache of every answer, hits *and*
/// misses (and source errors), so each name costs at most one source call until it is
/// refreshed. A preview that renders 1 000 times with a missing secret asks the keyring
/// once. The runtime fills the cache off the UI thread ([`Secrets::preload`],
/// [`Secrets::store`], [`Secrets::delete`] run inside `spawn_blocking`), so a frame
/// only ever reads the cache; [`Secrets::cached`] never calls the source at all.
#[derive(Clone)]
pub struct Secrets {
    source: Arc<dyn SecretSource>,
    cache: Arc<Mutex<HashMap<String, Entry>>>,
    /// `false`: a name not in the cache is [`SecretError::NotLoaded`], never a source call.
    fetch_on_miss: bool,
}

impl fmt::Debug for Secrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secrets({})", self.source.describe())
    }
}

fn not_set(name: &str) -> SecretError {
    SecretError::NotSet {
        name: name.to_owned(),
        env: env_var_name(name),
    }
}

impl Secrets {
    pub fn new(source: Arc<dyn SecretSource>) -> Self {
        Self {
            source,
            cache: Arc::default(),
            fetch_on_miss: true,
        }
    }

    /// The same secrets and cache, but `get` never calls the source: a name nobody has
    /// loaded yet is [`SecretError::NotLoaded`]. This is what a UI thread renders with;
    /// it asks the runtime to `LoadSecrets` the names, and the shared cache fills.
    #[must_use]
    pub fn cache_only(&self) -> Self {
        Self {
            fetch_on_miss: false,
            ..self.clone()
        }
    }

    pub fn memory(pairs: &[(&str, &str)]) -> Self {
        Self::new(Arc::new(MemorySecrets::with(pairs)))
    }

    pub fn source(&self) -> &Arc<dyn SecretSource> {
        &self.source
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        self.cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The value of `name`: from the cache, or (first use of the name only) from the
    /// source, whose answer — hit, miss or error — is cached.
    pub fn get(&self, name: &str) -> Result<Secret, SecretError> {
        let entry = match self.cached(name) {
            Some(e) => e,
            None if self.fetch_on_miss => self.fetch(name),
            None => Err(SecretError::NotLoaded {
                name: name.to_owned(),
            }),
        };
        entry.and_then(|v| v.ok_or_else(|| not_set(name)))
    }

    /// What the cache holds for `name`, without touching the source: `None` when the
    /// name was never looked up (a frame shows "loading…" and asks the runtime).
    pub fn cached(&self, name: &str) -> Option<Entry> {
        self.cache().get(name).cloned()
    }

    /// Ask the source for `name` now and cache its answer. Blocking: call it off the UI
    /// thread (the runtime's `LoadSecrets` does).
    pub fn refresh(&self, name: &str) -> Entry {
        self.fetch(name)
    }

    /// [`refresh`](Self::refresh) each name; the answers in the same order. Blocking.
    pub fn preload<S: AsRef<str>>(&self, names: &[S]) -> Vec<(String, Entry)> {
        names
            .iter()
            .map(|n| (n.as_ref().to_owned(), self.fetch(n.as_ref())))
            .collect()
    }

    /// Fetch (and cache) only the names the cache does not hold yet; what was fetched.
    /// Blocking: the runtime calls it before a job renders, on its blocking pool.
    pub fn load_missing<S: AsRef<str>>(&self, names: &[S]) -> Vec<(String, Entry)> {
        names
            .iter()
            .filter(|n| self.cached(n.as_ref()).is_none())
            .map(|n| (n.as_ref().to_owned(), self.fetch(n.as_ref())))
            .collect()
    }

    /// Write `value` to the source and, once it is stored, to the cache: the next render
    /// sees it with no source call. Blocking.
    pub fn store(&self, name: &str, value: &Secret) -> Result<(), SecretError> {
        self.source.set(name, value)?;
        self.cache()
            .insert(name.to_owned(), Ok(Some(value.clone())));
        Ok(())
    }

    /// Delete `name` from the source and cache it as not set. Blocking.
    pub fn delete(&self, name: &str) -> Result<(), SecretError> {
        self.source.delete(name)?;
        self.cache().insert(name.to_owned(), Ok(None));
        Ok(())
    }

    /// Forget every cached answer, e.g. after secrets changed outside Hookline: the
    /// next use of each name asks the source again.
    pub fn invalidate(&self) {
        self.cache().clear();
    }

    fn fetch(&self, name: &str) -> Entry {
        // The lock is not held across the source call: a slow keyring must not stall
        // a frame that only reads the cache.
        let entry = self.source.get(name);
        self.cache().insert(name.to_owned(), entry.clone());
        entry
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

    /// Counts `get` calls per name, over a memory store.
    #[derive(Default)]
    struct Counting {
        inner: MemorySecrets,
        gets: Mutex<HashMap<String, usize>>,
    }

    impl Counting {
        fn gets(&self, name: &str) -> usize {
            self.gets
                .lock()
                .map_or(usize::MAX, |g| g.get(name).copied().unwrap_or(0))
        }
    }

    impl SecretSource for Counting {
        fn get(&self, name: &str) -> Result<Option<Secret>, SecretError> {
            if let Ok(mut g) = self.gets.lock() {
                *g.entry(name.to_owned()).or_default() += 1;
            }
            self.inner.get(name)
        }
        fn set(&self, name: &str, value: &Secret) -> Result<(), SecretError> {
            self.inner.set(name, value)
        }
        fn delete(&self, name: &str) -> Result<(), SecretError> {
            self.inner.delete(name)
        }
        fn describe(&self) -> String {
            "counting".into()
        }
    }

    #[test]
    fn misses_are_cached_so_the_source_is_asked_once_per_name() {
        let src = Arc::new(Counting::default());
        let s = Secrets::new(src.clone());
        for _ in 0..1_000 {
            let e = s.get("absent").expect_err("missing");
            assert!(
                e.to_string().starts_with("secret `absent` is not set"),
                "{e}"
            );
        }
        assert_eq!(src.gets("absent"), 1);
        assert!(matches!(s.cached("absent"), Some(Ok(None))));
        assert!(s.cached("never-asked").is_none());
        assert_eq!(src.gets("never-asked"), 0);
    }

    #[test]
    fn store_and_delete_update_the_cache_without_a_source_read() {
        let src = Arc::new(Counting::default());
        let s = Secrets::new(src.clone());
        assert!(s.get("k").is_err());
        s.store("k", &Secret::new("v1")).expect("stored");
        assert_eq!(s.get("k").map(|v| v.expose().to_owned()), Ok("v1".into()));
        s.delete("k").expect("deleted");
        assert!(s.get("k").is_err());
        assert_eq!(src.gets("k"), 1, "only the first miss reads the source");
    }

    #[test]
    fn preload_and_refresh_read_the_source_again() {
        let src = Arc::new(Counting::default());
        let s = Secrets::new(src.clone());
        assert!(s.get("k").is_err());
        src.inner.set("k", &Secret::new("later")).expect("set");
        assert!(
            s.get("k").is_err(),
            "the cached miss stands until a refresh"
        );
        let got = s.preload(&["k", "other"]);
        assert_eq!(got.len(), 2);
        assert!(matches!(&got[0].1, Ok(Some(v)) if v.expose() == "later"));
        assert!(matches!(&got[1].1, Ok(None)));
        assert_eq!(
            s.get("k").map(|v| v.expose().to_owned()),
            Ok("later".into())
        );
        assert_eq!(src.gets("k"), 2);
        s.invalidate();
        assert!(s.cached("k").is_none());
    }

    #[test]
    fn a_cache_only_view_never_calls_the_source_and_sees_what_the_runtime_loads() {
        let src = Arc::new(Counting::default());
        src.inner.set("k", &Secret::new("v")).expect("set");
        let runtime_side = Secrets::new(src.clone());
        let ui = runtime_side.cache_only();
        let e = ui.get("k").expect_err("not loaded");
        assert_eq!(
            e.to_string(),
            "secret `k` is not loaded yet (the runtime is reading it)"
        );
        assert_eq!(src.gets("k"), 0);
        assert_eq!(runtime_side.load_missing(&["k"]).len(), 1);
        assert!(
            runtime_side.load_missing(&["k"]).is_empty(),
            "already cached"
        );
        assert_eq!(ui.get("k").map(|v| v.expose().to_owned()), Ok("v".into()));
        assert_eq!(src.gets("k"), 1);
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
