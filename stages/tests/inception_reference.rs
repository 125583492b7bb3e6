//! Inception-v3 against torchvision and pytorch-fid.
//!
//! `reference/inception/make_reference.py` gave torchvision's `inception_v3` and
//! pytorch-fid's FID network weights from an integer-hash formula, ran them on formula
//! inputs, and recorded the outputs. These tests rebuild the same weights bit for bit,
//! write them to a weights file the way a user would hand one over, load it through
//! [`inception::load`], and compare what comes out.

use std::path::Path;

use burn::backend::Flex;
use burn::tensor::{Tensor, TensorData};
use gantry_datasets::ImageSet;
use gantry_stages::metrics::inception::{self, Variant};
use serde_json::Value;

#[path = "support/inception_weights.rs"]
mod inception_weights;
use inception_weights::{formula_tensors, hash, reference, u, write_weights};

#[path = "support/pth.rs"]
mod pth;
use pth::write_pth;

fn rows(v: &Value) -> Vec<Vec<f64>> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|r| {
            r.as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap())
                .collect()
        })
        .collect()
}

/// Largest |ours - reference| over `n` rows, and the largest |reference|.
fn compare(ours: Tensor<Flex, 2>, reference: &Value) -> (f64, f64) {
    let expected = rows(reference);
    let [n, width] = ours.dims();
    assert_eq!((n, width), (expected.len(), expected[0].len()));
    let ours: Vec<f32> = ours.into_data().convert::<f32>().into_vec().unwrap();
    let mut worst = 0f64;
    let mut scale = 0f64;
    for (row, want) in ours.chunks(width).zip(&expected) {
        for (&a, &b) in row.iter().zip(want) {
            worst = worst.max((f64::from(a) - b).abs());
            scale = scale.max(b.abs());
        }
    }
    (worst, scale)
}

fn formula_input() -> Tensor<Flex, 4> {
    let shape = [2, 3, 299, 299];
    let values: Vec<f32> = (0..shape.iter().product::<usize>())
        .map(|i| (2.0 * u("input", i) - 1.0) as f32)
        .collect();
    Tensor::from_data(TensorData::new(values, shape), &Default::default())
}

#[test]
fn the_formula_matches_the_scripts_spot_values() {
    let reference = reference();
    for spot in reference["spot_values"].as_array().unwrap() {
        let name = spot["name"].as_str().unwrap();
        let i = spot["index"].as_u64().unwrap() as usize;
        let want = u64::from_str_radix(spot["hash"].as_str().unwrap().trim_start_matches("0x"), 16)
            .unwrap();
        assert_eq!(hash(name, i), want, "{name}[{i}]");
    }
}

/// The model loaded from `file` gives the reference's features and logits of `key`.
fn assert_matches(file: &Path, variant: Variant, key: &str, reference: &Value) {
    let model = inception::load::<Flex>(file, variant, &Default::default()).unwrap();
    let (features, logits) = model.forward(formula_input());
    for (name, ours, want) in [
        ("features", features, &reference[key]["features"]),
        ("logits", logits, &reference[key]["logits"]),
    ] {
        let (worst, scale) = compare(ours, want);
        eprintln!(
            "{} {name}: max |diff| {worst:.2e} (values up to {scale:.1})",
            file.display()
        );
        // float32 through ~100 layers in another summation order: PyTorch's own float32
        // run differs from float64 by ~1e-5 here.
        assert!(
            worst < 1e-3,
            "{} {name}: max |diff| {worst}",
            file.display()
        );
    }
}

fn check_variant(variant: Variant, key: &str) {
    let reference = reference();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join(format!("{key}.safetensors"));
    write_weights(&reference, key, &file);
    assert_matches(&file, variant, key, &reference);
}

#[test]
fn pytorch_checkpoints_load_flat_or_under_state_dict() {
    let reference = reference();
    let dir = tempfile::tempdir().unwrap();
    for (variant, key, nested) in [
        (Variant::Torchvision, "torchvision", false),
        (Variant::Fid, "fid", true),
    ] {
        let file = dir.path().join(format!("{key}.pth"));
        write_pth(&formula_tensors(&reference, key), nested, &file);
        assert_matches(&file, variant, key, &reference);
    }
}

#[test]
fn torchvision_inception_v3_matches_torchvision() {
    check_variant(Variant::Torchvision, "torchvision");
}

#[test]
fn fid_inception_v3_matches_pytorch_fid() {
    check_variant(Variant::Fid, "fid");
}

#[test]
fn u8_images_are_prepared_as_pytorch_fid_prepares_them() {
    let reference = reference();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("fid.safetensors");
    write_weights(&reference, "fid", &file);
    let device = Default::default();
    let model = inception::load::<Flex>(&file, Variant::Fid, &device).unwrap();
    let mut set = ImageSet::new(32, 32, 3);
    let image_len = 32 * 32 * 3;
    for n in 0..2 {
        let pixels: Vec<u8> = (0..image_len)
            .map(|i| (hash("images_u8", n * image_len + i) >> 56) as u8)
            .collect();
        set.push(&pixels);
    }
    let (features, _) = model.forward(inception::prepare::<Flex>(&set, 0, 2, &device));
    let (worst, scale) = compare(features, &reference["fid_preprocessed_u8"]["features"]);
    eprintln!("u8 path: max |diff| {worst:.2e} (values up to {scale:.1})");
    assert!(worst < 1e-3, "max |diff| {worst}");
}

#[test]
fn weights_of_the_other_variant_or_a_wrong_file_are_clear_errors() {
    let reference = reference();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("torchvision.safetensors");
    write_weights(&reference, "torchvision", &file);
    let device = Default::default();
    let err = inception::load::<Flex>(&file, Variant::Fid, &device)
        .expect_err("1000-class weights are not the FID network");
    let msg = err.to_string();
    assert!(
        msg.contains("torchvision.safetensors") && msg.contains("variant"),
        "{msg}"
    );

    let junk = dir.path().join("junk.pth");
    std::fs::write(&junk, b"not a checkpoint").unwrap();
    let msg = inception::load::<Flex>(&junk, Variant::Fid, &device)
        .expect_err("junk is not a checkpoint")
        .to_string();
    assert!(msg.contains("junk.pth"), "{msg}");
    let missing = dir.path().join("nothing.pth");
    let msg = inception::load::<Flex>(&missing, Variant::Fid, &device)
        .expect_err("no file")
        .to_string();
    assert!(
        msg.contains("nothing.pth") && msg.contains("no such file"),
        "{msg}"
    );
}

#[test]
fn pytorch_zip_checkpoints_written_by_torch_are_read() {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/reference/inception/tiny_state_dict.pth");
    let reader = burn_store::pytorch::PytorchReader::new(&path).unwrap();
    let mut keys = reader.keys();
    keys.sort();
    assert_eq!(keys, ["a.weight", "b.running_var"]);
    let a = reader.get("a.weight").unwrap().to_data().unwrap();
    assert_eq!(a.shape, [2, 3].into());
    assert_eq!(a.to_vec::<f32>().unwrap(), [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
}
