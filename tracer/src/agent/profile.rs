//! `/debug/pprof/goroutine`: a watched process's goroutines as Go's own
//! goroutine profile is served (gzipped profile.proto, sample type
//! goroutine/count, one sample per stack), encoded by
//! [`crate::export::pprof`], so `go tool pprof`, Parca and Pyroscope read
//! it unchanged.

use std::time::{SystemTime, UNIX_EPOCH};

use super::watch::Sample;
use crate::export::pprof::{self, Profile};

/// The gzipped profile of `s`'s latest sample (its kept groups).
pub fn goroutines(s: &Sample) -> Vec<u8> {
    let samples = s
        .report
        .groups
        .iter()
        .map(|g| {
            let mut labels = vec![("state".to_string(), g.state.text().to_string())];
            if let Some(r) = &g.wait_reason {
                labels.push(("wait_reason".into(), r.clone()));
            }
            if g.leaked > 0 {
                labels.push(("leaked".into(), g.leaked.to_string()));
            }
            pprof::Sample {
                stack: g.stack.clone(),
                values: vec![g.count as i64],
                labels,
            }
        })
        .collect();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let mut comments = vec![format!(
        "gotrace agent: PID {} ({}, {}), read from memory without stopping it",
        s.pid, s.name, s.go_version
    )];
    if s.groups_dropped > 0 {
        comments.push(format!(
            "{} smaller groups left out (the agent's per-process bound)",
            s.groups_dropped
        ));
    }
    pprof::encode(&Profile {
        sample_types: vec![("goroutine".into(), "count".into())],
        samples,
        time_nanos: now.as_nanos() as i64,
        duration_nanos: 0,
        period_type: Some(("goroutine".into(), "count".into())),
        period: 1,
        comments,
    })
}
