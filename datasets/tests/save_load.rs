use std::collections::BTreeMap;
use std::path::Path;

use gantry_datasets::{DATASET_FILE, Dataset, DatasetError, ImageSet, Layout};

fn ramp(width: u32, height: u32, channels: u8, n: usize, offset: u8) -> ImageSet {
    let mut set = ImageSet::new(width, height, channels);
    for i in 0..n {
        let img: Vec<u8> = (0..set.image_len())
            .map(|p| {
                (p as u8)
                    .wrapping_mul(7)
                    .wrapping_add(i as u8)
                    .wrapping_add(offset)
            })
            .collect();
        set.push(&img);
    }
    set
}

fn labelled() -> Dataset {
    let mut d = Dataset::single(ramp(5, 3, 3, 4, 0));
    d.labels = Some(vec![0, 2, 1, 2]);
    d.classes = vec!["cat".into(), "dog".into(), "emu".into()];
    d.meta = BTreeMap::from([
        ("source".to_string(), "folder".to_string()),
        ("path".to_string(), "photos/ünï".to_string()),
    ]);
    d
}

fn unpaired() -> Dataset {
    Dataset {
        layout: Layout::Unpaired,
        parts: BTreeMap::from([
            ("a".to_string(), ramp(4, 4, 1, 3, 1)),
            ("b".to_string(), ramp(4, 4, 1, 2, 2)),
            ("mask_a".to_string(), ramp(4, 4, 1, 3, 3)),
            ("mask_b".to_string(), ramp(4, 4, 1, 2, 4)),
        ]),
        labels: None,
        classes: Vec::new(),
        meta: BTreeMap::new(),
    }
}

fn header(path: &Path) -> (u64, serde_json::Value) {
    let bytes = std::fs::read(path).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap());
    let json = serde_json::from_slice(&bytes[8..8 + n as usize]).unwrap();
    (n, json)
}

#[test]
fn round_trip_single_with_labels_and_meta() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(DATASET_FILE);
    let d = labelled();
    d.save(&path).unwrap();
    assert_eq!(Dataset::load(&path).unwrap(), d);
}

#[test]
fn round_trip_unpaired_and_paired() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("u.safetensors");
    let d = unpaired();
    d.save(&path).unwrap();
    assert_eq!(Dataset::load(&path).unwrap(), d);

    let mut p = Dataset {
        layout: Layout::Paired,
        parts: BTreeMap::from([
            ("a".to_string(), ramp(2, 2, 3, 2, 0)),
            ("b".to_string(), ramp(2, 2, 1, 2, 9)),
        ]),
        labels: Some(vec![1, 0]),
        classes: vec!["x".into(), "y".into()],
        meta: BTreeMap::new(),
    };
    p.save(&path).unwrap();
    assert_eq!(Dataset::load(&path).unwrap(), p);

    p.labels = None;
    p.classes.clear();
    p.save(&path).unwrap();
    assert_eq!(Dataset::load(&path).unwrap(), p);
}

#[test]
fn saving_is_byte_identical() {
    let dir = tempfile::tempdir().unwrap();
    let (one, two, three) = (
        dir.path().join("1.safetensors"),
        dir.path().join("2.safetensors"),
        dir.path().join("3.safetensors"),
    );
    let d = labelled();
    d.save(&one).unwrap();
    d.clone().save(&two).unwrap();
    Dataset::load(&one).unwrap().save(&three).unwrap();
    let bytes = std::fs::read(&one).unwrap();
    assert_eq!(bytes, std::fs::read(&two).unwrap());
    assert_eq!(bytes, std::fs::read(&three).unwrap());
}

#[test]
fn header_layout_is_plain_safetensors() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(DATASET_FILE);
    labelled().save(&path).unwrap();
    let (n, json) = header(&path);
    assert_eq!(n % 8, 0, "header is padded to 8 bytes");

    let images = &json["images"];
    assert_eq!(images["dtype"], "U8");
    assert_eq!(images["shape"], serde_json::json!([4, 3, 5, 3]));
    let labels = &json["labels"];
    assert_eq!(labels["dtype"], "I64");
    assert_eq!(labels["shape"], serde_json::json!([4]));
    // Labels come first so that the I64 data is 8-byte aligned.
    assert_eq!(labels["data_offsets"], serde_json::json!([0, 32]));
    assert_eq!(
        images["data_offsets"],
        serde_json::json!([32, 32 + 4 * 5 * 3 * 3])
    );

    let meta = &json["__metadata__"];
    assert_eq!(meta["gantry.format"], "1");
    assert_eq!(meta["gantry.layout"], "single");
    assert_eq!(meta["gantry.classes"], r#"["cat","dog","emu"]"#);
    assert_eq!(meta["meta.source"], "folder");
    assert_eq!(meta["meta.path"], "photos/ünï");

    // The reference implementation accepts the file as well.
    let bytes = std::fs::read(&path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let t = st.tensor("labels").unwrap();
    assert_eq!(t.data()[8..16], 2i64.to_le_bytes());
    assert_eq!(st.tensor("images").unwrap().shape(), &[4, 3, 5, 3]);
}

#[test]
fn save_leaves_no_temporary_file_and_replaces_old_content() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(DATASET_FILE);
    std::fs::write(&path, b"old").unwrap();
    labelled().save(&path).unwrap();
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, vec![std::ffi::OsString::from(DATASET_FILE)]);
    assert_eq!(Dataset::load(&path).unwrap(), labelled());
}

#[test]
fn save_refuses_inconsistent_datasets() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(DATASET_FILE);
    let mut d = labelled();
    d.labels = Some(vec![0]);
    let err = d.save(&path).unwrap_err().to_string();
    assert!(err.contains("1 labels for 4 images"), "{err}");

    let mut d = labelled();
    d.labels = Some(vec![0, 1, 2, 3]);
    let err = d.save(&path).unwrap_err().to_string();
    assert!(err.contains("label 3 but only 3 classes"), "{err}");

    let mut d = unpaired();
    d.parts.remove("b");
    let err = d.save(&path).unwrap_err().to_string();
    assert!(err.contains("part named 'b'"), "{err}");

    let mut d = unpaired();
    d.parts.get_mut("mask_a").unwrap().channels = 3;
    d.parts.get_mut("mask_a").unwrap().width = 1;
    let err = d.save(&path).unwrap_err().to_string();
    assert!(err.contains("mask_a"), "{err}");
    assert!(!path.exists());
}

#[test]
fn load_names_the_file_when_it_is_bad() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(DATASET_FILE);
    labelled().save(&path).unwrap();
    let bytes = std::fs::read(&path).unwrap();

    let truncated = dir.path().join("truncated.safetensors");
    std::fs::write(&truncated, &bytes[..bytes.len() - 5]).unwrap();
    let err = Dataset::load(&truncated).unwrap_err();
    assert!(matches!(err, DatasetError::BadDataset { .. }));
    let msg = err.to_string();
    assert!(msg.starts_with(&truncated.display().to_string()), "{msg}");
    assert!(msg.contains("truncated"), "{msg}");

    let garbage = dir.path().join("garbage.safetensors");
    std::fs::write(&garbage, b"\xff\xff\xff\xff\xff\xff\xff\x7fnot a header").unwrap();
    let msg = Dataset::load(&garbage).unwrap_err().to_string();
    assert!(msg.starts_with(&garbage.display().to_string()), "{msg}");

    let tiny = dir.path().join("tiny.safetensors");
    std::fs::write(&tiny, b"abc").unwrap();
    let msg = Dataset::load(&tiny).unwrap_err().to_string();
    assert!(
        msg.contains("tiny.safetensors") && msg.contains("too short"),
        "{msg}"
    );

    // A valid safetensors file that gantry did not write.
    let foreign = dir.path().join("foreign.safetensors");
    let view = safetensors::tensor::TensorView::new(safetensors::Dtype::U8, vec![1, 1, 1, 1], &[7])
        .unwrap();
    safetensors::serialize_to_file([("images", view)], None, &foreign).unwrap();
    let msg = Dataset::load(&foreign).unwrap_err().to_string();
    assert!(
        msg.contains("foreign.safetensors") && msg.contains("gantry.format"),
        "{msg}"
    );

    let missing = dir.path().join("missing.safetensors");
    let msg = Dataset::load(&missing).unwrap_err().to_string();
    assert!(msg.contains("missing.safetensors"), "{msg}");
}

#[test]
fn load_rejects_wrong_shapes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("wrong.safetensors");
    let view =
        safetensors::tensor::TensorView::new(safetensors::Dtype::U8, vec![2, 4], &[0; 8]).unwrap();
    let meta = std::collections::HashMap::from([
        ("gantry.format".to_string(), "1".to_string()),
        ("gantry.layout".to_string(), "single".to_string()),
    ]);
    safetensors::serialize_to_file([("images", view)], Some(meta), &path).unwrap();
    let msg = Dataset::load(&path).unwrap_err().to_string();
    assert!(
        msg.contains("wrong.safetensors") && msg.contains("[N, H, W, C]"),
        "{msg}"
    );
}

/// Needs Python with `safetensors` and `numpy`:
/// `GANTRY_PYTHON=/path/to/python cargo test -p gantry-datasets -- --ignored`.
#[test]
#[ignore = "needs Python with safetensors and numpy"]
fn python_safetensors_opens_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(DATASET_FILE);
    labelled().save(&path).unwrap();
    let python = std::env::var("GANTRY_PYTHON").unwrap_or_else(|_| "python3".to_string());
    let script = r#"
import sys, json
from safetensors.numpy import load_file
from safetensors import safe_open
d = load_file(sys.argv[1])
assert d["images"].shape == (4, 3, 5, 3) and str(d["images"].dtype) == "uint8", d
assert d["labels"].tolist() == [0, 2, 1, 2], d["labels"]
with safe_open(sys.argv[1], "np") as f:
    m = f.metadata()
assert json.loads(m["gantry.classes"]) == ["cat", "dog", "emu"], m
assert m["meta.path"] == "photos/ünï", m
"#;
    let out = std::process::Command::new(python)
        .args(["-c", script])
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
