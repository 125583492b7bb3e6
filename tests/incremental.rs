//! The incremental promises, end to end on the real binary: what reruns and what does not.

mod common;

use common::Project;

const PIPE: &str = r#"
name: inc
params:
  filter: bicubic
stages:
  photos:
    kind: dataset
    from: { folder: { path: photos } }
  small:
    kind: downsample
    input: photos
    size: 8
    filter: ${params.filter}
  tiny:
    kind: downsample
    input: small
    size: 4
  other:
    kind: dataset
    from: { synthetic: { count: 4, size: 16 } }
  other_small:
    kind: downsample
    input: other
    size: 8
"#;

/// A folder of PNGs in class subfolders, two levels deep.
fn photos(p: &Project) {
    for (i, rel) in ["a/1.png", "a/2.png", "b/deep/3.png", "b/deep/4.png"]
        .iter()
        .enumerate()
    {
        let img = image::RgbImage::from_fn(16, 16, |x, y| {
            image::Rgb([(x * 16) as u8, (y * 16) as u8, (i * 60) as u8])
        });
        let path = p.path(&format!("photos/{rel}"));
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        img.save(&path).unwrap();
        // Old mtimes: the stat cache never trusts files modified in the last seconds.
        filetime::set_file_mtime(&path, filetime::FileTime::from_unix_time(1_600_000_000, 0))
            .unwrap();
    }
}

/// The status text `gantry status` prints for `stage`.
fn status_of(stdout: &str, stage: &str) -> String {
    stdout
        .lines()
        .find_map(|l| {
            let (name, rest) = l.split_once(' ')?;
            (name == stage).then(|| rest.trim().to_string())
        })
        .unwrap_or_else(|| panic!("no status line for {stage} in\n{stdout}"))
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

#[test]
fn second_run_executes_nothing() {
    let p = Project::new();
    photos(&p);
    p.write("inc.yaml", PIPE);
    let first = p.run_ok("inc.yaml");
    assert_eq!(first.executed().len(), 5, "{:?}", first.outcomes());
    let second = p.run_ok("inc.yaml");
    assert!(second.executed().is_empty(), "{:?}", second.outcomes());
    assert_eq!(second.with_outcome("cached").len(), 5);
    // Outputs are where the README says they are.
    assert!(p.out("inc", "small").join("dataset.safetensors").is_file());
    assert!(p.out("inc", "small").join("samples.png").is_file());
}

#[test]
fn a_changed_param_reruns_that_stage_and_its_dependents_only() {
    let p = Project::new();
    photos(&p);
    p.write("inc.yaml", PIPE);
    p.run_ok("inc.yaml");

    let status = p.gantry(&["status", "inc.yaml", "-S", "filter=lanczos"]);
    assert_eq!(status.code, 0);
    assert_eq!(
        status_of(&status.stdout, "small"),
        "stale: param `filter`: bicubic → lanczos"
    );
    assert_eq!(
        status_of(&status.stdout, "tiny"),
        "stale: upstream `small` will run"
    );
    assert_eq!(status_of(&status.stdout, "photos"), "fresh");

    let r = p.gantry(&["run", "--json", "inc.yaml", "-S", "filter=lanczos"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(sorted(r.executed()), ["small", "tiny"]);

    // Changing it back restores the earlier outputs from the run-cache: nothing executes.
    let back = p.run_ok("inc.yaml");
    assert!(back.executed().is_empty(), "{:?}", back.outcomes());
    assert_eq!(sorted(back.with_outcome("cached")).len(), 5);
    let status = p.gantry(&["status", "inc.yaml", "-S", "filter=lanczos"]);
    assert!(
        status_of(&status.stdout, "small").starts_with("fresh (in the run-cache"),
        "{}",
        status.stdout
    );
}

#[test]
fn touching_mtimes_reruns_nothing_but_a_changed_byte_deep_inside_does() {
    let p = Project::new();
    photos(&p);
    p.write("inc.yaml", PIPE);
    p.run_ok("inc.yaml");

    for rel in ["a/1.png", "b/deep/4.png"] {
        filetime::set_file_mtime(
            p.path(&format!("photos/{rel}")),
            filetime::FileTime::from_unix_time(1_700_000_000, 0),
        )
        .unwrap();
    }
    let touched = p.run_ok("inc.yaml");
    assert!(touched.executed().is_empty(), "{:?}", touched.outcomes());

    // Rewrite one image two folders down with one pixel changed.
    let deep = p.path("photos/b/deep/3.png");
    let mut img = image::open(&deep).unwrap().to_rgb8();
    img.put_pixel(3, 3, image::Rgb([1, 2, 3]));
    img.save(&deep).unwrap();
    filetime::set_file_mtime(&deep, filetime::FileTime::from_unix_time(1_700_000_100, 0)).unwrap();

    let status = p.gantry(&["status", "inc.yaml"]);
    assert_eq!(
        status_of(&status.stdout, "photos"),
        "stale: folder `photos` changed (1 modified: b/deep/3.png)"
    );
    let r = p.run_ok("inc.yaml");
    assert_eq!(sorted(r.executed()), ["photos", "small", "tiny"]);
}

#[test]
fn an_upstream_rerun_with_identical_output_does_not_invalidate_downstream() {
    let p = Project::new();
    photos(&p);
    p.write("inc.yaml", PIPE);
    p.run_ok("inc.yaml");
    // `on_error: skip` changes the dataset stage's params (so it reruns) but not its
    // output on clean data: downstream must stay fresh (early cutoff).
    p.write(
        "inc.yaml",
        &PIPE.replace(
            "from: { folder: { path: photos } }",
            "from: { folder: { path: photos } }\n    on_error: skip",
        ),
    );
    let r = p.run_ok("inc.yaml");
    assert_eq!(r.executed(), ["photos"]);
    assert_eq!(r.with_outcome("cached").len(), 4);
}

#[test]
fn only_runs_a_stage_and_what_it_needs() {
    let p = Project::new();
    photos(&p);
    p.write("inc.yaml", PIPE);
    let r = p.gantry(&["run", "--json", "inc.yaml", "--only", "small"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(sorted(r.executed()), ["photos", "small"]);
    assert_eq!(
        sorted(r.with_outcome("not_selected")),
        ["other", "other_small", "tiny"]
    );
}

#[test]
fn matrix_instances_run_side_by_side_and_are_addressable() {
    let p = Project::new();
    p.write(
        "m.yaml",
        r#"
stages:
  shapes: { kind: dataset, from: { synthetic: { count: 4, size: 16 } } }
  small:
    kind: downsample
    input: shapes
    matrix:
      size: [8, 4]
      filter: [box, lanczos]
  pick:
    kind: downsample
    input: small[size=8,filter=box]
    size: 2
"#,
    );
    let r = p.run_ok("m.yaml");
    assert_eq!(
        sorted(r.executed()),
        [
            "pick",
            "shapes",
            "small[size=4,filter=box]",
            "small[size=4,filter=lanczos]",
            "small[size=8,filter=box]",
            "small[size=8,filter=lanczos]",
        ]
    );
    assert!(
        p.out("m", "small[size=4,filter=lanczos]")
            .join("dataset.safetensors")
            .is_file()
    );
    let dag = p.gantry(&["dag", "m.yaml", "--format", "mermaid"]);
    assert!(
        dag.stdout.contains("small[size=8,filter=box]"),
        "{}",
        dag.stdout
    );
}
