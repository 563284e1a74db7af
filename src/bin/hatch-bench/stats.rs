//! Median, minimum and maximum over the rounds, and one line of the result:
//! Hatch next to its baseline with the ratio of their medians.

use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Summary {
    pub median: f64,
    pub min: f64,
    pub max: f64,
}

pub fn summary(values: &[f64]) -> Summary {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len();
    let median = match n {
        0 => f64::NAN,
        _ if n % 2 == 1 => sorted[n / 2],
        _ => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    };
    Summary {
        median,
        min: sorted.first().copied().unwrap_or(f64::NAN),
        max: sorted.last().copied().unwrap_or(f64::NAN),
    }
}

pub fn millis(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// The `q`-quantile (0..=1) of `samples`, in milliseconds.
pub fn quantile_ms(samples: &[Duration], q: f64) -> f64 {
    let mut sorted = samples.to_vec();
    sorted.sort();
    if sorted.is_empty() {
        return f64::NAN;
    }
    let index = ((sorted.len() - 1) as f64 * q).round() as usize;
    millis(sorted[index.min(sorted.len() - 1)])
}

/// One line of the result table: one value per round for Hatch and for
/// its baseline.
#[derive(Debug, Clone)]
pub struct Comparison {
    /// The JSON key this line answers, if it is one of issue #13's rows;
    /// other lines are context (e.g. restore from the stored artefact).
    pub key: Option<&'static str>,
    pub label: String,
    pub unit: &'static str,
    pub hatch: Vec<f64>,
    /// `None`: the target is absolute (GET /vms p99), so the value is
    /// Hatch's median itself.
    pub baseline: Option<Vec<f64>>,
    /// What the baseline is, for the table.
    pub baseline_name: &'static str,
}

impl Comparison {
    pub fn new(
        key: Option<&'static str>,
        label: impl Into<String>,
        unit: &'static str,
        baseline_name: &'static str,
    ) -> Self {
        Comparison {
            key,
            label: label.into(),
            unit,
            hatch: Vec::new(),
            baseline: Some(Vec::new()),
            baseline_name,
        }
    }

    /// Records one round.
    pub fn push(&mut self, hatch: f64, baseline: f64) {
        self.hatch.push(hatch);
        if let Some(values) = &mut self.baseline {
            values.push(baseline);
        }
    }

    /// Hatch's median over the baseline's, or Hatch's median alone.
    pub fn value(&self) -> f64 {
        let hatch = summary(&self.hatch).median;
        match &self.baseline {
            Some(baseline) => hatch / summary(baseline).median,
            None => hatch,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_min_max_of_odd_and_even_counts() {
        assert_eq!(summary(&[3.0, 1.0, 2.0]).median, 2.0);
        let even = summary(&[4.0, 1.0, 3.0, 2.0]);
        assert_eq!((even.median, even.min, even.max), (2.5, 1.0, 4.0));
    }

    #[test]
    fn ratio_is_of_the_medians() {
        let mut c = Comparison::new(Some("x"), "x", "ms", "raw");
        for (h, b) in [(2.0, 1.0), (4.0, 2.0), (100.0, 3.0)] {
            c.push(h, b);
        }
        assert_eq!(c.value(), 2.0);
    }
}
