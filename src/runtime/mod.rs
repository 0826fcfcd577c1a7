//! The delivery runtime: a tokio runtime on its own thread, driven by `Command`s,
//! answering with `Update`s. The only place in Hookline that awaits.
