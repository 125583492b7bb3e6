//! Folder, paired and unpaired imports from image files written by the tests.

use std::path::{Path, PathBuf};

use gantry_datasets::{
    Channels, DatasetError, FolderLabels, FolderSource, ImportReport, Layout, OnError,
    PairedSource, Source, UnpairedSource, import, source_paths,
};
use image::{GrayImage, Luma, Rgb, RgbImage, Rgba, RgbaImage};

fn bar() -> indicatif::ProgressBar {
    indicatif::ProgressBar::hidden()
}

fn put(path: &Path) -> PathBuf {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    path.to_path_buf()
}

fn rgb(path: &Path, w: u32, h: u32, c: [u8; 3]) {
    RgbImage::from_pixel(w, h, Rgb(c)).save(put(path)).unwrap();
}

fn gray(path: &Path, w: u32, h: u32, v: u8) {
    GrayImage::from_pixel(w, h, Luma([v]))
        .save(put(path))
        .unwrap();
}

fn folder(path: &str) -> FolderSource {
    FolderSource {
        path: path.into(),
        recursive: true,
        labels: FolderLabels::Subfolders,
        channels: None,
    }
}

fn run(
    source: Source,
    base: &Path,
    on_error: OnError,
) -> Result<(gantry_datasets::Dataset, ImportReport), DatasetError> {
    import(&source, base, on_error, &bar())
}

#[test]
fn subfolder_labels_png_and_jpeg() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("pets");
    rgb(&root.join("dogs/b.PNG"), 6, 4, [0, 0, 200]);
    rgb(&root.join("cats/2.png"), 6, 4, [10, 20, 30]);
    rgb(&root.join("cats/1.jpg"), 6, 4, [200, 100, 50]);
    rgb(&root.join("dogs/a.JPEG"), 6, 4, [0, 200, 0]);
    std::fs::write(root.join("cats/notes.txt"), "not an image").unwrap();
    std::fs::write(root.join("cats/._1.png"), "macOS resource fork").unwrap();

    let progress = bar();
    let (d, report) = import(
        &Source::Folder(folder("pets")),
        dir.path(),
        OnError::Fail,
        &progress,
    )
    .unwrap();
    assert_eq!(progress.length(), Some(4));
    assert_eq!(progress.position(), 4);
    assert_eq!(report.files_read, 4);
    assert!(report.skipped.is_empty());
    assert_eq!(d.layout, Layout::Single);
    assert_eq!(d.classes, vec!["cats", "dogs"]);
    assert_eq!(d.labels, Some(vec![0, 0, 1, 1]));
    let images = &d.parts["images"];
    assert_eq!((images.width, images.height, images.channels), (6, 4, 3));
    assert_eq!(images.len(), 4);
    // Sorted order: cats/1.jpg, cats/2.png, dogs/a.JPEG, dogs/b.PNG.
    let jpeg = images.image(0);
    assert!((jpeg[0] as i32 - 200).abs() < 8 && (jpeg[2] as i32 - 50).abs() < 8);
    assert_eq!(&images.image(1)[..3], &[10, 20, 30]);
    assert_eq!(&images.image(3)[..3], &[0, 0, 200]);
    assert_eq!(d.meta["source"], "folder");
    assert_eq!(d.meta["path"], "pets");
}

#[test]
fn gray_images_stay_gray_unless_rgb_is_asked() {
    let dir = tempfile::tempdir().unwrap();
    gray(&dir.path().join("g/1.png"), 3, 3, 77);
    gray(&dir.path().join("g/2.png"), 3, 3, 99);
    let (d, _) = run(Source::Folder(folder("g")), dir.path(), OnError::Fail).unwrap();
    let images = &d.parts["images"];
    assert_eq!(images.channels, 1);
    assert_eq!(images.image(1), &[99; 9]);
    assert_eq!(
        d.labels, None,
        "images directly in the root carry no labels"
    );

    let mut src = folder("g");
    src.channels = Some(Channels::Rgb);
    let (d, _) = run(Source::Folder(src), dir.path(), OnError::Fail).unwrap();
    assert_eq!(d.parts["images"].channels, 3);
    assert_eq!(d.parts["images"].image(0), &[77; 27]);
}

#[test]
fn one_colour_image_makes_all_rgb_and_gray_converts_to_luma() {
    let dir = tempfile::tempdir().unwrap();
    gray(&dir.path().join("m/1.png"), 2, 2, 50);
    rgb(&dir.path().join("m/2.png"), 2, 2, [255, 0, 0]);
    RgbaImage::from_pixel(2, 2, Rgba([0, 255, 0, 10]))
        .save(dir.path().join("m/3.png"))
        .unwrap();
    let mut src = folder("m");
    src.labels = FolderLabels::None;
    let (d, _) = run(Source::Folder(src.clone()), dir.path(), OnError::Fail).unwrap();
    let images = &d.parts["images"];
    assert_eq!(images.channels, 3);
    assert_eq!(&images.image(0)[..3], &[50, 50, 50]);
    assert_eq!(&images.image(2)[..3], &[0, 255, 0], "alpha is dropped");

    src.channels = Some(Channels::Gray);
    let (d, _) = run(Source::Folder(src), dir.path(), OnError::Fail).unwrap();
    let images = &d.parts["images"];
    assert_eq!(images.channels, 1);
    assert_eq!(images.image(0), &[50; 4]);
    assert_eq!(images.image(1)[0], 76, "BT.601 luma of pure red");
    assert_eq!(images.image(2)[0], 150, "BT.601 luma of pure green");
}

#[test]
fn recursive_false_reads_only_the_root() {
    let dir = tempfile::tempdir().unwrap();
    gray(&dir.path().join("r/top.png"), 2, 2, 1);
    gray(&dir.path().join("r/sub/deep.png"), 2, 2, 2);
    let mut src = folder("r");
    src.recursive = false;
    let (d, _) = run(Source::Folder(src), dir.path(), OnError::Fail).unwrap();
    assert_eq!(d.parts["images"].len(), 1);
    assert_eq!(d.labels, None);
}

#[test]
fn images_both_in_root_and_subfolders_need_labels_none() {
    let dir = tempfile::tempdir().unwrap();
    gray(&dir.path().join("x/top.png"), 2, 2, 1);
    gray(&dir.path().join("x/sub/deep.png"), 2, 2, 2);
    let err = run(Source::Folder(folder("x")), dir.path(), OnError::Fail).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("top.png") && msg.contains("labels: none"),
        "{msg}"
    );

    let mut src = folder("x");
    src.labels = FolderLabels::None;
    let (d, _) = run(Source::Folder(src), dir.path(), OnError::Fail).unwrap();
    assert_eq!(d.parts["images"].len(), 2);
}

/// A folder with one good image, a corrupt one, a truncated one and a wrong-sized one.
fn bad_folder(root: &Path) -> [PathBuf; 4] {
    let good = root.join("a_good.png");
    gray(&good, 32, 32, 5);
    let corrupt = root.join("b_corrupt.png");
    std::fs::write(
        &corrupt,
        [0x13, 0x37, 0xde, 0xad, 0xbe, 0xef, 1, 2, 3, 4, 5],
    )
    .unwrap();
    let truncated = root.join("c_truncated.png");
    let src = root.join("tmp.bin");
    RgbImage::from_fn(32, 32, |x, y| Rgb([x as u8 * 8, y as u8 * 8, 3]))
        .save_with_format(&src, image::ImageFormat::Png)
        .unwrap();
    let bytes = std::fs::read(&src).unwrap();
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    std::fs::remove_file(&src).unwrap();
    let mixed = root.join("d_mixed.png");
    gray(&mixed, 30, 20, 9);
    [good, corrupt, truncated, mixed]
}

#[test]
fn corrupt_file_error_names_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let [_, corrupt, ..] = bad_folder(&dir.path().join("bad"));
    let err = run(Source::Folder(folder("bad")), dir.path(), OnError::Fail).unwrap_err();
    assert!(matches!(err, DatasetError::Decode { .. }), "{err:?}");
    let expected = format!("{}: cannot decode image:", corrupt.display());
    assert!(err.to_string().starts_with(&expected), "{err}");
}

#[test]
fn truncated_png_error_names_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let [_, corrupt, truncated, _] = bad_folder(&dir.path().join("bad"));
    std::fs::remove_file(corrupt).unwrap();
    let err = run(Source::Folder(folder("bad")), dir.path(), OnError::Fail).unwrap_err();
    let msg = err.to_string();
    assert!(msg.starts_with(&truncated.display().to_string()), "{msg}");
    assert!(msg.contains("cannot decode image"), "{msg}");
}

#[test]
fn mixed_sizes_error_names_both_files() {
    let dir = tempfile::tempdir().unwrap();
    let [good, corrupt, truncated, mixed] = bad_folder(&dir.path().join("bad"));
    std::fs::remove_file(corrupt).unwrap();
    std::fs::remove_file(truncated).unwrap();
    let err = run(Source::Folder(folder("bad")), dir.path(), OnError::Fail).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "{}: image is 30x20 but earlier images are 32x32 (first: {})",
            mixed.display(),
            good.display()
        )
    );
}

#[test]
fn skip_reports_every_bad_file() {
    let dir = tempfile::tempdir().unwrap();
    let [_, corrupt, truncated, mixed] = bad_folder(&dir.path().join("bad"));
    let (d, report) = run(Source::Folder(folder("bad")), dir.path(), OnError::Skip).unwrap();
    assert_eq!(d.parts["images"].len(), 1);
    assert_eq!(d.parts["images"].image(0), &[5; 32 * 32]);
    assert_eq!(report.files_read, 4);
    let skipped: Vec<&PathBuf> = report.skipped.iter().map(|(p, _)| p).collect();
    assert_eq!(skipped, vec![&corrupt, &truncated, &mixed]);
    assert!(report.skipped[0].1.starts_with("cannot decode image"));
    assert!(report.skipped[2].1.starts_with("image is 30x20"));
}

#[test]
fn skip_takes_the_first_decoded_image_as_size_reference() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("s");
    std::fs::create_dir_all(&root).unwrap();
    std::fs::write(root.join("0.png"), b"junk").unwrap();
    gray(&root.join("1.png"), 4, 4, 1);
    gray(&root.join("2.png"), 8, 8, 2);
    gray(&root.join("3.png"), 4, 4, 3);
    let (d, report) = run(Source::Folder(folder("s")), dir.path(), OnError::Skip).unwrap();
    assert_eq!(d.parts["images"].width, 4);
    assert_eq!(d.parts["images"].len(), 2);
    assert_eq!(report.skipped.len(), 2);

    std::fs::remove_file(root.join("1.png")).unwrap();
    std::fs::remove_file(root.join("2.png")).unwrap();
    std::fs::remove_file(root.join("3.png")).unwrap();
    let err = run(Source::Folder(folder("s")), dir.path(), OnError::Skip).unwrap_err();
    assert!(matches!(err, DatasetError::AllSkipped { .. }), "{err}");
}

#[test]
fn empty_and_missing_folders() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("empty")).unwrap();
    std::fs::write(dir.path().join("empty/readme.md"), "hi").unwrap();
    let err = run(Source::Folder(folder("empty")), dir.path(), OnError::Fail).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "{}: no PNG or JPEG images found",
            dir.path().join("empty").display()
        )
    );
    let err = run(Source::Folder(folder("nope")), dir.path(), OnError::Skip).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.starts_with(&dir.path().join("nope").display().to_string()),
        "{msg}"
    );
    assert!(msg.contains("folder not found"), "{msg}");
}

#[test]
fn absolute_paths_ignore_base_dir() {
    let dir = tempfile::tempdir().unwrap();
    gray(&dir.path().join("abs/1.png"), 2, 2, 1);
    let src = folder(dir.path().join("abs").to_str().unwrap());
    let (d, _) = run(
        Source::Folder(src),
        Path::new("/nonexistent"),
        OnError::Fail,
    )
    .unwrap();
    assert_eq!(d.parts["images"].len(), 1);
}

fn side_by_side(path: &Path, w: u32, h: u32) {
    RgbImage::from_fn(w, h, |x, y| {
        if x < w / 2 {
            Rgb([200, y as u8, x as u8])
        } else {
            Rgb([0, 0, 100 + x as u8])
        }
    })
    .save(put(path))
    .unwrap();
}

#[test]
fn paired_images_are_split_in_half() {
    let dir = tempfile::tempdir().unwrap();
    side_by_side(&dir.path().join("maps/train/1.jpg.png"), 8, 3);
    side_by_side(&dir.path().join("maps/train/sub/2.png"), 8, 3);
    let src = Source::Paired(PairedSource {
        path: "maps".into(),
        recursive: true,
        channels: None,
    });
    let (d, report) = run(src, dir.path(), OnError::Fail).unwrap();
    assert_eq!(report.files_read, 2);
    assert_eq!(d.layout, Layout::Paired);
    let (a, b) = (&d.parts["a"], &d.parts["b"]);
    assert_eq!((a.width, a.height, a.channels, a.len()), (4, 3, 3, 2));
    assert_eq!((b.width, b.height, b.channels, b.len()), (4, 3, 3, 2));
    // Row 1 of a: x = 0..4 on the left; row 1 of b: x = 4..8 on the right.
    assert_eq!(
        &a.image(0)[12..24],
        &[200, 1, 0, 200, 1, 1, 200, 1, 2, 200, 1, 3]
    );
    assert_eq!(
        &b.image(0)[12..24],
        &[0, 0, 104, 0, 0, 105, 0, 0, 106, 0, 0, 107]
    );
}

#[test]
fn paired_odd_width_names_the_file() {
    let dir = tempfile::tempdir().unwrap();
    side_by_side(&dir.path().join("p/0.png"), 8, 3);
    let odd = dir.path().join("p/1.png");
    side_by_side(&odd, 7, 3);
    let src = Source::Paired(PairedSource {
        path: "p".into(),
        recursive: true,
        channels: None,
    });
    let err = run(src.clone(), dir.path(), OnError::Fail).unwrap_err();
    assert!(matches!(err, DatasetError::OddWidth { width: 7, .. }));
    assert!(err.to_string().starts_with(&odd.display().to_string()));

    let (d, report) = run(src, dir.path(), OnError::Skip).unwrap();
    assert_eq!(d.parts["a"].len(), 1);
    assert_eq!(report.skipped[0].0, odd);
}

fn unpaired(split: &str) -> Source {
    Source::Unpaired(UnpairedSource {
        path: "h2z".into(),
        split: split.into(),
        channels: None,
    })
}

#[test]
fn unpaired_reads_both_domains() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("h2z");
    for i in 0..3 {
        rgb(&root.join(format!("trainA/{i}.jpg")), 8, 8, [200, 150, 100]);
    }
    for i in 0..2 {
        rgb(&root.join(format!("trainB/{i}.png")), 8, 8, [20, 30, 40]);
    }
    gray(&root.join("testA/0.png"), 8, 8, 1);
    gray(&root.join("testB/0.png"), 8, 8, 2);

    let (d, report) = run(unpaired("train"), dir.path(), OnError::Fail).unwrap();
    assert_eq!(report.files_read, 5);
    assert_eq!(d.layout, Layout::Unpaired);
    assert_eq!(d.parts["a"].len(), 3);
    assert_eq!(d.parts["b"].len(), 2);
    assert_eq!(&d.parts["b"].image(1)[..3], &[20, 30, 40]);
    assert_eq!(d.labels, None);

    let (d, _) = run(unpaired("test"), dir.path(), OnError::Fail).unwrap();
    assert_eq!(d.parts["a"].channels, 1);
    assert_eq!(d.parts["b"].image(0), &[2; 64]);

    assert_eq!(
        source_paths(&unpaired("test"), dir.path()),
        vec![root.join("testA"), root.join("testB")]
    );
}

#[test]
fn unpaired_missing_domain_is_named() {
    let dir = tempfile::tempdir().unwrap();
    gray(&dir.path().join("h2z/trainA/0.png"), 8, 8, 1);
    let err = run(unpaired("train"), dir.path(), OnError::Fail).unwrap_err();
    assert!(matches!(err, DatasetError::MissingDomain { .. }));
    let msg = err.to_string();
    let b = dir.path().join("h2z/trainB");
    assert!(
        msg.starts_with(&format!("{}: folder not found", b.display())),
        "{msg}"
    );
    assert!(msg.contains("`trainA` and `trainB`"), "{msg}");
}

#[test]
fn unpaired_domains_must_share_a_size() {
    let dir = tempfile::tempdir().unwrap();
    gray(&dir.path().join("h2z/trainA/0.png"), 8, 8, 1);
    gray(&dir.path().join("h2z/trainB/0.png"), 4, 4, 1);
    let err = run(unpaired("train"), dir.path(), OnError::Fail).unwrap_err();
    assert!(matches!(err, DatasetError::MixedSizes { .. }), "{err}");
}
