//! The pure, synchronous core: no egui, no tokio. Everything the preview shows and
//! the runtime sends is computed here, by the same functions.

pub mod auth;
pub mod batch;
pub mod dates;
pub mod events;
pub mod export;
pub mod import;
pub mod job;
pub mod jsoncheck;
pub mod mapping;
pub mod model;
pub mod prepared;
pub mod redact;
pub mod render;
pub mod secret;
pub mod sign;
pub mod template;
