//! `downsample`: resize every image of a dataset with one of Pillow's filters, and
//! optionally time several filters on the same images (seed 001, Table 1).
//!
//! ```yaml
//! faces64:
//!   kind: downsample
//!   input: faces
//!   size: 64              # or [width, height]
//!   filter: bicubic       # box | bilinear | bicubic | lanczos | hamming | nearest
//!   compare: [bicubic, bilinear, lanczos, hamming, nearest, box]
//! ```
//!
//! Writes `dataset.safetensors`, `summary.json`, `samples.png`, and with `compare`
//! `table1_filters.csv` / `table1_filters.md`: seconds per image for each filter,
//! measured on one thread over the same images, beside the paper's figures.

use std::time::Instant;

use gantry_datasets::Dataset;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::resize::{Filter, resize_set};
use crate::{ArtifactType, Checked, InputSlot, ParamsError, StageContext, StageError, StageKind};

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct DownsampleParams {
    /// Target size: one number for a square, or `[width, height]`.
    pub size: Size,
    /// Resampling filter, matching Pillow's filter of the same name to within 1 per pixel
    /// value. Default `bicubic`. Masks are always resized with `nearest`.
    #[serde(default = "default_filter")]
    pub filter: Filter,
    /// Filters to time on the same images for the seed 001 Table 1 comparison
    /// (algorithm, seconds per image). Empty (default): no comparison.
    #[serde(default)]
    pub compare: Vec<Filter>,
}

fn default_filter() -> Filter {
    Filter::Bicubic
}

/// `64` or `[64, 48]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Size {
    pub width: u32,
    pub height: u32,
}

impl JsonSchema for Size {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Size".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "description": "one number for a square, or [width, height]",
            "oneOf": [
                {"type": "integer", "minimum": 1},
                {"type": "array", "items": {"type": "integer", "minimum": 1}, "minItems": 2, "maxItems": 2}
            ]
        })
    }
}

/// Always `[width, height]`, so that `64` and `[64, 64]` are the same params.
impl Serialize for Size {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        [self.width, self.height].serialize(s)
    }
}

impl<'de> Deserialize<'de> for Size {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Size;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a positive whole number or [width, height]")
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Size, E> {
                let s = u32::try_from(v)
                    .ok()
                    .filter(|&s| s > 0)
                    .ok_or_else(|| E::custom(format!("size must be between 1 and {}", u32::MAX)))?;
                Ok(Size {
                    width: s,
                    height: s,
                })
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Size, E> {
                if v <= 0 {
                    return Err(E::custom(format!("size must be positive, not {v}")));
                }
                self.visit_u64(v as u64)
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Size, A::Error> {
                let w: u32 = seq
                    .next_element()?
                    .ok_or_else(|| serde::de::Error::custom("size needs [width, height]"))?;
                let h: u32 = seq
                    .next_element()?
                    .ok_or_else(|| serde::de::Error::custom("size needs [width, height]"))?;
                if seq.next_element::<serde::de::IgnoredAny>()?.is_some() {
                    return Err(serde::de::Error::custom(
                        "size needs exactly [width, height]",
                    ));
                }
                if w == 0 || h == 0 {
                    return Err(serde::de::Error::custom("size must be positive"));
                }
                Ok(Size {
                    width: w,
                    height: h,
                })
            }
        }
        d.deserialize_any(V)
    }
}

/// What the paper measured on CelebA (1024² → 64², their machine), shown for reference.
const PUBLISHED_TABLE1: [(Filter, f64); 6] = [
    (Filter::Bicubic, 0.000977796),
    (Filter::Bilinear, 0.000912458),
    (Filter::Lanczos, 0.001175824),
    (Filter::Hamming, 0.000929764),
    (Filter::Nearest, 0.000772037),
    (Filter::Box, 0.000868146),
];

pub struct DownsampleKind;

const INPUTS: &[InputSlot] = &[InputSlot {
    key: "input",
    accepts: &[ArtifactType::Dataset],
    many: false,
    required: true,
}];

impl StageKind for DownsampleKind {
    fn name(&self) -> &'static str {
        "downsample"
    }
    fn version(&self) -> u32 {
        1
    }
    fn summary(&self) -> &'static str {
        "resize a dataset with Pillow-exact filters; optionally time the filters (seed 001 Table 1)"
    }
    fn inputs(&self) -> &'static [InputSlot] {
        INPUTS
    }
    fn output(&self) -> ArtifactType {
        ArtifactType::Dataset
    }
    fn params_schema(&self) -> schemars::Schema {
        schemars::schema_for!(DownsampleParams)
    }
    fn check(
        &self,
        params: serde_json::Value,
        base_dir: &std::path::Path,
    ) -> Result<Checked, ParamsError> {
        let _ = base_dir;
        let (_, canonical) = crate::params::from_value::<DownsampleParams>(params)?;
        Ok(Checked {
            canonical,
            files: Vec::new(),
        })
    }
    fn run(&self, ctx: &StageContext) -> Result<(), StageError> {
        let p: DownsampleParams = ctx.params()?;
        let input = Dataset::load(&ctx.input("input")?.dataset_file())?;
        let total: usize = input.parts.values().map(|s| s.len()).sum();
        ctx.progress.set_length(total as u64);
        let mut out = input.clone();
        for (name, set) in &input.parts {
            ctx.check_cancelled()?;
            let filter = if name.starts_with("mask_") {
                Filter::Nearest
            } else {
                p.filter
            };
            let resized = resize_set(set, p.size.width, p.size.height, filter)
                .map_err(|e| StageError::Failed(format!("part `{name}`: {e}")))?;
            ctx.progress.inc(set.len() as u64);
            out.parts.insert(name.clone(), resized);
        }
        out.meta.insert(
            "downsample".into(),
            format!("{}x{} {}", p.size.width, p.size.height, p.filter.name()),
        );
        out.save(&ctx.out_dir.join(gantry_datasets::DATASET_FILE))?;
        crate::write_json(
            &ctx.out_dir.join("summary.json"),
            &crate::dataset_summary(&out),
        )?;
        if let Some(first) = out.parts.values().next() {
            crate::grid::save_grid(first, 64, &ctx.out_dir.join("samples.png"))?;
        }
        if !p.compare.is_empty() {
            compare_filters(ctx, &input, &p)?;
        }
        Ok(())
    }
}

/// Time each filter over the same images on one thread: the paper reports the cost of an
/// algorithm per image, which a parallel wall-clock time would hide.
fn compare_filters(
    ctx: &StageContext,
    input: &Dataset,
    p: &DownsampleParams,
) -> Result<(), StageError> {
    let Some(set) = input.parts.values().next() else {
        return Ok(());
    };
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .map_err(|e| StageError::Failed(format!("thread pool: {e}")))?;
    let mut rows = Vec::new();
    for &filter in &p.compare {
        ctx.check_cancelled()?;
        let start = Instant::now();
        pool.install(|| resize_set(set, p.size.width, p.size.height, filter))
            .map_err(|e| StageError::Failed(e.to_string()))?;
        let per_image = start.elapsed().as_secs_f64() / set.len().max(1) as f64;
        let published = PUBLISHED_TABLE1
            .iter()
            .find(|(f, _)| *f == filter)
            .map(|(_, s)| *s);
        rows.push((filter, per_image, published));
    }
    let mut csv = String::from("algorithm,seconds_per_image,published_seconds_per_image\n");
    let mut md = format!(
        "Filter timing: {} images {}x{} → {}x{}, one thread (seed 001, Table 1)\n\n\
         | Algorithm | Time/image (s) | Published (s, CelebA 1024² → 64²) |\n\
         |---|---:|---:|\n",
        set.len(),
        set.width,
        set.height,
        p.size.width,
        p.size.height
    );
    for (f, t, published) in &rows {
        let pubs = published.map(|v| format!("{v:.9}")).unwrap_or_default();
        csv.push_str(&format!("{},{t:.9},{pubs}\n", f.name()));
        md.push_str(&format!("| {} | {t:.9} | {pubs} |\n", display_name(*f)));
    }
    crate::write_file(&ctx.out_dir.join("table1_filters.csv"), csv.as_bytes())?;
    crate::write_file(&ctx.out_dir.join("table1_filters.md"), md.as_bytes())?;
    crate::write_file(&ctx.out_dir.join(crate::REPORT_FILE), md.as_bytes())?;
    Ok(())
}

fn display_name(f: Filter) -> &'static str {
    match f {
        Filter::Box => "Box",
        Filter::Bilinear => "Bilinear",
        Filter::Bicubic => "Bicubic",
        Filter::Lanczos => "Lanczos",
        Filter::Hamming => "Hamming",
        Filter::Nearest => "Nearest Neighbor",
    }
}
