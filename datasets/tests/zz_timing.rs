use gantry_datasets::*;
#[test]
fn timing() {
    for (variant, size, count) in [(SyntheticVariant::Single, 64, 256), (SyntheticVariant::Paired, 64, 256), (SyntheticVariant::Unpaired, 64, 256), (SyntheticVariant::Single, 256, 256), (SyntheticVariant::Unpaired, 1024, 16)] {
        let s = SyntheticSource { count, size, channels: 3, variant, seed: 1 };
        let t = std::time::Instant::now();
        let (d, _) = import(&Source::Synthetic(s), ".".as_ref(), OnError::Fail, &indicatif::ProgressBar::hidden()).unwrap();
        let gen = t.elapsed();
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("d.safetensors");
        let t = std::time::Instant::now();
        d.save(&p).unwrap();
        let save = t.elapsed();
        let t = std::time::Instant::now();
        Dataset::load(&p).unwrap();
        eprintln!("{variant:?} {size} x{count}: gen {gen:?} save {save:?} load {:?}", t.elapsed());
    }
}
