//! Writes PyTorch zip checkpoints without torch, for the tests of `.pth` loading.

use std::path::Path;

/// A PyTorch zip checkpoint as `torch.save(state_dict)` writes one (pickle protocol 2,
/// one storage file per tensor), or `torch.save({"state_dict": state_dict})` when
/// `nested`: enough of the format to hand `inception::load` a `.pth` without torch.
pub fn write_pth(tensors: &[(String, Vec<usize>, Vec<f32>)], nested: bool, path: &Path) {
    use std::io::Write;
    fn global(p: &mut Vec<u8>, module: &str, name: &str) {
        p.push(b'c');
        p.extend_from_slice(format!("{module}\n{name}\n").as_bytes());
    }
    fn text(p: &mut Vec<u8>, s: &str) {
        p.push(b'X');
        p.extend_from_slice(&(s.len() as u32).to_le_bytes());
        p.extend_from_slice(s.as_bytes());
    }
    fn int(p: &mut Vec<u8>, v: usize) {
        p.push(b'J');
        p.extend_from_slice(&(v as i32).to_le_bytes());
    }
    fn ints(p: &mut Vec<u8>, vs: &[usize]) {
        p.push(b'(');
        for &v in vs {
            int(p, v);
        }
        p.push(b't');
    }
    let mut pkl = vec![0x80, 2];
    if nested {
        pkl.extend_from_slice(b"}(");
        text(&mut pkl, "state_dict");
    }
    global(&mut pkl, "collections", "OrderedDict");
    pkl.extend_from_slice(b")R(");
    for (i, (name, shape, values)) in tensors.iter().enumerate() {
        text(&mut pkl, name);
        global(&mut pkl, "torch._utils", "_rebuild_tensor_v2");
        pkl.push(b'(');
        pkl.push(b'(');
        text(&mut pkl, "storage");
        global(&mut pkl, "torch", "FloatStorage");
        text(&mut pkl, &i.to_string());
        text(&mut pkl, "cpu");
        int(&mut pkl, values.len());
        pkl.extend_from_slice(b"tQ");
        int(&mut pkl, 0);
        ints(&mut pkl, shape);
        let strides: Vec<usize> = (0..shape.len())
            .map(|d| shape[d + 1..].iter().product())
            .collect();
        ints(&mut pkl, &strides);
        pkl.push(0x89);
        global(&mut pkl, "collections", "OrderedDict");
        pkl.extend_from_slice(b")RtR");
    }
    pkl.push(b'u');
    if nested {
        pkl.push(b'u');
    }
    pkl.push(b'.');

    let mut zip = zip::ZipWriter::new(std::fs::File::create(path).unwrap());
    let stored = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Stored)
        .large_file(true);
    zip.start_file("archive/data.pkl", stored).unwrap();
    zip.write_all(&pkl).unwrap();
    for (i, (_, _, values)) in tensors.iter().enumerate() {
        zip.start_file(format!("archive/data/{i}"), stored).unwrap();
        let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        zip.write_all(&bytes).unwrap();
    }
    zip.start_file("archive/version", stored).unwrap();
    zip.write_all(b"3\n").unwrap();
    zip.finish().unwrap();
}
