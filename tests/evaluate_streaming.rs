//! `evaluate` streams sets through networks a batch at a time: the Inception Score, FID
//! and class accuracy it writes equal those of the whole sets held in memory at once,
//! for sets that span several batches (the last one partial).

mod common;

use common::Project;
use gantry_datasets::Dataset;
use gantry_stages::metrics::frechet::{FeatureStats, frechet_distance};
use gantry_stages::metrics::inception_score::inception_score;

const PIPE: &str = r#"
name: stream
stages:
  digits: { kind: dataset, from: { synthetic: { count: 700, size: 16, channels: 1, variant: digits, seed: 1 } } }
  other: { kind: dataset, from: { synthetic: { count: 600, size: 16, channels: 1, variant: digits, seed: 2 } } }
  judge: { kind: classifier, input: digits, epochs: 1 }
  evaluate:
    kind: evaluate
    real: digits
    fake: other
    classifier: judge
    metrics: [inception_score, fid, class_accuracy]
    is_splits: 3
"#;

#[test]
fn streamed_scores_equal_whole_set_scores() {
    let p = Project::new();
    let file = p.write("stream.yaml", PIPE);
    p.run_ok(file.to_str().unwrap());
    let m: serde_json::Value = serde_json::from_slice(
        &std::fs::read(p.out("stream", "evaluate").join("metrics.json")).unwrap(),
    )
    .unwrap();

    let clf = gantry_stages::classifier::load(&p.out("stream", "judge")).unwrap();
    let k = clf.spec.classes.len();
    let device = Default::default();
    let whole = |stage: &str| {
        let d = Dataset::load(&p.out("stream", stage).join("dataset.safetensors")).unwrap();
        let labels = d.labels.clone().unwrap();
        let set = d.parts["images"].clone();
        let (probs, feats) = gantry_stages::classifier::apply(&clf.model, &set, &device).unwrap();
        let mut stats = FeatureStats::new(gantry_stages::classifier::FEATURES);
        stats.add_batch(&feats, set.len()).unwrap();
        (set.len(), labels, probs, stats)
    };
    let (n_real, _, _, real_stats) = whole("digits");
    let (n, labels, probs, stats) = whole("other");
    assert!(n_real > 256 && n > 256 && n % 256 != 0);

    let got = &m["sets"]["other"];
    let is = inception_score(&probs, n, k, 3).unwrap();
    let want = serde_json::to_value(&is).unwrap();
    for key in ["mean", "std"] {
        let (a, b) = (
            got["inception_score"][key].as_f64().unwrap(),
            want[key].as_f64().unwrap(),
        );
        assert!(
            (a - b).abs() <= 1e-12 * b.abs().max(1.0),
            "IS {key}: {a} vs {b}"
        );
    }
    let fid = frechet_distance(&real_stats, &stats).unwrap();
    let streamed = got["fid"].as_f64().unwrap();
    assert!(
        (streamed - fid).abs() <= 1e-6 * fid.abs().max(1.0),
        "FID streamed {streamed} vs whole {fid}"
    );
    let hits = (0..n)
        .filter(|&i| {
            let row = &probs[i * k..(i + 1) * k];
            let best = (0..k).fold(0, |b, j| if row[j] > row[b] { j } else { b });
            best as u32 == labels[i]
        })
        .count();
    let acc = got["class_accuracy"].as_f64().unwrap();
    assert!(
        (acc - hits as f64 / n as f64).abs() < 1e-12,
        "{acc} vs {hits}/{n}"
    );
}
