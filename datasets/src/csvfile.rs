//! CSV tables with one gray image per row, as Kaggle ships MNIST-style data sets.

use std::path::Path;

use crate::error::skip_or_fail;
use crate::idx::numeric_classes;
use crate::source::{CsvSource, resolve};
use crate::{Dataset, DatasetError, ImageSet, ImportReport, OnError};

const DEFAULT_LABEL_COLUMN: &str = "label";

fn csv_error(path: &Path, reason: impl Into<String>) -> DatasetError {
    DatasetError::Csv {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

/// Width and height from the options and the number of pixel columns.
fn dimensions(path: &Path, src: &CsvSource, pixels: usize) -> Result<(usize, usize), DatasetError> {
    let (w, h) = match (src.width, src.height) {
        (Some(w), Some(h)) => (w as usize, h as usize),
        (Some(w), None) if w > 0 => (w as usize, pixels / w as usize),
        (None, Some(h)) if h > 0 => (pixels / h as usize, h as usize),
        (None, None) => {
            let side = pixels.isqrt();
            if side * side != pixels {
                return Err(csv_error(
                    path,
                    format!(
                        "{pixels} pixel columns is not a square number; set `width` and \
                         `height` for non-square images"
                    ),
                ));
            }
            (side, side)
        }
        _ => (0, 0),
    };
    if w == 0 || h == 0 || w * h != pixels {
        return Err(csv_error(
            path,
            format!("{pixels} pixel columns do not make {w}x{h} images"),
        ));
    }
    Ok((w, h))
}

pub(crate) fn import_csv(
    src: &CsvSource,
    base_dir: &Path,
    on_error: OnError,
    progress: &indicatif::ProgressBar,
) -> Result<(Dataset, ImportReport), DatasetError> {
    let path = resolve(base_dir, &src.path);
    let file = std::fs::File::open(&path).map_err(|e| DatasetError::io(&path, e))?;
    let file_len = file.metadata().map(|m| m.len()).unwrap_or(0);
    progress.set_length(file_len);
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(true)
        .trim(csv::Trim::All)
        .from_reader(std::io::BufReader::with_capacity(1 << 20, file));
    let header: Vec<String> = reader
        .byte_headers()
        .map_err(|e| csv_error(&path, e.to_string()))?
        .iter()
        .map(|f| String::from_utf8_lossy(f).into_owned())
        .collect();
    if header.iter().all(|h| h.is_empty()) {
        return Err(csv_error(
            &path,
            "empty file: a header row naming the columns is required",
        ));
    }
    if header.iter().all(|h| h.parse::<f64>().is_ok()) {
        return Err(csv_error(
            &path,
            "the first row holds only numbers; a header row naming the columns is required",
        ));
    }

    let label_name = src.label_column.as_deref().unwrap_or(DEFAULT_LABEL_COLUMN);
    let label_col = header.iter().position(|h| h == label_name);
    if label_col.is_none() && src.label_column.is_some() {
        return Err(csv_error(
            &path,
            format!("no column named '{label_name}' in the header"),
        ));
    }
    let pixel_cols = header.len() - usize::from(label_col.is_some());
    let (width, height) = dimensions(&path, src, pixel_cols)?;

    let mut images = ImageSet::new(width as u32, height as u32, 1);
    let mut labels: Vec<u32> = Vec::new();
    let mut report = ImportReport {
        files_read: 1,
        skipped: Vec::new(),
    };
    let mut record = csv::ByteRecord::new();
    let mut row_pixels = Vec::with_capacity(pixel_cols);
    let mut row: u64 = 0;
    loop {
        match reader.read_byte_record(&mut record) {
            Ok(false) => break,
            Ok(true) => {}
            Err(e) => {
                row += 1;
                // Only a malformed row can be stepped over; an I/O error ends the file.
                let csv::ErrorKind::UnequalLengths {
                    pos,
                    expected_len,
                    len,
                } = e.kind()
                else {
                    return Err(csv_error(&path, format!("row {row}: {e}")));
                };
                let line = pos.as_ref().map_or(0, |p| p.line());
                let err = csv_error(
                    &path,
                    format!(
                        "row {row} (line {line}): {len} fields, but the header has {expected_len}"
                    ),
                );
                skip_or_fail(&path, err, on_error, &mut report)?;
                continue;
            }
        }
        row += 1;
        let line = record.position().map_or(0, |p| p.line());
        if row.is_multiple_of(1024) {
            progress.set_position(record.position().map_or(0, |p| p.byte()));
        }
        row_pixels.clear();
        let mut label = None;
        let mut problem = None;
        for (col, field) in record.iter().enumerate() {
            let text = std::str::from_utf8(field).unwrap_or("");
            if Some(col) == label_col {
                match text.parse::<u32>() {
                    Ok(l) => label = Some(l),
                    Err(_) => {
                        problem = Some((col, "is not a class number (0, 1, 2, ...)"));
                        break;
                    }
                }
            } else {
                match text.parse::<u8>() {
                    Ok(v) => row_pixels.push(v),
                    Err(_) => {
                        problem = Some((col, "is not an integer from 0 to 255"));
                        break;
                    }
                }
            }
        }
        if let Some((col, what)) = problem {
            let value = record
                .get(col)
                .map(String::from_utf8_lossy)
                .unwrap_or_default();
            let err = DatasetError::CsvValue {
                path: path.clone(),
                row,
                line,
                column: header.get(col).cloned().unwrap_or_default(),
                reason: format!("'{value}' {what}"),
            };
            skip_or_fail(&path, err, on_error, &mut report)?;
            continue;
        }
        images.push(&row_pixels);
        if let Some(l) = label {
            labels.push(l);
        }
    }
    progress.set_position(file_len);
    if images.is_empty() {
        return Err(csv_error(&path, "no data rows after the header"));
    }
    let mut dataset = Dataset::single(images);
    if label_col.is_some() {
        dataset.classes = numeric_classes(&labels);
        dataset.labels = Some(labels);
    }
    Ok((dataset, report))
}
