//! gantry's resize against Pillow's own output.
//!
//! `tests/fixtures/pillow/make_fixtures.py` cut a few real photographs into small
//! sources and saved what Pillow's `Image.resize` made of them for every filter and a
//! spread of sizes; `manifest.json` lists them. Every one must come out of
//! `resize_image` within 1 of Pillow's value at every pixel and channel.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use gantry_stages::resize::{Filter, resize_image};

/// Largest disagreement with Pillow allowed for any pixel value.
const TOLERANCE: u8 = 1;

#[derive(serde::Deserialize)]
struct Manifest {
    pillow: String,
    entries: Vec<Entry>,
}

#[derive(serde::Deserialize)]
struct Entry {
    source: String,
    filter: Filter,
    size: [u32; 2],
    output: String,
}

struct Decoded {
    width: u32,
    height: u32,
    channels: u8,
    pixels: Vec<u8>,
}

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/pillow")
}

fn decode(path: &Path) -> Decoded {
    let image = image::ImageReader::open(path)
        .and_then(|r| r.with_guessed_format())
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .decode()
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let (width, height) = (image.width(), image.height());
    // The fixtures are gray ("L") or RGB; anything else means they were regenerated
    // wrongly, and converting would hide it.
    let (channels, pixels) = match image {
        image::DynamicImage::ImageLuma8(gray) => (1, gray.into_raw()),
        image::DynamicImage::ImageRgb8(rgb) => (3, rgb.into_raw()),
        other => panic!(
            "{}: unexpected colour type {:?}",
            path.display(),
            other.color()
        ),
    };
    Decoded {
        width,
        height,
        channels,
        pixels,
    }
}

/// The worst case seen for one filter.
#[derive(Default)]
struct Worst {
    max_diff: u8,
    off_by_one: usize,
    values: usize,
    at: String,
}

#[test]
fn resize_matches_pillow_fixtures() {
    let dir = fixtures();
    let manifest: Manifest = serde_json::from_slice(
        &std::fs::read(dir.join("manifest.json")).expect("read manifest.json"),
    )
    .expect("parse manifest.json");

    let mut sources = BTreeMap::new();
    let mut worst: BTreeMap<&'static str, Worst> = BTreeMap::new();
    let mut failures = Vec::new();
    for entry in &manifest.entries {
        let source = sources
            .entry(entry.source.clone())
            .or_insert_with(|| decode(&dir.join(&entry.source)));
        let expected = decode(&dir.join(&entry.output));
        let [width, height] = entry.size;
        assert_eq!(
            (expected.width, expected.height, expected.channels),
            (width, height, source.channels),
            "{}: size or channels differ from the manifest",
            entry.output
        );

        let got = resize_image(
            &source.pixels,
            source.width,
            source.height,
            source.channels,
            width,
            height,
            entry.filter,
        )
        .unwrap_or_else(|e| panic!("{}: {e}", entry.output));
        assert_eq!(got.len(), expected.pixels.len(), "{}", entry.output);

        let mut max_diff = 0;
        let mut first_worst = 0;
        let mut off = 0;
        for (i, (&a, &b)) in got.iter().zip(&expected.pixels).enumerate() {
            let diff = a.abs_diff(b);
            off += usize::from(diff != 0);
            if diff > max_diff {
                max_diff = diff;
                first_worst = i;
            }
        }
        let c = usize::from(source.channels);
        let pixel = first_worst / c;
        let at = format!(
            "{} (x={}, y={}, channel {}: gantry {} vs Pillow {})",
            entry.output,
            pixel % width as usize,
            pixel / width as usize,
            first_worst % c,
            got[first_worst],
            expected.pixels[first_worst],
        );
        if max_diff > TOLERANCE {
            failures.push(format!("off by {max_diff} at {at}"));
        }
        let w = worst.entry(entry.filter.name()).or_default();
        w.off_by_one += off;
        w.values += got.len();
        if max_diff > w.max_diff || w.at.is_empty() {
            w.max_diff = max_diff;
            w.at = at;
        }
    }

    println!(
        "{} fixtures from Pillow {}",
        manifest.entries.len(),
        manifest.pillow
    );
    for (filter, w) in &worst {
        println!(
            "{filter:>8}: max |diff| {} ({} of {} values differ), worst at {}",
            w.max_diff, w.off_by_one, w.values, w.at
        );
    }
    // A manifest that lost a filter would otherwise pass without checking it.
    for filter in Filter::ALL {
        assert!(
            worst.contains_key(filter.name()),
            "no fixtures for {filter}: rerun make_fixtures.py"
        );
    }
    assert!(
        failures.is_empty(),
        "{} of {} fixtures differ from Pillow by more than {TOLERANCE}:\n{}",
        failures.len(),
        manifest.entries.len(),
        failures.join("\n")
    );
}
