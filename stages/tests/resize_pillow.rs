//! gantry's resize against Pillow's own output.
//!
//! `tests/fixtures/pillow/make_fixtures.py` cut a few real photographs into small
//! sources and saved what Pillow's `Image.resize` made of them for every filter and a
//! spread of sizes; `manifest.json` lists them. The contract is that every value comes
//! out of `resize_image` within 1 of Pillow's; the implementation does Pillow's
//! arithmetic and in fact matches bit for bit, which a second test holds it to, so
//! that a change which starts rounding differently is noticed even while it stays
//! within the contract.

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

/// One fixture compared: how far gantry's result is from Pillow's.
struct Outcome {
    filter: Filter,
    output: String,
    max_diff: u8,
    differing: usize,
    values: usize,
    /// Where the first largest difference is, in words.
    at: String,
}

fn compare_all() -> (String, Vec<Outcome>) {
    let dir = fixtures();
    let manifest: Manifest = serde_json::from_slice(
        &std::fs::read(dir.join("manifest.json")).expect("read manifest.json"),
    )
    .expect("parse manifest.json");

    let mut sources = BTreeMap::new();
    let mut outcomes = Vec::new();
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
        let mut worst = 0;
        let mut differing = 0;
        for (i, (&a, &b)) in got.iter().zip(&expected.pixels).enumerate() {
            let diff = a.abs_diff(b);
            differing += usize::from(diff != 0);
            if diff > max_diff {
                max_diff = diff;
                worst = i;
            }
        }
        let c = usize::from(source.channels);
        let pixel = worst / c;
        let at = format!(
            "x={}, y={}, channel {}: gantry {} vs Pillow {}",
            pixel % width as usize,
            pixel / width as usize,
            worst % c,
            got[worst],
            expected.pixels[worst],
        );
        outcomes.push(Outcome {
            filter: entry.filter,
            output: entry.output.clone(),
            max_diff,
            differing,
            values: got.len(),
            at,
        });
    }
    (manifest.pillow, outcomes)
}

/// Prints the worst case per filter and checks that every filter was exercised.
fn report(pillow: &str, outcomes: &[Outcome]) {
    println!("{} fixtures from Pillow {pillow}", outcomes.len());
    for filter in Filter::ALL {
        let mine: Vec<&Outcome> = outcomes.iter().filter(|o| o.filter == filter).collect();
        // A manifest that lost a filter would otherwise pass without checking it.
        assert!(
            !mine.is_empty(),
            "no fixtures for {filter}: rerun make_fixtures.py"
        );
        let worst = mine.iter().max_by_key(|o| o.max_diff).expect("not empty");
        let differing: usize = mine.iter().map(|o| o.differing).sum();
        let values: usize = mine.iter().map(|o| o.values).sum();
        let worst_at = match worst.max_diff {
            0 => String::from("identical"),
            _ => format!("worst in {} at {}", worst.output, worst.at),
        };
        println!(
            "{filter:>8}: max |diff| {} over {} fixtures, {differing} of {values} values \
             differ; {worst_at}",
            worst.max_diff,
            mine.len(),
        );
    }
}

fn failures(outcomes: &[Outcome], tolerance: u8) -> Vec<String> {
    outcomes
        .iter()
        .filter(|o| o.max_diff > tolerance)
        .map(|o| format!("off by {} in {} at {}", o.max_diff, o.output, o.at))
        .collect()
}

#[test]
fn resize_is_within_one_of_pillow() {
    let (pillow, outcomes) = compare_all();
    report(&pillow, &outcomes);
    let failed = failures(&outcomes, TOLERANCE);
    assert!(
        failed.is_empty(),
        "{} of {} fixtures differ from Pillow {pillow} by more than {TOLERANCE}:\n{}",
        failed.len(),
        outcomes.len(),
        failed.join("\n")
    );
}

#[test]
fn resize_is_identical_to_pillow() {
    let (pillow, outcomes) = compare_all();
    let failed = failures(&outcomes, 0);
    assert!(
        failed.is_empty(),
        "{} of {} fixtures differ from Pillow {pillow} at all:\n{}",
        failed.len(),
        outcomes.len(),
        failed.join("\n")
    );
}
