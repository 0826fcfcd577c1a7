//! Hookline: a workbench for webhook destinations. `core` is pure and synchronous;
//! `store` persists; `runtime` is the only place that awaits; `capture` is the receiver.

pub mod capture;
pub mod cli;
pub mod core;
pub mod runtime;
pub mod store;
pub mod ui;
