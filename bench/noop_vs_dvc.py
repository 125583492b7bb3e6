#!/usr/bin/env python3
"""gantry vs DVC on a 5-stage pipeline over a large image folder.

    python3 bench/noop_vs_dvc.py [--files 20000] [--files 200000] [--repeat 5]

Measures, in one run, on the same folder and the same machine:

  (a) no-op rerun: `gantry run pipeline.yaml` vs `dvc repro`, everything up to date
      (goal: >= 20x faster than DVC; gantry < 0.1 s at 20,000 files, < 0.5 s at 200,000);
  (b) first hash of the folder: `gantry status pipeline.yaml` with an empty cache vs
      `dvc status` with an empty state database (goal: >= 5x).

Everything lives in bench/work/ (generated images, the two projects, caches) and
bench/.venv-dvc/ (DVC from PyPI); the result table goes to bench/results/noop_vs_dvc.md.
gantry is built with `cargo build --release` into $CARGO_TARGET_DIR (default: the
workspace's target/) when $CARGO_TARGET_DIR/release/gantry is missing.
"""

import argparse
import datetime
import json
import os
import platform
import resource
import shutil
import sqlite3
import statistics
import subprocess
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
WORK = BENCH / "work"
VENV = BENCH / ".venv-dvc"
RESULTS = BENCH / "results" / "noop_vs_dvc.md"

sys.path.insert(0, str(BENCH))
import minipng  # noqa: E402

IMAGES_VERSION = 1
OLD_MTIME = 1_600_000_000  # 2020-09-13: far outside any "racy" window
CLASSES, SUBFOLDERS, SIZE = 100, 10, 16
SIZES = [8, 4, 2, 1]  # the four downsample stages after the dataset stage

GANTRY_PIPELINE = """\
# Written by bench/noop_vs_dvc.py: dataset over the image folder, then four downsamples.
name: bench
stages:
  photos:
    kind: dataset
    from: { folder: { path: images } }
  s8:   { kind: downsample, input: photos, size: 8, filter: box }
  s4:   { kind: downsample, input: s8,     size: 4, filter: box }
  s2:   { kind: downsample, input: s4,     size: 2, filter: box }
  s1:   { kind: downsample, input: s2,     size: 1, filter: box }
"""

DVC_YAML = """\
# Written by bench/noop_vs_dvc.py: the same DAG as pipeline.yaml (stages.py does the
# decode and the 2x2 box downsampling in pure Python).
stages:
  photos:
    cmd: python3 stages.py import images data/photos.bin
    deps: [stages.py, images]
    outs: [data/photos.bin]
  s8:
    cmd: python3 stages.py downsample data/photos.bin 8 data/s8.bin
    deps: [stages.py, data/photos.bin]
    outs: [data/s8.bin]
  s4:
    cmd: python3 stages.py downsample data/s8.bin 4 data/s4.bin
    deps: [stages.py, data/s8.bin]
    outs: [data/s4.bin]
  s2:
    cmd: python3 stages.py downsample data/s4.bin 2 data/s2.bin
    deps: [stages.py, data/s4.bin]
    outs: [data/s2.bin]
  s1:
    cmd: python3 stages.py downsample data/s2.bin 1 data/s1.bin
    deps: [stages.py, data/s2.bin]
    outs: [data/s1.bin]
"""

STAGES = ["photos", "s8", "s4", "s2", "s1"]


def log(msg):
    print(msg, flush=True)


class BenchError(Exception):
    pass


CPU = []  # CPU seconds (user + sys, children included) of each `run`, in order


def run(cmd, cwd=None, env=None, check=True):
    """Run a command; return (seconds of wall clock for the whole process, stdout, stderr)."""
    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    p = subprocess.run(
        cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    dt = time.perf_counter() - t0
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    CPU.append(r1.ru_utime - r0.ru_utime + r1.ru_stime - r0.ru_stime)
    if check and p.returncode != 0:
        raise BenchError(
            f"`{' '.join(map(str, cmd))}` exited {p.returncode}\n"
            f"--- stdout\n{p.stdout[-4000:]}\n--- stderr\n{p.stderr[-4000:]}"
        )
    return dt, p.stdout, p.stderr


# --------------------------------------------------------------------------- setup


def gantry_binary():
    target = Path(os.environ.get("CARGO_TARGET_DIR") or REPO / "target")
    if not target.is_absolute():
        target = REPO / target
    exe = target / "release" / "gantry"
    if not exe.is_file():
        log(f"building gantry: cargo build --release (CARGO_TARGET_DIR={target}) ...")
        env = dict(os.environ, CARGO_TARGET_DIR=str(target))
        subprocess.run(
            ["cargo", "build", "--release", "--bin", "gantry"], cwd=REPO, env=env, check=True
        )
    return exe


def dvc_binary():
    dvc = VENV / "bin" / "dvc"
    if not dvc.is_file():
        log(f"installing DVC into {VENV.relative_to(REPO)} ...")
        if not (VENV / "bin" / "python").is_file():
            subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
        pip = [str(VENV / "bin" / "python"), "-m", "pip", "install", "-q"]
        if subprocess.run(pip + ["dvc==3.67.*"]).returncode != 0:
            log("dvc==3.67.* unavailable; installing the latest DVC 3.x")
            subprocess.run(pip + ["dvc>=3,<4"], check=True)
    return dvc


def generate_images(root: Path, n: int):
    """N 16x16 RGB PNGs, all distinct, in 100 classes x 10 subfolders, mtimes in 2020."""
    marker = root / "images.json"
    images = root / "project" / "images"
    want = {"files": n, "version": IMAGES_VERSION}
    if images.is_dir() and marker.is_file() and json.loads(marker.read_text()) == want:
        log(f"  reusing {n} images in {images.relative_to(REPO)}")
        return
    if images.exists():
        shutil.rmtree(images)
    marker.unlink(missing_ok=True)
    t0 = time.perf_counter()
    base = bytearray(
        v
        for y in range(SIZE)
        for x in range(SIZE)
        for v in (x * 16, y * 16, ((x ^ y) * 8) & 255)
    )
    for c in range(CLASSES):
        for s in range(SUBFOLDERS):
            (images / f"c{c:03d}" / f"s{s}").mkdir(parents=True, exist_ok=True)
    for i in range(n):
        px = base[:]
        px[0:3] = i.to_bytes(3, "little")  # makes every image distinct
        px[3 * 137] = (i * 37) & 255
        px[3 * 200 + 1] = (i * 101) & 255
        path = images / f"c{i % CLASSES:03d}" / f"s{(i // CLASSES) % SUBFOLDERS}" / f"img{i:07d}.png"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            os.write(fd, minipng.png_rgb(SIZE, SIZE, bytes(px)))
        finally:
            os.close(fd)
        os.utime(path, (OLD_MTIME, OLD_MTIME))
        if (i + 1) % 50000 == 0:
            log(f"    {i + 1}/{n} images")
    marker.write_text(json.dumps(want))
    log(f"  wrote {n} images in {time.perf_counter() - t0:.1f}s")


def reset_project(root: Path):
    """Everything but the images goes: a fresh DVC project, gantry cache and outputs."""
    project = root / "project"
    project.mkdir(parents=True, exist_ok=True)
    for entry in project.iterdir():
        if entry.name == "images":
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()
    for d in ["gantry-cache", "gantry-out", "gantry-fresh-cache", "dvc-site-cache"]:
        shutil.rmtree(root / d, ignore_errors=True)
    (project / "pipeline.yaml").write_text(GANTRY_PIPELINE)
    (project / "dvc.yaml").write_text(DVC_YAML)
    shutil.copy(BENCH / "minipng.py", project / "stages.py")
    return project


def warm_page_cache(images: Path):
    """Read every file once, so that both tools start from a warm page cache."""
    t0 = time.perf_counter()
    total = 0
    for d, _, names in os.walk(images):
        for name in names:
            with open(os.path.join(d, name), "rb") as f:
                total += len(f.read())
    return time.perf_counter() - t0, total


# --------------------------------------------------------------------------- checks


def gantry_outcomes(stdout):
    summary = json.loads(stdout)
    return {name: o["outcome"] for name, o in summary["stages"]}


def check_gantry_noop(stdout):
    outcomes = gantry_outcomes(stdout)
    executed = [s for s, o in outcomes.items() if o == "executed"]
    if executed or sorted(outcomes) != sorted(STAGES):
        raise BenchError(f"gantry no-op run was not a no-op: {outcomes}")
    if any(o != "cached" for o in outcomes.values()):
        raise BenchError(f"gantry no-op run: unexpected outcomes {outcomes}")


def check_dvc_noop(out):
    if "Running stage" in out or "up to date" not in out:
        raise BenchError(f"dvc repro was not a no-op:\n{out}")


def stat_cache_entries_bytes(cache: Path):
    return sum(f.stat().st_size for f in (cache / "stat").glob("*.bin"))


def dvc_state_rows(site_cache: Path):
    rows = 0
    for db in site_cache.rglob("hashes/local/cache.db"):
        con = sqlite3.connect(db)
        try:
            rows += con.execute("select count(*) from Cache").fetchone()[0]
        finally:
            con.close()
    return rows


# --------------------------------------------------------------------------- the benchmark


def bench_one(n, repeat, gantry, dvc):
    root = WORK / f"n{n}"
    log(f"\n=== {n} files ===")
    generate_images(root, n)
    project = reset_project(root)
    images = project / "images"
    genv = dict(
        os.environ,
        GANTRY_CACHE_DIR=str(root / "gantry-cache"),
        GANTRY_OUT_DIR=str(root / "gantry-out"),
    )
    genv.pop("GANTRY_LOG", None)
    denv = dict(
        os.environ,
        DVC_NO_ANALYTICS="1",
        DVC_SITE_CACHE_DIR=str(root / "dvc-site-cache"),
        GIT_CONFIG_GLOBAL=os.devnull,
    )
    run(["git", "init", "-q"], cwd=project, env=denv)
    run([dvc, "init", "-q"], cwd=project, env=denv)
    run([dvc, "config", "core.analytics", "false"], cwd=project, env=denv)

    t, size = warm_page_cache(images)
    log(f"  read all {n} files once ({size / 1e6:.1f} MB, {t:.2f}s): page cache is warm")
    info = {}

    # Populate both (not timed for (a)): every stage executes once.
    t, out, err = run([gantry, "run", "--json", "pipeline.yaml"], cwd=project, env=genv)
    outcomes = gantry_outcomes(out)
    if sorted(s for s, o in outcomes.items() if o == "executed") != sorted(STAGES):
        raise BenchError(f"gantry's first run did not execute every stage: {outcomes}\n{err}")
    info["gantry_first_run"] = t
    log(f"  gantry first run (hash + import + 4 downsamples): {t:.2f}s")
    t, out, err = run([dvc, "repro"], cwd=project, env=denv)
    if out.count("Running stage") != len(STAGES):
        raise BenchError(f"dvc repro's first run did not run every stage:\n{out}\n{err}")
    info["dvc_first_run"] = t
    log(f"  dvc repro first run (hash + pure-Python import + 4 downsamples): {t:.2f}s")

    # One untimed no-op each (settles any first-time bookkeeping).
    _, out, _ = run([gantry, "run", "--json", "pipeline.yaml"], cwd=project, env=genv)
    check_gantry_noop(out)
    _, out, err = run([dvc, "repro"], cwd=project, env=denv)
    check_dvc_noop(out + err)

    # (a) no-op rerun, interleaved.
    ga, da, gac, dac = [], [], [], []
    load = [os.getloadavg()[0]]
    for _ in range(repeat):
        t, out, _ = run([gantry, "run", "--json", "pipeline.yaml"], cwd=project, env=genv)
        check_gantry_noop(out)
        ga.append(t)
        gac.append(CPU[-1])
        t, out, err = run([dvc, "repro"], cwd=project, env=denv)
        check_dvc_noop(out + err)
        da.append(t)
        dac.append(CPU[-1])
    log(f"  (a) no-op: gantry {fmt_list(ga)}  dvc {fmt_list(da)}")

    # (b) first hash of the folder: empty gantry cache / empty DVC state database.
    gb, db, gbc, dbc = [], [], [], []
    fresh = root / "gantry-fresh-cache"
    site = root / "dvc-site-cache"
    fenv = dict(genv, GANTRY_CACHE_DIR=str(fresh))
    for _ in range(repeat):
        shutil.rmtree(fresh, ignore_errors=True)
        t, out, _ = run([gantry, "status", "pipeline.yaml"], cwd=project, env=fenv)
        if "cannot run" in out or "photos" not in out:
            raise BenchError(f"gantry status:\n{out}")
        if stat_cache_entries_bytes(fresh) < 32 * n:
            raise BenchError("gantry status did not record a hash for every file")
        gb.append(t)
        gbc.append(CPU[-1])
        shutil.rmtree(site, ignore_errors=True)
        t, out, err = run([dvc, "status"], cwd=project, env=denv)
        if "up to date" not in out + err:
            raise BenchError(f"dvc status:\n{out}\n{err}")
        rows = dvc_state_rows(site)
        if rows < n:
            raise BenchError(f"dvc status hashed only {rows} of {n} files")
        db.append(t)
        dbc.append(CPU[-1])
    load.append(os.getloadavg()[0])
    log(f"  (b) first hash: gantry {fmt_list(gb)}  dvc {fmt_list(db)}  "
        f"(DVC state rows after: {rows})")

    # Leave the DVC state warm again for anyone poking at the project afterwards.
    run([dvc, "status"], cwd=project, env=denv)
    return {
        "files": n,
        "a": (ga, da),
        "b": (gb, db),
        "cpu": {"a": (gac, dac), "b": (gbc, dbc)},
        "load": load,
        "info": info,
    }


def fmt_list(xs):
    return "[" + ", ".join(f"{x:.3f}" for x in xs) + "]"


def rows_for(result):
    n = result["files"]
    rows = []
    ga, da = (statistics.median(x) for x in result["a"])
    limit = 0.1 if n <= 20_000 else 0.5 if n <= 200_000 else None
    goal = f">=20x, gantry <{limit} s" if limit else ">=20x"
    met = da / ga >= 20 and (limit is None or ga < limit)
    rows.append((n, "(a) no-op rerun", ga, da, da / ga, goal, met))
    gb, db = (statistics.median(x) for x in result["b"])
    rows.append((n, "(b) first hash", gb, db, db / gb, ">=5x", db / gb >= 5))
    gi, di = result["info"]["gantry_first_run"], result["info"]["dvc_first_run"]
    rows.append((n, "first full run (info)", gi, di, di / gi, "-", None))
    return rows


def table(rows):
    head = ["files", "operation", "gantry s", "dvc s", "ratio dvc/gantry", "goal", "met?"]
    body = [
        [
            f"{n:,}",
            op,
            f"{g:.3f}",
            f"{d:.3f}",
            f"{d / g:.1f}x",
            goal,
            "-" if met is None else ("yes" if met else "NO"),
        ]
        for n, op, g, d, _, goal, met in rows
    ]
    return head, body


def render_text(head, body):
    widths = [max(len(r[i]) for r in [head] + body) for i in range(len(head))]
    line = lambda r: "  ".join(c.ljust(w) for c, w in zip(r, widths))  # noqa: E731
    return "\n".join([line(head), line(["-" * w for w in widths])] + [line(r) for r in body])


def render_md(head, body):
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    out += ["| " + " | ".join(r) + " |" for r in body]
    return "\n".join(out)


def machine():
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = ""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem = f", {int(line.split()[1]) / 1024 / 1024:.0f} GiB RAM"
    except (OSError, ValueError):
        pass
    return f"{os.cpu_count()} CPUs (nproc {len(os.sched_getaffinity(0))}), {model}{mem}, {platform.system()} {platform.release()}"


def gantry_commit():
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short=12", "HEAD"], cwd=REPO, capture_output=True, text=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=REPO, capture_output=True, text=True,
        ).stdout.strip()
        return head + (" (with uncommitted changes)" if dirty else "")
    except OSError:
        return "unknown"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--files", type=int, action="append",
                    help="folder size; repeatable (default: 20000)")
    ap.add_argument("--repeat", type=int, default=5, help="timed runs per measurement")
    ap.add_argument("--budget-minutes", type=float, default=90,
                    help="skip a larger folder size when its estimated time exceeds what is left")
    args = ap.parse_args()
    sizes = sorted(args.files or [20000])
    started = time.perf_counter()

    gantry = gantry_binary()
    dvc = dvc_binary()
    dvc_version = run([dvc, "--version"], env=dict(os.environ, DVC_NO_ANALYTICS="1"))[1].strip()
    gantry_version = run([gantry, "--version"])[1].strip()
    commit = gantry_commit()  # read once: others may commit while this runs
    log(f"gantry: {gantry} ({gantry_version}, commit {commit})")
    log(f"DVC: {dvc_version}")
    log("note: the images get mtimes in 2020. gantry's stat cache never trusts a file "
        "modified in the last 2 s (git's racy-entry rule), so freshly written files would "
        "be rehashed on every run.")

    results, notes = [], []
    last = None  # (files, seconds) of the previous size
    for n in sizes:
        if last:
            estimate = last[1] * n / last[0]
            left = args.budget_minutes * 60 - (time.perf_counter() - started)
            if estimate > left:
                notes.append(f"{n:,} files skipped: estimated {estimate / 60:.0f} min, "
                             f"{left / 60:.0f} min of --budget-minutes left")
                log(notes[-1])
                continue
        t0 = time.perf_counter()
        try:
            results.append(bench_one(n, args.repeat, gantry, dvc))
        except BenchError as e:
            notes.append(f"{n:,} files: FAILED: {str(e).splitlines()[0]}")
            log(f"FAILED at {n} files:\n{e}")
            break  # larger sizes only when the smaller one went fine
        last = (n, time.perf_counter() - t0)

    rows = [r for res in results for r in rows_for(res)]
    head, body = table(rows)
    chead = ["files", "operation", "gantry CPU s", "dvc CPU s", "1-min load avg (start, end)"]
    cbody = [
        [
            f"{res['files']:,}",
            name,
            f"{statistics.median(res['cpu'][k][0]):.3f}",
            f"{statistics.median(res['cpu'][k][1]):.3f}",
            ", ".join(f"{x:.1f}" for x in res["load"]),
        ]
        for res in results
        for k, name in [("a", "(a) no-op rerun"), ("b", "(b) first hash")]
    ]
    log("")
    log(render_text(head, body))
    log("")
    log(render_text(chead, cbody))
    for note in notes:
        log(note)

    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    md = [
        "# gantry vs DVC: no-op rerun and first hash",
        "",
        f"- date: {datetime.datetime.now().astimezone().isoformat(timespec='seconds')}",
        f"- machine: {machine()}",
        f"- DVC: {dvc_version} (PyPI, bench/.venv-dvc), Python {platform.python_version()}",
        f"- gantry: {gantry_version}, commit {commit} when the run started",
        f"- command: `python3 bench/noop_vs_dvc.py {' '.join(sys.argv[1:])}`".rstrip(),
        "",
        render_md(head, body),
        "",
        "CPU time (user + sys of the process and its children, median) and the machine's "
        "load while measuring (other work on the machine slows both tools' wall clock):",
        "",
        render_md(chead, cbody),
        "",
        f"Times are the median wall clock of {args.repeat} runs of the whole process "
        "(runs of the two tools interleaved). The folder: 16x16 RGB PNGs, all distinct, "
        "in 100 class folders x 10 subfolders, mtimes set in 2020 (gantry's stat cache "
        "never trusts files modified in the last 2 s, like git's racy entries). The page "
        "cache is warm for both tools: every file is read once first (no root to drop it).",
        "",
        "The pipeline: `dataset` over the folder, then `downsample` to 8, 4, 2 and 1 "
        "pixels (`bench/work/n*/project/pipeline.yaml`). The DVC project "
        "(`dvc.yaml`, git-initialised) has the same 5 stages and DAG; its commands "
        "(`stages.py` = `bench/minipng.py`) decode the PNGs and box-downsample in pure "
        "Python: only the no-op check and the hashing are measured, never that work.",
        "",
        "- (a) no-op rerun: `gantry run --json pipeline.yaml` (every stage `cached`, "
        "checked each run) vs `dvc repro` (\"Data and pipelines are up to date\", "
        "no `Running stage`, checked each run), both after an untimed first run and one "
        "untimed no-op.",
        "- (b) first hash: `gantry status pipeline.yaml` with an empty `GANTRY_CACHE_DIR` "
        "(hashes every input file through the stat cache, runs nothing) vs `dvc status` "
        "with an empty state database (`DVC_SITE_CACHE_DIR` emptied before each run; "
        "`dvc status` rehashes the `images` dependency file by file to compare it with "
        "`dvc.lock`, and the state database holds one row per file afterwards, checked).",
        "- first full run (info): the populating runs, not a goal; DVC's stage commands "
        "are pure Python, so this row compares little more than the hashing.",
    ]
    if notes:
        md += [""] + [f"- {n}" for n in notes]
    RESULTS.write_text("\n".join(md) + "\n")
    log(f"\nwrote {RESULTS.relative_to(REPO)} ({(time.perf_counter() - started) / 60:.1f} min in all)")
    return 0 if results and all(r[6] is not False for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
