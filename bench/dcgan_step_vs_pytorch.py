#!/usr/bin/env python3
"""Benchmark: one DCGAN training step (32x32x3, batch 64), gantry (burn) vs PyTorch, CPU or CUDA.

Run from anywhere, on a machine with Python 3.9+ and a Rust toolchain:

    python3 bench/dcgan_step_vs_pytorch.py                 # 3 rounds x 20 steps, 2 threads
    python3 bench/dcgan_step_vs_pytorch.py --rounds 5 --steps 30 --no-build
    python3 bench/dcgan_step_vs_pytorch.py --profile       # + torch.profiler op table
    python3 bench/dcgan_step_vs_pytorch.py --perf          # + where gantry's time goes
    python3 bench/dcgan_step_vs_pytorch.py --wait-idle 0.2 # start runs on a quiet machine
    python3 bench/dcgan_step_vs_pytorch.py --threads 1     # -> dcgan_step_vs_pytorch_threads1.md
    python3 bench/dcgan_step_vs_pytorch.py --device cuda --gantry-bin PATH  # -> ..._cuda.md

`--device cuda` compares burn-cuda with PyTorch CUDA on GPU 0: the example must be built
with `cargo build --release -p gantry-stages --features cuda --example dcgan_step`
(`--gantry-bin` names a binary built elsewhere, for a GPU machine without Rust), and the
python3 that runs the script is used as it is when it imports a CUDA-enabled torch (no
venv, no download). Neither side is pinned to CPUs there; the steps read their losses
back as on the CPU, and the per-phase runs sync the device at the end of every phase.

What it does:

1. Reruns itself in the venv `bench/.venv-ssim` (shared with msssim_vs_pytorch.py,
   since torch is large), creating it and pip-installing numpy and torch from PyPI
   when it lacks them. `GANTRY_BENCH_VENV=DIR` uses another one.
2. Builds `cargo build --release -p gantry-stages --example dcgan_step` (into
   `$CARGO_TARGET_DIR` when set, like cargo itself) unless `--no-build`.
3. gantry: the `dcgan_step` example: the project's own `Batcher::batch` and
   `Dcgan::step` (D update on real + detached fake, then one G update, `g_advantage`
   1) with the networks of `stages/src/train/nets.rs` at `features: 64`, DCGAN's
   N(0, 0.02) init, Adam (2e-4, 0.5, 0.999, eps 1e-8), on a rayon pool of
   `--threads` threads.
4. PyTorch: the same step in a child process: the same layers (G: ConvT 100->256 4x4
   valid, ConvT 256->128, 128->64 stride 2 pad 1, all without bias, BN + ReLU, then
   ConvT 64->3 with bias, tanh; D: Conv 3->64 with bias, LReLU 0.2, Conv 64->128,
   128->256 without bias + BN + LReLU, Conv 256->1 4x4 valid with bias), the same
   init and optimizer, BCE-with-logits losses, the same order of work (G forward
   detached for D, D on real and on fake separately, the loss values read back with
   `.item()`, then the G update through the same fake images and through D with its
   weights frozen, as gantry's D copy with constant weights); batch creation (u8 NHWC -> f32 NCHW
   in [-1, 1]) and latent sampling are timed on both sides.
   `torch.set_num_threads(--threads)`, `torch.set_num_interop_threads(1)`.
5. Both sides are pinned to the same `--threads` CPUs and run interleaved:
   `--rounds` rounds, each a fresh process per side with `--warmup` untimed then
   `--steps` timed steps, the order alternating from round to round. The table
   shows the median (and mean) ms/step over all timed steps of each side and the
   ratio gantry / PyTorch (goal: <= 1, not slower). A third side runs PyTorch's
   step as its DCGAN example writes it (D's weight gradients also computed in the G
   update), for reference. Then gantry (twice: the project's
   `Generator::forward` / `Discriminator::forward`, and burn's stock layer modules on
   the same weights) and PyTorch time each phase of the step (forward / backward /
   Adam per network).
6. `--perf`: `perf record --call-graph dwarf` of the example, each sample classified by
   where in the step it falls (which layer's forward or gradient, Adam) and by the
   leaf function it landed in (gemm, strided element iteration, page faults, ...).
   `--profile`: torch.profiler's op table for PyTorch. `--wait-idle F`: each run
   starts once other work uses under F of the machine (other load slows PyTorch's
   OpenMP threads far more than gantry).

Results go to `bench/results/dcgan_step_vs_pytorch.md` and
`bench/work/dcgan_step_vs_pytorch.json`.
"""

import argparse
import datetime
import json
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

from _machine import cpu_model

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
WORK = BENCH / "work"
RESULTS = BENCH / "results"
REQUIREMENTS = ["numpy", "torch"]
SIZE, CHANNELS, BATCH, LATENT, FEATURES = 32, 3, 64, 100, 64
GOAL = 1.0  # gantry / PyTorch time ratio at most this (CPU: not slower)
GOAL_CUDA = 1 / 0.8  # CUDA: at least 0.8x PyTorch's throughput


def ensure_venv():
    sys.path.insert(0, str(BENCH))
    from _venv import reexec_in_venv

    reexec_in_venv(BENCH / ".venv-ssim", ["numpy", "torch"], REQUIREMENTS, __file__)


# --- PyTorch side (runs in a child process: `--torch-worker`) ------------------------


def torch_worker(args):
    import torch
    import torch.nn as nn
    import torch.nn.functional as F

    dev = torch.device(args.device)
    cuda = dev.type == "cuda"

    def sync():
        if cuda:
            torch.cuda.synchronize()

    torch.set_num_threads(args.threads)
    torch.set_num_interop_threads(1)
    torch.manual_seed(args.seed)

    def generator():
        return nn.Sequential(
            nn.ConvTranspose2d(LATENT, 256, 4, 1, 0, bias=False), nn.BatchNorm2d(256), nn.ReLU(True),
            nn.ConvTranspose2d(256, 128, 4, 2, 1, bias=False), nn.BatchNorm2d(128), nn.ReLU(True),
            nn.ConvTranspose2d(128, 64, 4, 2, 1, bias=False), nn.BatchNorm2d(64), nn.ReLU(True),
            nn.ConvTranspose2d(64, CHANNELS, 4, 2, 1, bias=True), nn.Tanh(),
        )

    def discriminator():
        return nn.Sequential(
            nn.Conv2d(CHANNELS, 64, 4, 2, 1, bias=True), nn.LeakyReLU(0.2, True),
            nn.Conv2d(64, 128, 4, 2, 1, bias=False), nn.BatchNorm2d(128), nn.LeakyReLU(0.2, True),
            nn.Conv2d(128, 256, 4, 2, 1, bias=False), nn.BatchNorm2d(256), nn.LeakyReLU(0.2, True),
            nn.Conv2d(256, 1, 4, 1, 0, bias=True),
        )

    def init(m):
        # DCGAN's init, as gantry's `Init::Normal { std: 0.02 }`.
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.normal_(m.weight, 0.0, 0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)

    G, D = generator(), discriminator()
    G.apply(init)
    D.apply(init)
    G, D = G.to(dev), D.to(dev)
    opt_g = torch.optim.Adam(G.parameters(), lr=2e-4, betas=(0.5, 0.999), eps=1e-8)
    opt_d = torch.optim.Adam(D.parameters(), lr=2e-4, betas=(0.5, 0.999), eps=1e-8)

    # 4 batches of pseudo-random u8 NHWC images, shuffled per epoch as the Batcher does.
    gen = torch.Generator().manual_seed(args.seed)
    images = torch.randint(0, 256, (BATCH * 4, SIZE, SIZE, CHANNELS), dtype=torch.uint8, generator=gen)
    per_epoch = images.shape[0] // BATCH

    def bce(logits, real):
        target = torch.ones_like(logits) if real else torch.zeros_like(logits)
        return F.binary_cross_entropy_with_logits(logits, target)

    laps = {}
    mark = [0.0]

    def lap(name, timed):
        if args.breakdown:
            sync()
        now = time.perf_counter()
        if timed and args.breakdown:
            laps.setdefault(name, []).append(1e3 * (now - mark[0]))
        mark[0] = now

    def step(i, timed):
        mark[0] = time.perf_counter()
        if i % per_epoch == 0:
            step.order = torch.randperm(images.shape[0], generator=gen)
        idx = step.order[(i % per_epoch) * BATCH:(i % per_epoch + 1) * BATCH]
        # As gantry's Batcher: gather the u8 batch on the host, convert on the device.
        x = images[idx].to(dev).permute(0, 3, 1, 2).float().div_(127.5).sub_(1.0).contiguous()
        lap("batch", timed)
        z = torch.randn(BATCH, LATENT, 1, 1, device=dev)
        lap("latents", timed)
        # D update on real and detached fake (as Dcgan::step).
        fake = G(z)
        lap("d_upd.g_forward", timed)
        d_real = D(x).view(-1)
        d_fake = D(fake.detach()).view(-1)
        lap("d_upd.d_forward", timed)
        torch.sigmoid(d_real.detach()).mean().item()
        torch.sigmoid(d_fake.detach()).mean().item()
        d_loss = bce(d_real, True) + bce(d_fake, False)
        d_loss_v = d_loss.item()
        lap("d_upd.loss", timed)
        opt_d.zero_grad(set_to_none=True)
        d_loss.backward()
        lap("d_upd.backward", timed)
        opt_d.step()
        lap("d_upd.adam", timed)
        # One G update through the same generated images (as Dcgan::step, and PyTorch's
        # DCGAN example). D's weights are frozen for it, as gantry's copy of D with
        # constant weights (and pix2pix/CycleGAN's set_requires_grad): no weight gradients
        # nobody uses. --d-grads keeps them, as PyTorch's DCGAN example does.
        if not args.d_grads:
            D.requires_grad_(False)
        logits = D(fake).view(-1)
        lap("g_upd.d_forward", timed)
        g_loss = bce(logits, True)
        g_loss_v = g_loss.item()
        lap("g_upd.loss", timed)
        opt_g.zero_grad(set_to_none=True)
        g_loss.backward()
        if not args.d_grads:
            D.requires_grad_(True)
        lap("g_upd.backward", timed)
        opt_g.step()
        lap("g_upd.adam", timed)
        return d_loss_v, g_loss_v

    times, cpu = [], []
    for i in range(args.warmup + args.steps):
        start, start_cpu = time.perf_counter(), time.process_time()
        losses = step(i, i >= args.warmup)
        elapsed = 1e3 * (time.perf_counter() - start)
        if i >= args.warmup:
            times.append(elapsed)
            cpu.append(1e3 * (time.process_time() - start_cpu))
    out = {"times": times, "cpu_ms": cpu, "losses": losses, "breakdown": laps}
    if args.profile:
        from torch.profiler import ProfilerActivity, profile

        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
        with profile(activities=activities) as prof:
            for i in range(args.warmup + args.steps, args.warmup + args.steps + 5):
                step(i, False)
        key = "self_cuda_time_total" if cuda else "self_cpu_time_total"
        out["profile"] = prof.key_averages().table(sort_by=key, row_limit=25)
        out["profile_total_ms"] = sum(e.self_cpu_time_total for e in prof.key_averages()) / 1e3 / 5
    print("JSON " + json.dumps(out))


# --- driver ------------------------------------------------------------------------


def cargo_target():
    target = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
    return target if target.is_absolute() else ROOT / target


def build_gantry(cuda):
    cmd = ["cargo", "build", "--release", "-p", "gantry-stages", "--example", "dcgan_step"]
    if cuda:
        cmd += ["--features", "cuda"]
    subprocess.run(cmd, cwd=ROOT, check=True)


def torch_has_cuda():
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


def parse_json_line(stdout):
    for line in stdout.splitlines():
        if line.startswith("JSON "):
            return json.loads(line[5:])
    raise RuntimeError("no JSON line in output:\n" + stdout)


def run_gantry(binary, args, cpus, breakdown_steps=0, nets="project"):
    cmd = [str(binary), "--steps", str(args.steps), "--warmup", str(args.warmup),
           "--threads", str(args.threads), "--breakdown-steps", str(breakdown_steps),
           "--breakdown-nets", nets, "--backend", args.device]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True,
                         preexec_fn=lambda: os.sched_setaffinity(0, cpus))
    return parse_json_line(out.stdout), out.stdout


def run_torch(args, cpus, breakdown=False, profile=False, d_grads=False):
    cmd = [sys.executable, str(Path(__file__).resolve()), "--torch-worker",
           "--steps", str(args.steps), "--warmup", str(args.warmup),
           "--threads", str(args.threads), "--device", args.device]
    if d_grads:
        cmd.append("--d-grads")
    if breakdown:
        cmd.append("--breakdown")
    if profile:
        cmd.append("--profile")
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads))
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env,
                         preexec_fn=lambda: os.sched_setaffinity(0, cpus))
    return parse_json_line(out.stdout)


# --- where gantry's time goes: perf samples, classified ------------------------------

# (substring of a frame anywhere in the call stack, label), first match wins.
PERF_WHERE = [
    ("burn_optim", "Adam update"),
    # The project's own convolutions (stages/src/train/conv.rs), on either thread.
    ("train::conv::weight_grad", "conv / convT weight grads (train::conv)"),
    ("train::conv::input_grad", "conv input grads, convT forward (train::conv: gemm + col2im)"),
    ("train::conv::conv_forward", "conv forward, convT input grads (train::conv: im2col + gemm)"),
    ("train::conv::channel_sums", "conv bias grads (train::conv)"),
    ("NormOp", "BatchNorm + activation backward (train::norm)"),
    ("train::norm::", "BatchNorm + activation forward (train::norm)"),
    ("train::pointwise", "LeakyReLU / tanh, forward and backward (train::pointwise)"),
    ("conv_transpose2d_weight_backward", "G convT weight grads (conv2d on N<->C swapped tensors)"),
    ("conv_transpose2d_x_backward", "G convT input grads (conv2d)"),
    ("conv2d_weight_backward", "D conv weight grads (conv2d on N<->C swapped tensors)"),
    ("conv2d_x_backward", "D conv input grads (conv_transpose2d)"),
    ("_bias_backward", "conv bias grads"),
    ("SwapDim", "backward of swap_dims"),
    ("execute_steps", "backward: elementwise, reductions, copies (mostly BatchNorm)"),
    ("AutodiffServer::backward", "backward: elementwise, reductions, copies (mostly BatchNorm)"),
    ("nets::batch_norm", "BatchNorm forward (nets::batch_norm)"),
    ("forward_train<", "BatchNorm forward"),
    ("forward_shared<", "BatchNorm forward"),
    ("BatchNorm", "BatchNorm forward"),
    ("tensor::module::conv_transpose2d", "G convT forward (conv_transpose2d)"),
    ("ConvTranspose2d", "G convT forward (conv_transpose2d)"),
    ("tensor::module::conv2d", "D conv forward"),
    ("Conv2d<", "D conv forward"),
    ("Batcher", "batch creation"),
    ("latents", "latents"),
    ("drop_in_place", "dropping tensors / graph"),
    ("Gan<B>>::step", "forward: activations, loss, detach"),
    ("conv3d_impl", "conv im2col + gemm (rayon job run by the other thread)"),
    ("conv_transpose3d", "convT gemm + col2im (rayon job run by the other thread)"),
    ("gemm", "gemm (rayon job run by the other thread)"),
]


def perf_leaf_kind(ip, sym):
    if int(ip, 16) >= 0xFFFF800000000000:
        return "kernel (page faults of fresh allocations, scheduling)"
    if "gemm" in sym:
        return "gemm kernels"
    if any(k in sym for k in ("StridedIter", "num_dims", "to_contiguous", "from_iter", "strided")):
        return "strided element-by-element iteration (broadcast ops, non-contiguous copies)"
    if any(k in sym for k in ("memcpy", "memmove", "memset")):
        return "memset / memcpy"
    if re.search(r"malloc|free|_int_|realloc|sysmalloc|cfree", sym):
        return "malloc / free"
    if any(k in sym for k in ("rayon_core", "crossbeam", "sched_yield", "futex", "syscall")):
        return "rayon scheduling / waiting"
    if re.search(r"conv3d|conv_transpose3d|im2col|col2im|Phases|gather_|copy_window|add_window"
                 r"|train::conv::", sym):
        return "conv im2col / col2im / layout loops"
    return "other compute"


def perf_samples(lines):
    cur = None
    for line in lines:
        line = line.rstrip("\n")
        if not line:
            if cur and cur[2]:
                yield cur
            cur = None
        elif not line.startswith("\t"):
            parts = line.split()
            cur = [parts[0], int(parts[1]), []]
        elif cur is not None:
            f = line.strip().split(None, 1)
            cur[2].append((f[0], f[1] if len(f) > 1 else ""))
    if cur and cur[2]:
        yield cur


def perf_profile(binary, args, cpus):
    """perf record (DWARF call graphs) of the example's Dcgan::step loop; the share of
    sampled CPU time by where in the step and by leaf function kind."""
    import shutil
    from collections import Counter

    if not shutil.which("perf"):
        print("perf not found: skipping the profile", file=sys.stderr)
        return None
    # A fresh clone has no work folder yet, and perf will not make one.
    WORK.mkdir(parents=True, exist_ok=True)
    data = WORK / "dcgan_step.perf.data"
    steps = max(4, args.steps // 2)
    # perf starts with its events off and the example switches them on for the timed
    # steps only: the warm-up steps fault in the working set, and the kernel's page
    # zeroing would otherwise be about a tenth of the profile.
    ctl, ack = WORK / "perf.ctl", WORK / "perf.ack"
    for fifo in (ctl, ack):
        fifo.unlink(missing_ok=True)
        os.mkfifo(fifo)
    cmd = ["perf", "record", "-q", "-F", "299", "--call-graph", "dwarf,32768", "-o", str(data),
           "-D", "-1", "--control", f"fifo:{ctl},{ack}",
           "--", str(binary), "--steps", str(steps), "--warmup", "2", "--threads",
           str(args.threads), "--breakdown-steps", "0", "--perf-control", f"{ctl},{ack}"]
    subprocess.run(cmd, check=True, capture_output=True,
                   preexec_fn=lambda: os.sched_setaffinity(0, cpus))
    out = subprocess.run(["perf", "script", "-i", str(data), "-F", "tid,period,ip,sym"],
                         check=True, capture_output=True, text=True).stdout
    where, kinds, cross, total = Counter(), Counter(), Counter(), 0
    for _tid, period, frames in perf_samples(out.splitlines()):
        stack = "\n".join(s for _, s in frames)
        w = next((label for key, label in PERF_WHERE if key in stack), None)
        if w is None:
            w = "idle rayon worker" if "rayon_core" in stack else "other"
        k = perf_leaf_kind(*frames[0])
        where[w] += period
        kinds[k] += period
        cross[(w, k)] += period
        total += period
    pct = lambda v: 100.0 * v / max(total, 1)
    return {
        "steps": steps,
        "where": [(w, pct(v)) for w, v in where.most_common()],
        "kinds": [(k, pct(v)) for k, v in kinds.most_common()],
        "cross": [(w, k, pct(v)) for (w, k), v in cross.most_common() if pct(v) >= 1.0],
    }


def perf_lines(prof):
    lines = ["| where in the step | share |", "| --- | ---: |"]
    lines += [f"| {w} | {p:.1f}% |" for w, p in prof["where"]]
    lines += ["", "| leaf function kind | share |", "| --- | ---: |"]
    lines += [f"| {k} | {p:.1f}% |" for k, p in prof["kinds"]]
    lines += ["", "| where | leaf kind | share |", "| --- | --- | ---: |"]
    lines += [f"| {w} | {k} | {p:.1f}% |" for w, k, p in prof["cross"]]
    return lines


def cpu_busy(seconds=2.0):
    """Fraction of the machine's CPU time that was busy over `seconds`, from /proc/stat."""
    def snap():
        v = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        return sum(v), v[3] + v[4]  # total, idle + iowait
    t0, i0 = snap()
    time.sleep(seconds)
    t1, i1 = snap()
    return 1.0 - (i1 - i0) / max(t1 - t0, 1)


def wait_idle(limit, timeout):
    """Wait (at most `timeout` s) until other work uses under `limit` of the machine."""
    if limit is None:
        return None
    start = time.time()
    while True:
        busy = cpu_busy()
        if busy < limit or time.time() - start > timeout:
            return busy
        print(f"machine {100 * busy:.0f}% busy; waiting", file=sys.stderr)
        time.sleep(5)


def burn_version():
    lock = (ROOT / "Cargo.lock").read_text()
    m = re.search(r'name = "burn-flex"\nversion = "([^"]+)"', lock)
    return m.group(1) if m else "?"


def git_commit():
    # A GPU machine gets a copy of the tree without .git: the caller says which commit.
    if os.environ.get("GANTRY_COMMIT"):
        return os.environ["GANTRY_COMMIT"]
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                              capture_output=True, text=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=ROOT, capture_output=True, text=True).stdout.strip()
        return head + (" (with uncommitted changes)" if dirty else "")
    except OSError:
        return "?"


def rustc_version():
    if os.environ.get("GANTRY_RUSTC"):
        return os.environ["GANTRY_RUSTC"]
    try:
        return subprocess.run(["rustc", "--version"], capture_output=True, text=True).stdout.strip()
    except OSError:
        return "?"


def med(v):
    return statistics.median(v) if v else float("nan")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=20, help="timed steps per round")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps per round")
    parser.add_argument("--threads", type=int, default=2, help="threads per side")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--no-build", action="store_true", help="use the built example")
    parser.add_argument("--wait-idle", type=float, default=None, metavar="FRACTION",
                        help="before each run wait until the machine is less busy than this "
                        "(e.g. 0.15), at most --wait-timeout seconds")
    parser.add_argument("--wait-timeout", type=float, default=600)
    parser.add_argument("--profile", action="store_true", help="add torch.profiler's op table")
    parser.add_argument("--perf", action="store_true",
                        help="profile gantry's step with perf (DWARF call graphs) and classify")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu",
                        help="cpu: burn flex vs PyTorch CPU; cuda: burn-cuda vs PyTorch CUDA")
    parser.add_argument("--gantry-bin", type=Path, default=None,
                        help="the dcgan_step example to run (implies --no-build)")
    parser.add_argument("--torch-worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--breakdown", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--d-grads", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    cuda = args.device == "cuda"
    if args.gantry_bin is not None:
        args.no_build = True

    if not (cuda and torch_has_cuda()):
        ensure_venv()
    if args.torch_worker:
        torch_worker(args)
        return
    import torch

    available = sorted(os.sched_getaffinity(0))
    if len(available) < args.threads:
        print(f"warning: only {len(available)} CPUs for {args.threads} threads", file=sys.stderr)
    # On a GPU the host threads mostly launch kernels: leave both sides unpinned.
    cpus = set(available) if cuda else set(available[: args.threads])
    if not args.no_build:
        build_gantry(cuda)
    binary = args.gantry_bin or cargo_target() / "release" / "examples" / "dcgan_step"
    goal = GOAL_CUDA if cuda else GOAL

    load = [os.getloadavg()]
    print(f"{args.rounds} rounds x ({args.warmup} warm-up + {args.steps} timed steps), "
          f"{args.threads} threads on CPUs {sorted(cpus)}; load {load[0]}", file=sys.stderr)
    g_rounds, t_rounds, e_rounds, g_cpu, t_cpu, busy = [], [], [], [], [], []
    for r in range(args.rounds):
        sides = ["gantry", "torch", "example"] if r % 2 == 0 else ["example", "torch", "gantry"]
        for side in sides:
            busy.append(wait_idle(args.wait_idle, args.wait_timeout))
            if side == "gantry":
                res, _ = run_gantry(binary, args, cpus)
                g_rounds.append(res["step"]["total"])
                g_cpu += res["step"]["cpu_ms"]
                print(f"round {r + 1} gantry: median {med(res['step']['total']):.1f} ms "
                      f"(Dcgan::step {med(res['step']['gan_step']):.1f}, "
                      f"batch {med(res['step']['batch']):.2f})", file=sys.stderr)
            elif side == "torch":
                res = run_torch(args, cpus)
                t_rounds.append(res["times"])
                t_cpu += res["cpu_ms"]
                print(f"round {r + 1} torch:  median {med(res['times']):.1f} ms", file=sys.stderr)
            else:
                res = run_torch(args, cpus, d_grads=True)
                e_rounds.append(res["times"])
                print(f"round {r + 1} torch, D's weight gradients in the G update too: "
                      f"median {med(res['times']):.1f} ms", file=sys.stderr)
        load.append(os.getloadavg())
    # The per-phase breakdowns (and torch.profiler when asked for).
    busy.append(wait_idle(args.wait_idle, args.wait_timeout))
    g_break, g_text = run_gantry(binary, args, cpus, breakdown_steps=args.steps)
    busy.append(wait_idle(args.wait_idle, args.wait_timeout))
    s_break, _ = run_gantry(binary, args, cpus, breakdown_steps=args.steps, nets="stock")
    busy.append(wait_idle(args.wait_idle, args.wait_timeout))
    t_break = run_torch(args, cpus, breakdown=True, profile=args.profile)
    load.append(os.getloadavg())
    if args.perf:
        busy.append(wait_idle(args.wait_idle, args.wait_timeout))
    prof = perf_profile(binary, args, cpus) if args.perf else None

    g_all = [x for r in g_rounds for x in r]
    t_all = [x for r in t_rounds for x in r]
    e_all = [x for r in e_rounds for x in r]
    g_med, t_med, e_med = med(g_all), med(t_all), med(e_all)
    ratio = g_med / t_med
    met = ratio <= goal
    g_best, t_best = min(med(r) for r in g_rounds), min(med(r) for r in t_rounds)
    nd = 2 if cuda else 1  # decimals of ms
    lines = [
        "| implementation | median ms/step | mean ms/step | per-round medians | fastest step |",
        "| --- | ---: | ---: | --- | ---: |",
        f"| gantry (burn {burn_version()} {'cuda' if cuda else 'flex'} + autodiff) | {g_med:.{nd}f} | {statistics.mean(g_all):.{nd}f} | "
        + ", ".join(f"{med(r):.{nd}f}" for r in g_rounds) + f" | {min(g_all):.{nd}f} |",
        f"| PyTorch {torch.__version__}{' CUDA' if cuda else ''} | {t_med:.{nd}f} | {statistics.mean(t_all):.{nd}f} | "
        + ", ".join(f"{med(r):.{nd}f}" for r in t_rounds) + f" | {min(t_all):.{nd}f} |",
        f"| PyTorch, D's weight gradients computed in the G update too (PyTorch's DCGAN "
        f"example) | {e_med:.{nd}f} | {statistics.mean(e_all):.{nd}f} | "
        + ", ".join(f"{med(r):.{nd}f}" for r in e_rounds) + f" | {min(e_all):.{nd}f} |",
        "",
        "Both sides do the same arithmetic in the first two rows: the G update backpropagates "
        "through the images generated for the D update, and through D with its weights "
        "frozen (no weight gradients nobody uses). The third row is the step as PyTorch's "
        "DCGAN example writes it, which also computes D's weight gradients in the G update "
        f"(and throws them away): gantry / that = {g_med / e_med:.2f}x, for reference only.",
        "",
        "| ratio gantry / PyTorch: of the medians | of the fastest rounds' medians "
        "| of the fastest steps | goal | met? |",
        "| ---: | ---: | ---: | ---: | :---: |",
        f"| {ratio:.2f}x | {g_best / t_best:.2f}x | {min(g_all) / min(t_all):.2f}x "
        f"| <= {goal:.2f}x{' (throughput >= 0.8x)' if cuda else ''} | {'yes' if met else 'NO'} |",
        "",
        *([] if cuda else [
            "Other work on the machine slows PyTorch more than gantry (its OpenMP threads "
            "meet at a barrier after every op, so one descheduled thread stalls both; gantry's "
            "threads sit idle more often, see the cores busy below): with load on the machine "
            "the ratio of the fastest rounds / steps is the fairer one.",
            "",
        ]),
        "| CPU time per step (user + system, mean) | gantry | PyTorch | ratio |",
        "| --- | ---: | ---: | ---: |",
        f"| ms | {statistics.mean(g_cpu):.0f} | {statistics.mean(t_cpu):.0f} | "
        f"{statistics.mean(g_cpu) / statistics.mean(t_cpu):.2f}x |",
        f"| cores busy (CPU time / wall time) | {statistics.mean(g_cpu) / statistics.mean(g_all):.2f} "
        f"| {statistics.mean(t_cpu) / statistics.mean(t_all):.2f} | |",
    ]
    gb, sb, tb = g_break["breakdown"], s_break["breakdown"], t_break["breakdown"]
    g_tot = med(gb.get("total", [])) or 1.0
    s_tot = med(sb.get("total", [])) or 1.0
    t_tot = med(t_break["times"]) or 1.0
    phases = [k for k in gb if k != "total"]
    blines = [
        "| phase | gantry ms | share | gantry, burn's stock layers ms | PyTorch ms | share "
        "| gantry / PyTorch |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for k in phases:
        g, sg, t = med(gb[k]), med(sb.get(k, [])), med(tb.get(k, []))
        blines.append(f"| {k} | {g:.2f} | {100 * g / g_tot:.1f}% | {sg:.2f} | {t:.2f} "
                      f"| {100 * t / t_tot:.1f}% | {g / t if t > 0 else float('nan'):.2f}x |")
    blines.append(f"| **whole step** | {g_tot:.1f} | | {s_tot:.1f} | {t_tot:.1f} | "
                  f"| {g_tot / t_tot:.2f}x |")
    print("\n".join(lines))
    print()
    print("\n".join(blines))

    info = {
        "rounds": args.rounds, "steps": args.steps, "warmup": args.warmup,
        "threads": args.threads, "cpus": sorted(cpus), "cpu": cpu_model(),
        "nproc": os.cpu_count(), "torch": torch.__version__, "burn_flex": burn_version(),
        "rustc": rustc_version(), "gantry_ms": g_rounds, "torch_ms": t_rounds,
        "torch_d_grads_ms": e_rounds, "torch_d_grads_median_ms": e_med,
        "gantry_cpu_ms": g_cpu, "torch_cpu_ms": t_cpu, "gantry_median_ms": g_med, "torch_median_ms": t_med, "ratio": ratio, "goal_met": met,
        "load_average": load, "busy_before_runs": busy, "gantry_breakdown": gb, "gantry_stock_layers_breakdown": sb, "torch_breakdown": tb,
        "commit": git_commit(),
        "torch_losses": t_break["losses"],
        "gpu": torch.cuda.get_device_name(0) if cuda else None,
    }
    WORK.mkdir(parents=True, exist_ok=True)
    suffix = "_cuda" if cuda else ("" if args.threads == 2 else f"_threads{args.threads}")
    (WORK / f"dcgan_step_vs_pytorch{suffix}.json").write_text(json.dumps(info, indent=1) + "\n")
    parallel = torch.__config__.parallel_info().splitlines()
    backend = next((l.strip() for l in parallel if "parallel backend" in l), "")
    mkldnn = next((l.strip() for l in torch.__config__.show().splitlines() if "oneDNN" in l
                   or "MKL-DNN" in l), "")
    today = datetime.date.today().isoformat()
    report = [
        "# One DCGAN training step: gantry (burn-cuda) vs PyTorch (CUDA)" if cuda else
        "# One DCGAN training step: gantry (burn flex) vs PyTorch (CPU)",
        "",
        f"Made by `python3 bench/dcgan_step_vs_pytorch.py {' '.join(sys.argv[1:])}` on {today}: "
        "one training step of "
        f"DCGAN at {SIZE}x{SIZE}x{CHANNELS}, batch {BATCH}, latent {LATENT}, features "
        f"{FEATURES} (G 100->256->128->64->3, D 3->64->128->256->1, 4x4 kernels, "
        "BatchNorm), Adam (2e-4, 0.5, 0.999): batch creation, one D update on real and "
        "detached fake images, one G update through the same fake images and a frozen D "
        "(`Dcgan::step` with `g_advantage: 1`).",
        "",
        *lines,
        "",
        f"Per phase (one more run per side, {args.steps} steps, medians; gantry's written "
        "out in the example with the project's networks, init and optimizer; \"burn's stock "
        "layers\": the same with burn's own `ConvTranspose2d`, `Conv2d` and `BatchNorm` "
        "forward instead of whatever the project's `Generator::forward` / "
        "`Discriminator::forward` use; PyTorch's laps around the same statements):",
        "",
        *blines,
        "",
        *([
            f"- GPU: {info['gpu']}, CUDA {torch.version.cuda} (PyTorch's), cuDNN "
            f"{torch.backends.cudnn.version()}; host CPU: {info['cpu']}, nproc {info['nproc']}, "
            "neither side pinned.",
            f"- gantry at commit {info['commit']}: `stages/examples/dcgan_step.rs --backend cuda`, "
            f"release build with `--features cuda`, {info['rustc']}, burn {info['burn_flex']} "
            "(burn-cuda: cubecl kernels compiled by NVRTC at run time, autodiff).",
            f"- PyTorch {info['torch']}: default eager mode (cuDNN with "
            f"`benchmark={torch.backends.cudnn.benchmark}`), `torch.optim.Adam` defaults "
            "(for-each on CUDA).",
        ] if cuda else [
            f"- CPU: {info['cpu']}, nproc {info['nproc']}; both sides pinned to CPUs "
            f"{sorted(cpus)}, {args.threads} threads each (rayon pool / "
            "`torch.set_num_threads`, `set_num_interop_threads(1)`).",
            f"- gantry at commit {info['commit']}: `stages/examples/dcgan_step.rs`, release build, "
            f"{info['rustc']}, "
            f"burn {info['burn_flex']} (flex with simd + rayon, autodiff).",
            f"- PyTorch {info['torch']} (PyPI wheel, on the CPU; {backend}; {mkldnn}): "
            "default eager mode, `torch.optim.Adam` defaults (for-each off on CPU).",
        ]),
        f"- {args.rounds} interleaved rounds per side, each a fresh process: {args.warmup} "
        f"warm-up + {args.steps} timed steps; medians over all timed steps.",
        "- Load average (1, 5, 15 min) at start, after each round, after the breakdown runs: "
        + " / ".join(", ".join(f"{v:.2f}" for v in l) for l in load)
        + f" ({info['nproc']} CPUs; other work on the machine slows both sides)"
        + ("." if args.wait_idle is None else
           f"; each run started once the machine was under {100 * args.wait_idle:.0f}% busy "
           f"(busy before each run: {', '.join(f'{100 * b:.0f}%' for b in busy)})."),
        "",
    ]
    if prof:
        report += [f"Where gantry's time goes: `perf record -F 299 --call-graph dwarf` of "
                   f"{prof['steps']} timed steps of the example (perf's events on after 2 "
                   "warm-up steps and off after the last timed one), share of the sampled "
                   "CPU time of both threads; \"where\" is the first of these found in the "
                   "call stack, \"leaf kind\" the function the sample landed in:", "",
                   *perf_lines(prof), ""]
        print("\n".join(perf_lines(prof)))
        info["perf"] = prof
        (WORK / f"dcgan_step_vs_pytorch{suffix}.json").write_text(json.dumps(info, indent=1) + "\n")
    if args.profile and "profile" in t_break:
        report += [f"PyTorch's profile (torch.profiler, 5 steps, by self {'CUDA' if cuda else 'CPU'} "
                   "time):", "",
                   "```", t_break["profile"], "```", ""]
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"dcgan_step_vs_pytorch{suffix}.md").write_text("\n".join(report))
    print(f"\nwrote {RESULTS / f'dcgan_step_vs_pytorch{suffix}.md'}", file=sys.stderr)


if __name__ == "__main__":
    main()
