//! Which burn backend a training stage runs on.
//!
//! Stages are generic over [`AutodiffBackend`]; this module turns the pipeline's
//! `backend:` (`cpu`, `cuda`, `wgpu`, `auto`) into a concrete backend and device and
//! calls the stage's generic code with it. Asking for a backend this build lacks, or a
//! GPU that is not there, is one error that says what to do.

use burn::tensor::backend::AutodiffBackend;

use crate::StageError;

/// The CPU backend: burn's `flex` with autodiff.
pub type Cpu = burn::backend::Autodiff<burn::backend::Flex>;
#[cfg(feature = "cuda")]
pub type Cuda = burn::backend::Autodiff<burn::backend::Cuda>;
#[cfg(feature = "wgpu")]
pub type Wgpu = burn::backend::Autodiff<burn::backend::Wgpu>;

/// A backend this build can run on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendKind {
    Cpu,
    Cuda,
    Wgpu,
}

impl BackendKind {
    pub fn name(self) -> &'static str {
        match self {
            BackendKind::Cpu => "cpu",
            BackendKind::Cuda => "cuda",
            BackendKind::Wgpu => "wgpu",
        }
    }
}

/// The backends compiled into this build, best first.
pub fn compiled() -> Vec<BackendKind> {
    let mut v = Vec::new();
    if cfg!(feature = "cuda") {
        v.push(BackendKind::Cuda);
    }
    if cfg!(feature = "wgpu") {
        v.push(BackendKind::Wgpu);
    }
    v.push(BackendKind::Cpu);
    v
}

/// The backend for a pipeline's `backend:` value. `auto` takes the best compiled-in
/// backend whose device is present, and the CPU when there is none.
pub fn choose(requested: &str) -> Result<BackendKind, StageError> {
    let lacks = |name: &str| {
        StageError::Failed(format!(
            "backend `{name}` is not in this build of gantry (it has: {}); rebuild with \
             `cargo build --release --features {name}`, or use `--backend cpu`",
            compiled()
                .iter()
                .map(|b| b.name())
                .collect::<Vec<_>>()
                .join(", ")
        ))
    };
    match requested {
        "cpu" => Ok(BackendKind::Cpu),
        "cuda" => {
            if !cfg!(feature = "cuda") {
                return Err(lacks("cuda"));
            }
            if !cuda_present() {
                return Err(StageError::Failed(
                    "backend `cuda`: no CUDA device found (is the NVIDIA driver loaded and \
                     `nvidia-smi` working?); use `--backend cpu` or `auto`"
                        .into(),
                ));
            }
            Ok(BackendKind::Cuda)
        }
        "wgpu" => {
            if !cfg!(feature = "wgpu") {
                return Err(lacks("wgpu"));
            }
            Ok(BackendKind::Wgpu)
        }
        "auto" => Ok(if cfg!(feature = "cuda") && cuda_present() {
            BackendKind::Cuda
        } else if cfg!(feature = "wgpu") {
            BackendKind::Wgpu
        } else {
            BackendKind::Cpu
        }),
        other => Err(StageError::Failed(format!(
            "`{other}` is not a backend; use one of cpu, cuda, wgpu, auto"
        ))),
    }
}

/// Whether the CUDA driver answers: a library the loader can find and at least one device.
#[cfg(feature = "cuda")]
fn cuda_present() -> bool {
    // cubecl panics when the driver is missing; ask it inside catch_unwind so that an
    // absent GPU is an error message, not a crash.
    std::panic::catch_unwind(|| {
        use burn::tensor::backend::Backend;
        <burn::backend::Cuda as Backend>::device_count(0) > 0
    })
    .unwrap_or(false)
}

#[cfg(not(feature = "cuda"))]
fn cuda_present() -> bool {
    false
}

/// A stage's training code, generic over the backend. `dispatch` calls `run` with the
/// concrete backend chosen at run time (Rust has no generic closures, hence a trait).
pub trait OnBackend {
    type Output;
    /// `label` names the backend and device, for provenance and logs.
    fn run<B: AutodiffBackend>(self, device: B::Device, label: String) -> Self::Output;
}

/// Run `job` on the backend chosen by `requested`, on GPU `gpus[0]` when the stage was
/// given one.
pub fn dispatch<J: OnBackend>(
    requested: &str,
    gpus: &[usize],
    job: J,
) -> Result<J::Output, StageError> {
    let kind = choose(requested)?;
    #[allow(unused_variables)]
    let index = gpus.first().copied().unwrap_or(0);
    match kind {
        BackendKind::Cpu => {
            let threads = rayon::current_num_threads();
            Ok(job.run::<Cpu>(
                Default::default(),
                format!("cpu (burn flex, {threads} thread(s))"),
            ))
        }
        #[cfg(feature = "cuda")]
        BackendKind::Cuda => {
            // Measured on an H100 with the DCGAN step example: about 25 s went by before its
            // first timed step in every process (kernels compiled by NVRTC), and about
            // 4 minutes on the machine's first run (autotuning as well). Say so before the
            // stage looks hung.
            tracing::info!(
                "burn-cuda compiles its kernels when the stage first runs them (tens of \
                 seconds), and the first run on a machine also autotunes matmul, convolution \
                 and fused kernels for each new shape (minutes; cached in `target/autotune` \
                 beside the nearest Cargo.toml, else in ~/.cache/cubecl)"
            );
            let device = burn::backend::cuda::CudaDevice::new(index);
            Ok(job.run::<Cuda>(device, format!("cuda (burn-cuda, device {index})")))
        }
        #[cfg(feature = "wgpu")]
        BackendKind::Wgpu => {
            let device = burn::backend::wgpu::WgpuDevice::DiscreteGpu(index);
            Ok(job.run::<Wgpu>(device, format!("wgpu (discrete GPU {index})")))
        }
        #[allow(unreachable_patterns)]
        other => Err(StageError::Failed(format!(
            "backend `{}` is not in this build",
            other.name()
        ))),
    }
}
