//! `gotrace`: the binary. Errors become one line on stderr and a non-zero
//! exit status, never a panic or a backtrace.

use std::process::ExitCode;

use clap::Parser as _;
use tracer::cmd::cli::Cli;

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn"))
        .format_timestamp(None)
        .init();
    let cli = Cli::parse();
    let result = tracer::cmd::run(cli);
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
