use super::*;

const MS: u64 = 1_000_000;

fn reading(at_ms: u64, cpu_ms: u64, hits: &[(Program, u64)]) -> Reading {
    Reading {
        at_ns: at_ms * MS,
        hits: hits.iter().copied().collect(),
        cpu_ns: Some(cpu_ms * MS),
    }
}

fn budget(max: Option<f64>) -> Budget {
    let cal = Calibration {
        hit_ns: 5_000.0,
        min_ns: 4_000.0,
        max_ns: 6_000.0,
        hits: 2000,
    };
    Budget::new(max, Ok(cal), ProbeGroup::ALL.to_vec())
}

#[test]
fn calibration_is_the_median_batch_less_the_bare_calls() {
    let n = BATCH as f64;
    let c = calibration(
        &[100.0, 90.0, 110.0],
        &[100.0 + 4e3 * n, 100.0 + 5e3 * n, 100.0 + 9e3 * n],
    );
    assert_eq!((c.hit_ns, c.min_ns, c.max_ns), (5e3, 4e3, 9e3));
    assert_eq!(c.hits, 3 * BATCH);
}

#[test]
fn hottest_groups_go_first_until_the_rest_fits() {
    use Program::*;
    let mut b = budget(Some(3.0));
    assert!(b.check(reading(0, 0, &[]), 0.0).is_empty());
    // 10 ms: the target used 20 ms of CPU, of which the probes 2000 park
    // and ready hits (10 ms), 100 creations and exits (0.5 ms) and 10
    // context hits (0.05 ms): 10.55 ms added to 9.45 ms of its own.
    let now = reading(
        10,
        20,
        &[
            (GoPark, 1000),
            (GoReady, 1000),
            (GoNewproc1Ret, 50),
            (GoExit, 50),
            (GoCtxCreate, 10),
        ],
    );
    let shed = b.check(now, 0.01);
    assert_eq!(shed, vec![ProbeGroup::Parks, ProbeGroup::Lifecycle]);
    let s = &b.report.shed[0];
    assert_eq!((s.probes.as_str(), s.hits_per_s), ("park/ready", 200_000.0));
    assert!((s.cost_pct - 100.0 * 10.0 / 9.45).abs() < 0.01, "{s:?}");
    assert!((b.report.peak_pct - 100.0 * 10.55 / 9.45).abs() < 0.01);
    assert_eq!(b.attached(), &[ProbeGroup::Contexts, ProbeGroup::Timers]);
    assert_eq!(b.next_check(), FIRST_CHECK * 2);
}

#[test]
fn creations_never_go_before_parks() {
    use Program::*;
    let mut b = budget(Some(3.0));
    b.check(reading(0, 0, &[]), 0.0);
    let shed = b.check(
        reading(
            10,
            20,
            &[(GoNewproc1Ret, 1000), (GoExit, 1000), (GoPark, 10)],
        ),
        0.01,
    );
    assert_eq!(shed, vec![ProbeGroup::Parks, ProbeGroup::Lifecycle]);
}

#[test]
fn a_few_hits_keep_the_window_open_and_an_idle_target_has_a_floor() {
    use Program::*;
    let mut b = budget(Some(3.0));
    b.check(reading(0, 0, &[]), 0.0);
    // 20 hits in 10 ms of an idle target: 0.1 ms, not evidence yet.
    assert!(b.check(reading(10, 0, &[(GoPark, 20)]), 0.01).is_empty());
    assert_eq!(b.report.peak_pct, 0.0);
    // 400 hits/s over a second: 2 ms of a floor of 100 ms, 2 %: kept.
    assert!(b.check(reading(1000, 1, &[(GoPark, 400)]), 1.0).is_empty());
    assert!(
        (b.report.peak_pct - 2.0).abs() < 0.01,
        "{}",
        b.report.peak_pct
    );
    b.finish(reading(1000, 1, &[(GoPark, 400)]));
    assert_eq!(b.report.hits, 400);
    assert!((b.report.added_cpu_ms - 2.0).abs() < 1e-9);
    let g = &b.report.groups;
    assert_eq!(
        (g.len(), g[0].probes.as_str(), g[0].hits),
        (1, "park/ready", 400)
    );
    assert_eq!(g[0].pct, 2.0);
}

#[test]
fn full_tracing_estimates_and_sheds_nothing() {
    let mut b = budget(None);
    b.check(reading(0, 0, &[]), 0.0);
    let shed = b.check(reading(10, 20, &[(Program::GoPark, 2000)]), 0.01);
    assert!(shed.is_empty() && b.report.shed.is_empty());
    assert!((b.report.peak_pct - 100.0).abs() < 0.01);
    // Without a calibration nothing is estimated.
    let mut b = Budget::new(Some(3.0), Err("no".into()), ProbeGroup::ALL.to_vec());
    b.check(reading(0, 0, &[]), 0.0);
    assert!(
        b.check(reading(10, 20, &[(Program::GoPark, 2000)]), 0.01)
            .is_empty()
    );
    assert_eq!(b.report.hit_cost_us, None);
}
