//! The Go toolchain version a binary was built with, and the range of
//! versions gotrace supports.

/// The Go toolchain version a binary was built with.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
pub struct GoVersion {
    pub major: u32,
    pub minor: u32,
    pub patch: u32,
    /// The version string as stored in the binary, e.g. "go1.26.6".
    pub raw: String,
}

impl GoVersion {
    /// Parses a Go version string: "go1.26.6", "go1.21rc2", "go1.22.0
    /// X:loopvar", "devel go1.24-abcdef Tue ...". Whatever cannot be parsed is 0.
    pub fn parse(raw: &str) -> GoVersion {
        let mut v = GoVersion {
            raw: raw.to_string(),
            ..GoVersion::default()
        };
        // The first whitespace-separated token starting with "go<digit>".
        let Some(tok) = raw.split_whitespace().find_map(|t| {
            t.strip_prefix("go")
                .filter(|r| r.starts_with(|c: char| c.is_ascii_digit()))
        }) else {
            return v;
        };
        let mut nums = [0u32; 3];
        for (i, part) in tok.split('.').take(3).enumerate() {
            let digits: String = part.chars().take_while(|c| c.is_ascii_digit()).collect();
            nums[i] = digits.parse().unwrap_or(0);
            if digits.len() != part.len() {
                // "21rc2", "23-abcdef": stop after the numeric prefix.
                break;
            }
        }
        [v.major, v.minor, v.patch] = nums;
        v
    }

    /// True if this version is `major.minor` or newer.
    pub fn at_least(&self, major: u32, minor: u32) -> bool {
        (self.major, self.minor) >= (major, minor)
    }
}

impl std::fmt::Display for GoVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.raw)
    }
}

/// Oldest Go release gotrace supports (pclntab/buildinfo formats, runtime.g
/// layout family).
pub const MIN_SUPPORTED: (u32, u32) = (1, 19);
/// Newest release whose runtime gotrace was verified against.
pub const MAX_VERIFIED: (u32, u32) = (1, 27);
