//! What a benchmark run measured, and BENCHMARKS.md written from it: one table per workload,
//! each row's figures over the rounds, and each row's ratio to the row (or limit) it is
//! judged against, next to the goal.

use std::fmt::Write as _;

/// How a row's values are summarised.
#[derive(Clone, Copy)]
pub enum Stats {
    /// One value per round: min, median, max.
    Rounds,
    /// Many samples (e.g. one per decision): median, 95th percentile, max.
    Samples,
}

/// What a row is compared with.
#[derive(Clone)]
pub enum Against {
    /// Nothing: the row is the reference others are measured by.
    Nothing,
    /// Another row of the same table, by its label: ratio = this median ÷ that median.
    Row(&'static str),
    /// A fixed value (a limit no scheduler can beat), with its name.
    Value(f64, &'static str),
    /// The goal is a figure in the table's unit, not a ratio: the median must not exceed it.
    Absolute,
}

pub struct Row {
    pub label: String,
    pub values: Vec<f64>,
    pub against: Against,
    /// The goal for the ratio ("≤ 1.3×"), when there is one.
    pub goal: Option<f64>,
}

pub struct Table {
    pub title: String,
    /// What was run, in a sentence or two.
    pub what: String,
    pub unit: &'static str,
    pub stats: Stats,
    pub rows: Vec<Row>,
}

impl Row {
    pub fn new(label: impl Into<String>, values: Vec<f64>) -> Row {
        Row { label: label.into(), values, against: Against::Nothing, goal: None }
    }

    pub fn against(mut self, against: Against, goal: Option<f64>) -> Row {
        self.against = against;
        self.goal = goal;
        self
    }
}

fn sorted(values: &[f64]) -> Vec<f64> {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    v
}

/// The value below which `q` (0..=1) of the samples lie (nearest rank).
pub fn quantile(values: &[f64], q: f64) -> f64 {
    let v = sorted(values);
    if v.is_empty() {
        return f64::NAN;
    }
    let rank = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len());
    v[rank - 1]
}

pub fn median(values: &[f64]) -> f64 {
    let v = sorted(values);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

impl Table {
    fn median_of(&self, label: &str) -> Option<f64> {
        self.rows.iter().find(|r| r.label == label).map(|r| median(&r.values))
    }

    /// The ratio of a row to what it is compared with, and whether it meets its goal.
    fn ratio(&self, row: &Row) -> (String, String) {
        let (base, name) = match &row.against {
            Against::Nothing => return ("reference".into(), String::new()),
            Against::Absolute => {
                let goal = row.goal.map_or(String::new(), |g| {
                    let met = if median(&row.values) <= g { "met" } else { "**not met**" };
                    format!("≤ {} — {met}", figure(g, self.unit))
                });
                return ("—".into(), goal);
            }
            Against::Row(label) => match self.median_of(label) {
                Some(m) => (m, (*label).to_string()),
                None => return ("—".into(), String::new()),
            },
            Against::Value(v, name) => (*v, format!("{name} {}", figure(*v, self.unit))),
        };
        let ratio = median(&row.values) / base;
        let goal = match row.goal {
            Some(g) if ratio <= g => format!("≤ {g}× — met"),
            Some(g) => format!("≤ {g}× — **not met**"),
            None => String::new(),
        };
        (format!("{ratio:.2}× {name}"), goal)
    }

    pub fn markdown(&self) -> String {
        let mut out = format!("### {}\n\n{}\n\n", self.title, self.what);
        let columns = match self.stats {
            Stats::Rounds => ["min", "median", "max"],
            Stats::Samples => ["p50", "p95", "max"],
        };
        let _ = writeln!(out, "| | n | {} | ratio (median) | goal |", columns.join(" | "));
        out.push_str("|---|---|---|---|---|---|---|\n");
        for row in &self.rows {
            let v = sorted(&row.values);
            let figures = match self.stats {
                Stats::Rounds => [v.first().copied(), Some(median(&v)), v.last().copied()],
                Stats::Samples => [Some(quantile(&v, 0.5)), Some(quantile(&v, 0.95)), v.last().copied()],
            };
            let figures: Vec<String> =
                figures.iter().map(|f| f.map_or("—".into(), |f| figure(f, self.unit))).collect();
            let (ratio, goal) = self.ratio(row);
            let _ =
                writeln!(out, "| {} | {} | {} | {ratio} | {goal} |", row.label, v.len(), figures.join(" | "));
        }
        out
    }

    /// The rows that have a goal, as lines of the summary table: table, row, ratio, goal.
    pub fn goal_rows(&self) -> Vec<String> {
        self.rows
            .iter()
            .filter(|r| r.goal.is_some())
            .map(|row| {
                let (ratio, goal) = self.ratio(row);
                let figure = figure(median(&row.values), self.unit);
                format!("| {} | {} | {figure} | {ratio} | {goal} |", self.title, row.label)
            })
            .collect()
    }

    /// One line per row for the terminal while the suite runs.
    pub fn summary(&self) -> String {
        let mut out = format!("{}\n", self.title);
        for row in &self.rows {
            let (ratio, goal) = self.ratio(row);
            let _ = writeln!(
                out,
                "  {:<48} median {:>10}  {ratio} {goal}",
                row.label,
                figure(median(&row.values), self.unit)
            );
        }
        out
    }
}

fn figure(v: f64, unit: &str) -> String {
    if v.is_nan() {
        return "—".into();
    }
    match unit {
        "s" => format!("{v:.2} s"),
        "ms" => format!("{v:.1} ms"),
        "µs" => format!("{v:.0} µs"),
        "MiB" => format!("{v:.1} MiB"),
        other => format!("{v:.2} {other}"),
    }
}
