//! Per-creation-site accounting, for growth (leak pattern 10).

/// A creation site: the goroutine's start function and its `go` statement.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SiteKey {
    pub startpc: u64,
    pub gopc: u64,
}

#[derive(Clone, Debug, Default)]
pub struct SiteStats {
    /// Goroutines created here during the trace.
    pub created: u64,
    /// Goroutines from this site that exited during the trace.
    pub exited: u64,
    /// Live goroutines from this site (seen or created) right now.
    pub live: u64,
    /// (seconds since trace start, live count) sampled about once a second.
    pub samples: Vec<(f64, u64)>,
}

impl SiteStats {
    /// Least-squares slope of the live count over time, goroutines/second.
    pub fn live_slope(&self) -> Option<f64> {
        let n = self.samples.len();
        if n < 3 {
            return None;
        }
        let nf = n as f64;
        let (sx, sy) = self
            .samples
            .iter()
            .fold((0.0, 0.0), |(sx, sy), (x, y)| (sx + x, sy + *y as f64));
        let (mx, my) = (sx / nf, sy / nf);
        let (mut num, mut den) = (0.0, 0.0);
        for (x, y) in &self.samples {
            num += (x - mx) * (*y as f64 - my);
            den += (x - mx) * (x - mx);
        }
        (den > 0.0).then(|| num / den)
    }

    /// Fraction of consecutive samples where the live count did not drop.
    pub fn monotonic_fraction(&self) -> f64 {
        if self.samples.len() < 2 {
            return 0.0;
        }
        let ups = self.samples.windows(2).filter(|w| w[1].1 >= w[0].1).count();
        ups as f64 / (self.samples.len() - 1) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slope_of_linear_growth() {
        let s = SiteStats {
            samples: (0..10).map(|i| (i as f64, 5 * i as u64)).collect(),
            ..Default::default()
        };
        assert!((s.live_slope().unwrap() - 5.0).abs() < 1e-9);
        assert_eq!(s.monotonic_fraction(), 1.0);
        let flat = SiteStats {
            samples: vec![(0.0, 3), (1.0, 3), (2.0, 3)],
            ..Default::default()
        };
        assert_eq!(flat.live_slope(), Some(0.0));
    }
}
