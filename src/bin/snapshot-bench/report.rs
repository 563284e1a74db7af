//! The side-by-side table: median and minimum over the rounds for each
//! method, and Hatch's median over QEMU's own.

use std::time::Duration;

use crate::measure::Sample;
use crate::wake::WakeSample;

/// One table row's values for one method.
struct Stats {
    median: f64,
    min: f64,
}

fn stats(values: &mut [f64]) -> Stats {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    let median = match n {
        0 => f64::NAN,
        _ if n % 2 == 1 => values[n / 2],
        _ => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    };
    Stats {
        median,
        min: values.first().copied().unwrap_or(f64::NAN),
    }
}

fn millis(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

struct Row {
    label: &'static str,
    unit: &'static str,
    value: fn(&Sample) -> f64,
}

const ROWS: &[Row] = &[
    Row {
        label: "snapshot: guest paused and saved",
        unit: "ms",
        value: |s| millis(s.snapshot),
    },
    Row {
        label: "restore until running",
        unit: "ms",
        value: |s| millis(s.resumed),
    },
    Row {
        label: "restore until next heartbeat",
        unit: "ms",
        value: |s| millis(s.heartbeat),
    },
    Row {
        label: "QEMU state stream",
        unit: "MiB",
        value: |s| mib(s.state_bytes),
    },
    Row {
        label: "stored bytes",
        unit: "MiB",
        value: |s| mib(s.stored_bytes),
    },
];

fn cell(stats: &Stats, unit: &str) -> String {
    if unit == "ms" {
        format!("{:.0} (min {:.0}) {unit}", stats.median, stats.min)
    } else {
        format!("{:.1} (min {:.1}) {unit}", stats.median, stats.min)
    }
}

/// The table as Markdown, medians with minimums in brackets.
pub fn table(raw: &[Sample], hatch: &[Sample]) -> String {
    let mut out = String::from(
        "| operation | raw qemu: median (min) | hatch: median (min) | ratio hatch/raw (medians) |\n\
         |---|---|---|---|\n",
    );
    for row in ROWS {
        let mut raw_values: Vec<f64> = raw.iter().map(row.value).collect();
        let mut hatch_values: Vec<f64> = hatch.iter().map(row.value).collect();
        let raw_stats = stats(&mut raw_values);
        let hatch_stats = stats(&mut hatch_values);
        out.push_str(&format!(
            "| {} | {} | {} | {:.2}x |\n",
            row.label,
            cell(&raw_stats, row.unit),
            cell(&hatch_stats, row.unit),
            hatch_stats.median / raw_stats.median,
        ));
    }
    out
}

/// The wake table: QEMU's own load of a state against a request that wakes
/// the VM through Hatch's proxy, with Hatch's median over QEMU's.
pub fn wake_table(samples: &[WakeSample]) -> String {
    type Pick = fn(&WakeSample) -> Duration;
    let rows: [(&str, Pick, Pick); 2] = [
        ("restore until the VM runs", |s| s.raw_running, |s| s.hatch_running),
        (
            "request to first response byte",
            |s| s.raw_first_byte,
            |s| s.hatch_first_byte,
        ),
    ];
    let mut out = String::from(
        "| measure | raw qemu load: median (min) | hatch wake via proxy: median (min) | ratio hatch/raw (medians) |\n\
         |---|---|---|---|\n",
    );
    for (label, raw, hatch) in rows {
        let raw_stats = stats(&mut samples.iter().map(|s| millis(raw(s))).collect::<Vec<_>>());
        let hatch_stats = stats(&mut samples.iter().map(|s| millis(hatch(s))).collect::<Vec<_>>());
        out.push_str(&format!(
            "| {label} | {} | {} | {:.2}x |\n",
            cell(&raw_stats, "ms"),
            cell(&hatch_stats, "ms"),
            hatch_stats.median / raw_stats.median,
        ));
    }
    out
}

/// One line per round, printed as the benchmark goes.
pub fn round_line(round: usize, method: &str, s: &Sample) -> String {
    format!(
        "round {round} {method:>12}: snapshot {:.0} ms, running after {:.0} ms, heartbeat after {:.0} ms, state {:.1} MiB, stored {:.1} MiB",
        millis(s.snapshot),
        millis(s.resumed),
        millis(s.heartbeat),
        mib(s.state_bytes),
        mib(s.stored_bytes),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(stats(&mut [3.0, 1.0, 2.0]).median, 2.0);
        assert_eq!(stats(&mut [4.0, 1.0, 3.0, 2.0]).median, 2.5);
        assert_eq!(stats(&mut [4.0, 1.0, 3.0, 2.0]).min, 1.0);
    }
}
