//! Inception-v3 weights from the integer-hash formula of
//! `stages/tests/reference/inception/make_reference.py`, written as a safetensors file
//! with PyTorch's names, as a user would hand one over. Shared by the Inception tests
//! of `gantry-stages` and the pipeline tests at the root (`#[path]` includes it).

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::Value;

pub fn reference() -> Value {
    serde_json::from_str(include_str!("../reference/inception/reference.json")).unwrap()
}

fn fnv1a64(name: &str) -> u64 {
    name.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

pub fn hash(name: &str, i: usize) -> u64 {
    splitmix64(fnv1a64(name) ^ (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15))
}

pub fn u(name: &str, i: usize) -> f64 {
    (hash(name, i) >> 11) as f64 * 2f64.powi(-53)
}

/// The formula value of element `i` of tensor `name` with PyTorch shape `shape`.
fn value(name: &str, shape: &[usize], i: usize) -> f32 {
    let u = u(name, i);
    let s = 2.0 * u - 1.0;
    let v = if name.ends_with(".conv.weight") {
        let fan_in: usize = shape[1..].iter().product();
        s * (6.0 / fan_in as f64).sqrt()
    } else if name.ends_with(".bn.weight") || name.ends_with(".bn.running_var") {
        0.5 + u
    } else if name.ends_with(".bn.bias") {
        0.2 * s
    } else if name.ends_with(".bn.running_mean") {
        0.1 * s
    } else if name == "fc.weight" {
        s * (3.0f64 / 2048.0).sqrt()
    } else if name == "fc.bias" {
        0.1 * s
    } else {
        panic!("no formula for {name}")
    };
    v as f32
}

/// A safetensors file of every float tensor of `variant`'s state dict, as PyTorch names
/// and lays them out.
pub fn write_weights(reference: &Value, variant: &str, path: &Path) {
    let mut header = BTreeMap::new();
    let mut data: Vec<u8> = Vec::new();
    for (name, shape, values) in formula_tensors(reference, variant) {
        let start = data.len();
        data.extend(values.iter().flat_map(|v| v.to_le_bytes()));
        header.insert(
            name,
            serde_json::json!({"dtype": "F32", "shape": shape, "data_offsets": [start, data.len()]}),
        );
    }
    let mut json = serde_json::to_vec(&header).unwrap();
    json.resize(json.len().next_multiple_of(8), b' ');
    let mut file = (json.len() as u64).to_le_bytes().to_vec();
    file.extend_from_slice(&json);
    file.extend_from_slice(&data);
    std::fs::write(path, file).unwrap();
}

/// The float tensors of `variant`'s state dict: (name, PyTorch shape, values).
pub fn formula_tensors(reference: &Value, variant: &str) -> Vec<(String, Vec<usize>, Vec<f32>)> {
    reference["state_dict_keys"][variant]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| !e[0].as_str().unwrap().ends_with("num_batches_tracked"))
        .map(|e| {
            let name = e[0].as_str().unwrap().to_string();
            let shape: Vec<usize> = e[1]
                .as_array()
                .unwrap()
                .iter()
                .map(|d| d.as_u64().unwrap() as usize)
                .collect();
            let count: usize = shape.iter().product();
            let values = (0..count).map(|i| value(&name, &shape, i)).collect();
            (name, shape, values)
        })
        .collect()
}
