//! `agentq`: the command-line client (run, get, cancel, tools) and admin tool (migrate,
//! create-key), plus the local stand-in model used by the demo and the tests.

pub mod args;
mod bench;
pub mod commands;

pub use commands::run;
pub mod stand_in;
