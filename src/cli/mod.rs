//! The `quorum` subcommands, one module each (the binary's half of the
//! crate: `src/main.rs` parses the command line and calls in here).

pub mod bench_symbols;
pub mod demo;
pub mod evaluate;
pub mod features;
pub mod market;
pub mod models;
mod progress;
pub mod serve;
pub mod train;
