//! `table`: gather metrics from `evaluate` stages into a paper's table layout, beside the
//! published values.
//!
//! ```yaml
//! table2:
//!   kind: table
//!   from: [evaluate]
//!   title: "Table 2. Evaluation of the pipeline"
//!   rows:
//!     - { label: Sliced Wasserstein Distance, metric: swd.average }
//!     - { label: MSSSIM, metric: ms_ssim_diversity }
//!   columns:
//!     - { label: Progressive GAN, set: faces64 }
//!     - { label: SRGAN, set: faces256 }
//!   published:
//!     Sliced Wasserstein Distance: [240.65, 381.86]
//!     MSSSIM: [0.1592, 0.1698]
//! ```
//!
//! Writes `table.md`, `table.csv`, `table.html` (with the sample grids and plots of the
//! stages it read), `metrics.json` (the cells, for `gantry metrics`) and `report.md`.
//! A metric that is `{mean, std}` shows as `mean ± std`.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::{ArtifactType, Checked, InputSlot, ParamsError, StageContext, StageError, StageKind};

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct TableParams {
    /// Printed above the table.
    #[serde(default)]
    pub title: Option<String>,
    /// One row per metric: its label and its path in each set's metrics (e.g.
    /// `swd.average`, `ms_ssim_diversity`).
    pub rows: Vec<Row>,
    /// One column per image set: its label and the set's name in the metrics (the
    /// stage instance that produced the images, e.g. `faces64` or `train[lr=0.01]`).
    pub columns: Vec<Column>,
    /// Published values by row label, one per column: a number, or text such as
    /// `"2.127 ± 0.263"` (its first number is compared).
    #[serde(default)]
    pub published: BTreeMap<String, Vec<serde_json::Value>>,
    /// Decimal places shown (default 4).
    #[serde(default = "default_digits")]
    pub digits: usize,
}

fn default_digits() -> usize {
    4
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct Row {
    pub label: String,
    pub metric: String,
    /// Leave the row out, with a note in the log, when no column's set has the metric
    /// (e.g. the Inception Score of a pipeline run without Inception-v3 weights).
    #[serde(default)]
    pub optional: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct Column {
    pub label: String,
    pub set: String,
}

pub struct TableKind;

const INPUTS: &[InputSlot] = &[InputSlot {
    key: "from",
    accepts: &[ArtifactType::Metrics],
    many: true,
    required: true,
}];

impl StageKind for TableKind {
    fn name(&self) -> &'static str {
        "table"
    }
    fn version(&self) -> u32 {
        1
    }
    fn summary(&self) -> &'static str {
        "lay metrics out as a paper's table, beside the published values"
    }
    fn inputs(&self) -> &'static [InputSlot] {
        INPUTS
    }
    fn output(&self) -> ArtifactType {
        ArtifactType::Report
    }
    fn params_schema(&self) -> schemars::Schema {
        schemars::schema_for!(TableParams)
    }
    fn check(
        &self,
        params: serde_json::Value,
        _base_dir: &std::path::Path,
    ) -> Result<Checked, ParamsError> {
        let (p, canonical) = crate::params::from_value::<TableParams>(params)?;
        if p.rows.is_empty() {
            return Err(ParamsError::invalid(
                &["rows"],
                "a table needs at least one row",
            ));
        }
        if p.columns.is_empty() {
            return Err(ParamsError::invalid(
                &["columns"],
                "a table needs at least one column",
            ));
        }
        for (label, values) in &p.published {
            if !p.rows.iter().any(|r| &r.label == label) {
                let rows: Vec<&str> = p.rows.iter().map(|r| r.label.as_str()).collect();
                return Err(ParamsError::Invalid {
                    path: vec!["published".into(), label.clone()],
                    message: format!("`{label}` is not a row; rows: {}", rows.join(", ")),
                });
            }
            if values.len() != p.columns.len() {
                return Err(ParamsError::Invalid {
                    path: vec!["published".into(), label.clone()],
                    message: format!(
                        "{} published values for {} columns",
                        values.len(),
                        p.columns.len()
                    ),
                });
            }
        }
        Ok(Checked {
            canonical,
            files: Vec::new(),
        })
    }

    fn run(&self, ctx: &StageContext) -> Result<(), StageError> {
        let mut p: TableParams = ctx.params()?;
        // Every set's metrics from every input, and the images worth showing.
        let mut sets: BTreeMap<String, serde_json::Value> = BTreeMap::new();
        let images_dir = ctx.out_dir.join("images");
        let mut images: Vec<String> = Vec::new();
        for art in ctx.inputs("from") {
            let path = art.dir.join(crate::METRICS_FILE);
            let text = std::fs::read_to_string(&path).map_err(|e| StageError::io(&path, e))?;
            let v: serde_json::Value = serde_json::from_str(&text)
                .map_err(|e| StageError::Failed(format!("{}: {e}", path.display())))?;
            if let Some(obj) = v.get("sets").and_then(|s| s.as_object()) {
                for (name, m) in obj {
                    sets.insert(name.clone(), m.clone());
                }
            }
            let mut pngs: Vec<std::path::PathBuf> = walkdir::WalkDir::new(&art.dir)
                .into_iter()
                .flatten()
                .filter(|e| e.file_type().is_file())
                .map(walkdir::DirEntry::into_path)
                .filter(|p| p.extension().is_some_and(|x| x.eq_ignore_ascii_case("png")))
                .collect();
            pngs.sort();
            for e in pngs {
                let rel = e.strip_prefix(&art.dir).unwrap_or(&e);
                let name = format!(
                    "{}/{}",
                    crate::file_name_safe(&art.stage),
                    rel.to_string_lossy().replace('/', "_")
                );
                let dest = images_dir.join(&name);
                if let Some(d) = dest.parent() {
                    std::fs::create_dir_all(d).map_err(|e| StageError::io(d, e))?;
                }
                std::fs::copy(&e, &dest).map_err(|err| StageError::io(&e, err))?;
                images.push(name);
            }
        }
        images.sort();

        p.rows.retain(|row| {
            let present = p.columns.iter().any(|col| {
                sets.get(&col.set)
                    .is_some_and(|set| lookup(set, &row.metric).is_some())
            });
            if row.optional && !present {
                tracing::warn!(
                    "row `{}` left out: no set has the metric `{}`",
                    row.label,
                    row.metric
                );
            }
            present || !row.optional
        });
        let mut cells: Vec<Vec<Cell>> = Vec::new();
        for row in &p.rows {
            let mut line = Vec::new();
            for col in &p.columns {
                let set = sets.get(&col.set).ok_or_else(|| {
                    StageError::Failed(format!(
                        "column `{}`: no metrics for set `{}`; sets: {}",
                        col.label,
                        col.set,
                        sets.keys().cloned().collect::<Vec<_>>().join(", ")
                    ))
                })?;
                let v = lookup(set, &row.metric).ok_or_else(|| {
                    StageError::Failed(format!(
                        "row `{}`: set `{}` has no metric `{}`; it has: {}",
                        row.label,
                        col.set,
                        row.metric,
                        metric_paths(set).join(", ")
                    ))
                })?;
                line.push(Cell::from_json(v).ok_or_else(|| {
                    StageError::Failed(format!(
                        "row `{}`: metric `{}` of `{}` is not a number or {{mean, std}}",
                        row.label, row.metric, col.set
                    ))
                })?);
            }
            cells.push(line);
        }

        let md = markdown(&p, &cells);
        crate::write_file(&ctx.out_dir.join("table.md"), md.as_bytes())?;
        crate::write_file(&ctx.out_dir.join(crate::REPORT_FILE), md.as_bytes())?;
        crate::write_file(&ctx.out_dir.join("table.csv"), csv(&p, &cells).as_bytes())?;
        crate::write_file(
            &ctx.out_dir.join("table.html"),
            html(&p, &cells, &images).as_bytes(),
        )?;
        let mut out = serde_json::Map::new();
        for (row, line) in p.rows.iter().zip(&cells) {
            let mut r = serde_json::Map::new();
            for (col, cell) in p.columns.iter().zip(line) {
                r.insert(col.label.clone(), serde_json::json!(cell.value));
            }
            out.insert(row.label.clone(), r.into());
        }
        crate::write_json(
            &ctx.out_dir.join(crate::METRICS_FILE),
            &serde_json::json!({ "table": out }),
        )?;
        tracing::info!("\n{md}");
        Ok(())
    }
}

struct Cell {
    value: f64,
    std: Option<f64>,
}

impl Cell {
    fn from_json(v: &serde_json::Value) -> Option<Cell> {
        if let Some(x) = v.as_f64() {
            return Some(Cell {
                value: x,
                std: None,
            });
        }
        Some(Cell {
            value: v.get("mean")?.as_f64()?,
            std: v.get("std").and_then(|s| s.as_f64()),
        })
    }

    fn show(&self, digits: usize) -> String {
        match self.std {
            Some(s) => format!("{:.digits$} ± {:.digits$}", self.value, s),
            None => format!("{:.digits$}", self.value),
        }
    }
}

fn lookup<'a>(v: &'a serde_json::Value, path: &str) -> Option<&'a serde_json::Value> {
    path.split('.').try_fold(v, |cur, part| cur.get(part))
}

/// Every path to a number or a {mean, std} in `v`, for error messages.
fn metric_paths(v: &serde_json::Value) -> Vec<String> {
    fn walk(prefix: &str, v: &serde_json::Value, out: &mut Vec<String>) {
        if v.is_number() || (v.get("mean").is_some_and(|m| m.is_number())) {
            out.push(prefix.to_string());
            return;
        }
        if let Some(obj) = v.as_object() {
            for (k, child) in obj {
                let p = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                walk(&p, child, out);
            }
        }
    }
    let mut out = Vec::new();
    walk("", v, &mut out);
    out
}

/// The first number in a published value: `240.65` or `"2.127 ± 0.263"`.
fn published_number(v: &serde_json::Value) -> Option<f64> {
    if let Some(x) = v.as_f64() {
        return Some(x);
    }
    let s = v.as_str()?;
    let start = s.find(|c: char| c.is_ascii_digit() || c == '-' || c == '.')?;
    let num: String = s[start..]
        .chars()
        .take_while(|c| c.is_ascii_digit() || matches!(c, '.' | '-' | 'e' | 'E' | '+'))
        .collect();
    num.parse().ok()
}

fn show_published(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn markdown(p: &TableParams, cells: &[Vec<Cell>]) -> String {
    let mut s = String::new();
    if let Some(t) = &p.title {
        let _ = writeln!(s, "{t}\n");
    }
    let has_pub = !p.published.is_empty();
    s.push_str("| Metric |");
    for c in &p.columns {
        if has_pub {
            let _ = write!(s, " {} (ours) | {} (published) | Δ |", c.label, c.label);
        } else {
            let _ = write!(s, " {} |", c.label);
        }
    }
    s.push_str("\n|---|");
    for _ in &p.columns {
        s.push_str(if has_pub { "---:|---:|---:|" } else { "---:|" });
    }
    s.push('\n');
    for (row, line) in p.rows.iter().zip(cells) {
        let _ = write!(s, "| {} |", row.label);
        let published = p.published.get(&row.label);
        for (i, cell) in line.iter().enumerate() {
            let _ = write!(s, " {} |", cell.show(p.digits));
            if has_pub {
                match published.and_then(|v| v.get(i)) {
                    Some(pv) => {
                        let delta = published_number(pv)
                            .map(|x| format!("{:+.*}", p.digits, cell.value - x))
                            .unwrap_or_default();
                        let _ = write!(s, " {} | {delta} |", show_published(pv));
                    }
                    None => s.push_str("  |  |"),
                }
            }
        }
        s.push('\n');
    }
    s
}

fn csv(p: &TableParams, cells: &[Vec<Cell>]) -> String {
    let mut s = String::from("metric,set,value,std,published,difference\n");
    for (row, line) in p.rows.iter().zip(cells) {
        for (i, (col, cell)) in p.columns.iter().zip(line).enumerate() {
            let published = p.published.get(&row.label).and_then(|v| v.get(i));
            let pubs = published.map(show_published).unwrap_or_default();
            let diff = published
                .and_then(published_number)
                .map(|x| (cell.value - x).to_string())
                .unwrap_or_default();
            let _ = writeln!(
                s,
                "{},{},{},{},{},{}",
                csv_field(&row.label),
                csv_field(&col.label),
                cell.value,
                cell.std.map(|x| x.to_string()).unwrap_or_default(),
                csv_field(&pubs),
                diff
            );
        }
    }
    s
}

pub(crate) fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

fn html(p: &TableParams, cells: &[Vec<Cell>], images: &[String]) -> String {
    let esc = |s: &str| {
        s.replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
            .replace('"', "&quot;")
    };
    let title = p.title.clone().unwrap_or_else(|| "gantry table".into());
    let mut s = format!(
        "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>{}</title>\n<style>\
         body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}\
         td,th{{border:1px solid #ccc;padding:4px 8px;text-align:right}}\
         td:first-child,th:first-child{{text-align:left}}figure{{display:inline-block;margin:8px}}\
         img{{image-rendering:pixelated;max-width:320px}}</style></head><body>\n<h1>{}</h1>\n<table>\n<tr><th>Metric</th>",
        esc(&title),
        esc(&title)
    );
    for c in &p.columns {
        let _ = write!(s, "<th>{}</th>", esc(&c.label));
        if !p.published.is_empty() {
            s.push_str("<th>published</th>");
        }
    }
    s.push_str("</tr>\n");
    for (row, line) in p.rows.iter().zip(cells) {
        let _ = write!(s, "<tr><td>{}</td>", esc(&row.label));
        for (i, cell) in line.iter().enumerate() {
            let _ = write!(s, "<td>{}</td>", esc(&cell.show(p.digits)));
            if !p.published.is_empty() {
                let pv = p
                    .published
                    .get(&row.label)
                    .and_then(|v| v.get(i))
                    .map(show_published)
                    .unwrap_or_default();
                let _ = write!(s, "<td>{}</td>", esc(&pv));
            }
        }
        s.push_str("</tr>\n");
    }
    s.push_str("</table>\n");
    if !images.is_empty() {
        s.push_str("<h2>Samples and plots</h2>\n");
        for img in images {
            let _ = writeln!(
                s,
                "<figure><img src=\"images/{}\"><figcaption>{}</figcaption></figure>",
                esc(img),
                esc(img)
            );
        }
    }
    s.push_str("</body></html>\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn published_numbers_are_read_from_text() {
        assert_eq!(published_number(&serde_json::json!(240.65)), Some(240.65));
        assert_eq!(
            published_number(&serde_json::json!("2.127 ± 0.263")),
            Some(2.127)
        );
        assert_eq!(published_number(&serde_json::json!("n/a")), None);
    }

    #[test]
    fn markdown_puts_published_values_and_differences_beside_ours() {
        let p: TableParams = serde_json::from_value(serde_json::json!({
            "rows": [{"label": "SWD", "metric": "swd.average"}, {"label": "IS", "metric": "is"}],
            "columns": [{"label": "A", "set": "a"}],
            "published": {"SWD": [240.65], "IS": ["2.127 ± 0.263"]},
            "digits": 2
        }))
        .unwrap();
        let cells = vec![
            vec![Cell {
                value: 250.0,
                std: None,
            }],
            vec![Cell {
                value: 2.0,
                std: Some(0.1),
            }],
        ];
        let md = markdown(&p, &cells);
        assert!(md.contains("| SWD | 250.00 | 240.65 | +9.35 |"), "{md}");
        assert!(
            md.contains("| IS | 2.00 ± 0.10 | 2.127 ± 0.263 | -0.13 |"),
            "{md}"
        );
    }
}
