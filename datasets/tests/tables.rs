//! IDX and CSV imports.

use std::io::Write;
use std::path::{Path, PathBuf};

use gantry_datasets::{
    CsvSource, Dataset, DatasetError, IdxSource, ImportReport, OnError, Source, import,
    source_paths,
};

fn run(
    source: Source,
    base: &Path,
    on_error: OnError,
) -> Result<(Dataset, ImportReport), DatasetError> {
    import(&source, base, on_error, &indicatif::ProgressBar::hidden())
}

fn idx_images(n: u32, h: u32, w: u32) -> Vec<u8> {
    let mut b = vec![0, 0, 8, 3];
    for d in [n, h, w] {
        b.extend_from_slice(&d.to_be_bytes());
    }
    b.extend((0..n * h * w).map(|i| (i * 3 % 256) as u8));
    b
}

fn idx_labels(labels: &[u8]) -> Vec<u8> {
    let mut b = vec![0, 0, 8, 1];
    b.extend_from_slice(&(labels.len() as u32).to_be_bytes());
    b.extend_from_slice(labels);
    b
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

fn idx(images: &str, labels: Option<&str>) -> Source {
    Source::Idx(IdxSource {
        images: images.into(),
        labels: labels.map(PathBuf::from),
    })
}

#[test]
fn idx_raw_with_labels() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("img-idx3-ubyte"), idx_images(3, 2, 4)).unwrap();
    std::fs::write(dir.path().join("lab-idx1-ubyte"), idx_labels(&[3, 0, 7])).unwrap();
    let (d, report) = run(
        idx("img-idx3-ubyte", Some("lab-idx1-ubyte")),
        dir.path(),
        OnError::Fail,
    )
    .unwrap();
    assert_eq!(report.files_read, 2);
    let images = &d.parts["images"];
    assert_eq!(
        (images.width, images.height, images.channels, images.len()),
        (4, 2, 1, 3)
    );
    assert_eq!(images.image(1), &[24, 27, 30, 33, 36, 39, 42, 45]);
    assert_eq!(d.labels, Some(vec![3, 0, 7]));
    assert_eq!(
        d.classes,
        (0..10).map(|c| c.to_string()).collect::<Vec<_>>()
    );
    assert_eq!(d.meta["images"], "img-idx3-ubyte");
}

#[test]
fn idx_gzip_is_detected_by_content() {
    let dir = tempfile::tempdir().unwrap();
    // Compressed under a raw name, raw under a .gz name: content decides.
    std::fs::write(dir.path().join("images.idx"), gzip(&idx_images(2, 3, 3))).unwrap();
    std::fs::write(dir.path().join("labels.gz"), idx_labels(&[1, 12])).unwrap();
    let (d, _) = run(
        idx("images.idx", Some("labels.gz")),
        dir.path(),
        OnError::Fail,
    )
    .unwrap();
    assert_eq!(d.parts["images"].len(), 2);
    assert_eq!(d.parts["images"].image(0)[1], 3);
    assert_eq!(d.labels, Some(vec![1, 12]));
    assert_eq!(d.classes.len(), 13, "classes reach the largest label");

    let (d, _) = run(idx("images.idx", None), dir.path(), OnError::Fail).unwrap();
    assert_eq!(d.labels, None);
    assert!(d.classes.is_empty());
}

#[test]
fn idx_truncated_names_file_and_sizes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("short.idx");
    let mut bytes = idx_images(2, 4, 4);
    bytes.truncate(bytes.len() - 3);
    std::fs::write(&path, &bytes).unwrap();
    let err = run(idx("short.idx", None), dir.path(), OnError::Skip).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "{}: not a valid IDX file: truncated: dimensions [2, 4, 4] need 48 bytes, found 45",
            path.display()
        )
    );

    // A truncated gzip stream is reported too, not silently shortened.
    let gz = gzip(&idx_images(2, 4, 4));
    std::fs::write(&path, &gz[..gz.len() - 10]).unwrap();
    let msg = run(idx("short.idx", None), dir.path(), OnError::Fail)
        .unwrap_err()
        .to_string();
    assert!(msg.starts_with(&path.display().to_string()), "{msg}");
}

#[test]
fn idx_bad_magic_and_count_mismatch() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("img"), idx_images(3, 2, 2)).unwrap();
    std::fs::write(dir.path().join("lab"), idx_labels(&[1, 2])).unwrap();
    let err = run(idx("img", Some("lab")), dir.path(), OnError::Fail).unwrap_err();
    let msg = err.to_string();
    let lab = dir.path().join("lab");
    assert!(msg.starts_with(&lab.display().to_string()), "{msg}");
    assert!(
        msg.contains("holds 2 labels") && msg.contains("holds 3 images"),
        "{msg}"
    );

    // Images and labels swapped.
    let err = run(idx("lab", Some("img")), dir.path(), OnError::Fail).unwrap_err();
    assert!(
        err.to_string()
            .contains("magic number 0x00000801, expected 0x00000803"),
        "{err}"
    );
    assert_eq!(
        source_paths(&idx("img", Some("lab")), dir.path()),
        vec![dir.path().join("img"), lab]
    );
}

fn csv(path: &str) -> CsvSource {
    CsvSource {
        path: path.into(),
        label_column: None,
        width: None,
        height: None,
    }
}

#[test]
fn csv_with_labels() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("train.csv"),
        "label,p0,p1,p2,p3\n2,0,1,2,3\n0, 255 ,10,20,30\n",
    )
    .unwrap();
    let (d, report) = run(Source::Csv(csv("train.csv")), dir.path(), OnError::Fail).unwrap();
    assert_eq!(report.files_read, 1);
    let images = &d.parts["images"];
    assert_eq!((images.width, images.height, images.channels), (2, 2, 1));
    assert_eq!(images.image(1), &[255, 10, 20, 30]);
    assert_eq!(d.labels, Some(vec![2, 0]));
    assert_eq!(d.classes.len(), 10);
}

#[test]
fn csv_without_label_column_and_explicit_sizes() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("test.csv"),
        "a,b,c,d,e,f\n1,2,3,4,5,6\n6,5,4,3,2,1\n",
    )
    .unwrap();
    let err = run(Source::Csv(csv("test.csv")), dir.path(), OnError::Fail).unwrap_err();
    assert!(
        err.to_string()
            .contains("6 pixel columns is not a square number"),
        "{err}"
    );

    let mut src = csv("test.csv");
    src.width = Some(3);
    let (d, _) = run(Source::Csv(src), dir.path(), OnError::Fail).unwrap();
    assert_eq!(d.labels, None);
    let images = &d.parts["images"];
    assert_eq!((images.width, images.height, images.len()), (3, 2, 2));

    let mut src = csv("test.csv");
    src.label_column = Some("f".into());
    src.height = Some(1);
    let (d, _) = run(Source::Csv(src), dir.path(), OnError::Fail).unwrap();
    assert_eq!(d.labels, Some(vec![6, 1]));
    assert_eq!(d.parts["images"].width, 5);

    let mut src = csv("test.csv");
    src.label_column = Some("digit".into());
    let err = run(Source::Csv(src), dir.path(), OnError::Fail).unwrap_err();
    assert!(err.to_string().contains("no column named 'digit'"), "{err}");
}

#[test]
fn csv_bad_value_names_row_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.csv");
    std::fs::write(
        &path,
        "label,p0,p1,p2,p3\n1,0,0,0,0\n1,0,0,256,0\n2,0,0,0,0\n",
    )
    .unwrap();
    let err = run(Source::Csv(csv("bad.csv")), dir.path(), OnError::Fail).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "{}: row 2 (line 3), column 'p2': '256' is not an integer from 0 to 255",
            path.display()
        )
    );

    let (d, report) = run(Source::Csv(csv("bad.csv")), dir.path(), OnError::Skip).unwrap();
    assert_eq!(d.parts["images"].len(), 2);
    assert_eq!(d.labels, Some(vec![1, 2]));
    assert_eq!(report.skipped.len(), 1);
    assert_eq!(report.skipped[0].0, path);
    assert!(report.skipped[0].1.starts_with("row 2"));

    std::fs::write(&path, "label,p0,p1,p2,p3\nx,0,0,0,0\n").unwrap();
    let err = run(Source::Csv(csv("bad.csv")), dir.path(), OnError::Fail).unwrap_err();
    assert!(
        err.to_string()
            .contains("row 1 (line 2), column 'label': 'x'"),
        "{err}"
    );

    std::fs::write(&path, "label,p0,p1,p2,p3\n1,0,0,0\n").unwrap();
    let err = run(Source::Csv(csv("bad.csv")), dir.path(), OnError::Fail).unwrap_err();
    assert!(
        err.to_string()
            .ends_with("row 1 (line 2): 4 fields, but the header has 5"),
        "{err}"
    );
}

#[test]
fn csv_needs_a_header() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("h.csv"), "1,0,0,0,0\n2,0,0,0,0\n").unwrap();
    let err = run(Source::Csv(csv("h.csv")), dir.path(), OnError::Fail).unwrap_err();
    assert!(err.to_string().contains("header row"), "{err}");
    std::fs::write(dir.path().join("e.csv"), "").unwrap();
    let err = run(Source::Csv(csv("e.csv")), dir.path(), OnError::Fail).unwrap_err();
    assert!(err.to_string().contains("header row"), "{err}");
    std::fs::write(dir.path().join("n.csv"), "label,a\n").unwrap();
    let err = run(Source::Csv(csv("n.csv")), dir.path(), OnError::Fail).unwrap_err();
    assert!(err.to_string().contains("no data rows"), "{err}");
}
