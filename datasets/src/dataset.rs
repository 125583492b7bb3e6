//! The canonical dataset artifact and its safetensors file.
//!
//! The header is written by hand rather than with `safetensors::serialize`, because that
//! function serialises `__metadata__` from a `HashMap` whose order changes from process to
//! process, and the cache needs byte-identical files for identical datasets.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufWriter, Read, Seek, SeekFrom, Write};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use safetensors::Dtype;
use safetensors::tensor::Metadata;
use serde::{Deserialize, Serialize};

use crate::{DatasetError, ImageSet};

/// The file name of a dataset inside a stage's output folder.
pub const DATASET_FILE: &str = "dataset.safetensors";

const FORMAT_KEY: &str = "gantry.format";
const FORMAT_VERSION: &str = "1";
const LAYOUT_KEY: &str = "gantry.layout";
const CLASSES_KEY: &str = "gantry.classes";
const META_PREFIX: &str = "meta.";
const LABELS_TENSOR: &str = "labels";
/// Parts with this prefix are foreground masks: one channel, 255 = foreground.
pub const MASK_PREFIX: &str = "mask_";
/// safetensors' own limit; a bigger header is refused by every reader.
const MAX_HEADER_LEN: u64 = 100_000_000;

/// How the parts of a dataset relate to each other.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Layout {
    /// One part, `images`, optionally labelled.
    Single,
    /// Parts `a` and `b` of equal length; image i of `a` pairs with image i of `b`.
    Paired,
    /// Parts `a` and `b` from two domains; their lengths may differ.
    Unpaired,
}

impl Layout {
    pub fn as_str(self) -> &'static str {
        match self {
            Layout::Single => "single",
            Layout::Paired => "paired",
            Layout::Unpaired => "unpaired",
        }
    }

    fn parse(s: &str) -> Option<Layout> {
        match s {
            "single" => Some(Layout::Single),
            "paired" => Some(Layout::Paired),
            "unpaired" => Some(Layout::Unpaired),
            _ => None,
        }
    }

    /// The parts every dataset of this layout has.
    pub fn required_parts(self) -> &'static [&'static str] {
        match self {
            Layout::Single => &["images"],
            Layout::Paired | Layout::Unpaired => &["a", "b"],
        }
    }

    /// The part that `labels` index into, if this layout may carry labels.
    pub fn labelled_part(self) -> Option<&'static str> {
        match self {
            Layout::Single => Some("images"),
            Layout::Paired => Some("a"),
            Layout::Unpaired => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Dataset {
    pub layout: Layout,
    /// Single: "images". Paired: "a" and "b" (same count, index i of a pairs with i of b).
    /// Unpaired: "a" and "b" (counts may differ). Parts whose name starts with "mask_" are
    /// masks (1 channel, 255 = foreground, resize them with nearest).
    pub parts: BTreeMap<String, ImageSet>,
    /// One label per image of "images" (Single) or of "a" (Paired).
    pub labels: Option<Vec<u32>>,
    /// Class names, index = label.
    pub classes: Vec<String>,
    /// Free-form provenance (source kind, path).
    pub meta: BTreeMap<String, String>,
}

/// One entry of the safetensors header, in the field order safetensors itself writes.
#[derive(Serialize)]
struct TensorEntry {
    dtype: &'static str,
    shape: Vec<usize>,
    data_offsets: [usize; 2],
}

enum Payload<'a> {
    Bytes(&'a [u8]),
    Labels(&'a [u32]),
}

impl Payload<'_> {
    fn len(&self) -> usize {
        match self {
            Payload::Bytes(b) => b.len(),
            Payload::Labels(l) => l.len() * 8,
        }
    }
}

impl Dataset {
    /// A Single dataset of `images`, without labels.
    pub fn single(images: ImageSet) -> Dataset {
        Dataset {
            layout: Layout::Single,
            parts: BTreeMap::from([("images".to_string(), images)]),
            labels: None,
            classes: Vec::new(),
            meta: BTreeMap::new(),
        }
    }

    /// True for parts that hold masks rather than images.
    pub fn is_mask(part: &str) -> bool {
        part.starts_with(MASK_PREFIX)
    }

    /// The number of examples: images in "images" (Single) or in "a" (Paired, Unpaired).
    pub fn len(&self) -> usize {
        self.layout
            .required_parts()
            .first()
            .and_then(|p| self.parts.get(*p))
            .map_or(0, ImageSet::len)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Checks the invariants that [`Dataset::save`] and [`Dataset::load`] promise.
    /// `path` only names the file in the error.
    pub fn validate(&self, path: &Path) -> Result<(), DatasetError> {
        let bad = |reason: String| DatasetError::bad_dataset(path, reason);
        for required in self.layout.required_parts() {
            if !self.parts.contains_key(*required) {
                return Err(bad(format!(
                    "a {} dataset needs a part named '{required}' (has: {})",
                    self.layout.as_str(),
                    self.part_names()
                )));
            }
        }
        for (name, set) in &self.parts {
            if name.is_empty() || name == LABELS_TENSOR || name.starts_with("__") {
                return Err(bad(format!("'{name}' is not a valid part name")));
            }
            if set.width == 0 || set.height == 0 {
                return Err(bad(format!(
                    "part '{name}' has images of {}x{} pixels",
                    set.width, set.height
                )));
            }
            let wanted: &[u8] = if Dataset::is_mask(name) {
                &[1]
            } else {
                &[1, 3]
            };
            if !wanted.contains(&set.channels) {
                return Err(bad(format!(
                    "part '{name}' has {} channels, expected {}",
                    set.channels,
                    if wanted.len() == 1 { "1" } else { "1 or 3" }
                )));
            }
            if set.pixels.len() % set.image_len() != 0 {
                return Err(bad(format!(
                    "part '{name}' holds {} bytes, not a multiple of {}x{}x{}",
                    set.pixels.len(),
                    set.width,
                    set.height,
                    set.channels
                )));
            }
        }
        if self.layout == Layout::Paired {
            let counts: Vec<_> = self.parts.iter().map(|(n, s)| (n, s.len())).collect();
            if counts.windows(2).any(|w| w[0].1 != w[1].1) {
                return Err(bad(format!(
                    "a paired dataset needs equally many images in every part, has {counts:?}"
                )));
            }
        }
        if self.layout == Layout::Unpaired {
            for domain in ["a", "b"] {
                let mask = format!("{MASK_PREFIX}{domain}");
                if let (Some(images), Some(masks)) = (self.parts.get(domain), self.parts.get(&mask))
                    && (images.len(), images.width, images.height)
                        != (masks.len(), masks.width, masks.height)
                {
                    return Err(bad(format!(
                        "part '{mask}' must hold one {}x{} mask per image of '{domain}'",
                        images.width, images.height
                    )));
                }
            }
        }
        if let Some(labels) = &self.labels {
            let Some(part) = self.layout.labelled_part() else {
                return Err(bad(format!(
                    "a {} dataset cannot have labels",
                    self.layout.as_str()
                )));
            };
            let n = self.parts.get(part).map_or(0, ImageSet::len);
            if labels.len() != n {
                return Err(bad(format!(
                    "{} labels for {n} images in part '{part}'",
                    labels.len()
                )));
            }
            if let Some(&max) = labels.iter().max()
                && max as usize >= self.classes.len()
            {
                return Err(bad(format!(
                    "label {max} but only {} classes",
                    self.classes.len()
                )));
            }
        }
        Ok(())
    }

    fn part_names(&self) -> String {
        let names: Vec<&str> = self.parts.keys().map(String::as_str).collect();
        if names.is_empty() {
            "none".to_string()
        } else {
            names.join(", ")
        }
    }

    fn header_metadata(&self) -> Result<BTreeMap<String, String>, serde_json::Error> {
        let mut m = BTreeMap::new();
        m.insert(FORMAT_KEY.to_string(), FORMAT_VERSION.to_string());
        m.insert(LAYOUT_KEY.to_string(), self.layout.as_str().to_string());
        m.insert(
            CLASSES_KEY.to_string(),
            serde_json::to_string(&self.classes)?,
        );
        for (k, v) in &self.meta {
            m.insert(format!("{META_PREFIX}{k}"), v.clone());
        }
        Ok(m)
    }

    /// The complete header (length prefix included) and the tensors in file order.
    fn encode_header(&self) -> Result<(Vec<u8>, Vec<Payload<'_>>), serde_json::Error> {
        // Labels first: I64 needs 8-byte alignment, and the header is padded to 8 bytes,
        // so offset 0 of the data is aligned for readers that map the file.
        let mut tensors: Vec<(&str, &'static str, Vec<usize>, Payload<'_>)> = Vec::new();
        if let Some(labels) = &self.labels {
            tensors.push((
                LABELS_TENSOR,
                "I64",
                vec![labels.len()],
                Payload::Labels(labels),
            ));
        }
        for (name, set) in &self.parts {
            let shape = vec![
                set.len(),
                set.height as usize,
                set.width as usize,
                set.channels as usize,
            ];
            tensors.push((name, "U8", shape, Payload::Bytes(&set.pixels)));
        }

        let mut header = serde_json::Map::new();
        header.insert(
            "__metadata__".to_string(),
            serde_json::to_value(self.header_metadata()?)?,
        );
        let mut offset = 0;
        let mut payloads = Vec::with_capacity(tensors.len());
        for (name, dtype, shape, payload) in tensors {
            let end = offset + payload.len();
            let entry = TensorEntry {
                dtype,
                shape,
                data_offsets: [offset, end],
            };
            header.insert(name.to_string(), serde_json::to_value(entry)?);
            offset = end;
            payloads.push(payload);
        }
        // serde_json's Map is a BTreeMap (no preserve_order feature), so key order is fixed.
        let mut json = serde_json::to_vec(&header)?;
        json.resize(json.len().next_multiple_of(8), b' ');
        let mut out = Vec::with_capacity(8 + json.len());
        out.extend_from_slice(&(json.len() as u64).to_le_bytes());
        out.extend_from_slice(&json);
        Ok((out, payloads))
    }

    /// Writes the dataset as safetensors: a temporary file in the same folder, fsynced,
    /// then renamed over `path`, so a reader never sees a half-written file.
    pub fn save(&self, path: &Path) -> Result<(), DatasetError> {
        self.validate(path)?;
        let (header, payloads) = self
            .encode_header()
            .map_err(|e| DatasetError::bad_dataset(path, format!("cannot encode header: {e}")))?;
        let dir = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let file_name = path
            .file_name()
            .map_or_else(|| "dataset".into(), |n| n.to_string_lossy().into_owned());
        // pid + counter: two saves of the same path, in this process or another, never
        // share a temporary file.
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let tmp = dir.join(format!(".{file_name}.{}.{n}.tmp", std::process::id()));
        let result = write_file(&tmp, &header, &payloads)
            .and_then(|()| std::fs::rename(&tmp, path).map_err(|e| DatasetError::io(path, e)));
        if result.is_err() {
            // Best effort: the original error matters more than a leftover temp file.
            let _ = std::fs::remove_file(&tmp);
        }
        result?;
        // Makes the rename itself durable; not every platform can open a folder for this.
        if let Ok(d) = File::open(&dir) {
            let _ = d.sync_all();
        }
        Ok(())
    }

    /// Reads a dataset written by [`Dataset::save`] (or by anything that follows the same
    /// layout), checking every shape and dtype.
    pub fn load(path: &Path) -> Result<Dataset, DatasetError> {
        let reader = DatasetReader::open(path)?;
        let mut parts = BTreeMap::new();
        for (name, part) in &reader.parts {
            parts.insert(name.clone(), reader.read(name, 0..part.count)?);
        }
        let dataset = Dataset {
            layout: reader.layout,
            parts,
            labels: reader.labels,
            classes: reader.classes,
            meta: reader.meta,
        };
        dataset.validate(path)?;
        Ok(dataset)
    }
}

/// One part of a dataset file: its image shape, how many images, and where they are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartInfo {
    pub width: u32,
    pub height: u32,
    pub channels: u8,
    pub count: usize,
    /// Byte offset of the first image in the file.
    offset: u64,
}

impl PartInfo {
    pub fn image_len(&self) -> usize {
        self.width as usize * self.height as usize * self.channels as usize
    }
}

/// A dataset file opened for reading images a range at a time, so that a set larger
/// than memory can be streamed: the header, labels and class names are read at once,
/// the pixels only when asked for.
#[derive(Debug)]
pub struct DatasetReader {
    path: PathBuf,
    file: File,
    pub layout: Layout,
    pub parts: BTreeMap<String, PartInfo>,
    pub labels: Option<Vec<u32>>,
    pub classes: Vec<String>,
    pub meta: BTreeMap<String, String>,
}

impl DatasetReader {
    /// Opens `path` and checks its header: the format version, every tensor's dtype and
    /// shape, and that the file holds exactly the bytes the header describes.
    pub fn open(path: &Path) -> Result<DatasetReader, DatasetError> {
        let io = |e| DatasetError::io(path, e);
        let bad = |reason: String| DatasetError::bad_dataset(path, reason);
        let mut file = File::open(path).map_err(io)?;
        let file_len = file.metadata().map_err(io)?.len();
        let mut len_bytes = [0u8; 8];
        file.read_exact(&mut len_bytes).map_err(|e| {
            if e.kind() == std::io::ErrorKind::UnexpectedEof {
                bad(format!("file of {file_len} bytes is too short"))
            } else {
                io(e)
            }
        })?;
        let header_len = u64::from_le_bytes(len_bytes);
        if header_len > MAX_HEADER_LEN || 8 + header_len > file_len {
            return Err(bad(format!(
                "header length {header_len} does not fit a file of {file_len} bytes"
            )));
        }
        let mut header = vec![0u8; header_len as usize];
        file.read_exact(&mut header).map_err(io)?;
        let metadata: Metadata = serde_json::from_slice(&header)
            .map_err(|e| bad(format!("invalid safetensors header: {e}")))?;
        let data_start = 8 + header_len;
        if data_start + metadata.data_len() as u64 != file_len {
            return Err(bad(format!(
                "header describes {} bytes of tensors but the file holds {} (truncated?)",
                metadata.data_len(),
                file_len - data_start
            )));
        }

        let empty = Default::default();
        let info = metadata.metadata().as_ref().unwrap_or(&empty);
        match info.get(FORMAT_KEY).map(String::as_str) {
            Some(FORMAT_VERSION) => {}
            Some(other) => {
                return Err(bad(format!(
                    "{FORMAT_KEY} is {other}, this gantry reads {FORMAT_VERSION}"
                )));
            }
            None => return Err(bad(format!("no {FORMAT_KEY} in __metadata__"))),
        }
        let layout_name = info
            .get(LAYOUT_KEY)
            .ok_or_else(|| bad(format!("no {LAYOUT_KEY} in __metadata__")))?;
        let layout = Layout::parse(layout_name)
            .ok_or_else(|| bad(format!("unknown {LAYOUT_KEY} '{layout_name}'")))?;
        let classes: Vec<String> = match info.get(CLASSES_KEY) {
            Some(json) => serde_json::from_str(json)
                .map_err(|e| bad(format!("{CLASSES_KEY} is not a JSON list of names: {e}")))?,
            None => Vec::new(),
        };
        let meta = info
            .iter()
            .filter_map(|(k, v)| Some((k.strip_prefix(META_PREFIX)?.to_string(), v.clone())))
            .collect();

        let mut parts = BTreeMap::new();
        let mut labels = None;
        for name in metadata.offset_keys() {
            let Some(t) = metadata.info(&name) else {
                continue;
            };
            let (start, end) = t.data_offsets;
            if name == LABELS_TENSOR {
                if t.dtype != Dtype::I64 || t.shape.len() != 1 {
                    return Err(bad(format!(
                        "tensor 'labels' is {:?} {:?}, expected I64 [N]",
                        t.dtype, t.shape
                    )));
                }
                file.seek(SeekFrom::Start(data_start + start as u64))
                    .map_err(io)?;
                let mut bytes = vec![0u8; end - start];
                file.read_exact(&mut bytes).map_err(io)?;
                let mut values = Vec::with_capacity(bytes.len() / 8);
                for chunk in bytes.chunks_exact(8) {
                    let mut b = [0u8; 8];
                    b.copy_from_slice(chunk);
                    let v = i64::from_le_bytes(b);
                    let v = u32::try_from(v)
                        .map_err(|_| bad(format!("label {v} is not a class index")))?;
                    values.push(v);
                }
                labels = Some(values);
                continue;
            }
            let [count, h, w, c] = t.shape[..] else {
                return Err(bad(format!(
                    "tensor '{name}' has shape {:?}, expected [N, H, W, C]",
                    t.shape
                )));
            };
            if t.dtype != Dtype::U8 {
                return Err(bad(format!(
                    "tensor '{name}' is {:?}, expected U8",
                    t.dtype
                )));
            }
            let dims = (u32::try_from(w), u32::try_from(h), u8::try_from(c));
            let (Ok(width), Ok(height), Ok(channels)) = dims else {
                return Err(bad(format!("tensor '{name}' has shape {:?}", t.shape)));
            };
            let info = PartInfo {
                width,
                height,
                channels,
                count,
                offset: data_start + start as u64,
            };
            if Some(end - start) != count.checked_mul(info.image_len()) {
                return Err(bad(format!(
                    "tensor '{name}' has {} bytes for shape {:?}",
                    end - start,
                    t.shape
                )));
            }
            parts.insert(name, info);
        }
        Ok(DatasetReader {
            path: path.to_path_buf(),
            file,
            layout,
            parts,
            labels,
            classes,
            meta,
        })
    }

    /// Images `range` of part `name`.
    pub fn read(&self, name: &str, range: Range<usize>) -> Result<ImageSet, DatasetError> {
        use std::os::unix::fs::FileExt;
        let part = self.parts.get(name).ok_or_else(|| {
            DatasetError::bad_dataset(
                &self.path,
                format!(
                    "no part '{name}' (has: {})",
                    self.parts.keys().cloned().collect::<Vec<_>>().join(", ")
                ),
            )
        })?;
        if range.start > range.end || range.end > part.count {
            return Err(DatasetError::bad_dataset(
                &self.path,
                format!(
                    "images {}..{} of part '{name}', which has {}",
                    range.start, range.end, part.count
                ),
            ));
        }
        let len = part.image_len();
        let mut set = ImageSet::zeroed(part.width, part.height, part.channels, range.len());
        self.file
            .read_exact_at(&mut set.pixels, part.offset + (range.start * len) as u64)
            .map_err(|e| DatasetError::io(&self.path, e))?;
        Ok(set)
    }
}

fn write_file(tmp: &Path, header: &[u8], payloads: &[Payload<'_>]) -> Result<(), DatasetError> {
    let io = |e| DatasetError::io(tmp, e);
    let file = File::create(tmp).map_err(io)?;
    let mut w = BufWriter::with_capacity(1 << 20, file);
    w.write_all(header).map_err(io)?;
    for p in payloads {
        match p {
            Payload::Bytes(b) => w.write_all(b).map_err(io)?,
            Payload::Labels(labels) => {
                for &l in *labels {
                    w.write_all(&i64::from(l).to_le_bytes()).map_err(io)?;
                }
            }
        }
    }
    let file = w.into_inner().map_err(|e| io(e.into_error()))?;
    file.sync_all().map_err(io)?;
    Ok(())
}

#[cfg(test)]
mod reader_tests {
    use super::*;

    #[test]
    fn ranges_read_from_disk_equal_the_loaded_images() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("d.safetensors");
        let mut images = ImageSet::new(3, 2, 3);
        for i in 0..10u8 {
            images.push(&[i; 18]);
        }
        let mut d = Dataset::single(images);
        d.labels = Some((0..10).map(|i| i % 2).collect());
        d.classes = vec!["even".into(), "odd".into()];
        d.save(&path).unwrap();

        let loaded = Dataset::load(&path).unwrap();
        let reader = DatasetReader::open(&path).unwrap();
        assert_eq!(reader.labels, loaded.labels);
        let info = reader.parts["images"];
        assert_eq!(
            (info.width, info.height, info.channels, info.count),
            (3, 2, 3, 10)
        );
        let whole = &loaded.parts["images"];
        for (a, b) in [(0, 10), (3, 7), (9, 10), (5, 5)] {
            let part = reader.read("images", a..b).unwrap();
            assert_eq!(part.pixels, whole.pixels[a * 18..b * 18], "{a}..{b}");
        }
        let err = reader.read("images", 8..11).unwrap_err().to_string();
        assert!(err.contains("8..11") && err.contains("10"), "{err}");
        assert!(
            reader
                .read("b", 0..1)
                .unwrap_err()
                .to_string()
                .contains("no part 'b'")
        );
    }
}
