//! What one event becomes before batching, auth and signing, and the context a
//! render needs. `render` produces these and `batch` groups them; keeping them here
//! lets `render` use `batch` without `batch` depending back on `render`.

use serde_json::{Map, Value};

use super::model::Method;
use super::secret::{Secret, Secrets};

/// Everything rendering needs besides the destination and the event.
#[derive(Debug, Clone)]
pub struct RenderCtx {
    pub secrets: Secrets,
    /// Unix seconds for timestamps, JWT `iat`/`exp`; `None` reads the clock.
    pub now: Option<i64>,
}

impl RenderCtx {
    pub fn new(secrets: Secrets) -> Self {
        Self { secrets, now: None }
    }
    pub fn now(&self) -> i64 {
        self.now.unwrap_or_else(|| chrono::Utc::now().timestamp())
    }
}

/// What became of one event.
#[derive(Debug)]
pub enum Prepared {
    /// Did not match the trigger: counted, not an error.
    Skipped(String),
    Ready(Box<PreparedEvent>),
}

/// One event's part of a request, before batching, auth and signing. `Debug` shows
/// no body (it may hold secret-derived text).
#[derive(Clone)]
pub struct PreparedEvent {
    pub index: usize,
    /// Shared: every event of a static route carries the same one (no per-event copy).
    pub route: std::sync::Arc<Route>,
    pub body: PreparedBody,
    pub message_id: Option<String>,
    /// For the rows envelope.
    pub primary_key: Value,
    pub(crate) jwt_claims: Option<Map<String, Value>>,
    pub(crate) secret_values: Vec<Secret>,
    /// The same event rendered with sentinel secrets (families 0 and 1), when a
    /// template used a secret; `None` inside when that render failed.
    pub(crate) alts: Option<Box<[Option<PreparedEvent>; 2]>>,
}

impl std::fmt::Debug for PreparedEvent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PreparedEvent")
            .field("index", &self.index)
            .field("method", &self.route.method)
            .field("body_bytes", &self.body.len())
            .finish_non_exhaustive()
    }
}

/// What must be equal for events to share a request.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Route {
    pub method: Method,
    pub url: String,
    pub headers: Vec<(String, String)>,
}

#[derive(Debug, Clone)]
pub enum PreparedBody {
    None,
    /// Serialized JSON (event or mapped object), ready to concatenate into envelopes.
    Json(Vec<u8>),
    Raw(Vec<u8>),
}

impl PreparedBody {
    pub fn len(&self) -> usize {
        match self {
            Self::None => 0,
            Self::Json(b) | Self::Raw(b) => b.len(),
        }
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
