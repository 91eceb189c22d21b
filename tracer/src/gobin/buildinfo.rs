//! Go version from the `.go.buildinfo` section.

use super::BinaryError;

pub use crate::goruntime::version::GoVersion;

const MAGIC: &[u8] = b"\xff Go buildinf:";
const HEADER_LEN: usize = 32;
const FLAG_INLINE_STRINGS: u8 = 2;

/// Parses the contents of a `.go.buildinfo` section (Go 1.18+ format).
pub fn parse_buildinfo(section_data: &[u8]) -> Result<GoVersion, BinaryError> {
    let bad = |m: &str| BinaryError::BadBuildInfo(m.to_string());
    if !section_data.starts_with(MAGIC) {
        return Err(bad("missing \"\\xff Go buildinf:\" magic"));
    }
    if section_data.len() < HEADER_LEN {
        return Err(bad("section too short"));
    }
    let flags = section_data[MAGIC.len() + 1];
    if flags & FLAG_INLINE_STRINGS == 0 {
        // Before Go 1.18 the header held pointers to Go string headers.
        return Err(BinaryError::GoTooOld);
    }
    let mut rest = &section_data[HEADER_LEN..];
    let (len, n) = read_uvarint(rest).ok_or_else(|| bad("bad version length"))?;
    rest = &rest[n..];
    let len = usize::try_from(len)
        .ok()
        .filter(|&l| l <= rest.len())
        .ok_or_else(|| bad("version string out of bounds"))?;
    let raw = std::str::from_utf8(&rest[..len]).map_err(|_| bad("version is not UTF-8"))?;
    if raw.is_empty() {
        return Err(bad("empty version string"));
    }
    Ok(GoVersion::parse(raw))
}

/// The `DefaultGODEBUG` build setting of a `.go.buildinfo` section (the
/// go.mod's go line and `//go:debug` directives as the linker recorded
/// them, e.g. `asynctimerchan=1,...`), from the module info that follows
/// the version string; None when there is none.
pub fn default_godebug(section_data: &[u8]) -> Option<String> {
    let mut rest = section_data.get(HEADER_LEN..)?;
    for _ in 0..2 {
        let (len, n) = read_uvarint(rest)?;
        let len = usize::try_from(len).ok()?;
        let text = rest.get(n..n.checked_add(len)?)?;
        if let Some(v) = String::from_utf8_lossy(text)
            .lines()
            .find_map(|l| l.strip_prefix("build\tDefaultGODEBUG="))
        {
            return Some(v.to_string());
        }
        rest = &rest[n + len..];
    }
    None
}

/// Decodes a protobuf/Go-style unsigned varint; returns (value, bytes used).
fn read_uvarint(buf: &[u8]) -> Option<(u64, usize)> {
    let mut value = 0u64;
    for (i, &b) in buf.iter().enumerate().take(10) {
        value |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Some((value, i + 1));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_godebug_from_the_module_info() {
        let mut d = section(FLAG_INLINE_STRINGS, "go1.26.6");
        d.pop(); // the empty module info
        let info =
            "path\tx\nbuild\tDefaultGODEBUG=asynctimerchan=1,panicnil=1\nbuild\tCGO_ENABLED=0\n";
        d.push(info.len() as u8);
        d.extend_from_slice(info.as_bytes());
        assert_eq!(
            default_godebug(&d).as_deref(),
            Some("asynctimerchan=1,panicnil=1")
        );
        assert_eq!(
            default_godebug(&section(FLAG_INLINE_STRINGS, "go1.19")),
            None
        );
        assert_eq!(default_godebug(&d[..d.len() - 5]), None);
    }

    fn section(flags: u8, version: &str) -> Vec<u8> {
        let mut d = MAGIC.to_vec();
        d.push(8); // pointer size
        d.push(flags);
        d.resize(HEADER_LEN, 0);
        d.push(version.len() as u8);
        d.extend_from_slice(version.as_bytes());
        d.push(0); // empty modinfo
        d
    }

    #[test]
    fn parses_versions() {
        let v = GoVersion::parse("go1.26.6");
        assert_eq!(
            (v.major, v.minor, v.patch, v.raw.as_str()),
            (1, 26, 6, "go1.26.6")
        );
        let v = GoVersion::parse("go1.21rc2");
        assert_eq!((v.major, v.minor, v.patch), (1, 21, 0));
        let v = GoVersion::parse("go1.22.3 X:loopvar");
        assert_eq!((v.major, v.minor, v.patch), (1, 22, 3));
        let v = GoVersion::parse("devel go1.24-f00ba4 Tue Jan 2 15:04:05 2024 +0000");
        assert_eq!((v.major, v.minor, v.patch), (1, 24, 0));
        let v = GoVersion::parse("devel +abcdef");
        assert_eq!((v.major, v.minor, v.patch), (0, 0, 0));
        assert!(GoVersion::parse("go1.21.13").at_least(1, 21));
        assert!(!GoVersion::parse("go1.21.13").at_least(1, 22));
        assert!(GoVersion::parse("go1.21.13") < GoVersion::parse("go1.26.6"));
    }

    #[test]
    fn parses_section() {
        let v = parse_buildinfo(&section(2, "go1.26.6")).unwrap();
        assert_eq!(v, GoVersion::parse("go1.26.6"));
        let v = parse_buildinfo(&section(3, "go1.21.13")).unwrap();
        assert_eq!(v.minor, 21);
    }

    #[test]
    fn rejects_bad_sections() {
        let err = parse_buildinfo(&section(0, "go1.17")).unwrap_err();
        assert_eq!(err.to_string(), "Go version too old (before 1.18)");
        assert!(parse_buildinfo(b"hello").is_err());
        let mut truncated = section(2, "go1.26.6");
        truncated.truncate(HEADER_LEN + 3);
        assert!(parse_buildinfo(&truncated).is_err());
    }

    #[test]
    fn uvarint() {
        assert_eq!(read_uvarint(&[0x08]), Some((8, 1)));
        assert_eq!(read_uvarint(&[0xac, 0x02]), Some((300, 2)));
        assert_eq!(read_uvarint(&[0x80]), None);
    }
}
