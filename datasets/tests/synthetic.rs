use gantry_datasets::{
    Dataset, Layout, OnError, SHAPE_CLASSES, Source, SyntheticSource, SyntheticVariant, import,
    source_paths,
};

fn generate(src: SyntheticSource) -> Dataset {
    let source = Source::Synthetic(src);
    assert!(source_paths(&source, "/base".as_ref()).is_empty());
    let (d, report) = import(
        &source,
        "/base".as_ref(),
        OnError::Fail,
        &indicatif::ProgressBar::hidden(),
    )
    .unwrap();
    assert_eq!(report.files_read, 0);
    d
}

fn src(
    count: usize,
    size: u32,
    channels: u8,
    variant: SyntheticVariant,
    seed: u64,
) -> SyntheticSource {
    SyntheticSource {
        count,
        size,
        channels,
        variant,
        seed,
    }
}

#[test]
fn same_parameters_same_bytes() {
    for variant in [
        SyntheticVariant::Single,
        SyntheticVariant::Paired,
        SyntheticVariant::Unpaired,
        SyntheticVariant::Digits,
    ] {
        let a = generate(src(12, 16, 3, variant, 5));
        let b = generate(src(12, 16, 3, variant, 5));
        assert_eq!(a, b, "{variant:?}");

        let dir = tempfile::tempdir().unwrap();
        let (p, q) = (dir.path().join("p"), dir.path().join("q"));
        a.save(&p).unwrap();
        b.save(&q).unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), std::fs::read(&q).unwrap());
        assert_eq!(Dataset::load(&p).unwrap(), a);
    }
}

#[test]
fn seeds_differ_and_images_differ() {
    let a = generate(src(8, 16, 3, SyntheticVariant::Single, 0));
    let b = generate(src(8, 16, 3, SyntheticVariant::Single, 1));
    assert_ne!(a.parts["images"], b.parts["images"]);
    let images = &a.parts["images"];
    for i in 1..images.len() {
        assert_ne!(images.image(0), images.image(i));
    }
    // A larger count extends a smaller one: image i depends only on (seed, i).
    let c = generate(src(4, 16, 3, SyntheticVariant::Single, 0));
    assert_eq!(
        c.parts["images"].pixels[..],
        images.pixels[..c.parts["images"].pixels.len()]
    );
}

#[test]
fn thread_count_does_not_matter() {
    let params = src(24, 32, 3, SyntheticVariant::Unpaired, 9);
    let pool = |n| {
        rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .build()
            .unwrap()
    };
    let one = pool(1).install(|| generate(params.clone()));
    let two = pool(2).install(|| generate(params.clone()));
    let four = pool(4).install(|| generate(params.clone()));
    assert_eq!(one, two);
    assert_eq!(one, four);
}

#[test]
fn single_labels_cover_the_classes() {
    let d = generate(src(256, 16, 3, SyntheticVariant::Single, 3));
    assert_eq!(d.layout, Layout::Single);
    assert_eq!(d.classes, SHAPE_CLASSES.to_vec());
    let labels = d.labels.as_ref().unwrap();
    assert_eq!(labels.len(), 256);
    for class in 0..4u32 {
        let n = labels.iter().filter(|&&l| l == class).count();
        assert!(n > 30, "class {class} appears {n} times");
    }
    assert!(labels.iter().all(|&l| l < 4));
    assert_eq!(d.meta["source"], "synthetic");
    assert_eq!(d.meta["seed"], "3");
}

#[test]
fn images_are_textured_not_flat() {
    let d = generate(src(4, 64, 3, SyntheticVariant::Single, 0));
    let images = &d.parts["images"];
    for i in 0..images.len() {
        let img = images.image(i);
        let mut values: Vec<u8> = img.to_vec();
        values.sort_unstable();
        values.dedup();
        assert!(
            values.len() > 64,
            "image {i} has {} distinct values",
            values.len()
        );
    }
}

#[test]
fn gray_variant_has_one_channel() {
    let d = generate(src(4, 8, 1, SyntheticVariant::Paired, 0));
    assert_eq!(d.parts["a"].channels, 1);
    assert_eq!(d.parts["b"].channels, 1);
    assert_eq!(d.parts["a"].image_len(), 64);
}

#[test]
fn paired_maps_are_flat_and_match_the_photo() {
    let d = generate(src(16, 32, 3, SyntheticVariant::Paired, 2));
    assert_eq!(d.layout, Layout::Paired);
    let (a, b) = (&d.parts["a"], &d.parts["b"]);
    assert_eq!(a.len(), 16);
    assert_eq!(b.len(), 16);
    assert_eq!(d.labels.as_ref().unwrap().len(), 16);
    for i in 0..16 {
        let mut colours: Vec<&[u8]> = a.image(i).chunks(3).collect();
        colours.sort_unstable();
        colours.dedup();
        assert_eq!(colours.len(), 2, "map {i}: background and one class colour");
        assert_ne!(a.image(i), b.image(i));
    }
}

#[test]
fn unpaired_backgrounds_match_outside_the_masks() {
    for size in [8, 13, 32, 64] {
        let d = generate(src(32, size, 3, SyntheticVariant::Unpaired, 4));
        assert_eq!(d.layout, Layout::Unpaired);
        assert_eq!(d.labels, None);
        let (a, b) = (&d.parts["a"], &d.parts["b"]);
        let (ma, mb) = (&d.parts["mask_a"], &d.parts["mask_b"]);
        assert_eq!(ma.channels, 1);
        let pixels = (size * size) as usize;
        for i in 0..32 {
            let (ia, ib, ma, mb) = (a.image(i), b.image(i), ma.image(i), mb.image(i));
            assert!(ma.iter().all(|&m| m == 0 || m == 255));
            let fg_a = ma.iter().filter(|&&m| m == 255).count();
            let fg_b = mb.iter().filter(|&&m| m == 255).count();
            assert!(fg_a > 0 && fg_b > 0, "size {size} image {i}: empty mask");
            assert!(fg_a < pixels && fg_b < pixels);
            let mut background = 0;
            for p in 0..pixels {
                if ma[p] == 0 && mb[p] == 0 {
                    background += 1;
                    assert_eq!(
                        ia[p * 3..p * 3 + 3],
                        ib[p * 3..p * 3 + 3],
                        "size {size} image {i} pixel {p}"
                    );
                }
            }
            assert!(background > 0);
            // The foregrounds do differ: the domains are not the same image.
            assert_ne!(ia, ib);
        }
    }
}

#[test]
fn large_and_odd_sizes_work() {
    for size in [9, 255, 256] {
        let d = generate(src(2, size, 3, SyntheticVariant::Single, 0));
        assert_eq!(d.parts["images"].width, size);
        assert_eq!(
            d.parts["images"].pixels.len(),
            2 * (size * size * 3) as usize
        );
    }
    let d = generate(src(1, 1024, 1, SyntheticVariant::Unpaired, 0));
    assert_eq!(d.parts["mask_b"].image_len(), 1024 * 1024);
}

#[test]
fn bad_parameters_are_errors() {
    let bar = indicatif::ProgressBar::hidden();
    for (s, needle) in [
        (src(4, 7, 3, SyntheticVariant::Single, 0), "size 7"),
        (src(4, 8, 2, SyntheticVariant::Single, 0), "channels"),
        (src(0, 8, 3, SyntheticVariant::Single, 0), "count"),
        (
            src(usize::MAX, 16384, 3, SyntheticVariant::Single, 0),
            "memory",
        ),
    ] {
        let err = import(&Source::Synthetic(s), ".".as_ref(), OnError::Fail, &bar).unwrap_err();
        assert!(err.to_string().contains(needle), "{err}");
    }
}

#[test]
fn generation_is_fast() {
    // A generous bound (about 20 ms in release, 30 ms in the test profile): it only
    // catches a pathological slowdown such as a ChaCha draw per pixel in a debug build.
    let t = std::time::Instant::now();
    let d = generate(src(256, 64, 3, SyntheticVariant::Unpaired, 0));
    assert_eq!(d.parts["a"].len(), 256);
    assert!(t.elapsed().as_secs_f64() < 5.0, "took {:?}", t.elapsed());
}

#[test]
fn digits_are_labelled_0_to_9_and_drawn_light_on_black() {
    let d = generate(src(200, 28, 1, SyntheticVariant::Digits, 3));
    let labels = d.labels.as_ref().unwrap();
    assert_eq!(
        d.classes,
        (0..10).map(|i| i.to_string()).collect::<Vec<_>>()
    );
    for digit in 0..10u32 {
        assert!(labels.contains(&digit), "digit {digit} never drawn");
    }
    let images = &d.parts["images"];
    for i in 0..images.len() {
        let img = images.image(i);
        let lit = img.iter().filter(|&&v| v > 128).count();
        // A stroke, on a mostly black background.
        assert!(
            lit > 20 && lit < img.len() / 2,
            "image {i}: {lit} lit pixels"
        );
        assert_eq!(img[0], 0, "image {i}: corner not black");
    }
}
