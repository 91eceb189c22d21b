//! The commands. Each one opens what it needs ([`open`]), drives the
//! pipeline and prints; argument parsing is [`cli`]. Only this folder
//! prints to stdout, and nothing outside it imports it.

pub mod agent;
pub mod check;
pub mod cli;
pub mod open;
pub mod probes;
pub mod report;
pub mod sampled;
pub mod snapshot;
pub mod trace;

use crate::report::Report;
use cli::{Cli, Command};

/// What a command leaves for the exit status.
pub struct Outcome {
    /// None for commands that do not build a leak report.
    pub report: Option<Report>,
    /// Goroutines the leak proof proved leaked, when it ran to the end.
    pub proven: Option<u64>,
}

impl Outcome {
    /// Outcome of a command that lists things rather than tracing.
    pub fn listing() -> Self {
        Self {
            report: None,
            proven: None,
        }
    }

    /// 3 when the leak proof proved a leak; without a proof, 3 when there
    /// are leak suspects; else 0.
    pub fn exit_code(&self) -> u8 {
        let proven = self.proven.or_else(|| {
            let r = self.report.as_ref()?;
            r.proof
                .as_ref()
                .filter(|p| p.done())
                .map(|_| r.leaked_count)
        });
        match (proven, &self.report) {
            (Some(n), _) => u8::from(n > 0) * 3,
            (None, Some(r)) if r.suspect_count > 0 => 3,
            _ => 0,
        }
    }
}

/// Runs the command `cli` names; returns the exit status.
pub fn run(cli: Cli) -> anyhow::Result<u8> {
    let outcome = match cli.cmd {
        None => trace::run(cli.trace)?,
        Some(Command::Report(args)) => report::run(args)?,
        Some(Command::Top(args)) => trace::run_top(args)?,
        Some(Command::Probes(args)) => probes::run(args)?,
        Some(Command::Snapshot(args)) => snapshot::run(args)?,
        Some(Command::Check(args)) => check::run(args)?,
        Some(Command::Agent(args)) => agent::run(args)?,
    };
    Ok(outcome.exit_code())
}
