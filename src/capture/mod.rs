//! The capture receiver: an HTTP server on 127.0.0.1 that records what it receives.
