//! Persistence: the workspace file, the OS keyring, and the `SQLite` history.
pub mod history;
pub mod import;
pub mod keyring;
pub mod pages;
pub mod workspace;
