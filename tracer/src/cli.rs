//! Command-line interface.

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

/// eBPF goroutine tracer for Go programs: attach to a running Go process (or
/// start one) and report which goroutines pile up, where they were created
/// and where they are stuck.
#[derive(Debug, Parser)]
#[command(name = "gotrace", version, about, long_about = None)]
#[command(
    after_help = "Examples:\n  sudo gotrace --pid 4242 --duration 30s\n  sudo gotrace -o out -- ./myservice --flag\n\nExit status: 0 no leak suspects, 3 leak suspects found, 1 error, 2 usage."
)]
pub struct Cli {
    /// Trace this running process.
    #[arg(short, long, conflicts_with = "command")]
    pub pid: Option<u32>,

    /// Stop after this long (e.g. 30s, 2m, 500ms). Default: until Ctrl-C,
    /// SIGTERM or the target exits.
    #[arg(short, long, value_parser = parse_duration)]
    pub duration: Option<Duration>,

    /// Directory for report.json (created if missing).
    #[arg(short, long, default_value = ".")]
    pub output: PathBuf,

    /// Goroutines parked at least this long are leak suspects.
    #[arg(long, value_parser = parse_duration, default_value = "5s")]
    pub leak_threshold: Duration,

    /// Print every context's cancel-propagation tree in the summary (the
    /// trees are always in report.json).
    #[arg(long)]
    pub contexts: bool,

    /// Command to start and trace from its first goroutine (after `--`).
    #[arg(last = true, value_name = "CMD")]
    pub command: Vec<String>,
}

/// "30s", "500ms", "2m", "1h", "1.5s" or a bare number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("invalid duration {s:?} (try 30s, 500ms, 2m)"))?;
    let secs = match unit {
        "" | "s" => n,
        "ms" => n / 1e3,
        "us" | "µs" => n / 1e6,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => {
            return Err(format!(
                "invalid duration unit {unit:?} in {s:?} (use ms, s, m or h)"
            ));
        }
    };
    if !secs.is_finite() || secs < 0.0 {
        return Err(format!("invalid duration {s:?}"));
    }
    Ok(Duration::from_secs_f64(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1.5"), Ok(Duration::from_millis(1500)));
        assert!(parse_duration("5x").is_err());
        assert!(parse_duration("").is_err());
    }

    #[test]
    fn pid_and_command_conflict() {
        assert!(Cli::try_parse_from(["gotrace", "--pid", "1", "--", "ls"]).is_err());
        let c = Cli::try_parse_from(["gotrace", "-o", "x", "--", "./prog", "-v"]).unwrap();
        assert_eq!(c.command, vec!["./prog", "-v"]);
    }
}
