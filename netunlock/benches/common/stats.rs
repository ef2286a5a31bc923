//! Small statistics for the timing benchmarks: median, trimmed mean and Welch's two-sample t-test.
//! Shared by `benches/timing.rs` (in process) and `examples/nkpu_load.rs --timing` (over the network)
//! through `#[path]`.

/// Welch's |t| above which two timing distributions count as distinguishable. 4.5 is the threshold
/// dudect uses ("definitely not constant time"); below it the difference is within the noise.
pub const T_THRESHOLD: f64 = 4.5;

/// Summary of one class of samples (nanoseconds).
#[derive(Debug, Clone, Copy)]
pub struct Summary {
    pub n: usize,
    pub median: f64,
    pub trimmed_mean: f64,
    pub mean: f64,
    pub var: f64,
}

/// Median, 10 %-trimmed mean, mean and variance; the variance is taken over the same trimmed set so
/// one preemption by another process does not swamp the test.
pub fn summarise(samples: &[f64]) -> Summary {
    let mut v = samples.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n == 0 {
        return Summary {
            n,
            median: 0.0,
            trimmed_mean: 0.0,
            mean: 0.0,
            var: 0.0,
        };
    }
    let median = v[n / 2];
    let cut = n / 10;
    let trimmed = &v[cut..n - cut];
    let tm = trimmed.iter().sum::<f64>() / trimmed.len() as f64;
    let var =
        trimmed.iter().map(|x| (x - tm).powi(2)).sum::<f64>() / (trimmed.len().max(2) - 1) as f64;
    Summary {
        n: trimmed.len(),
        median,
        trimmed_mean: tm,
        mean: tm,
        var,
    }
}

/// Welch's t statistic between two summaries (over their trimmed sets).
pub fn welch_t(a: &Summary, b: &Summary) -> f64 {
    let se = (a.var / a.n.max(1) as f64 + b.var / b.n.max(1) as f64).sqrt();
    if se == 0.0 {
        0.0
    } else {
        (a.mean - b.mean) / se
    }
}

/// One printed row: class name, median and trimmed mean in µs, t against the reference class.
pub fn row(name: &str, s: &Summary, reference: &Summary) -> String {
    let t = welch_t(s, reference);
    format!(
        "| {name} | {} | {:.1} | {:.1} | {t:+.2} | {} |",
        s.n,
        s.median / 1000.0,
        s.trimmed_mean / 1000.0,
        if t.abs() > T_THRESHOLD {
            "DISTINGUISHABLE"
        } else {
            "not distinguishable"
        }
    )
}

pub const HEADER: &str = "| class | samples (trimmed) | median µs | trimmed mean µs | Welch t vs valid | verdict |\n|---|---|---|---|---|---|";
