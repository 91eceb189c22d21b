//! The step every command starts with: open the target's executable, check
//! that it is a Go program gotrace supports, and load what reading it needs
//! (the runtime layout and the symbols).

use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};

use crate::gobin::GoBinary;
use crate::gobin::layout::{LayoutSource, RuntimeLayout};
use crate::gobin::symbolize::Symbolizer;
use crate::goruntime::version::{MAX_VERIFIED, MIN_SUPPORTED};
use crate::process;

/// The binary, checked to be a Go program gotrace can trace.
pub fn inspect(path: &Path, shown: &str) -> anyhow::Result<GoBinary> {
    let bin = GoBinary::open(path).with_context(|| format!("cannot trace {shown}"))?;
    let v = bin.version();
    if (v.major, v.minor) < MIN_SUPPORTED {
        bail!(
            "unsupported Go version {} in {shown}: gotrace supports Go {}.{} and later",
            v.raw,
            MIN_SUPPORTED.0,
            MIN_SUPPORTED.1
        );
    }
    Ok(bin)
}

/// A target binary opened for reading: its runtime layout and symbols.
pub struct Opened {
    pub exe: PathBuf,
    /// How messages name the target ("PID 42", or the command's path).
    pub shown: String,
    pub bin: GoBinary,
    pub layout: RuntimeLayout,
    pub symbolizer: Symbolizer,
}

impl Opened {
    /// Inspects and opens `exe`.
    pub fn open(exe: &Path, shown: &str) -> anyhow::Result<Opened> {
        let bin = inspect(exe, shown)?;
        Opened::load(bin, exe, shown)
    }

    /// Loads the layout and symbols of an inspected binary.
    pub fn load(bin: GoBinary, exe: &Path, shown: &str) -> anyhow::Result<Opened> {
        let layout = bin
            .layout()
            .with_context(|| format!("cannot read the Go runtime layout of {shown}"))?;
        let symbolizer = bin.symbolizer().context("cannot load symbols")?;
        Ok(Opened {
            exe: exe.to_path_buf(),
            shown: shown.to_string(),
            bin,
            layout,
            symbolizer,
        })
    }

    /// Where `pid` loaded this binary: runtime address minus link address.
    /// 0 for a binary that is not position-independent; None while a PIE's
    /// mapping cannot be found (not exec'd yet, or gone).
    pub fn load_bias(&self, pid: u32) -> Option<u64> {
        if self.bin.is_pie() {
            process::load_bias(pid, &self.exe)
        } else {
            Some(0)
        }
    }

    /// Warnings a trace prints about where the runtime layout came from.
    pub fn layout_warnings(&self) -> Vec<String> {
        let v = self.bin.version();
        let mut lines = Vec::new();
        if (v.major, v.minor) > MAX_VERIFIED {
            lines.push(format!(
                "warning: {} is newer than the newest verified Go ({}.{}): offsets come from its DWARF",
                v.raw, MAX_VERIFIED.0, MAX_VERIFIED.1
            ));
        }
        if self.layout.source == LayoutSource::Table {
            lines.push(format!(
                "{} has no DWARF: runtime offsets from the per-version table ({}), \
                 symbols from pclntab",
                self.shown, v.raw
            ));
        }
        lines
    }

    /// "DWARF" or "table", for the event validator's messages.
    pub fn layout_origin(&self) -> &'static str {
        match self.layout.source {
            LayoutSource::Dwarf => "DWARF",
            LayoutSource::Table => "table",
        }
    }
}
