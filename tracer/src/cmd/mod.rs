//! The commands: each parses nothing itself (that is [`cli`]), opens what it
//! needs, drives the pipeline and prints. Only this folder prints to stdout.

pub mod check;
pub mod cli;
pub mod report;
pub mod snapshot;
pub mod trace;
