//! What a run prints (one JSON line of metrics on stdout) and the
//! `report` command, which reads those lines from several runs and prints
//! one markdown table of medians and the ratios Chorus / bare (the bare
//! tokio-tungstenite server of `bench/bare`) and Chorus / Node (`bench/peer`,
//! the target named `peer`).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::stats::median;

/// A goal a metric is held to, from issues 7 and 20.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Goal {
    /// Chorus / Node peer at most this.
    RatioAtMost(f64),
    /// Chorus / Node peer at least this.
    RatioAtLeast(f64),
    /// Chorus / bare server at least this.
    BareRatioAtLeast(f64),
    /// Chorus's own value at most this.
    AtMost(f64),
}

/// One measured number.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Metric {
    /// Stable identity across runs and targets, e.g. `idle.10000.kib_per_conn`.
    pub key: String,
    /// What a reader sees in the table.
    pub label: String,
    /// Unit of `value`.
    pub unit: String,
    /// The number.
    pub value: f64,
    /// The goal, if the issue sets one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub goal: Option<Goal>,
}

impl Metric {
    /// A metric without a goal.
    pub fn new(key: impl Into<String>, label: impl Into<String>, unit: &str, value: f64) -> Self {
        Self {
            key: key.into(),
            label: label.into(),
            unit: unit.into(),
            value,
            goal: None,
        }
    }

    /// The same metric held to `goal`.
    pub fn goal(mut self, goal: Goal) -> Self {
        self.goal = Some(goal);
        self
    }
}

/// The result of one run of one scenario against one target.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunResult {
    /// `chorus`, `bare` or `peer` (Node).
    pub target: String,
    /// The scenario's name.
    pub scenario: String,
    /// What the table shows.
    pub metrics: Vec<Metric>,
    /// Everything else worth keeping (per-step numbers, errors).
    #[serde(default)]
    pub details: Value,
}

/// Medians of one metric per target, in the order metrics first appeared.
#[derive(Debug, Default)]
struct Row {
    label: String,
    unit: String,
    goal: Option<Goal>,
    /// target -> the values of its runs.
    values: BTreeMap<String, Vec<f64>>,
}

/// Reads every `RunResult` line of `inputs` (other lines are skipped) and
/// renders the markdown table.
pub fn render(inputs: &[PathBuf]) -> Result<String> {
    let mut order: Vec<String> = Vec::new();
    let mut rows: BTreeMap<String, Row> = BTreeMap::new();
    for path in inputs {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("read {}", path.display()))?;
        for line in text.lines() {
            let Ok(run) = serde_json::from_str::<RunResult>(line) else {
                continue;
            };
            for m in run.metrics {
                let row = rows.entry(m.key.clone()).or_insert_with(|| {
                    order.push(m.key.clone());
                    Row {
                        label: m.label.clone(),
                        unit: m.unit.clone(),
                        goal: m.goal,
                        ..Row::default()
                    }
                });
                row.values
                    .entry(run.target.clone())
                    .or_default()
                    .push(m.value);
            }
        }
    }
    Ok(table(&order, &rows))
}

/// The markdown table of `rows` in `order`.
fn table(order: &[String], rows: &BTreeMap<String, Row>) -> String {
    let mut out = String::new();
    out.push_str(
        "| metric | Chorus | bare (tokio-tungstenite) | Node ws (peer) | Chorus / bare | Chorus / Node | goal |\n",
    );
    out.push_str("|---|---:|---:|---:|---:|---:|---|\n");
    for key in order {
        let row = &rows[key];
        let median_of = |target: &str| row.values.get(target).map(|v| median(v));
        let chorus = median_of("chorus");
        let ratio_to = |target: &str| match (chorus, median_of(target)) {
            (Some(c), Some(p)) if p != 0.0 => Some(c / p),
            _ => None,
        };
        let (to_bare, to_node) = (ratio_to("bare"), ratio_to("peer"));
        let _ = writeln!(
            out,
            "| {} ({}) | {} | {} | {} | {} | {} | {} |",
            row.label,
            row.unit,
            cell(row.values.get("chorus")),
            cell(row.values.get("bare")),
            cell(row.values.get("peer")),
            ratio_cell(to_bare),
            ratio_cell(to_node),
            verdict(row.goal, chorus, to_bare, to_node),
        );
    }
    out
}

/// A ratio as `0.42×`, or `n/a`.
fn ratio_cell(ratio: Option<f64>) -> String {
    ratio.map_or("n/a".into(), |r| format!("{r:.2}×"))
}

/// `median [min–max]` of a target's values, or `n/a`.
fn cell(values: Option<&Vec<f64>>) -> String {
    let Some(values) = values.filter(|v| !v.is_empty()) else {
        return "n/a".into();
    };
    let m = median(values);
    if values.len() == 1 {
        return number(m);
    }
    let lo = values.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    format!("{} [{}–{}]", number(m), number(lo), number(hi))
}

/// A number with as many decimals as its size warrants.
fn number(x: f64) -> String {
    match x.abs() {
        a if a >= 1000.0 => format!("{x:.0}"),
        a if a >= 100.0 => format!("{x:.1}"),
        a if a >= 1.0 => format!("{x:.2}"),
        _ => format!("{x:.3}"),
    }
}

/// The goal and whether the medians meet it.
fn verdict(
    goal: Option<Goal>,
    chorus: Option<f64>,
    to_bare: Option<f64>,
    to_node: Option<f64>,
) -> String {
    let (text, met) = match goal {
        None => return String::new(),
        Some(Goal::RatioAtMost(g)) => (format!("≤ {g}× Node"), to_node.map(|r| r <= g)),
        Some(Goal::RatioAtLeast(g)) => (format!("≥ {g}× Node"), to_node.map(|r| r >= g)),
        Some(Goal::BareRatioAtLeast(g)) => (format!("≥ {g}× bare"), to_bare.map(|r| r >= g)),
        Some(Goal::AtMost(g)) => (format!("≤ {}", number(g)), chorus.map(|c| c <= g)),
    };
    match met {
        Some(true) => format!("{text}: met"),
        Some(false) => format!("{text}: **missed**"),
        None => format!("{text}: not measured"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(target: &str, value: f64) -> String {
        line(target, value, Goal::RatioAtMost(0.9))
    }

    fn line(target: &str, value: f64, goal: Goal) -> String {
        let metric = Metric::new("idle.kib", "idle memory", "KiB", value).goal(goal);
        serde_json::to_string(&RunResult {
            target: target.into(),
            scenario: "idle".into(),
            metrics: vec![metric],
            details: Value::Null,
        })
        .unwrap()
    }

    #[test]
    fn renders_medians_ratios_and_goals() {
        let dir = std::env::temp_dir().join(format!("loadgen-report-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("results.jsonl");
        let lines = [
            run("chorus", 5.0),
            run("chorus", 4.0),
            run("chorus", 6.0),
            run("peer", 10.0),
            "not json".into(),
        ];
        std::fs::write(&file, lines.join("\n")).unwrap();
        let table = render(&[file]).unwrap();
        assert!(
            table.contains(
                "| idle memory (KiB) | 5.00 [4.00–6.00] | n/a | 10.00 | n/a | 0.50× | ≤ 0.9× Node: met |"
            ),
            "{table}"
        );
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn holds_a_goal_against_the_bare_server() {
        let dir = std::env::temp_dir().join(format!("loadgen-report-bare-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("results.jsonl");
        let goal = Goal::BareRatioAtLeast(0.8);
        let lines = [
            line("chorus", 7.0, goal),
            line("bare", 10.0, goal),
            line("peer", 2.0, goal),
        ];
        std::fs::write(&file, lines.join("\n")).unwrap();
        let table = render(&[file]).unwrap();
        assert!(
            table.contains("| 7.00 | 10.00 | 2.00 | 0.70× | 3.50× | ≥ 0.8× bare: **missed** |"),
            "{table}"
        );
        std::fs::remove_dir_all(dir).unwrap();
    }
}
