//! The pprof format: `profile.proto`
//! (<https://github.com/google/pprof/blob/main/proto/profile.proto>),
//! gzip-compressed, as `go tool pprof` reads it.
//!
//! The protobuf encoding is hand-written for the subset of the schema used:
//! varints and length-delimited fields, repeated scalars packed, zero scalars
//! omitted (proto3 defaults). Functions are deduplicated by (name, file) and
//! locations by (function, line), one location per (possibly inlined) frame,
//! with no address. Every location is in one dummy mapping marked as already
//! symbolized, so pprof neither tries to symbolize nor warns "Main binary
//! filename not available". IDs and the string table follow first appearance,
//! so equal profiles encode to equal bytes.

use std::collections::HashMap;
use std::io::Write as _;

use flate2::Compression;
use flate2::write::GzEncoder;

use crate::gobin::symbolize::Frame;

/// One stack with its values.
pub struct Sample {
    /// Innermost first (as gotrace stores stacks).
    pub stack: Vec<Frame>,
    /// One value per sample type.
    pub values: Vec<i64>,
    /// String labels (e.g. ("wait_reason", "chan receive"), ("pattern", "chan_send")).
    pub labels: Vec<(String, String)>,
}

/// A profile to encode.
pub struct Profile {
    /// (type, unit), e.g. ("goroutine", "count") or ("delay", "nanoseconds").
    /// No default sample type is written: pprof shows the last one unless
    /// told otherwise (`-sample_index`).
    pub sample_types: Vec<(String, String)>,
    pub samples: Vec<Sample>,
    pub time_nanos: i64,
    pub duration_nanos: i64,
    pub period_type: Option<(String, String)>,
    pub period: i64,
    pub comments: Vec<String>,
}

/// profile.proto, gzip-compressed: what `go tool pprof` reads.
pub fn encode(profile: &Profile) -> Vec<u8> {
    let raw = encode_raw(profile);
    let mut gz = GzEncoder::new(Vec::with_capacity(raw.len() / 2), Compression::default());
    // Writing to a Vec cannot fail.
    gz.write_all(&raw).expect("gzip into memory");
    gz.finish().expect("gzip into memory")
}

const WIRE_VARINT: u32 = 0;
const WIRE_LEN: u32 = 2;

/// The one (dummy) mapping's id.
const MAPPING_ID: u64 = 1;

/// A protobuf message being written. Field numbers are profile.proto's.
#[derive(Default)]
struct Msg(Vec<u8>);

impl Msg {
    fn varint(&mut self, mut v: u64) {
        while v >= 0x80 {
            self.0.push((v as u8) | 0x80);
            v >>= 7;
        }
        self.0.push(v as u8);
    }

    fn key(&mut self, field: u32, wire: u32) {
        self.varint(u64::from((field << 3) | wire));
    }

    /// A uint64 field (omitted when zero, the proto3 default).
    fn uint(&mut self, field: u32, v: u64) {
        if v != 0 {
            self.key(field, WIRE_VARINT);
            self.varint(v);
        }
    }

    /// An int64 field: negative values take ten bytes, as protobuf wants.
    fn int(&mut self, field: u32, v: i64) {
        self.uint(field, v as u64);
    }

    fn bytes(&mut self, field: u32, data: &[u8]) {
        self.key(field, WIRE_LEN);
        self.varint(data.len() as u64);
        self.0.extend_from_slice(data);
    }

    fn msg(&mut self, field: u32, m: &Msg) {
        self.bytes(field, &m.0);
    }

    /// A packed repeated uint64/int64 field (omitted when empty).
    fn packed(&mut self, field: u32, values: impl IntoIterator<Item = u64>) {
        let mut inner = Msg::default();
        values.into_iter().for_each(|v| inner.varint(v));
        if !inner.0.is_empty() {
            self.msg(field, &inner);
        }
    }
}

/// The string table: index 0 is "".
struct Strings {
    table: Vec<String>,
    index: HashMap<String, i64>,
}

impl Strings {
    fn intern(&mut self, s: &str) -> i64 {
        if let Some(&i) = self.index.get(s) {
            return i;
        }
        let i = self.table.len() as i64;
        self.table.push(s.to_string());
        self.index.insert(s.to_string(), i);
        i
    }

    /// A ValueType message.
    fn value_type(&mut self, (ty, unit): &(String, String)) -> Msg {
        let mut m = Msg::default();
        m.int(1, self.intern(ty)); // type
        m.int(2, self.intern(unit)); // unit
        m
    }
}

/// The uncompressed Profile message.
fn encode_raw(profile: &Profile) -> Vec<u8> {
    let mut strings = Strings {
        table: vec![String::new()],
        index: HashMap::from([(String::new(), 0)]),
    };
    let mut out = Msg::default();
    for st in &profile.sample_types {
        out.msg(1, &strings.value_type(st)); // sample_type
    }

    // (name, file) -> Function.id; (Function.id, line) -> Location.id.
    let mut functions: HashMap<(&str, Option<&str>), u64> = HashMap::new();
    let mut locations: HashMap<(u64, u32), u64> = HashMap::new();
    let (mut functions_out, mut locations_out) = (Msg::default(), Msg::default());
    for sample in &profile.samples {
        let mut ids = Vec::with_capacity(sample.stack.len());
        for frame in &sample.stack {
            let next_id = functions.len() as u64 + 1;
            let key = (frame.function.as_str(), frame.file.as_deref());
            let function_id = *functions.entry(key).or_insert_with(|| {
                let name = strings.intern(&frame.function);
                let mut f = Msg::default();
                f.uint(1, next_id); // id
                f.int(2, name); // name
                f.int(3, name); // system_name
                f.int(4, strings.intern(frame.file.as_deref().unwrap_or(""))); // filename
                functions_out.msg(5, &f); // Profile.function
                next_id
            });
            let next_id = locations.len() as u64 + 1;
            let key = (function_id, frame.line);
            ids.push(*locations.entry(key).or_insert_with(|| {
                let mut line = Msg::default();
                line.uint(1, function_id); // function_id
                line.int(2, i64::from(frame.line)); // line
                let mut l = Msg::default();
                l.uint(1, next_id); // id
                l.uint(2, MAPPING_ID); // mapping_id
                l.msg(4, &line); // line
                locations_out.msg(4, &l); // Profile.location
                next_id
            }));
        }
        let mut s = Msg::default();
        s.packed(1, ids); // location_id
        s.packed(2, sample.values.iter().map(|&v| v as u64)); // value
        for (key, value) in &sample.labels {
            let mut label = Msg::default();
            label.int(1, strings.intern(key)); // key
            label.int(2, strings.intern(value)); // str
            s.msg(3, &label); // label
        }
        out.msg(2, &s); // sample
    }
    if !locations.is_empty() {
        let mut m = Msg::default();
        m.uint(1, MAPPING_ID); // id
        (7..=9).for_each(|field| m.uint(field, 1)); // has_{functions,filenames,line_numbers}
        out.msg(3, &m); // mapping
    }
    out.0.extend_from_slice(&locations_out.0);
    out.0.extend_from_slice(&functions_out.0);

    // Intern the remaining strings before writing the table.
    let period_type = profile
        .period_type
        .as_ref()
        .map(|pt| strings.value_type(pt));
    let comments: Vec<i64> = profile.comments.iter().map(|c| strings.intern(c)).collect();
    for s in &strings.table {
        out.bytes(6, s.as_bytes()); // string_table
    }
    out.int(9, profile.time_nanos); // time_nanos
    out.int(10, profile.duration_nanos); // duration_nanos
    if let Some(pt) = &period_type {
        out.msg(11, pt); // period_type
    }
    out.int(12, profile.period); // period
    out.packed(13, comments.into_iter().map(|c| c as u64)); // comment
    out.0
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::process::Command;

    use super::*;
    use crate::gobin::testutil::{find_go, tools_dir};

    fn frame(function: &str, file: Option<&str>, line: u32) -> Frame {
        let (function, file) = (function.to_string(), file.map(str::to_string));
        Frame {
            function,
            file,
            line,
        }
    }

    fn pairs(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        let owned = |(a, b): &(&str, &str)| (a.to_string(), b.to_string());
        pairs.iter().map(owned).collect()
    }

    /// main.leak → runtime.chanrecv1 → runtime.gopark with `values[0]` and
    /// main.other → runtime.selectgo → runtime.gopark with `values[1]`.
    fn profile(types: &[(&str, &str)], values: [Vec<i64>; 2]) -> Profile {
        let park = frame("runtime.gopark", Some("/go/src/runtime/proc.go"), 435);
        let stacks = [
            [
                park.clone(),
                frame("runtime.chanrecv1", Some("/go/src/runtime/chan.go"), 506),
                frame("main.leak", Some("/src/app/main.go"), 12),
            ],
            [
                park,
                frame("runtime.selectgo", Some("/go/src/runtime/select.go"), 351),
                frame("main.other", Some("/src/app/main.go"), 20),
            ],
        ];
        let labels = [
            pairs(&[("wait_reason", "chan receive"), ("pattern", "chan_recv")]),
            pairs(&[("wait_reason", "select")]),
        ];
        let samples =
            (stacks.into_iter().zip(values).zip(labels)).map(|((stack, values), labels)| Sample {
                stack: stack.to_vec(),
                values,
                labels,
            });
        Profile {
            sample_types: pairs(types),
            samples: samples.collect(),
            time_nanos: 1_700_000_000_000_000_000,
            duration_nanos: 2_500_000_000,
            period_type: None,
            period: 0,
            comments: vec!["gotrace test".to_string()],
        }
    }

    /// Runs the real `go tool pprof <args> <profile>` and returns its stdout.
    fn pprof(profile: &Profile, args: &[&str]) -> String {
        let go = find_go("1.26").expect("Go 1.26 not installed");
        // `$GOTRACE_TOOLS/go-<version>/bin/go`: pprof is built into that cache.
        let toolchain = go.parent().and_then(Path::parent).and_then(Path::file_name);
        let version = toolchain.and_then(|n| n.to_str()).unwrap_or("go-unknown");
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("profile.pb.gz");
        std::fs::write(&file, encode(profile)).unwrap();
        let output = Command::new(&go)
            .args(["tool", "pprof"])
            .args(args)
            .arg(&file)
            .env("GOTOOLCHAIN", "local")
            .env("GOPROXY", "off")
            .env("GOFLAGS", "-buildvcs=false")
            .env(
                "GOCACHE",
                tools_dir().join(version.replacen("go-", "gocache-", 1)),
            )
            .env("GOPATH", tools_dir().join("gopath"))
            .env("HOME", dir.path())
            .env("PPROF_TMPDIR", dir.path())
            .output()
            .expect("run go tool pprof");
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            output.status.success(),
            "pprof {args:?}: {}\n{stderr}",
            output.status
        );
        // pprof warns on stderr (e.g. "Main binary filename not available.").
        assert_eq!(stderr.trim(), "", "pprof {args:?} stderr");
        eprintln!("--- go tool pprof {args:?}\n{stdout}");
        stdout
    }

    /// Lines with runs of spaces collapsed, blank ones dropped.
    fn lines(text: &str) -> Vec<String> {
        let collapse = |l: &str| l.split_whitespace().collect::<Vec<_>>().join(" ");
        text.lines()
            .map(collapse)
            .filter(|l| !l.is_empty())
            .collect()
    }

    /// Asserts the lines of `want` are consecutive lines of `out`, ignoring
    /// the amount of white space.
    fn assert_block(out: &str, want: &str) {
        let want = lines(want);
        let found = lines(out).windows(want.len()).any(|w| w == want);
        assert!(found, "missing {want:#?} in:\n{out}");
    }

    const SEP: &str = "-----------+-------------------------------------------------------";

    #[test]
    fn one_sample_type() {
        let p = profile(&[("goroutine", "count")], [vec![3], vec![1]]);
        assert_eq!(encode(&p), encode(&p));
        let top = pprof(&p, &["-top"]);
        assert_block(
            &top,
            "
            gotrace test
            Type: goroutine
            Time: 2023-11-14 22:13:20 UTC
            Duration: 2.50s, Total samples = 4
            Showing nodes accounting for 4, 100% of 4 total
                  flat  flat%   sum%        cum   cum%
                     4   100%   100%          4   100%  runtime.gopark
                     0     0%   100%          3 75.00%  main.leak
                     0     0%   100%          1 25.00%  main.other
                     0     0%   100%          3 75.00%  runtime.chanrecv1
                     0     0%   100%          1 25.00%  runtime.selectgo
        ",
        );
        let traces = pprof(&p, &["-traces", "-lines"]);
        assert_block(
            &traces,
            &format!(
                "
            {SEP}
               pattern:  chan_recv
            wait_reason:  chan receive
                     3   runtime.gopark /go/src/runtime/proc.go:435
                         runtime.chanrecv1 /go/src/runtime/chan.go:506
                         main.leak /src/app/main.go:12
            {SEP}
            wait_reason:  select
                     1   runtime.gopark /go/src/runtime/proc.go:435
                         runtime.selectgo /go/src/runtime/select.go:351
                         main.other /src/app/main.go:20
            {SEP}
        "
            ),
        );
        // runtime.gopark is one location, shared by both samples.
        let raw = pprof(&p, &["-raw"]);
        assert_block(
            &raw,
            "
            Samples:
            goroutine/count
                      3: 1 2 3
                            pattern:[chan_recv] wait_reason:[chan receive]
                      1: 1 4 5
                            wait_reason:[select]
            Locations
                 1: 0x0 M=1 runtime.gopark /go/src/runtime/proc.go:435:0 s=0
                 2: 0x0 M=1 runtime.chanrecv1 /go/src/runtime/chan.go:506:0 s=0
                 3: 0x0 M=1 main.leak /src/app/main.go:12:0 s=0
                 4: 0x0 M=1 runtime.selectgo /go/src/runtime/select.go:351:0 s=0
                 5: 0x0 M=1 main.other /src/app/main.go:20:0 s=0
            Mappings
            1: 0x0/0x0/0x0   [FN][FL][LN]
        ",
        );
    }

    #[test]
    fn two_sample_types() {
        let types = [("goroutine", "count"), ("delay", "nanoseconds")];
        let mut p = profile(&types, [vec![3, 1_500_000_000], vec![1, 2_000]]);
        p.period_type = Some(("goroutine".into(), "count".into()));
        p.period = 1;
        // A leaf frame with neither file nor line.
        p.samples[1].stack.insert(0, frame("main.nofile", None, 0));
        let delay = pprof(&p, &["-top", "-sample_index=delay"]);
        assert_block(
            &delay,
            "
            Type: delay
            Time: 2023-11-14 22:13:20 UTC
            Duration: 2.50s, Total samples = 1.50s (60.00%)
            Showing nodes accounting for 1.50s, 100% of 1.50s total
            Dropped 3 nodes (cum <= 0.01s)
                  flat  flat%   sum%        cum   cum%
                 1.50s   100%   100%      1.50s   100%  runtime.gopark
                     0     0%   100%      1.50s   100%  main.leak
                     0     0%   100%      1.50s   100%  runtime.chanrecv1
        ",
        );
        // Without -sample_index pprof shows the last sample type.
        assert_eq!(pprof(&p, &["-top"]), delay);
        let traces = pprof(&p, &["-traces", "-sample_index=delay"]);
        assert_block(
            &traces,
            &format!(
                "
            {SEP}
            wait_reason:  select
                   2us   main.nofile
                         runtime.gopark
                         runtime.selectgo
                         main.other
            {SEP}
        "
            ),
        );
        let count = pprof(&p, &["-top", "-sample_index=goroutine"]);
        assert_block(
            &count,
            "
            Type: goroutine
            Time: 2023-11-14 22:13:20 UTC
            Duration: 2.50s, Total samples = 4
            Showing nodes accounting for 4, 100% of 4 total
                  flat  flat%   sum%        cum   cum%
                     3 75.00% 75.00%          4   100%  runtime.gopark
                     1 25.00%   100%          1 25.00%  main.nofile
                     0     0%   100%          3 75.00%  main.leak
        ",
        );
        let raw = pprof(&p, &["-raw"]);
        assert_block(
            &raw,
            "
            PeriodType: goroutine count
            Period: 1
        ",
        );
        assert_block(
            &raw,
            "
            goroutine/count delay/nanoseconds
                      3 1500000000: 1 2 3
                            pattern:[chan_recv] wait_reason:[chan receive]
                      1 2000: 4 1 5 6
        ",
        );
        assert_block(&raw, "4: 0x0 M=1 main.nofile :0:0 s=0");
    }
}
