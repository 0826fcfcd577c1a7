//! The command line: `render`, `validate`, `send`, `capture`.
