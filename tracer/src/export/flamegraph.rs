//! Flame graphs (inferno SVG, searchable) with the folded text next to each.

use anyhow::Context as _;

use super::folded::{Stacks, Weighted, fold};

/// What one flame graph shows.
struct Spec<'a> {
    file: &'static str,
    title: &'static str,
    count_name: &'static str,
    stacks: &'a [Weighted],
}

/// One file to write: its name in the output directory and its bytes.
pub struct File {
    pub name: String,
    pub bytes: Vec<u8>,
}

/// What became of one flame graph.
pub struct Graph {
    pub title: &'static str,
    pub folded: String,
    /// None when there was nothing to draw.
    pub svg: Option<String>,
}

/// `<name>.folded` and `<name>.svg` for each stack set. Empty sets get no
/// SVG (and a stale one must go): `absent` names those, the notes say why.
pub struct Rendered {
    pub files: Vec<File>,
    pub absent: Vec<String>,
    /// One per flame graph, in order.
    pub graphs: Vec<Graph>,
}

pub fn render_all(stacks: &Stacks, subtitle: &str) -> anyhow::Result<Rendered> {
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
    let mut out = Rendered {
        files: Vec::new(),
        absent: Vec::new(),
        graphs: Vec::new(),
    };
    for spec in specs {
        let lines = fold(spec.stacks);
        let folded = format!("{}.folded", spec.file);
        out.files.push(File {
            name: folded.clone(),
            bytes: lines
                .iter()
                .map(|l| format!("{l}\n"))
                .collect::<String>()
                .into_bytes(),
        });
        let svg = format!("{}.svg", spec.file);
        if lines.is_empty() {
            out.absent.push(svg);
            out.graphs.push(Graph {
                title: spec.title,
                folded,
                svg: None,
            });
            continue;
        }
        let mut opts = inferno::flamegraph::Options::default();
        opts.title = spec.title.to_string();
        opts.subtitle = Some(subtitle.to_string());
        opts.count_name = spec.count_name.to_string();
        let mut bytes = Vec::new();
        inferno::flamegraph::from_lines(&mut opts, lines.iter().map(String::as_str), &mut bytes)
            .with_context(|| format!("drawing {svg}"))?;
        out.files.push(File {
            name: svg.clone(),
            bytes,
        });
        out.graphs.push(Graph {
            title: spec.title,
            folded,
            svg: Some(svg),
        });
    }
    Ok(out)
}
