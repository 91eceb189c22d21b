//! `gotrace`: the binary. Errors become one line on stderr and a non-zero
//! exit status, never a panic or a backtrace.

use std::process::ExitCode;

use clap::Parser as _;
use tracer::cmd::cli::{Cli, Command};

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn"))
        .format_timestamp(None)
        .init();
    let cli = Cli::parse();
    let result = match cli.cmd {
        None => tracer::cmd::trace::run(cli.trace).map(|o| o.exit_code()),
        Some(Command::Report(args)) => tracer::cmd::report::run(args).map(|o| o.exit_code()),
        Some(Command::Top(args)) => tracer::cmd::trace::run_top(args).map(|o| o.exit_code()),
        Some(Command::Probes(args)) => tracer::cmd::trace::run_probes(args).map(|o| o.exit_code()),
        Some(Command::Snapshot(args)) => tracer::cmd::snapshot::run(args).map(|()| 0),
        Some(Command::Check(args)) => tracer::cmd::check::run(args).map(|o| o.exit_code()),
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            // One line: the error and its causes.
            let msg: Vec<String> = e.chain().map(|c| c.to_string()).collect();
            eprintln!("gotrace: error: {}", msg.join(": "));
            ExitCode::from(1)
        }
    }
}
