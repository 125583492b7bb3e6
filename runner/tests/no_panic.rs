//! No pipeline text makes the parser panic: every prefix of real pipelines, and
//! single-byte mutations of them, give a pipeline or an error.

use std::path::PathBuf;

fn pipelines() -> Vec<(String, String)> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut out = Vec::new();
    for dir in ["pipelines", "tests/malformed"] {
        for e in std::fs::read_dir(root.join(dir)).unwrap().flatten() {
            let p = e.path();
            if p.extension().is_some_and(|x| x == "yaml") {
                out.push((
                    p.display().to_string(),
                    std::fs::read_to_string(&p).unwrap(),
                ));
            }
        }
    }
    out.sort();
    out
}

fn parse(text: &str) {
    let _ = gantry_runner::spec::parse_str(text, "fuzz.yaml", PathBuf::from("."), "fuzz", &[]);
}

#[test]
fn prefixes_and_mutations_never_panic() {
    let replacements: &[&[u8]] = &[
        b"", b":", b"[", b"{", b"-", b"\"", b"$", b"\t", b"\n", b"x", b"9",
    ];
    let mut cases = 0;
    for (name, text) in pipelines() {
        let bytes = text.as_bytes();
        for cut in 0..=bytes.len() {
            if let Ok(prefix) = std::str::from_utf8(&bytes[..cut]) {
                let r = std::panic::catch_unwind(|| parse(prefix));
                assert!(r.is_ok(), "{name}: panicked on the first {cut} bytes");
                cases += 1;
            }
        }
        // Mutations at every 3rd byte keep the test fast and still cover every line.
        for at in (0..bytes.len()).step_by(3) {
            for rep in replacements {
                let mut m = bytes[..at].to_vec();
                m.extend_from_slice(rep);
                m.extend_from_slice(&bytes[at + 1..]);
                if let Ok(s) = String::from_utf8(m) {
                    let r = std::panic::catch_unwind(|| parse(&s));
                    assert!(
                        r.is_ok(),
                        "{name}: panicked with {rep:?} at byte {at}:\n{s}"
                    );
                    cases += 1;
                }
            }
        }
    }
    assert!(cases > 10_000, "only {cases} cases");
}
