//! Flame graphs (inferno SVG, searchable) with the folded text next to each.

use std::path::{Path, PathBuf};

use anyhow::Context as _;

use super::folded::{Stacks, Weighted, fold};

/// What one flame graph shows.
struct Spec<'a> {
    file: &'static str,
    title: &'static str,
    count_name: &'static str,
    stacks: &'a [Weighted],
}

/// Writes `<name>.folded` and `<name>.svg` for each stack set into `dir`.
/// Empty sets get no SVG: the returned lines say so instead.
pub fn write_all(dir: &Path, stacks: &Stacks, subtitle: &str) -> anyhow::Result<Vec<String>> {
    let specs = [
        Spec {
            file: "blocked",
            title: "Blocked goroutines by blocked stack",
            count_name: "goroutines",
            stacks: &stacks.blocked,
        },
        Spec {
            file: "created",
            title: "Goroutine creation by creation stack",
            count_name: "goroutines",
            stacks: &stacks.created,
        },
        Spec {
            file: "offcpu",
            title: "Off-CPU: time parked, by wait reason and stack",
            count_name: "µs",
            stacks: &stacks.off_cpu,
        },
        Spec {
            file: "suspects",
            title: "Leak suspects by blocked stack",
            count_name: "goroutines",
            stacks: &stacks.suspects,
        },
    ];
    let mut notes = Vec::new();
    for spec in specs {
        let lines = fold(spec.stacks);
        let folded = dir.join(format!("{}.folded", spec.file));
        crate::outfile::write(
            &folded,
            lines
                .iter()
                .map(|l| format!("{l}\n"))
                .collect::<String>()
                .as_bytes(),
        )
        .with_context(|| format!("cannot write {}", folded.display()))?;
        let svg: PathBuf = dir.join(format!("{}.svg", spec.file));
        if lines.is_empty() {
            let _ = std::fs::remove_file(&svg);
            notes.push(format!(
                "{}: nothing to draw ({} is empty)",
                spec.title,
                folded.display()
            ));
            continue;
        }
        let mut opts = inferno::flamegraph::Options::default();
        opts.title = spec.title.to_string();
        opts.subtitle = Some(subtitle.to_string());
        opts.count_name = spec.count_name.to_string();
        let out = crate::outfile::create(&svg)
            .with_context(|| format!("cannot write {}", svg.display()))?;
        inferno::flamegraph::from_lines(
            &mut opts,
            lines.iter().map(String::as_str),
            std::io::BufWriter::new(out),
        )
        .with_context(|| format!("drawing {}", svg.display()))?;
        notes.push(format!("{}: {}", spec.title, svg.display()));
    }
    Ok(notes)
}
