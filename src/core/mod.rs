//! The pure, synchronous core: no egui, no tokio. Everything the preview shows and
//! the runtime sends is computed here, by the same functions.

pub mod import;
pub mod model;
pub mod secret;
pub mod sign;
