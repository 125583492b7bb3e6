//! How `from:` reads: serde defaults, externally tagged variants, and the JSON schema.

use gantry_datasets::{
    Channels, FolderLabels, FolderSource, OnError, Source, SyntheticSource, SyntheticVariant,
    source_paths,
};
use serde_json::json;

fn parse(v: serde_json::Value) -> Source {
    serde_json::from_value(v).unwrap()
}

#[test]
fn folder_defaults() {
    let s = parse(json!({ "folder": { "path": "photos" } }));
    assert_eq!(
        s,
        Source::Folder(FolderSource {
            path: "photos".into(),
            recursive: true,
            labels: FolderLabels::Subfolders,
            channels: None,
        })
    );
    let s = parse(
        json!({ "folder": { "path": "p", "recursive": false, "labels": "none", "channels": "gray" } }),
    );
    let Source::Folder(f) = s else { panic!() };
    assert!(!f.recursive);
    assert_eq!(f.labels, FolderLabels::None);
    assert_eq!(f.channels, Some(Channels::Gray));
}

#[test]
fn synthetic_defaults_match_default_impl() {
    let s = parse(json!({ "synthetic": {} }));
    assert_eq!(s, Source::Synthetic(SyntheticSource::default()));
    let d = SyntheticSource::default();
    assert_eq!(
        (d.count, d.size, d.channels, d.variant, d.seed),
        (256, 64, 3, SyntheticVariant::Single, 0)
    );
    let s = parse(json!({ "synthetic": { "variant": "unpaired", "size": 8 } }));
    let Source::Synthetic(s) = s else { panic!() };
    assert_eq!(s.variant, SyntheticVariant::Unpaired);
}

#[test]
fn other_sources_parse_with_defaults() {
    let s = parse(json!({ "unpaired": { "path": "horse2zebra" } }));
    let Source::Unpaired(u) = s else { panic!() };
    assert_eq!(u.split, "train");
    let s = parse(json!({ "paired": { "path": "maps" } }));
    let Source::Paired(p) = s else { panic!() };
    assert!(p.recursive);
    let s = parse(json!({ "csv": { "path": "train.csv" } }));
    let Source::Csv(c) = s else { panic!() };
    assert_eq!((c.label_column, c.width, c.height), (None, None, None));
    let s = parse(json!({ "idx": { "images": "i.gz" } }));
    let Source::Idx(i) = s else { panic!() };
    assert_eq!(i.labels, None);
    assert_eq!(
        serde_json::from_value::<OnError>(json!("skip")).unwrap(),
        OnError::Skip
    );
    assert_eq!(OnError::default(), OnError::Fail);
}

#[test]
fn unknown_keys_are_left_to_the_caller() {
    // serde must not fail first, so that the runner can report the key with its position.
    let s = parse(json!({ "folder": { "path": "p", "recursiv": false } }));
    assert!(matches!(
        s,
        Source::Folder(FolderSource {
            recursive: true,
            ..
        })
    ));
}

#[test]
fn schema_denies_unknown_fields_and_documents_defaults() {
    let schema = serde_json::to_value(schemars::schema_for!(Source)).unwrap();
    let text = schema.to_string();
    let folder = &schema["$defs"]["FolderSource"];
    assert_eq!(folder["additionalProperties"], json!(false), "{folder}");
    assert_eq!(
        schema["$defs"]["SyntheticSource"]["additionalProperties"],
        json!(false)
    );
    assert!(text.contains("Read subfolders too. Default: true."));
    assert!(text.contains("Number of images (per domain for `unpaired`). Default: 256."));
    assert_eq!(folder["required"], json!(["path"]));
}

#[test]
fn source_paths_resolve_against_base_dir() {
    let base = std::path::Path::new("/project/pipelines");
    let s = parse(json!({ "folder": { "path": "../data/celeba" } }));
    let paths = source_paths(&s, base);
    assert_eq!(paths.len(), 1);
    assert!(paths[0].is_absolute());
    assert!(paths[0].ends_with("data/celeba"), "{paths:?}");
    let s = parse(json!({ "csv": { "path": "/abs/train.csv" } }));
    assert_eq!(
        source_paths(&s, base),
        vec![std::path::PathBuf::from("/abs/train.csv")]
    );
}
