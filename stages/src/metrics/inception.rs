//! Inception-v3 as a feature extractor for the Inception Score and FID, with weights read
//! from a file the user supplies (nothing is downloaded).
//!
//! Two variants share one network and differ only in three pooling details:
//!
//! - [`Variant::Fid`]: the network of `pytorch-fid` (`FIDInceptionA/C/E_1/E_2`), a port
//!   of the TensorFlow graph that FID was defined on: the average pools of the mixed
//!   blocks leave padding out of the mean (`count_include_pad=False`), the last block
//!   max-pools instead, and `fc` has 1008 classes. Its weights file
//!   (`pt_inception-2015-12-05-6726825d.pth`) gives the FID values papers report.
//! - [`Variant::Torchvision`]: `torchvision.models.inception_v3` (1000 classes), for
//!   weights saved from torchvision (`inception_v3_google-0cc3c7bd.pth`).
//!
//! Weights come from a PyTorch file (`.pth`/`.pt`, a state dict, possibly under a
//! `state_dict` key) or a safetensors file with PyTorch's names (`Conv2d_1a_3x3.conv.weight`,
//! `Mixed_5b.branch1x1.bn.running_mean`, `fc.weight`, ...). Every tensor of the network
//! must be in the file with its shape; extra tensors (`AuxLogits.*`,
//! `num_batches_tracked`) are ignored.
//!
//! Images go in as u8 and are prepared as `pytorch-fid` does: scaled to [0, 1], resized
//! to 299x299 with bilinear interpolation (`align_corners=False`, no antialiasing), then
//! mapped to [-1, 1]; gray images are repeated over three channels. Out come the 2048
//! pool features (FID) and the class probabilities (Inception Score).

use std::path::Path;

use burn::module::Module;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{BatchNorm, BatchNormConfig, Linear, LinearConfig, PaddingConfig2d};
use burn::tensor::Tensor;
use burn::tensor::activation::{relu, softmax};
use burn::tensor::backend::Backend;
use burn::tensor::module::{adaptive_avg_pool2d, avg_pool2d, interpolate, max_pool2d};
use burn::tensor::ops::{InterpolateMode, InterpolateOptions};
use gantry_datasets::ImageSet;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Width of the pool features FID is computed on.
pub const FEATURES: usize = 2048;
/// The input side the network was trained at.
pub const INPUT_SIDE: usize = 299;

/// Which Inception-v3 the weights file belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Variant {
    /// `pytorch-fid`'s port of the TensorFlow FID network (1008 classes).
    Fid,
    /// `torchvision.models.inception_v3` (1000 classes).
    Torchvision,
}

impl Variant {
    pub fn classes(self) -> usize {
        match self {
            Variant::Fid => 1008,
            Variant::Torchvision => 1000,
        }
    }
}

/// How a mixed block pools its `branch_pool` input (3x3, stride 1, padding 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BranchPool {
    /// torchvision: padding counts in the mean.
    AvgWithPad,
    /// pytorch-fid: the mean over the pixels inside the image only.
    AvgWithoutPad,
    /// pytorch-fid's last block.
    Max,
}

fn branch_pool<B: Backend>(x: Tensor<B, 4>, pool: BranchPool) -> Tensor<B, 4> {
    match pool {
        BranchPool::AvgWithPad => avg_pool2d(x, [3, 3], [1, 1], [1, 1], true, false),
        BranchPool::AvgWithoutPad => avg_pool2d(x, [3, 3], [1, 1], [1, 1], false, false),
        BranchPool::Max => max_pool2d(x, [3, 3], [1, 1], [1, 1], [1, 1], false),
    }
}

fn max_pool_3x3_s2<B: Backend>(x: Tensor<B, 4>) -> Tensor<B, 4> {
    max_pool2d(x, [3, 3], [2, 2], [0, 0], [1, 1], false)
}

/// Convolution without bias, batch norm (eps 0.001), ReLU: PyTorch's `BasicConv2d`.
#[derive(Module, Debug)]
pub struct BasicConv2d<B: Backend> {
    conv: Conv2d<B>,
    bn: BatchNorm<B>,
}

impl<B: Backend> BasicConv2d<B> {
    fn new(
        channels: [usize; 2],
        kernel: [usize; 2],
        stride: usize,
        padding: [usize; 2],
        device: &B::Device,
    ) -> Self {
        BasicConv2d {
            conv: Conv2dConfig::new(channels, kernel)
                .with_stride([stride, stride])
                .with_padding(PaddingConfig2d::Explicit(
                    padding[0], padding[1], padding[0], padding[1],
                ))
                .with_bias(false)
                .init(device),
            bn: BatchNormConfig::new(channels[1])
                .with_epsilon(1e-3)
                .init(device),
        }
    }

    fn square(cin: usize, cout: usize, k: usize, device: &B::Device) -> Self {
        Self::new([cin, cout], [k, k], 1, [k / 2, k / 2], device)
    }

    fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        relu(self.bn.forward(self.conv.forward(x)))
    }
}

/// The 35x35 blocks (`Mixed_5b`..`Mixed_5d`).
#[derive(Module, Debug)]
pub struct InceptionA<B: Backend> {
    branch1x1: BasicConv2d<B>,
    branch5x5_1: BasicConv2d<B>,
    branch5x5_2: BasicConv2d<B>,
    branch3x3dbl_1: BasicConv2d<B>,
    branch3x3dbl_2: BasicConv2d<B>,
    branch3x3dbl_3: BasicConv2d<B>,
    branch_pool: BasicConv2d<B>,
    #[module(skip)]
    pool: BranchPool,
}

impl<B: Backend> InceptionA<B> {
    fn new(cin: usize, pool_features: usize, pool: BranchPool, d: &B::Device) -> Self {
        InceptionA {
            branch1x1: BasicConv2d::square(cin, 64, 1, d),
            branch5x5_1: BasicConv2d::square(cin, 48, 1, d),
            branch5x5_2: BasicConv2d::square(48, 64, 5, d),
            branch3x3dbl_1: BasicConv2d::square(cin, 64, 1, d),
            branch3x3dbl_2: BasicConv2d::square(64, 96, 3, d),
            branch3x3dbl_3: BasicConv2d::square(96, 96, 3, d),
            branch_pool: BasicConv2d::square(cin, pool_features, 1, d),
            pool,
        }
    }

    fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let b1 = self.branch1x1.forward(x.clone());
        let b5 = self
            .branch5x5_2
            .forward(self.branch5x5_1.forward(x.clone()));
        let b3 = self.branch3x3dbl_3.forward(
            self.branch3x3dbl_2
                .forward(self.branch3x3dbl_1.forward(x.clone())),
        );
        let bp = self.branch_pool.forward(branch_pool(x, self.pool));
        Tensor::cat(vec![b1, b5, b3, bp], 1)
    }
}

/// The reduction to 17x17 (`Mixed_6a`).
#[derive(Module, Debug)]
pub struct InceptionB<B: Backend> {
    branch3x3: BasicConv2d<B>,
    branch3x3dbl_1: BasicConv2d<B>,
    branch3x3dbl_2: BasicConv2d<B>,
    branch3x3dbl_3: BasicConv2d<B>,
}

impl<B: Backend> InceptionB<B> {
    fn new(cin: usize, d: &B::Device) -> Self {
        InceptionB {
            branch3x3: BasicConv2d::new([cin, 384], [3, 3], 2, [0, 0], d),
            branch3x3dbl_1: BasicConv2d::square(cin, 64, 1, d),
            branch3x3dbl_2: BasicConv2d::square(64, 96, 3, d),
            branch3x3dbl_3: BasicConv2d::new([96, 96], [3, 3], 2, [0, 0], d),
        }
    }

    fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let b3 = self.branch3x3.forward(x.clone());
        let bd = self.branch3x3dbl_3.forward(
            self.branch3x3dbl_2
                .forward(self.branch3x3dbl_1.forward(x.clone())),
        );
        Tensor::cat(vec![b3, bd, max_pool_3x3_s2(x)], 1)
    }
}

/// A 1x7 or 7x1 convolution with the padding that keeps the size.
fn seven<B: Backend>(cin: usize, cout: usize, row: bool, d: &B::Device) -> BasicConv2d<B> {
    if row {
        BasicConv2d::new([cin, cout], [1, 7], 1, [0, 3], d)
    } else {
        BasicConv2d::new([cin, cout], [7, 1], 1, [3, 0], d)
    }
}

/// A 1x3 or 3x1 convolution with the padding that keeps the size.
fn three<B: Backend>(cin: usize, cout: usize, row: bool, d: &B::Device) -> BasicConv2d<B> {
    if row {
        BasicConv2d::new([cin, cout], [1, 3], 1, [0, 1], d)
    } else {
        BasicConv2d::new([cin, cout], [3, 1], 1, [1, 0], d)
    }
}

/// The 17x17 blocks (`Mixed_6b`..`Mixed_6e`).
#[derive(Module, Debug)]
pub struct InceptionC<B: Backend> {
    branch1x1: BasicConv2d<B>,
    branch7x7_1: BasicConv2d<B>,
    branch7x7_2: BasicConv2d<B>,
    branch7x7_3: BasicConv2d<B>,
    branch7x7dbl_1: BasicConv2d<B>,
    branch7x7dbl_2: BasicConv2d<B>,
    branch7x7dbl_3: BasicConv2d<B>,
    branch7x7dbl_4: BasicConv2d<B>,
    branch7x7dbl_5: BasicConv2d<B>,
    branch_pool: BasicConv2d<B>,
    #[module(skip)]
    pool: BranchPool,
}

impl<B: Backend> InceptionC<B> {
    fn new(cin: usize, c7: usize, pool: BranchPool, d: &B::Device) -> Self {
        InceptionC {
            branch1x1: BasicConv2d::square(cin, 192, 1, d),
            branch7x7_1: BasicConv2d::square(cin, c7, 1, d),
            branch7x7_2: seven(c7, c7, true, d),
            branch7x7_3: seven(c7, 192, false, d),
            branch7x7dbl_1: BasicConv2d::square(cin, c7, 1, d),
            branch7x7dbl_2: seven(c7, c7, false, d),
            branch7x7dbl_3: seven(c7, c7, true, d),
            branch7x7dbl_4: seven(c7, c7, false, d),
            branch7x7dbl_5: seven(c7, 192, true, d),
            branch_pool: BasicConv2d::square(cin, 192, 1, d),
            pool,
        }
    }

    fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let b1 = self.branch1x1.forward(x.clone());
        let mut b7 = self.branch7x7_1.forward(x.clone());
        for conv in [&self.branch7x7_2, &self.branch7x7_3] {
            b7 = conv.forward(b7);
        }
        let mut bd = self.branch7x7dbl_1.forward(x.clone());
        for conv in [
            &self.branch7x7dbl_2,
            &self.branch7x7dbl_3,
            &self.branch7x7dbl_4,
            &self.branch7x7dbl_5,
        ] {
            bd = conv.forward(bd);
        }
        let bp = self.branch_pool.forward(branch_pool(x, self.pool));
        Tensor::cat(vec![b1, b7, bd, bp], 1)
    }
}

/// The reduction to 8x8 (`Mixed_7a`).
#[derive(Module, Debug)]
pub struct InceptionD<B: Backend> {
    branch3x3_1: BasicConv2d<B>,
    branch3x3_2: BasicConv2d<B>,
    branch7x7x3_1: BasicConv2d<B>,
    branch7x7x3_2: BasicConv2d<B>,
    branch7x7x3_3: BasicConv2d<B>,
    branch7x7x3_4: BasicConv2d<B>,
}

impl<B: Backend> InceptionD<B> {
    fn new(cin: usize, d: &B::Device) -> Self {
        InceptionD {
            branch3x3_1: BasicConv2d::square(cin, 192, 1, d),
            branch3x3_2: BasicConv2d::new([192, 320], [3, 3], 2, [0, 0], d),
            branch7x7x3_1: BasicConv2d::square(cin, 192, 1, d),
            branch7x7x3_2: seven(192, 192, true, d),
            branch7x7x3_3: seven(192, 192, false, d),
            branch7x7x3_4: BasicConv2d::new([192, 192], [3, 3], 2, [0, 0], d),
        }
    }

    fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let b3 = self
            .branch3x3_2
            .forward(self.branch3x3_1.forward(x.clone()));
        let mut b7 = self.branch7x7x3_1.forward(x.clone());
        for conv in [
            &self.branch7x7x3_2,
            &self.branch7x7x3_3,
            &self.branch7x7x3_4,
        ] {
            b7 = conv.forward(b7);
        }
        Tensor::cat(vec![b3, b7, max_pool_3x3_s2(x)], 1)
    }
}

/// The 8x8 blocks (`Mixed_7b`, `Mixed_7c`).
#[derive(Module, Debug)]
pub struct InceptionE<B: Backend> {
    branch1x1: BasicConv2d<B>,
    branch3x3_1: BasicConv2d<B>,
    branch3x3_2a: BasicConv2d<B>,
    branch3x3_2b: BasicConv2d<B>,
    branch3x3dbl_1: BasicConv2d<B>,
    branch3x3dbl_2: BasicConv2d<B>,
    branch3x3dbl_3a: BasicConv2d<B>,
    branch3x3dbl_3b: BasicConv2d<B>,
    branch_pool: BasicConv2d<B>,
    #[module(skip)]
    pool: BranchPool,
}

impl<B: Backend> InceptionE<B> {
    fn new(cin: usize, pool: BranchPool, d: &B::Device) -> Self {
        InceptionE {
            branch1x1: BasicConv2d::square(cin, 320, 1, d),
            branch3x3_1: BasicConv2d::square(cin, 384, 1, d),
            branch3x3_2a: three(384, 384, true, d),
            branch3x3_2b: three(384, 384, false, d),
            branch3x3dbl_1: BasicConv2d::square(cin, 448, 1, d),
            branch3x3dbl_2: BasicConv2d::square(448, 384, 3, d),
            branch3x3dbl_3a: three(384, 384, true, d),
            branch3x3dbl_3b: three(384, 384, false, d),
            branch_pool: BasicConv2d::square(cin, 192, 1, d),
            pool,
        }
    }

    fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let b1 = self.branch1x1.forward(x.clone());
        let b3 = self.branch3x3_1.forward(x.clone());
        let b3 = Tensor::cat(
            vec![
                self.branch3x3_2a.forward(b3.clone()),
                self.branch3x3_2b.forward(b3),
            ],
            1,
        );
        let bd = self
            .branch3x3dbl_2
            .forward(self.branch3x3dbl_1.forward(x.clone()));
        let bd = Tensor::cat(
            vec![
                self.branch3x3dbl_3a.forward(bd.clone()),
                self.branch3x3dbl_3b.forward(bd),
            ],
            1,
        );
        let bp = self.branch_pool.forward(branch_pool(x, self.pool));
        Tensor::cat(vec![b1, b3, bd, bp], 1)
    }
}

/// Inception-v3 up to its pool features and logits (no auxiliary head).
#[derive(Module, Debug)]
pub struct InceptionV3<B: Backend> {
    conv2d_1a_3x3: BasicConv2d<B>,
    conv2d_2a_3x3: BasicConv2d<B>,
    conv2d_2b_3x3: BasicConv2d<B>,
    conv2d_3b_1x1: BasicConv2d<B>,
    conv2d_4a_3x3: BasicConv2d<B>,
    mixed_5b: InceptionA<B>,
    mixed_5c: InceptionA<B>,
    mixed_5d: InceptionA<B>,
    mixed_6a: InceptionB<B>,
    mixed_6b: InceptionC<B>,
    mixed_6c: InceptionC<B>,
    mixed_6d: InceptionC<B>,
    mixed_6e: InceptionC<B>,
    mixed_7a: InceptionD<B>,
    mixed_7b: InceptionE<B>,
    mixed_7c: InceptionE<B>,
    fc: Linear<B>,
}

impl<B: Backend> InceptionV3<B> {
    /// The network with placeholder weights; [`load`] fills them from a file.
    pub fn new(variant: Variant, d: &B::Device) -> Self {
        let (pool, last) = match variant {
            Variant::Fid => (BranchPool::AvgWithoutPad, BranchPool::Max),
            Variant::Torchvision => (BranchPool::AvgWithPad, BranchPool::AvgWithPad),
        };
        InceptionV3 {
            conv2d_1a_3x3: BasicConv2d::new([3, 32], [3, 3], 2, [0, 0], d),
            conv2d_2a_3x3: BasicConv2d::new([32, 32], [3, 3], 1, [0, 0], d),
            conv2d_2b_3x3: BasicConv2d::square(32, 64, 3, d),
            conv2d_3b_1x1: BasicConv2d::square(64, 80, 1, d),
            conv2d_4a_3x3: BasicConv2d::new([80, 192], [3, 3], 1, [0, 0], d),
            mixed_5b: InceptionA::new(192, 32, pool, d),
            mixed_5c: InceptionA::new(256, 64, pool, d),
            mixed_5d: InceptionA::new(288, 64, pool, d),
            mixed_6a: InceptionB::new(288, d),
            mixed_6b: InceptionC::new(768, 128, pool, d),
            mixed_6c: InceptionC::new(768, 160, pool, d),
            mixed_6d: InceptionC::new(768, 160, pool, d),
            mixed_6e: InceptionC::new(768, 192, pool, d),
            mixed_7a: InceptionD::new(768, d),
            mixed_7b: InceptionE::new(1280, pool, d),
            mixed_7c: InceptionE::new(2048, last, d),
            fc: LinearConfig::new(FEATURES, variant.classes()).init(d),
        }
    }

    /// Pool features `[N, 2048]` and logits `[N, classes]` of inputs `[N, 3, H, W]`
    /// already scaled to [-1, 1] (299x299 for the features the weights were made for).
    pub fn forward(&self, x: Tensor<B, 4>) -> (Tensor<B, 2>, Tensor<B, 2>) {
        let mut x = self.conv2d_1a_3x3.forward(x);
        x = self.conv2d_2a_3x3.forward(x);
        x = self.conv2d_2b_3x3.forward(x);
        x = max_pool_3x3_s2(x);
        x = self.conv2d_3b_1x1.forward(x);
        x = self.conv2d_4a_3x3.forward(x);
        x = max_pool_3x3_s2(x);
        for block in [&self.mixed_5b, &self.mixed_5c, &self.mixed_5d] {
            x = block.forward(x);
        }
        x = self.mixed_6a.forward(x);
        for block in [
            &self.mixed_6b,
            &self.mixed_6c,
            &self.mixed_6d,
            &self.mixed_6e,
        ] {
            x = block.forward(x);
        }
        x = self.mixed_7a.forward(x);
        x = self.mixed_7b.forward(x);
        x = self.mixed_7c.forward(x);
        let [n, c, _, _] = x.dims();
        let features = adaptive_avg_pool2d(x, [1, 1]).reshape([n, c]);
        let logits = self.fc.forward(features.clone());
        (features, logits)
    }
}

/// Why weights could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum InceptionError {
    #[error("{path}: {reason}")]
    Load { path: String, reason: String },
    #[error("{0}")]
    Tensor(String),
}

/// Read Inception-v3 weights from a PyTorch (`.pth`, `.pt`, `.bin`) or safetensors
/// (`.safetensors`) file with PyTorch's tensor names.
pub fn load<B: Backend>(
    path: &Path,
    variant: Variant,
    device: &B::Device,
) -> Result<InceptionV3<B>, InceptionError> {
    use burn_store::{ModuleSnapshot, PyTorchToBurnAdapter, PytorchStore, SafetensorsStore};
    let fail = |reason: String| InceptionError::Load {
        path: path.display().to_string(),
        reason,
    };
    if !path.is_file() {
        return Err(fail("no such file".into()));
    }
    // PyTorch's top-level names are CamelCase (`Conv2d_1a_3x3`, `Mixed_5b`).
    let remaps = [(r"^Conv2d_", "conv2d_"), (r"^Mixed_", "mixed_")];
    let mut model = InceptionV3::<B>::new(variant, device);
    let hint = |e: String| {
        fail(format!(
            "{e} (is this a {variant:?} Inception-v3? `variant: fid` reads pytorch-fid's \
             weights, `variant: torchvision` torchvision's)"
        ))
    };
    let safetensors = path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("safetensors"));
    let applied = if safetensors {
        let mut store = SafetensorsStore::from_file(path).with_from_adapter(PyTorchToBurnAdapter);
        for (from, to) in remaps {
            store = store.with_key_remapping(from, to);
        }
        model
            .load_from(&mut store)
            .map_err(|e| hint(e.to_string()))?
    } else {
        let mut store = PytorchStore::from_file(path);
        if pytorch_has_state_dict_key(path) {
            store = store.with_top_level_key("state_dict");
        }
        for (from, to) in remaps {
            store = store.with_key_remapping(from, to);
        }
        model
            .load_from(&mut store)
            .map_err(|e| hint(e.to_string()))?
    };
    if !applied.missing.is_empty() || !applied.errors.is_empty() {
        let missing: Vec<&str> = applied
            .missing
            .iter()
            .take(5)
            .map(|(p, _)| p.as_str())
            .collect();
        let errors: Vec<String> = applied
            .errors
            .iter()
            .take(5)
            .map(|e| e.to_string())
            .collect();
        return Err(hint(format!(
            "{} missing tensors, e.g. {}; {} mismatched, e.g. {}",
            applied.missing.len(),
            missing.join(", "),
            applied.errors.len(),
            errors.join("; ")
        )));
    }
    Ok(model)
}

/// Whether a PyTorch checkpoint keeps its weights under `state_dict` (a training
/// checkpoint) rather than at the top level (a plain state dict).
fn pytorch_has_state_dict_key(path: &Path) -> bool {
    burn_store::pytorch::PytorchReader::new(path)
        .map(|r| r.keys().iter().any(|k| k.starts_with("state_dict.")))
        .unwrap_or(false)
}

/// Images `[N, 3, 299, 299]` in [-1, 1] from u8 images `first..first + count` of `set`,
/// prepared as pytorch-fid prepares them. (It scales to [0, 1], resizes, then maps to
/// [-1, 1]; bilinear weights sum to one, so mapping first is the same up to float
/// rounding.)
pub fn prepare<B: Backend>(
    set: &ImageSet,
    first: usize,
    count: usize,
    device: &B::Device,
) -> Tensor<B, 4> {
    let idx: Vec<usize> = (first..first + count).collect();
    let x = crate::train::data::images_tensor::<B>(set, &idx, device);
    let x = if set.channels == 1 {
        x.repeat_dim(1, 3)
    } else {
        x
    };
    if (set.height as usize, set.width as usize) == (INPUT_SIDE, INPUT_SIDE) {
        return x;
    }
    interpolate(
        x,
        [INPUT_SIDE, INPUT_SIDE],
        InterpolateOptions {
            mode: InterpolateMode::Bilinear,
            align_corners: false,
        },
    )
}

/// Pool features (`N x 2048`, row-major) and class probabilities (`N x classes`) of the
/// images of `set`, in one forward pass: callers stream large sets a batch at a time.
pub fn scores<B: Backend>(
    model: &InceptionV3<B>,
    set: &ImageSet,
    device: &B::Device,
) -> Result<(Vec<f32>, Vec<f32>), InceptionError> {
    let read = |t: Tensor<B, 2>| -> Result<Vec<f32>, InceptionError> {
        t.into_data()
            .convert::<f32>()
            .into_vec()
            .map_err(|e| InceptionError::Tensor(format!("reading Inception outputs: {e:?}")))
    };
    let (features, logits) = model.forward(prepare::<B>(set, 0, set.len(), device));
    Ok((read(features)?, read(softmax(logits, 1))?))
}
