//! `gotrace`: the binary. Errors become one line on stderr and a non-zero
//! exit status, never a panic or a backtrace.

use std::process::ExitCode;

use clap::Parser as _;
use tracer::cmd::cli::Cli;

/// Turns a panic (a bug: bad input is meant to be an error) into the same
/// one-line error as any other, with exit status 1, instead of a message
/// and backtrace on several lines. It exits from whichever thread panicked,
/// so a panic in a worker thread cannot leave gotrace half running.
fn one_line_panics() {
    std::panic::set_hook(Box::new(|info| {
        let payload = info.payload();
        let what = payload
            .downcast_ref::<&str>()
            .copied()
            .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
            .unwrap_or("panic");
        let at = info
            .location()
            .map(|l| format!(" (at {}:{})", l.file(), l.line()))
            .unwrap_or_default();
        let what = what.replace('\n', " ");
        tracer::view::top::restore_terminal();
        eprintln!("gotrace: error: internal error: {what}{at}");
        std::process::exit(1);
    }));
}

/// Help and version go to stdout as clap prints them; a usage error becomes
/// one line (clap's first, which names the argument and the problem) and
/// exit status 2.
fn usage_error(e: clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
        let _ = e.print();
        return ExitCode::SUCCESS;
    }
    if e.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
        let _ = e.print();
        return ExitCode::from(2);
    }
    // The first paragraph: the error, and the arguments it lists if any.
    let text = e.render().to_string();
    let first: Vec<&str> = text
        .lines()
        .map(str::trim)
        .skip_while(|l| l.is_empty())
        .take_while(|l| !l.is_empty())
        .collect();
    let first = first.join(" ");
    let first = first.trim_start_matches("error: ");
    eprintln!("gotrace: error: {first} (see gotrace --help)");
    ExitCode::from(2)
}

fn main() -> ExitCode {
    one_line_panics();
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn"))
        .format_timestamp(None)
        .init();
    if std::env::var_os("GOTRACE_TEST_PANIC").is_some() {
        // Lets the end-to-end tests see the panic hook at work.
        panic!("GOTRACE_TEST_PANIC is set\nsecond line");
    }
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return usage_error(e),
    };
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
