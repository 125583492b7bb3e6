//! 2-D convolution and transposed convolution for the training networks, with a faster
//! CPU path.
//!
//! On the CPU backend (flex with autodiff) burn computes a convolution's weight gradient
//! as another convolution with the batch and channel axes swapped (a kernel as large as
//! the output map, one "image" per input channel), and the input gradient through flex's
//! transposed convolution. Measured per layer of the DCGAN benchmark (`examples/conv_ops`)
//! the weight gradients took 0.8–6.8x the time of the forward pass for the same
//! arithmetic (flex splits that swapped convolution over its "batch", which for the first
//! discriminator layer is its 3 input channels).
//! Here all three products are one lowering, im2col plus a matrix product
//! (the `gemm` crate that flex itself uses), over fixed chunks of the batch run in
//! parallel, registered as custom autodiff operations (burn's `Backward` extension
//! point). Other backends (cuda, wgpu) keep burn's own operations.
//!
//! Results are deterministic: the weight gradient sums the batch in fixed chunks and a
//! fixed order that depend only on the shapes, not on the thread count or scheduling, so
//! a resumed run reproduces an uninterrupted one bit for bit.

use std::any::{Any, TypeId};
use std::cell::RefCell;

use burn::backend::Flex;
use burn::backend::autodiff::NodeId;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::nn::PaddingConfig2d;
use burn::nn::conv::{Conv2d, ConvTranspose2d};
use burn::prelude::Backend;
use burn::tensor::module::{conv_transpose2d, conv2d};
use burn::tensor::ops::{ConvOptions, ConvTransposeOptions, FloatTensor};
use burn::tensor::{Tensor, TensorData, TensorPrimitive};
use burn_flex::FlexTensor;
use multiversion::multiversion;
use rayon::prelude::*;

use super::backend::Cpu;
use crate::buffer::par_filled;

/// `conv.forward(x)`, through the fast CPU path when the backend is the CPU one.
pub fn conv2d_forward<B: Backend>(conv: &Conv2d<B>, x: Tensor<B, 4>) -> Tensor<B, 4> {
    let padding = match conv.padding {
        PaddingConfig2d::Valid => [0, 0],
        PaddingConfig2d::Explicit(top, left, bottom, right) if top == bottom && left == right => {
            [top, left]
        }
        // Asymmetric or input-dependent padding: burn's module handles it.
        _ => return conv.forward(x),
    };
    let options = ConvOptions::new(conv.stride, padding, conv.dilation, conv.groups);
    let bias = conv.bias.as_ref().map(|b| b.val());
    if conv.groups != 1 {
        return conv2d(x, conv.weight.val(), bias, options);
    }
    match conv_geom(x.dims(), conv.weight.dims(), &options) {
        Some(geom) if is_cpu::<B>() => flex_op(Kind::Conv, geom, x, conv.weight.val(), bias),
        _ => conv2d(x, conv.weight.val(), bias, options),
    }
}

/// `conv.forward(x)` for a transposed convolution, through the fast CPU path when the
/// backend is the CPU one.
pub fn conv_transpose2d_forward<B: Backend>(
    conv: &ConvTranspose2d<B>,
    x: Tensor<B, 4>,
) -> Tensor<B, 4> {
    let options = ConvTransposeOptions::new(
        conv.stride,
        conv.padding,
        conv.padding_out,
        conv.dilation,
        conv.groups,
    );
    let bias = conv.bias.as_ref().map(|b| b.val());
    if conv.groups != 1 {
        return conv_transpose2d(x, conv.weight.val(), bias, options);
    }
    match transpose_geom(x.dims(), conv.weight.dims(), &options) {
        Some(geom) if is_cpu::<B>() => flex_op(Kind::Transpose, geom, x, conv.weight.val(), bias),
        _ => conv_transpose2d(x, conv.weight.val(), bias, options),
    }
}

/// The geometry of a convolution, or `None` for shapes the fast path leaves to burn
/// (empty tensors, a kernel larger than the padded input).
fn conv_geom(x: [usize; 4], w: [usize; 4], options: &ConvOptions<2>) -> Option<Geom> {
    let [c_out, _, kh, kw] = w;
    Geom::new(
        x,
        c_out,
        [kh, kw],
        options.stride,
        options.padding,
        options.dilation,
    )
}

/// The transposed convolution is the input gradient of the convolution that maps its
/// output back onto its input: that convolution's geometry describes both (`None` as for
/// [`conv_geom`]).
fn transpose_geom(x: [usize; 4], w: [usize; 4], options: &ConvTransposeOptions<2>) -> Option<Geom> {
    let [n, c_in, h, wd] = x;
    let [_, c_out, kh, kw] = w;
    let size = |i: usize, size: usize| {
        ((size.checked_sub(1)? * options.stride[i])
            + options.dilation[i] * [kh, kw][i].checked_sub(1)?
            + options.padding_out[i]
            + 1)
        .checked_sub(2 * options.padding[i])
    };
    let geom = Geom::new(
        [n, c_out, size(0, h)?, size(1, wd)?],
        c_in,
        [kh, kw],
        options.stride,
        options.padding,
        options.dilation,
    )?;
    // An output padding of a stride or more maps back onto a larger input than `x`.
    ([geom.oh, geom.ow] == [h, wd]).then_some(geom)
}

/// Whether `B` is the CPU backend, which has the fast path.
pub(super) fn is_cpu<B: Backend>() -> bool {
    TypeId::of::<B>() == TypeId::of::<Cpu>()
}

/// `a` as a `T` when `A` is `T` (a type check at run time: stages are generic over the
/// backend, and only the CPU one has the fast path).
pub(super) fn same_type<A: 'static, T: 'static>(a: A) -> Result<T, A> {
    let mut slot = Some(a);
    if let Some(t) = (&mut slot as &mut dyn Any).downcast_mut::<Option<T>>() {
        return Ok(t.take().expect("the slot was just filled"));
    }
    Err(slot.expect("the slot is still filled"))
}

/// The primitive of a tensor of backend `B`, known to be the CPU backend.
pub(super) fn cpu_float<B: Backend, const D: usize>(t: Tensor<B, D>) -> FloatTensor<Cpu> {
    match same_type::<_, Tensor<Cpu, D>>(t).map(Tensor::into_primitive) {
        Ok(TensorPrimitive::Float(t)) => t,
        Ok(TensorPrimitive::QFloat(_)) => unreachable!("the training networks are not quantized"),
        Err(_) => unreachable!("the caller checked that the backend is the CPU one"),
    }
}

/// Which product an operation computes: a convolution, or a transposed convolution (the
/// input gradient of the convolution described by the same geometry).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Conv,
    Transpose,
}

/// The operation on the CPU backend's autodiff graph, with or without bias.
fn flex_op<B: Backend>(
    kind: Kind,
    geom: Geom,
    x: Tensor<B, 4>,
    w: Tensor<B, 4>,
    bias: Option<Tensor<B, 1>>,
) -> Tensor<B, 4> {
    let x = cpu_float(x);
    let w = cpu_float(w);
    let forward = |x: &FlexTensor, w: &FlexTensor, b: Option<&FlexTensor>| match kind {
        Kind::Conv => conv_forward(x, w, b, &geom),
        Kind::Transpose => input_grad(x, w, b, &geom),
    };
    let op = FlexOp { kind };
    let bias = bias.map(cpu_float);
    let run = || {
        forward(
            &x.primitive,
            &w.primitive,
            bias.as_ref().map(|b| &b.primitive),
        )
    };
    let y = match &bias {
        None => record(
            op.prepare::<NoCheckpointing>([x.node.clone(), w.node.clone()])
                .compute_bound()
                .stateful(),
            (&x, &w, geom),
            run,
        ),
        Some(b) => record(
            op.prepare::<NoCheckpointing>([x.node.clone(), w.node.clone(), b.node.clone()])
                .compute_bound()
                .stateful(),
            (&x, &w, geom),
            run,
        ),
    };
    let y = Tensor::<Cpu, 4>::from_primitive(TensorPrimitive::Float(y));
    same_type::<_, Tensor<B, 4>>(y).unwrap_or_else(|_| unreachable!("B is the CPU backend"))
}

/// What the backward pass of [`FlexOp`] reads: the checkpointed input and weight.
type ConvState = (NodeId, NodeId, Geom);

/// Puts the operation on the graph (checkpointing its input and weight when a parent
/// needs a gradient) and returns `forward()`'s output as its result.
fn record<const N: usize>(
    prep: OpsKind<FlexOp, Flex, ConvState, NoCheckpointing, N>,
    (x, w, geom): (&FloatTensor<Cpu>, &FloatTensor<Cpu>, Geom),
    forward: impl FnOnce() -> FlexTensor,
) -> FloatTensor<Cpu> {
    match prep {
        OpsKind::Tracked(mut prep) => {
            let state = (prep.checkpoint(x), prep.checkpoint(w), geom);
            prep.finish(state, forward())
        }
        OpsKind::UnTracked(prep) => prep.finish(forward()),
    }
}

/// A convolution or transposed convolution on the CPU backend's autodiff graph; its
/// parents are the input, the weight and (with N = 3) the bias.
#[derive(Debug)]
struct FlexOp {
    kind: Kind,
}

/// With N = 2 (no bias) or 3 (a bias).
impl<const N: usize> Backward<Flex, N> for FlexOp {
    type State = ConvState;

    fn backward(
        self,
        ops: Ops<Self::State, N>,
        grads: &mut Gradients,
        checkpointer: &mut Checkpointer,
    ) {
        let dy = grads.consume::<Flex>(&ops.node);
        let (xs, ws, geom) = ops.state;
        let x = checkpointer.retrieve_node_output::<FlexTensor>(xs);
        let w = checkpointer.retrieve_node_output::<FlexTensor>(ws);
        if let Some(node) = &ops.parents[0] {
            let dx = match self.kind {
                Kind::Conv => input_grad(&dy, &w, None, &geom),
                Kind::Transpose => conv_forward(&dy, &w, None, &geom),
            };
            grads.register::<Flex>(node.id, dx);
        }
        if let Some(node) = &ops.parents[1] {
            let dw = match self.kind {
                Kind::Conv => weight_grad(&x, &dy, &geom),
                Kind::Transpose => weight_grad(&dy, &x, &geom),
            };
            grads.register::<Flex>(node.id, dw);
        }
        if let Some(Some(node)) = ops.parents.get(2) {
            grads.register::<Flex>(node.id, channel_sums(&dy));
        }
    }
}

/// The shapes of a convolution: input [n, c_in, h, w], output [n, c_out, oh, ow], weight
/// [c_out, c_in, kh, kw].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Geom {
    n: usize,
    c_in: usize,
    h: usize,
    w: usize,
    c_out: usize,
    oh: usize,
    ow: usize,
    kh: usize,
    kw: usize,
    stride: [usize; 2],
    pad: [usize; 2],
    dil: [usize; 2],
    /// Images per chunk of the batch.
    chunk: usize,
}

/// Columns (output positions) per chunk the products aim for: enough for the matrix
/// product to run at speed, few enough that a chunk's im2col block stays in cache.
const CHUNK_COLUMNS: usize = 512;

impl Geom {
    fn new(
        input: [usize; 4],
        c_out: usize,
        kernel: [usize; 2],
        stride: [usize; 2],
        pad: [usize; 2],
        dil: [usize; 2],
    ) -> Option<Geom> {
        let [n, c_in, h, w] = input;
        let sizes = [
            n, c_in, h, w, c_out, kernel[0], kernel[1], stride[0], stride[1],
        ];
        if sizes.contains(&0) || dil.contains(&0) {
            return None;
        }
        let out = |size: usize, i: usize| {
            Some((size + 2 * pad[i]).checked_sub(dil[i] * (kernel[i] - 1) + 1)? / stride[i] + 1)
        };
        let (oh, ow) = (out(h, 0)?, out(w, 1)?);
        let columns = (oh * ow).max(1);
        // At least 8 chunks when the batch allows it, so that both the parallel loops
        // and the weight gradient's fixed reduction have work to share.
        let chunk = CHUNK_COLUMNS.div_ceil(columns).clamp(1, (n / 8).max(1));
        Some(Geom {
            n,
            c_in,
            h,
            w,
            c_out,
            oh,
            ow,
            kh: kernel[0],
            kw: kernel[1],
            stride,
            pad,
            dil,
            chunk,
        })
    }

    /// Rows of the im2col matrix: one per (input channel, kernel row, kernel column).
    fn k(&self) -> usize {
        self.c_in * self.kh * self.kw
    }

    /// Output positions per image.
    fn p(&self) -> usize {
        self.oh * self.ow
    }

    /// Whether the kernel covers the whole input at one output position (the last layer
    /// of a DCGAN discriminator, the first of its generator): then the im2col matrix is
    /// the batch itself and each product is one matrix product over the whole batch.
    fn full_map(&self) -> bool {
        self.oh == 1
            && self.ow == 1
            && self.pad == [0, 0]
            && self.dil == [1, 1]
            && [self.kh, self.kw] == [self.h, self.w]
    }
}

pub(super) fn contiguous(t: &FlexTensor) -> FlexTensor {
    t.to_contiguous()
}

pub(super) fn values(t: &FlexTensor) -> &[f32] {
    t.as_slice::<f32>()
        .expect("the training networks are f32 and the tensor was made contiguous")
}

fn tensor(data: Vec<f32>, shape: [usize; 4]) -> FlexTensor {
    FlexTensor::from_data(TensorData::new(data, shape))
}

/// Where kernel tap `k` of an axis reads: input index `o·s + k·d − pad` is phase
/// `q = (k·d − pad) mod s`, index `o + a` within that phase, with `a = ⌊(k·d − pad) / s⌋`.
/// Returns (q, a).
fn tap_axis(k: usize, s: usize, d: usize, pad: usize) -> (usize, isize) {
    let off = (k * d) as isize - pad as isize;
    (
        off.rem_euclid(s as isize) as usize,
        off.div_euclid(s as isize),
    )
}

/// Where one kernel tap (ki, kj) reads in an image's phases: output (oy, ox) reads entry
/// `at + oy·cols + ox`.
#[derive(Debug, Clone, Copy)]
struct Tap {
    at: usize,
}

fn taps(g: &Geom, ph: &Phases) -> Vec<Tap> {
    let mut taps = Vec::with_capacity(g.kh * g.kw);
    for ki in 0..g.kh {
        let (qy, ay) = tap_axis(ki, g.stride[0], g.dil[0], g.pad[0]);
        for kj in 0..g.kw {
            let (qx, ax) = tap_axis(kj, g.stride[1], g.dil[1], g.pad[1]);
            // The margins make both offsets non-negative (see `Phases::of`).
            let row = (ay + ph.top as isize) as usize;
            let col = (ax + ph.left as isize) as usize;
            taps.push(Tap {
                at: ph.block(qy, qx) + row * ph.cols + col,
            });
        }
    }
    taps
}

/// One input plane split by stride phase: phase (qy, qx) holds rows qy, qy+s, … and
/// columns qx, qx+s, … of the plane as a `th × tw` block inside zero margins (`top` rows
/// above, `left` columns to the left, and what `rows × cols` leaves below and to the
/// right). Every kernel tap then reads (im2col) or adds to (col2im) an `oh × ow` window
/// of one phase at a fixed offset: whole rows, where on the plane they would step by the
/// stride, and with the padding in the margins, so no tap checks its bounds or zeroes
/// entries row by row.
struct Phases {
    s: [usize; 2],
    th: usize,
    tw: usize,
    top: usize,
    left: usize,
    rows: usize,
    cols: usize,
}

impl Phases {
    fn of(g: &Geom) -> Phases {
        // (before, after): the margins an axis of `t` entries needs for windows of `out`
        // entries at the offsets of all `kernel` taps.
        let margins = |axis: usize, kernel: usize, t: usize, out: usize| {
            let offsets =
                (0..kernel).map(|k| tap_axis(k, g.stride[axis], g.dil[axis], g.pad[axis]).1);
            let lo = offsets.clone().min().unwrap_or(0);
            let hi = offsets.max().unwrap_or(0);
            (
                (-lo).max(0) as usize,
                (hi + out as isize - t as isize).max(0) as usize,
            )
        };
        let (th, tw) = (g.h.div_ceil(g.stride[0]), g.w.div_ceil(g.stride[1]));
        let (top, bottom) = margins(0, g.kh, th, g.oh);
        let (left, right) = margins(1, g.kw, tw, g.ow);
        Phases {
            s: g.stride,
            th,
            tw,
            top,
            left,
            rows: top + th + bottom,
            cols: left + tw + right,
        }
    }

    /// Whether the plane has to be split at all: without a stride and with nothing to
    /// pad, it is its own single phase.
    fn needed(&self) -> bool {
        self.s != [1, 1] || self.rows != self.th || self.cols != self.tw
    }

    fn len(&self) -> usize {
        self.s[0] * self.s[1] * self.rows * self.cols
    }

    fn block(&self, qy: usize, qx: usize) -> usize {
        (qy * self.s[1] + qx) * self.rows * self.cols
    }

    /// Splits `plane` (h × w) into `out` (all phases, margins included).
    #[inline]
    fn split(&self, plane: &[f32], w: usize, out: &mut [f32]) {
        let h = plane.len() / w;
        let [sy, sx] = self.s;
        for qy in 0..sy {
            for qx in 0..sx {
                let block = &mut out[self.block(qy, qx)..][..self.rows * self.cols];
                // The margins zeroed with the rest in one pass: a fill per margin and row
                // was a `memset` call for one or two entries.
                if self.rows != self.th || self.cols != self.tw {
                    block.fill(0.0);
                }
                let inside = &mut block[self.top * self.cols..][..self.th * self.cols];
                for (ty, row) in inside.chunks_exact_mut(self.cols).enumerate() {
                    let dst = &mut row[self.left..][..self.tw];
                    let y = ty * sy + qy;
                    if y >= h {
                        dst.fill(0.0);
                        continue;
                    }
                    let src = &plane[y * w..(y + 1) * w];
                    if sx == 1 {
                        dst.copy_from_slice(src);
                        continue;
                    }
                    // A whole-row pass per phase, in steps the compiler can unroll: the
                    // generic `step_by` loop ran element by element.
                    let full = w / sx;
                    for (d, pair) in dst[..full].iter_mut().zip(src.chunks_exact(sx)) {
                        *d = pair[qx];
                    }
                    if full < self.tw {
                        let tail = &src[full * sx..];
                        dst[full] = if qx < tail.len() { tail[qx] } else { 0.0 };
                        dst[full + 1..].fill(0.0);
                    }
                }
            }
        }
    }

    /// The inverse of [`Self::split`]: writes the phases' entries that lie on the plane
    /// back into `plane` (h × w), overwriting it; the margins are dropped.
    #[inline]
    fn join(&self, phases: &[f32], w: usize, plane: &mut [f32]) {
        let h = plane.len() / w;
        let [sy, sx] = self.s;
        for y in 0..h {
            let (qy, ty) = (y % sy, y / sy);
            let dst = &mut plane[y * w..(y + 1) * w];
            let full = w / sx;
            for qx in 0..sx.min(w) {
                let at = self.block(qy, qx) + (self.top + ty) * self.cols + self.left;
                let src = &phases[at..][..self.tw];
                for (pair, v) in dst.chunks_exact_mut(sx).zip(&src[..full]) {
                    pair[qx] = *v;
                }
                if qx < w - full * sx {
                    dst[full * sx + qx] = src[full];
                }
            }
        }
    }
}

/// What im2col and col2im share for a chunk of `nb` images, worked out once per chunk:
/// `p` outputs per image, `l` columns, `plane` input pixels, the taps; when the planes
/// are split into phases, each image's take `len` entries of a task's scratch, otherwise
/// the plane is used as it is.
struct Lowering {
    nb: usize,
    p: usize,
    l: usize,
    plane: usize,
    ph: Phases,
    split: bool,
    len: usize,
    taps: Vec<Tap>,
}

impl Lowering {
    fn new(g: &Geom, nb: usize) -> Lowering {
        let ph = Phases::of(g);
        let split = ph.needed();
        let plane = g.h * g.w;
        Lowering {
            nb,
            p: g.p(),
            l: nb * g.p(),
            plane,
            len: if split { ph.len() } else { plane },
            taps: taps(g, &ph),
            ph,
            split,
        }
    }

    /// `phases` sized for the chunk's images (nothing to hold without a split).
    fn phases<'a>(&self, phases: &'a mut Vec<f32>) -> &'a mut [f32] {
        let len = if self.split { self.nb * self.len } else { 0 };
        sized(phases, len)
    }
}

/// Copies images `j0..j0+nb` of `x` ([n, c_in, h, w]) into `cols`, a row-major
/// `k × nb·p` matrix: row (c, ki, kj), column (image, oy, ox) holds
/// x[image, c, oy·s + ki·d − pad, ox·s + kj·d − pad], or 0 in the padding.
fn im2col(x: &[f32], g: &Geom, lw: &Lowering, j0: usize, cols: &mut [f32], phases: &mut Vec<f32>) {
    im2col_channels(x, g, lw, j0, 0..g.c_in, cols, phases);
}

/// [`im2col`] for the input channels `channels` only: `cols` holds their rows.
#[multiversion(targets("x86_64+avx512f+avx512vl+avx2+fma", "x86_64+avx2+fma"))]
fn im2col_channels(
    x: &[f32],
    g: &Geom,
    lw: &Lowering,
    j0: usize,
    channels: std::ops::Range<usize>,
    cols: &mut [f32],
    phases: &mut Vec<f32>,
) {
    let Lowering {
        nb,
        p,
        l,
        plane,
        ref ph,
        split,
        len,
        ref taps,
    } = *lw;
    let phases = lw.phases(phases);
    // Channel by channel, each tap's row of `cols` written front to back: the row is
    // `nb` segments, one per image (visiting the images in the outer loop instead
    // strode through the whole block and ran at the speed of cache misses).
    for c in channels.clone() {
        let image = |j: usize| &x[((j0 + j) * g.c_in + c) * plane..][..plane];
        if split {
            for j in 0..nb {
                ph.split(image(j), g.w, &mut phases[j * len..][..len]);
            }
        }
        for (t, tap) in taps.iter().enumerate() {
            let row = &mut cols[((c - channels.start) * taps.len() + t) * l..][..l];
            for (j, dst) in row.chunks_exact_mut(p).enumerate() {
                let src = if split {
                    &phases[j * len..][..len]
                } else {
                    image(j)
                };
                copy_window(&src[tap.at..], ph.cols, g.ow, dst);
            }
        }
    }
}

/// Fills `dst` (`oh × ow`, row-major) with the window of `src` whose rows start
/// `stride` entries apart. The rows of the DCGAN layers are 4 to 16 entries long: at
/// those widths the copies are unrolled, where a call to `memcpy` per row would cost more
/// than the copy.
#[inline]
fn copy_window(src: &[f32], stride: usize, ow: usize, dst: &mut [f32]) {
    fn rows<const W: usize>(src: &[f32], stride: usize, dst: &mut [f32]) {
        for (oy, d) in dst.as_chunks_mut::<W>().0.iter_mut().enumerate() {
            let s: &[f32; W] = src[oy * stride..][..W]
                .try_into()
                .unwrap_or_else(|_| unreachable!("the slice is W long"));
            *d = *s;
        }
    }
    if stride == ow {
        dst.copy_from_slice(&src[..dst.len()]);
        return;
    }
    match ow {
        4 => rows::<4>(src, stride, dst),
        8 => rows::<8>(src, stride, dst),
        16 => rows::<16>(src, stride, dst),
        _ => {
            for (oy, d) in dst.chunks_exact_mut(ow).enumerate() {
                d.copy_from_slice(&src[oy * stride..][..ow]);
            }
        }
    }
}

/// Adds `src` (`oh × ow`, row-major) into the window of `dst` whose rows start `stride`
/// entries apart: the inverse of [`copy_window`], unrolled at the same widths.
#[inline]
fn add_window(src: &[f32], stride: usize, ow: usize, dst: &mut [f32]) {
    fn rows<const W: usize>(src: &[f32], stride: usize, dst: &mut [f32]) {
        for (oy, s) in src.as_chunks::<W>().0.iter().enumerate() {
            let d: &mut [f32; W] = (&mut dst[oy * stride..][..W])
                .try_into()
                .unwrap_or_else(|_| unreachable!("the slice is W long"));
            for (d, s) in d.iter_mut().zip(s) {
                *d += *s;
            }
        }
    }
    match ow {
        4 => rows::<4>(src, stride, dst),
        8 => rows::<8>(src, stride, dst),
        16 => rows::<16>(src, stride, dst),
        _ => {
            for (oy, s) in src.chunks_exact(ow).enumerate() {
                for (d, s) in dst[oy * stride..][..ow].iter_mut().zip(s) {
                    *d += *s;
                }
            }
        }
    }
}

/// The adjoint of [`im2col`]: sums every entry of `cols` into the image position it was
/// copied from. `dx` holds the chunk's `nb` images and is overwritten; the entries of
/// `cols` that im2col would fill with padding land in the margins and are dropped.
#[multiversion(targets("x86_64+avx512f+avx512vl+avx2+fma", "x86_64+avx2+fma"))]
fn col2im(cols: &[f32], g: &Geom, lw: &Lowering, dx: &mut [f32], phases: &mut Vec<f32>) {
    let Lowering {
        nb,
        p,
        l,
        plane,
        ref ph,
        split,
        len,
        ref taps,
    } = *lw;
    let phases = lw.phases(phases);
    // Channel by channel and tap by tap, reading `cols` front to back (see im2col).
    for c in 0..g.c_in {
        for j in 0..nb {
            match split {
                true => phases[j * len..][..len].fill(0.0),
                false => dx[(j * g.c_in + c) * plane..][..plane].fill(0.0),
            }
        }
        for (t, tap) in taps.iter().enumerate() {
            let row = &cols[(c * taps.len() + t) * l..][..l];
            for (j, src) in row.chunks_exact(p).enumerate() {
                let acc = match split {
                    true => &mut phases[j * len..][..len],
                    false => &mut dx[(j * g.c_in + c) * plane..][..plane],
                };
                add_window(src, ph.cols, g.ow, &mut acc[tap.at..]);
            }
        }
        if split {
            for j in 0..nb {
                ph.join(
                    &phases[j * len..][..len],
                    g.w,
                    &mut dx[(j * g.c_in + c) * plane..][..plane],
                );
            }
        }
    }
}

/// `dst (m × n) = [dst +] lhs (m × k) · rhs (k × n)`, each matrix given by its slice and
/// (row stride, column stride) in elements; on the calling thread, or on all of rayon's
/// (which split the output, not the sum, so the result is the same).
#[allow(clippy::too_many_arguments)]
fn matmul_on(
    parallel: bool,
    m: usize,
    n: usize,
    k: usize,
    dst: &mut [f32],
    dst_strides: [usize; 2],
    accumulate: bool,
    lhs: &[f32],
    lhs_strides: [usize; 2],
    rhs: &[f32],
    rhs_strides: [usize; 2],
) {
    let last = |rows: usize, cols: usize, s: [usize; 2]| {
        if rows == 0 || cols == 0 {
            0
        } else {
            (rows - 1) * s[0] + (cols - 1) * s[1] + 1
        }
    };
    assert!(dst.len() >= last(m, n, dst_strides));
    assert!(lhs.len() >= last(m, k, lhs_strides));
    assert!(rhs.len() >= last(k, n, rhs_strides));
    // SAFETY: the asserts above keep every index the product reads or writes inside the
    // slices, and `dst` is borrowed mutably, so it aliases neither operand.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            dst_strides[1] as isize,
            dst_strides[0] as isize,
            accumulate,
            lhs.as_ptr(),
            lhs_strides[1] as isize,
            lhs_strides[0] as isize,
            rhs.as_ptr(),
            rhs_strides[1] as isize,
            rhs_strides[0] as isize,
            if accumulate { 1.0 } else { 0.0 },
            1.0,
            false,
            false,
            false,
            if parallel {
                gemm::Parallelism::Rayon(rayon::current_num_threads())
            } else {
                gemm::Parallelism::None
            },
        );
    }
}

#[derive(Default)]
struct Scratch {
    cols: Vec<f32>,
    rows: Vec<f32>,
    phases: Vec<f32>,
}

thread_local! {
    /// Per-thread buffers for a chunk's im2col block, output rows and phases, kept across
    /// chunks and calls: fresh ones would be zeroed pages faulted in for every chunk.
    static SCRATCH: RefCell<Scratch> = RefCell::default();
}

/// Runs `f` with this thread's scratch buffers (or fresh ones, should a caller up the
/// stack on this thread hold them: rayon runs other jobs while a thread waits).
fn with_scratch<R>(f: impl FnOnce(&mut Scratch) -> R) -> R {
    SCRATCH.with(|cell| match cell.try_borrow_mut() {
        Ok(mut scratch) => f(&mut scratch),
        Err(_) => f(&mut Scratch::default()),
    })
}

/// `buf` resized to `len`; what it held is left for the caller to overwrite.
fn sized(buf: &mut Vec<f32>, len: usize) -> &mut [f32] {
    buf.resize(len, 0.0);
    &mut buf[..len]
}

/// y = conv(x, w) + bias: per chunk, W (c_out × k) · im2col(x) (k × l), scattered into
/// NCHW.
fn conv_forward(x: &FlexTensor, w: &FlexTensor, bias: Option<&FlexTensor>, g: &Geom) -> FlexTensor {
    let (x, w, bias) = (contiguous(x), contiguous(w), bias.map(contiguous));
    let (x, w, bias) = (values(&x), values(&w), bias.as_ref().map(values));
    let (k, p) = (g.k(), g.p());
    let len = g.n * g.c_out * p;
    if g.full_map() {
        let mut y = vec![0.0f32; len];
        // Y (n × c_out) = X (n × k) · Wᵀ (k × c_out).
        matmul_on(
            true,
            g.n,
            g.c_out,
            k,
            &mut y,
            [g.c_out, 1],
            false,
            x,
            [k, 1],
            w,
            [1, k],
        );
        if let Some(b) = bias {
            for row in y.chunks_exact_mut(g.c_out) {
                row.iter_mut().zip(b).for_each(|(v, b)| *v += b);
            }
        }
        return tensor(y, [g.n, g.c_out, g.oh, g.ow]);
    }
    let y = par_filled(len, g.chunk * g.c_out * p, |i, y| {
        with_scratch(|Scratch { cols, rows, phases }| {
            let nb = y.len() / (g.c_out * p);
            let l = nb * p;
            let cols = sized(cols, k * l);
            im2col(x, g, &Lowering::new(g, nb), i * g.chunk, cols, phases);
            let out = sized(rows, g.c_out * l);
            matmul_on(
                false,
                g.c_out,
                l,
                k,
                out,
                [l, 1],
                false,
                w,
                [k, 1],
                cols,
                [l, 1],
            );
            for j in 0..nb {
                for c in 0..g.c_out {
                    let dst = &mut y[(j * g.c_out + c) * p..][..p];
                    let src = &out[c * l + j * p..][..p];
                    match bias {
                        Some(b) => dst.iter_mut().zip(src).for_each(|(d, v)| *d = v + b[c]),
                        None => dst.copy_from_slice(src),
                    }
                }
            }
        })
    });
    tensor(y, [g.n, g.c_out, g.oh, g.ow])
}

/// The output gradients of images `j0..j0+nb` as a `c_out × nb·p` matrix in `out`.
#[multiversion(targets("x86_64+avx512f+avx512vl+avx2+fma", "x86_64+avx2+fma"))]
fn gather_rows(dy: &[f32], g: &Geom, j0: usize, nb: usize, out: &mut [f32]) {
    let (p, l) = (g.p(), nb * g.p());
    for j in 0..nb {
        for c in 0..g.c_out {
            out[c * l + j * p..][..p].copy_from_slice(&dy[((j0 + j) * g.c_out + c) * p..][..p]);
        }
    }
}

/// The output gradients of images `j0..j0+nb` as the same `c_out × nb·p` matrix as
/// [`gather_rows`], stored column by column (`nb·p × c_out` row-major). The weight
/// gradients' products take it in this layout: with both operands holding the summed
/// axis contiguously, gemm's AVX-512 kernels ran at a third of their speed on them.
#[multiversion(targets("x86_64+avx512f+avx512vl+avx2+fma", "x86_64+avx2+fma"))]
fn gather_columns(dy: &[f32], g: &Geom, j0: usize, nb: usize, out: &mut [f32]) {
    let (p, c_out) = (g.p(), g.c_out);
    for j in 0..nb {
        let image = &dy[(j0 + j) * c_out * p..][..c_out * p];
        let block = &mut out[j * p * c_out..][..p * c_out];
        for (c, plane) in image.chunks_exact(p).enumerate() {
            for (q, v) in plane.iter().enumerate() {
                block[q * c_out + c] = *v;
            }
        }
    }
}

/// dx = conv's input gradient (+ bias, for a transposed convolution): per chunk,
/// col2im(Wᵀ (k × c_out) · dy (c_out × l)).
fn input_grad(dy: &FlexTensor, w: &FlexTensor, bias: Option<&FlexTensor>, g: &Geom) -> FlexTensor {
    let (dy, w, bias) = (contiguous(dy), contiguous(w), bias.map(contiguous));
    let (dy, w, bias) = (values(&dy), values(&w), bias.as_ref().map(values));
    let (k, plane) = (g.k(), g.h * g.w);
    let len = g.n * g.c_in * plane;
    if g.full_map() {
        let mut dx = vec![0.0f32; len];
        // dX (n × k) = dY (n × c_out) · W (c_out × k).
        matmul_on(
            true,
            g.n,
            k,
            g.c_out,
            &mut dx,
            [k, 1],
            false,
            dy,
            [g.c_out, 1],
            w,
            [k, 1],
        );
        if let Some(b) = bias {
            for (plane, b) in dx.chunks_exact_mut(plane).zip(b.iter().cycle()) {
                plane.iter_mut().for_each(|v| *v += b);
            }
        }
        return tensor(dx, [g.n, g.c_in, g.h, g.w]);
    }
    let dx = par_filled(len, g.chunk * g.c_in * plane, |i, dx| {
        with_scratch(|Scratch { cols, rows, phases }| {
            let nb = dx.len() / (g.c_in * plane);
            let l = nb * g.p();
            let rows = sized(rows, g.c_out * l);
            gather_rows(dy, g, i * g.chunk, nb, rows);
            let cols = sized(cols, k * l);
            matmul_on(
                false,
                k,
                l,
                g.c_out,
                cols,
                [l, 1],
                false,
                w,
                [1, k],
                rows,
                [l, 1],
            );
            col2im(cols, g, &Lowering::new(g, nb), dx, phases);
            if let Some(b) = bias {
                for (plane, b) in dx.chunks_exact_mut(plane).zip(b.iter().cycle()) {
                    plane.iter_mut().for_each(|v| *v += b);
                }
            }
        })
    });
    tensor(dx, [g.n, g.c_in, g.h, g.w])
}

/// The bias gradient: dy ([n, c, h, w]) summed over all but the channel axis, in a fixed
/// order.
fn channel_sums(dy: &FlexTensor) -> FlexTensor {
    let dy = contiguous(dy);
    let [n, channels, h, w] = dy.layout().shape().dims();
    let dy = values(&dy);
    let plane = h * w;
    let sums: Vec<f32> = (0..channels)
        .into_par_iter()
        .map(|c| {
            (0..n)
                .map(|j| {
                    dy[(j * channels + c) * plane..][..plane]
                        .iter()
                        .sum::<f32>()
                })
                .sum()
        })
        .collect();
    FlexTensor::from_data(TensorData::new(sums, [channels]))
}

/// How many partial sums a weight gradient is split into: fixed, so that the result does
/// not depend on the thread count, and more than the two threads of a small machine so
/// that they share the work evenly.
const PARTIAL_SUMS: usize = 4;

/// dw = Σ over the batch of dy (c_out × l) · im2col(x)ᵀ (l × k), in fixed chunks of the
/// batch. [`PARTIAL_SUMS`] tasks each sum a fixed run of chunks on one thread, and
/// [`sum_into_weight`] adds their sums in order, so the result is the same on any number
/// of threads. Summing chunk by chunk with each product split across threads by output
/// tile (gemm's own threading) left one of two threads idle for much of the gradient:
/// gemm packs each chunk's im2col block on one thread before sharing the product.
fn weight_grad(x: &FlexTensor, dy: &FlexTensor, g: &Geom) -> FlexTensor {
    let (x, dy) = (contiguous(x), contiguous(dy));
    let (x, dy) = (values(&x), values(&dy));
    let k = g.k();
    if g.full_map() {
        // dW (c_out × k) = dYᵀ (c_out × n) · X (n × k).
        let mut dw = vec![0.0f32; g.c_out * k];
        matmul_on(
            true,
            g.c_out,
            k,
            g.n,
            &mut dw,
            [k, 1],
            false,
            dy,
            [1, g.c_out],
            x,
            [k, 1],
        );
        return tensor(dw, [g.c_out, g.c_in, g.kh, g.kw]);
    }
    let chunks = g.n.div_ceil(g.chunk);
    let per_task = chunks.div_ceil(PARTIAL_SUMS);
    let partials: Vec<Vec<f32>> = (0..chunks.div_ceil(per_task))
        .into_par_iter()
        .with_max_len(1)
        .map(|t| {
            let mut dw = vec![0.0f32; g.c_out * k];
            with_scratch(|Scratch { cols, rows, phases }| {
                for chunk in t * per_task..((t + 1) * per_task).min(chunks) {
                    let j0 = chunk * g.chunk;
                    let nb = g.chunk.min(g.n - j0);
                    let l = nb * g.p();
                    let rows = sized(rows, g.c_out * l);
                    gather_columns(dy, g, j0, nb, rows);
                    let cols = sized(cols, k * l);
                    im2col(x, g, &Lowering::new(g, nb), j0, cols, phases);
                    let first = chunk == t * per_task;
                    matmul_on(
                        false,
                        g.c_out,
                        k,
                        l,
                        &mut dw,
                        [1, g.c_out],
                        !first,
                        rows,
                        [1, g.c_out],
                        cols,
                        [1, l],
                    );
                }
            });
            dw
        })
        .collect();
    sum_into_weight(partials, g)
}

/// The partial sums of a weight gradient, each `k × c_out` (the products ran up to twice
/// as fast with that output layout), added in order and then written in the weight's
/// `c_out × k` layout. Adding and transposing in one pass read four partial sums with a
/// stride and could not vectorise (5% of a DCGAN step); the addition alone is contiguous.
fn sum_into_weight(partials: Vec<Vec<f32>>, g: &Geom) -> FlexTensor {
    const SPAN: usize = 1 << 14;
    let (k, c_out) = (g.k(), g.c_out);
    let mut partials = partials.into_iter();
    let mut sum = partials.next().unwrap_or_else(|| vec![0.0f32; c_out * k]);
    let rest: Vec<Vec<f32>> = partials.collect();
    sum.par_chunks_mut(SPAN)
        .enumerate()
        .for_each(|(i, span)| add_in_order(span, &rest, i * SPAN));
    let out = par_filled(c_out * k, TRANSPOSE_TILE * k, |tile, rows| {
        transpose_rows(&sum, c_out, tile * TRANSPOSE_TILE, rows)
    });
    tensor(out, [g.c_out, g.c_in, g.kh, g.kw])
}

/// Rows of the weight per task of [`transpose_rows`], and the side of its square blocks.
const TRANSPOSE_TILE: usize = 32;

/// `span += part[at..]` for each of `parts` in turn.
#[multiversion(targets("x86_64+avx512f+avx512vl+avx2+fma", "x86_64+avx2+fma"))]
fn add_in_order(span: &mut [f32], parts: &[Vec<f32>], at: usize) {
    for part in parts {
        for (s, p) in span.iter_mut().zip(&part[at..]) {
            *s += *p;
        }
    }
}

/// The weight's rows `c0..` (as many as `rows` holds, `k` entries each) from `src`
/// (`k × c_out`), in square blocks, so that neither side strides through memory a page a
/// step.
#[multiversion(targets("x86_64+avx512f+avx512vl+avx2+fma", "x86_64+avx2+fma"))]
fn transpose_rows(src: &[f32], c_out: usize, c0: usize, rows: &mut [f32]) {
    let k = src.len() / c_out;
    let height = rows.len() / k;
    for kk0 in (0..k).step_by(TRANSPOSE_TILE) {
        let kk1 = (kk0 + TRANSPOSE_TILE).min(k);
        for i in 0..height {
            let row = &mut rows[i * k + kk0..i * k + kk1];
            for (kk, v) in (kk0..kk1).zip(row) {
                *v = src[kk * c_out + c0 + i];
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::data::test_normal as random;

    fn close<const D: usize>(ours: Tensor<Cpu, D>, burns: Tensor<Cpu, D>, what: &str) {
        let (a, b) = (ours.into_data(), burns.into_data());
        assert_eq!(a.shape, b.shape, "{what}: shapes");
        let (a, b) = (a.to_vec::<f32>().unwrap(), b.to_vec::<f32>().unwrap());
        let scale = b.iter().fold(0f32, |m, v| m.max(v.abs()));
        let worst = a
            .iter()
            .zip(&b)
            .fold(0f32, |m, (x, y)| m.max((x - y).abs()));
        assert!(
            worst <= 1e-5 * scale.max(1.0),
            "{what}: max |diff| {worst}, scale {scale}"
        );
    }

    type Op<'a> =
        &'a dyn Fn(Tensor<Cpu, 4>, Tensor<Cpu, 4>, Option<Tensor<Cpu, 1>>) -> Tensor<Cpu, 4>;

    /// Output and the input, weight and bias gradients of `ours` against burn's own
    /// operation, through `sum(y · r)` for a random `r`, without and with a bias.
    fn compare(
        x: Tensor<Cpu, 4>,
        w: Tensor<Cpu, 4>,
        channels: usize,
        ours: Op,
        burns: Op,
        what: &str,
    ) {
        for bias in [None, Some(random([channels], 9))] {
            let with = if bias.is_some() {
                "with bias"
            } else {
                "without bias"
            };
            let run = |f: Op| {
                let (x, w) = (x.clone().require_grad(), w.clone().require_grad());
                let b = bias.clone().map(Tensor::require_grad);
                let y = f(x.clone(), w.clone(), b.clone());
                let r = random(y.dims(), 7);
                let grads = (y.clone() * r).sum().backward();
                let dx = Tensor::<Cpu, 4>::from_inner(x.grad(&grads).expect("x has a gradient"));
                let dw = Tensor::<Cpu, 4>::from_inner(w.grad(&grads).expect("w has a gradient"));
                let db = b.map(|b| {
                    Tensor::<Cpu, 1>::from_inner(b.grad(&grads).expect("a bias gradient"))
                });
                (y, dx, dw, db)
            };
            let (y1, dx1, dw1, db1) = run(ours);
            let (y2, dx2, dw2, db2) = run(burns);
            close(y1, y2, &format!("{what} {with}: output"));
            close(dx1, dx2, &format!("{what} {with}: input gradient"));
            close(dw1, dw2, &format!("{what} {with}: weight gradient"));
            if let (Some(db1), Some(db2)) = (db1, db2) {
                close(db1, db2, &format!("{what} {with}: bias gradient"));
            }
        }
    }

    #[test]
    fn convolution_and_its_gradients_match_burns() {
        // (n, c_in, h, w, c_out, kernel, stride, padding, dilation): the DCGAN layers
        // and odd shapes (non-square kernels, uneven strides, dilation, a batch that
        // does not divide into chunks).
        let cases = [
            (64, 3, 32, 32, 8, [4, 4], [2, 2], [1, 1], [1, 1]),
            (16, 16, 4, 4, 1, [4, 4], [1, 1], [0, 0], [1, 1]),
            (13, 3, 9, 7, 5, [3, 2], [2, 1], [1, 0], [1, 2]),
            (3, 2, 5, 6, 4, [1, 1], [1, 1], [0, 0], [1, 1]),
            (9, 4, 11, 10, 3, [5, 3], [3, 2], [2, 1], [2, 1]),
            // Stride 1 with padding (the plane copied into one padded phase), at a width
            // with an unrolled row copy and at one without.
            (6, 3, 8, 8, 4, [3, 3], [1, 1], [1, 1], [1, 1]),
            (5, 2, 7, 7, 3, [3, 3], [1, 1], [2, 2], [2, 2]),
        ];
        for (i, (n, ci, h, wd, co, k, s, p, d)) in cases.into_iter().enumerate() {
            let x = random([n, ci, h, wd], 2 * i as u64);
            let w = random([co, ci, k[0], k[1]], 2 * i as u64 + 1);
            let options = ConvOptions::new(s, p, d, 1);
            compare(
                x,
                w,
                co,
                &|x, w, b| {
                    let geom = conv_geom(x.dims(), w.dims(), &options).expect("a valid geometry");
                    flex_op(Kind::Conv, geom, x, w, b)
                },
                &|x, w, b| conv2d(x, w, b, options.clone()),
                &format!("conv case {i}"),
            );
        }
    }

    #[test]
    fn transposed_convolution_and_its_gradients_match_burns() {
        // (n, c_in, h, w, c_out, kernel, stride, padding, padding_out, dilation)
        let cases = [
            (64, 16, 8, 8, 3, [4, 4], [2, 2], [1, 1], [0, 0], [1, 1]),
            (8, 10, 1, 1, 16, [4, 4], [1, 1], [0, 0], [0, 0], [1, 1]),
            (13, 3, 5, 4, 5, [3, 2], [2, 3], [1, 0], [1, 2], [1, 1]),
            (5, 4, 6, 5, 2, [3, 3], [2, 2], [2, 1], [0, 1], [2, 1]),
        ];
        for (i, (n, ci, h, wd, co, k, s, p, po, d)) in cases.into_iter().enumerate() {
            let x = random([n, ci, h, wd], 20 + 2 * i as u64);
            let w = random([ci, co, k[0], k[1]], 21 + 2 * i as u64);
            let options = ConvTransposeOptions::new(s, p, po, d, 1);
            compare(
                x,
                w,
                co,
                &|x, w, b| {
                    let geom =
                        transpose_geom(x.dims(), w.dims(), &options).expect("a valid geometry");
                    flex_op(Kind::Transpose, geom, x, w, b)
                },
                &|x, w, b| conv_transpose2d(x, w, b, options.clone()),
                &format!("transposed conv case {i}"),
            );
        }
    }

    #[test]
    fn modules_take_the_fast_path_with_their_bias_and_padding() {
        use burn::nn::conv::{Conv2dConfig, ConvTranspose2dConfig};
        let device = Default::default();
        let conv = Conv2dConfig::new([3, 6], [4, 4])
            .with_stride([2, 2])
            .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
            .init::<Cpu>(&device);
        let x = random([5, 3, 8, 8], 40);
        close(
            conv2d_forward(&conv, x.clone()),
            conv.forward(x),
            "Conv2d module",
        );
        let convt = ConvTranspose2dConfig::new([6, 3], [4, 4])
            .with_stride([2, 2])
            .with_padding([1, 1])
            .init::<Cpu>(&device);
        let x = random([5, 6, 4, 4], 41);
        close(
            conv_transpose2d_forward(&convt, x.clone()),
            convt.forward(x),
            "ConvTranspose2d module",
        );
    }

    #[test]
    fn shapes_the_fast_path_cannot_take_are_left_to_burn() {
        let conv = ConvOptions::new([1, 1], [0, 0], [1, 1], 1);
        assert!(conv_geom([2, 3, 4, 4], [5, 3, 4, 4], &conv).is_some());
        // A kernel larger than the input, an empty batch.
        assert!(conv_geom([2, 3, 3, 4], [5, 3, 4, 4], &conv).is_none());
        assert!(conv_geom([0, 3, 4, 4], [5, 3, 4, 4], &conv).is_none());
        let transpose = |padding, padding_out| {
            ConvTransposeOptions::new([2, 2], padding, padding_out, [1, 1], 1)
        };
        assert!(transpose_geom([2, 3, 4, 4], [3, 5, 4, 4], &transpose([1, 1], [0, 0])).is_some());
        // Padding that would cut the output below nothing, an output padding of a stride.
        assert!(transpose_geom([2, 3, 1, 1], [3, 5, 2, 2], &transpose([3, 3], [0, 0])).is_none());
        assert!(transpose_geom([2, 3, 4, 4], [3, 5, 4, 4], &transpose([1, 1], [2, 2])).is_none());
    }

    #[test]
    fn weight_gradient_is_the_same_on_any_number_of_threads() {
        // Two layers summed in partial sums (a small gradient over many columns and a
        // large one over fewer) and a full-map layer (one matrix product for the batch).
        let cases = [
            (3, 32, 64, 2, 1, 16),
            (64, 16, 128, 2, 1, 8),
            (32, 4, 3, 1, 0, 1),
        ];
        for (c_in, size, c_out, stride, pad, out) in cases {
            let x = random([64, c_in, size, size], 50);
            let dy = random([64, c_out, out, out], 51);
            let g = Geom::new(
                [64, c_in, size, size],
                c_out,
                [4, 4],
                [stride; 2],
                [pad; 2],
                [1, 1],
            )
            .expect("a valid geometry");
            assert_eq!(g.full_map(), out == 1);
            let prim = |t: Tensor<Cpu, 4>| cpu_float(t).primitive;
            let (x, dy) = (prim(x), prim(dy));
            let on = |threads: usize| {
                let pool = rayon::ThreadPoolBuilder::new()
                    .num_threads(threads)
                    .build()
                    .unwrap();
                pool.install(|| weight_grad(&x, &dy, &g)).into_data()
            };
            assert_eq!(on(1), on(3));
        }
    }
}
