//! The result: a Markdown table of every measured line and the skipped
//! rows with their reasons, and the `--json` object keyed by issue #13's
//! rows (`null` plus `skipped.<key>` for a row that has no value).

use serde_json::{Map, Value};

use crate::rows::{Row, Skip};
use crate::stats::{summary, Comparison, Summary};

pub struct Outcome {
    pub row: Row,
    pub result: Result<Vec<Comparison>, Skip>,
}

fn cell(s: &Summary, unit: &str) -> String {
    let digits = if s.median.abs() >= 100.0 {
        0
    } else if s.median.abs() >= 10.0 {
        1
    } else {
        2
    };
    format!("{:.digits$} ({:.digits$}-{:.digits$}) {unit}", s.median, s.min, s.max)
}

pub fn table(outcomes: &[Outcome], rounds: usize) -> String {
    let mut out = format!(
        "\n{rounds} rounds; cells are median (min-max) over the rounds; ratio = Hatch's median / the baseline's\n\n\
         | key | measure | baseline | baseline: median (min-max) | hatch: median (min-max) | ratio / value |\n\
         |---|---|---|---|---|---|\n"
    );
    let mut skipped = String::new();
    for outcome in outcomes {
        match &outcome.result {
            Ok(lines) => {
                for line in lines {
                    let hatch = cell(&summary(&line.hatch), line.unit);
                    let (baseline, value) = match &line.baseline {
                        Some(values) => (cell(&summary(values), line.unit), format!("{:.2}x", line.value())),
                        None => ("-".into(), format!("{:.3} {}", line.value(), line.unit)),
                    };
                    out.push_str(&format!(
                        "| {} | {} | {} | {baseline} | {hatch} | {value} |\n",
                        line.key.unwrap_or("-"),
                        line.label,
                        line.baseline_name,
                    ));
                }
            }
            Err(skip) => skipped.push_str(&format!(
                "- {} ({}): {}\n",
                outcome.row.name(),
                outcome.row.keys().join(", "),
                skip.reason()
            )),
        }
    }
    if !skipped.is_empty() {
        out.push_str("\nSkipped:\n");
        out.push_str(&skipped);
    }
    out
}

/// Rounded so that the object stays readable.
fn number(value: f64) -> Value {
    let rounded = (value * 1000.0).round() / 1000.0;
    serde_json::Number::from_f64(rounded).map_or(Value::Null, Value::Number)
}

pub fn json(outcomes: &[Outcome]) -> Value {
    let mut object = Map::new();
    let mut skipped = Map::new();
    for row in Row::ALL {
        let outcome = outcomes.iter().find(|o| o.row == row);
        for &key in row.keys() {
            let measured = match outcome.map(|o| &o.result) {
                Some(Ok(lines)) => lines
                    .iter()
                    .find(|line| line.key == Some(key))
                    .map(|line| number(line.value()))
                    .ok_or_else(|| "not measured".to_string()),
                Some(Err(skip)) => Err(skip.reason()),
                None => Err("not run: the benchmark was interrupted".into()),
            };
            match measured {
                Ok(value) if !value.is_null() => {
                    object.insert(key.into(), value);
                }
                Ok(_) => {
                    object.insert(key.into(), Value::Null);
                    skipped.insert(key.into(), "no finite value (a median was 0 or missing)".into());
                }
                Err(reason) => {
                    object.insert(key.into(), Value::Null);
                    skipped.insert(key.into(), reason.into());
                }
            }
        }
    }
    object.insert("skipped".into(), Value::Object(skipped));
    Value::Object(object)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_is_present_with_a_value_or_a_reason() {
        let mut line = Comparison::new(Some("api_list_p99_ms"), "GET /vms p99", "ms", "-");
        line.baseline = None;
        line.push(0.5, 0.0);
        let outcomes = vec![Outcome {
            row: Row::ApiList,
            result: Ok(vec![line]),
        }];
        let json = json(&outcomes);
        assert_eq!(json["api_list_p99_ms"], 0.5);
        for row in Row::ALL.into_iter().filter(|r| *r != Row::ApiList) {
            for key in row.keys() {
                assert!(json[key].is_null(), "{key}");
                assert!(json["skipped"][key].is_string(), "{key}");
            }
        }
    }
}
