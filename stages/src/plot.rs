//! `plot`: draw one column of a CSV that several stages wrote, one curve per stage, and
//! put chosen images of each stage side by side — a paper's figure from a sweep.
//!
//! ```yaml
//! figure1:
//!   kind: plot
//!   from: dcgan                 # every instance of a matrix stage, or a list of stages
//!   file: loss_ratio.csv        # a CSV each of them wrote
//!   x: epoch
//!   y: log_g_d_ratio
//!   x_max: 20                   # optional: Figure 1 shows 20 epochs
//!   title: "Figure 1: log of the G:D loss ratio"
//!   images: [samples/step-0000100.png, samples/step-0000400.png]
//! ```
//!
//! Writes `figure.svg`, `figure.csv` (the plotted points, long format: stage, x, y),
//! `images/` (copies of the chosen images) and `report.md` (the plot and an image table,
//! one row per stage).

use std::fmt::Write as _;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::train::plot::{Series, line_plot};
use crate::{
    ArtifactType, Checked, InputSlot, ParamsError, StageContext, StageError, StageKind,
    file_name_safe, write_file,
};

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct PlotParams {
    /// The CSV file, relative to each input stage's outputs.
    pub file: String,
    /// Column for the horizontal axis.
    pub x: String,
    /// Column for the vertical axis.
    pub y: String,
    /// Leave out points with x above this.
    #[serde(default)]
    pub x_max: Option<f64>,
    /// Caption of the figure (default: `y` against `x`).
    #[serde(default)]
    pub title: Option<String>,
    /// Images of each stage to show side by side (paths relative to its outputs);
    /// missing ones are named in the report.
    #[serde(default)]
    pub images: Vec<String>,
}

pub struct PlotKind;

const INPUTS: &[InputSlot] = &[InputSlot {
    key: "from",
    accepts: &[
        ArtifactType::Dataset,
        ArtifactType::Metrics,
        ArtifactType::Report,
    ],
    many: true,
    required: true,
}];

impl StageKind for PlotKind {
    fn name(&self) -> &'static str {
        "plot"
    }
    fn version(&self) -> u32 {
        1
    }
    fn summary(&self) -> &'static str {
        "plot a CSV column of several stages, one curve each, with their images side by side"
    }
    fn inputs(&self) -> &'static [InputSlot] {
        INPUTS
    }
    fn output(&self) -> ArtifactType {
        ArtifactType::Report
    }
    fn params_schema(&self) -> schemars::Schema {
        schemars::schema_for!(PlotParams)
    }
    fn check(
        &self,
        params: serde_json::Value,
        _base_dir: &std::path::Path,
    ) -> Result<Checked, ParamsError> {
        let (p, canonical) = crate::params::from_value::<PlotParams>(params)?;
        for (key, v) in [("file", &p.file), ("x", &p.x), ("y", &p.y)] {
            if v.trim().is_empty() {
                return Err(ParamsError::invalid(&[key], "must not be empty"));
            }
        }
        for (i, img) in p.images.iter().enumerate() {
            if std::path::Path::new(img).is_absolute() || img.contains("..") {
                return Err(ParamsError::invalid(
                    &["images", &i.to_string()],
                    "must be a path inside the stage's outputs",
                ));
            }
        }
        Ok(Checked {
            canonical,
            files: Vec::new(),
        })
    }

    fn run(&self, ctx: &StageContext) -> Result<(), StageError> {
        let p: PlotParams = ctx.params()?;
        let mut series = Vec::new();
        let mut points_csv = format!("stage,{},{}\n", p.x, p.y);
        for a in ctx.inputs("from") {
            let path = a.dir.join(&p.file);
            let text = std::fs::read_to_string(&path).map_err(|e| StageError::io(&path, e))?;
            let points = read_columns(&text, &p.x, &p.y).map_err(|why| {
                StageError::Failed(format!("{} (from `{}`): {why}", path.display(), a.stage))
            })?;
            let points: Vec<(f64, f64)> = points
                .into_iter()
                .filter(|(x, _)| p.x_max.is_none_or(|m| *x <= m))
                .collect();
            for (x, y) in &points {
                let _ = writeln!(points_csv, "{},{x},{y}", crate::table::csv_field(&a.stage));
            }
            series.push(Series {
                name: a.stage.clone(),
                points,
            });
        }
        let title = p
            .title
            .clone()
            .unwrap_or_else(|| format!("{} against {}", p.y, p.x));
        line_plot(&ctx.out_dir.join("figure.svg"), &title, &p.x, &p.y, &series)?;
        write_file(&ctx.out_dir.join("figure.csv"), points_csv.as_bytes())?;

        let mut md = format!("# {title}\n\n![{title}](figure.svg)\n\nPoints: `figure.csv`.\n\n");
        if !p.images.is_empty() {
            let dir = ctx.out_dir.join("images");
            std::fs::create_dir_all(&dir).map_err(|e| StageError::io(&dir, e))?;
            md.push_str("| stage |");
            for img in &p.images {
                let _ = write!(md, " {img} |");
            }
            md.push_str("\n| --- |");
            md.push_str(&" --- |".repeat(p.images.len()));
            md.push('\n');
            for a in ctx.inputs("from") {
                let _ = write!(md, "| {} |", a.stage);
                for img in &p.images {
                    let src = a.dir.join(img);
                    if src.is_file() {
                        let name = format!("{}__{}", file_name_safe(&a.stage), file_name_safe(img));
                        let name = match std::path::Path::new(img).extension() {
                            Some(ext) => format!("{name}.{}", ext.to_string_lossy()),
                            None => name,
                        };
                        std::fs::copy(&src, dir.join(&name))
                            .map_err(|e| StageError::io(&src, e))?;
                        let _ = write!(md, " ![](images/{name}) |");
                    } else {
                        md.push_str(" (missing) |");
                    }
                }
                md.push('\n');
            }
        }
        write_file(&ctx.out_dir.join(crate::REPORT_FILE), md.as_bytes())
    }
}

/// (x, y) of every row whose two fields are numbers.
fn read_columns(text: &str, x: &str, y: &str) -> Result<Vec<(f64, f64)>, String> {
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().ok_or("empty file")?.split(',').collect();
    let col = |name: &str| {
        header
            .iter()
            .position(|h| h.trim() == name)
            .ok_or_else(|| format!("no column `{name}` (columns: {})", header.join(", ")))
    };
    let (xi, yi) = (col(x)?, col(y)?);
    Ok(lines
        .filter_map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            Some((
                f.get(xi)?.trim().parse().ok()?,
                f.get(yi)?.trim().parse().ok()?,
            ))
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_are_found_by_name() {
        let pts = read_columns("epoch,a,b\n1,2,3\n2,4,5\n", "epoch", "b").unwrap();
        assert_eq!(pts, vec![(1.0, 3.0), (2.0, 5.0)]);
        assert!(
            read_columns("epoch,a\n", "epoch", "z")
                .unwrap_err()
                .contains("no column `z`")
        );
    }
}
