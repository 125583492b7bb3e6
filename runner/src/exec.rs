//! The local executor: ready stages run in parallel within `-j` and the CPU, GPU and
//! memory budgets; a failure stops only what depends on it; Ctrl-C stops cleanly.

use std::collections::BTreeMap;
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use gantry_cache::{Hash, RunRecord, StageRef, Store};
use gantry_stages::{Artifact, StageContext, StageError};
use indicatif::{ProgressBar, ProgressStyle};

use crate::logging::{StageLogGuard, bars};
use crate::plan::{FileHashes, file_inputs, stage_key, upstream_refs};
use crate::spec::{Instance, Pipeline};

pub struct RunOptions {
    /// At most this many stages at once.
    pub jobs: usize,
    /// Run only these stages (and what they need).
    pub only: Vec<String>,
    /// Where each stage's outputs are materialised, one folder per instance.
    pub out_dir: PathBuf,
    pub cpus: f64,
    pub gpus: usize,
    pub mem_bytes: u64,
    pub backend: String,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(rename_all = "snake_case", tag = "outcome")]
pub enum Outcome {
    /// Ran here.
    Executed {
        seconds: f64,
    },
    /// Outputs restored from the cache without running.
    Cached {
        restored: bool,
    },
    /// Another gantry process computed it while we waited for its lock.
    ComputedElsewhere,
    Failed {
        error: String,
        log: Option<PathBuf>,
    },
    /// Not run because an upstream stage failed or was cancelled.
    Skipped {
        because: String,
    },
    Cancelled,
    NotSelected,
}

#[derive(Debug, Default, serde::Serialize)]
pub struct RunSummary {
    pub stages: Vec<(String, Outcome)>,
    pub cancelled: bool,
}

impl RunSummary {
    pub fn failed(&self) -> bool {
        self.stages
            .iter()
            .any(|(_, o)| matches!(o, Outcome::Failed { .. }))
    }
    pub fn count(&self, f: impl Fn(&Outcome) -> bool) -> usize {
        self.stages.iter().filter(|(_, o)| f(o)).count()
    }
}

/// What the executor tells its reporter.
pub enum Event<'a> {
    Hashing {
        path: &'a Path,
        done: usize,
        total: usize,
    },
    Finished {
        stage: &'a str,
        outcome: &'a Outcome,
    },
    Started {
        stage: &'a str,
    },
    Waiting {
        stage: &'a str,
    },
}

pub type Reporter<'a> = &'a (dyn Fn(Event<'_>) + Sync);

#[derive(Clone, Copy, PartialEq)]
enum State {
    Waiting,
    Running,
    Done(Hash),
    Stopped,
}

struct Budget {
    jobs: usize,
    cpus: f64,
    mem: u64,
    gpu_used: Vec<f64>,
    running: usize,
    cpu_used: f64,
    mem_used: u64,
}

impl Budget {
    /// GPU devices for a stage that needs `gpu` of them, if free now.
    fn gpus_for(&self, gpu: f64) -> Option<Vec<usize>> {
        if gpu <= 0.0 {
            return Some(Vec::new());
        }
        if gpu < 1.0 {
            return self
                .gpu_used
                .iter()
                .position(|&u| u + gpu <= 1.0 + 1e-9)
                .map(|d| vec![d]);
        }
        let free: Vec<usize> = (0..self.gpu_used.len())
            .filter(|&d| self.gpu_used[d] == 0.0)
            .collect();
        (free.len() >= gpu as usize).then(|| free[..gpu as usize].to_vec())
    }

    /// Cores for a stage about to start: its own `cpu`, or for `cpu_auto` a fair share
    /// of what is free among the `ready` automatic stages that may start now.
    fn cpu_for(&self, inst: &Instance, ready: usize) -> f64 {
        let r = &inst.resources;
        if !r.cpu_auto {
            return r.cpu;
        }
        let free = (self.cpus - self.cpu_used).max(0.0);
        (free / ready.max(1) as f64).floor().max(1.0)
    }

    fn fits(&self, inst: &Instance, cpu: f64) -> Option<Vec<usize>> {
        if self.running >= self.jobs {
            return None;
        }
        let r = &inst.resources;
        // An idle executor always admits one stage, however large, so nothing starves.
        if self.running > 0
            && (self.cpu_used + cpu > self.cpus + 1e-9
                || (self.mem > 0 && self.mem_used + r.mem_bytes > self.mem))
        {
            return None;
        }
        self.gpus_for(r.gpu)
    }

    fn take(&mut self, inst: &Instance, gpus: &[usize], cpu: f64) {
        self.running += 1;
        self.cpu_used += cpu;
        self.mem_used += inst.resources.mem_bytes;
        let share = inst.resources.gpu.min(1.0);
        for &d in gpus {
            self.gpu_used[d] += share;
        }
    }

    fn give(&mut self, inst: &Instance, gpus: &[usize], cpu: f64) {
        self.running -= 1;
        self.cpu_used -= cpu;
        self.mem_used -= inst.resources.mem_bytes;
        let share = inst.resources.gpu.min(1.0);
        for &d in gpus {
            self.gpu_used[d] = (self.gpu_used[d] - share).max(0.0);
        }
    }
}

/// A stage that asks for more than the machine has can never start: say so before
/// anything runs.
pub fn check_resources(p: &Pipeline, opts: &RunOptions) -> Result<(), String> {
    for inst in &p.instances {
        let r = &inst.resources;
        if r.gpu > opts.gpus as f64 + 1e-9 {
            return Err(format!(
                "{}: stage `{}` needs {} GPU(s) but {} are available (set --gpus if detection is wrong)",
                p.file, inst.name, r.gpu, opts.gpus
            ));
        }
        if opts.mem_bytes > 0 && r.mem_bytes > opts.mem_bytes {
            return Err(format!(
                "{}: stage `{}` needs {} MiB of memory but the budget is {} MiB",
                p.file,
                inst.name,
                r.mem_bytes >> 20,
                opts.mem_bytes >> 20
            ));
        }
    }
    Ok(())
}

struct Done {
    index: usize,
    gpus: Vec<usize>,
    cpu: f64,
    result: Result<(Outcome, Hash), (Outcome, Option<Hash>)>,
}

/// A backend the build lacks, or a GPU that is not there, is bad input: said once, before
/// anything runs, rather than as a failure of every training stage.
fn check_backend(p: &Pipeline, opts: &RunOptions) -> Result<(), String> {
    if p.instances.iter().any(|i| i.kind.uses_backend()) {
        gantry_stages::train::backend::choose(&opts.backend)
            .map_err(|e| format!("{}: {e}", p.file))?;
    }
    Ok(())
}

/// Run the pipeline.
pub fn run(
    store: &Store,
    p: &Pipeline,
    opts: &RunOptions,
    cancel: Arc<AtomicBool>,
    report: Reporter<'_>,
) -> Result<RunSummary, String> {
    check_resources(p, opts)?;
    check_backend(p, opts)?;
    let n = p.instances.len();
    let selected: Vec<bool> = if opts.only.is_empty() {
        vec![true; n]
    } else {
        let mut roots = Vec::new();
        for sel in &opts.only {
            let found = p.select(sel);
            if found.is_empty() {
                return Err(format!(
                    "--only {sel}: no such stage in {} (stages: {})",
                    p.file,
                    p.instances
                        .iter()
                        .map(|i| i.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
            }
            roots.extend(found);
        }
        p.with_ancestors(&roots)
    };

    let _gc_guard = store.gc_lock(false).map_err(|e| e.to_string())?;
    store.clean_scratch();
    let hashes = FileHashes::compute(store, p, &selected, &|path, done, total| {
        report(Event::Hashing { path, done, total })
    });

    let mut state = vec![State::Waiting; n];
    let mut outcomes: Vec<Option<Outcome>> = vec![None; n];
    // Key and inputs of a ready stage that was not in the cache but had to wait for the
    // budget: its upstream outputs cannot change any more, so neither the key nor the
    // cache miss is worth recomputing on every pass (the executing thread re-checks the
    // cache under the key's lock anyway).
    let mut waiting_miss: Vec<Option<Prepared>> = vec![None; n];
    for i in 0..n {
        if !selected[i] {
            state[i] = State::Stopped;
            outcomes[i] = Some(Outcome::NotSelected);
        }
    }
    let mut budget = Budget {
        jobs: opts.jobs.max(1),
        cpus: opts.cpus,
        mem: opts.mem_bytes,
        gpu_used: vec![0.0; opts.gpus],
        running: 0,
        cpu_used: 0.0,
        mem_used: 0,
    };
    let (tx, rx) = mpsc::channel::<Done>();
    let mut cancelled = false;

    std::thread::scope(|scope| {
        loop {
            if cancel.load(Ordering::Relaxed) && !cancelled {
                cancelled = true;
            }
            let mut progressed = false;
            // Automatic-cpu stages that could start in this pass share the free cores.
            let mut ready_auto = (0..n)
                .filter(|&i| {
                    state[i] == State::Waiting
                        && p.instances[i].resources.cpu_auto
                        && p.instances[i]
                            .inputs
                            .values()
                            .flatten()
                            .all(|&u| matches!(state[u], State::Done(_)))
                })
                .count();
            for i in 0..n {
                if state[i] != State::Waiting {
                    continue;
                }
                let inst = &p.instances[i];
                let ups: Vec<usize> = inst.inputs.values().flatten().copied().collect();
                if let Some(&bad) = ups.iter().find(|&&u| state[u] == State::Stopped) {
                    state[i] = State::Stopped;
                    let o = Outcome::Skipped {
                        because: format!("upstream `{}` did not finish", p.instances[bad].name),
                    };
                    report(Event::Finished {
                        stage: &inst.name,
                        outcome: &o,
                    });
                    outcomes[i] = Some(o);
                    progressed = true;
                    continue;
                }
                if cancelled {
                    continue;
                }
                let prepared = match waiting_miss[i].take() {
                    Some(prepared) => prepared,
                    None => {
                        let done = |u: usize| match state[u] {
                            State::Done(h) => Some(h),
                            _ => None,
                        };
                        let Ok(upstream) = upstream_refs(p, inst, done) else {
                            continue;
                        };
                        let files = match file_inputs(p, inst, &hashes) {
                            Ok(f) => f,
                            Err(e) => {
                                state[i] = State::Stopped;
                                let o = Outcome::Failed {
                                    error: format!("cannot read its input: {e}"),
                                    log: None,
                                };
                                report(Event::Finished {
                                    stage: &inst.name,
                                    outcome: &o,
                                });
                                outcomes[i] = Some(o);
                                progressed = true;
                                continue;
                            }
                        };
                        let key = stage_key(p, inst, &upstream, &files);
                        // A hit needs no thread and no budget.
                        if let Ok(Some(rec)) = store.usable_record(&key) {
                            hit(
                                store,
                                p,
                                inst,
                                &rec,
                                opts,
                                &mut state[i],
                                &mut outcomes[i],
                                report,
                            );
                            progressed = true;
                            continue;
                        }
                        Prepared {
                            key,
                            upstream,
                            files,
                        }
                    }
                };
                let cpu = budget.cpu_for(inst, ready_auto);
                let Some(gpus) = budget.fits(inst, cpu) else {
                    waiting_miss[i] = Some(prepared);
                    continue;
                };
                if inst.resources.cpu_auto {
                    ready_auto = ready_auto.saturating_sub(1);
                }
                budget.take(inst, &gpus, cpu);
                state[i] = State::Running;
                progressed = true;
                let tx = tx.clone();
                let cancel = cancel.clone();
                let inputs = input_artifacts(p, inst, opts);
                let Prepared {
                    key,
                    upstream,
                    files,
                } = prepared;
                scope.spawn(move || {
                    let threads = (cpu.round() as usize).max(1);
                    let result = execute(
                        store, p, inst, key, upstream, files, inputs, &gpus, threads, opts, cancel,
                        report,
                    );
                    let _ = tx.send(Done {
                        index: i,
                        gpus,
                        cpu,
                        result,
                    });
                });
            }
            if progressed {
                continue;
            }
            if budget.running == 0 {
                break;
            }
            match rx.recv_timeout(Duration::from_millis(100)) {
                Ok(done) => {
                    let inst = &p.instances[done.index];
                    budget.give(inst, &done.gpus, done.cpu);
                    let o = match done.result {
                        Ok((o, out)) => {
                            state[done.index] = State::Done(out);
                            o
                        }
                        Err((o, _)) => {
                            state[done.index] = State::Stopped;
                            o
                        }
                    };
                    report(Event::Finished {
                        stage: &inst.name,
                        outcome: &o,
                    });
                    outcomes[done.index] = Some(o);
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            }
        }
    });

    let stages = p
        .instances
        .iter()
        .zip(outcomes)
        .map(|(inst, o)| (inst.name.clone(), o.unwrap_or(Outcome::Cancelled)))
        .collect();
    Ok(RunSummary { stages, cancelled })
}

/// What a stage's execution needs once its upstream stages are done.
#[derive(Clone)]
struct Prepared {
    key: Hash,
    upstream: BTreeMap<String, Vec<StageRef>>,
    files: BTreeMap<String, Hash>,
}

/// Restore a cache hit's outputs and record the outcome.
#[allow(clippy::too_many_arguments)]
fn hit(
    store: &Store,
    p: &Pipeline,
    inst: &Instance,
    rec: &RunRecord,
    opts: &RunOptions,
    state: &mut State,
    outcome: &mut Option<Outcome>,
    report: Reporter<'_>,
) {
    let latest = store.ref_history(&p.name, &inst.name);
    let o = match restore(store, p, inst, rec, opts) {
        Ok(()) => Outcome::Cached {
            restored: latest.first() != Some(&rec.key),
        },
        Err(e) => Outcome::Failed {
            error: e,
            log: None,
        },
    };
    *state = match o {
        Outcome::Cached { .. } => State::Done(rec.output_hash),
        _ => State::Stopped,
    };
    report(Event::Finished {
        stage: &inst.name,
        outcome: &o,
    });
    *outcome = Some(o);
}

/// The folder where an instance's outputs are materialised.
pub fn out_dir_of(opts_out: &Path, inst: &Instance) -> PathBuf {
    opts_out.join(inst.name.replace('/', "_"))
}

fn input_artifacts(
    p: &Pipeline,
    inst: &Instance,
    opts: &RunOptions,
) -> BTreeMap<String, Vec<Artifact>> {
    inst.inputs
        .iter()
        .map(|(slot, ups)| {
            let arts = ups
                .iter()
                .map(|&u| {
                    let up = &p.instances[u];
                    Artifact {
                        stage: up.name.clone(),
                        ty: up.kind.output(),
                        dir: out_dir_of(&opts.out_dir, up),
                    }
                })
                .collect();
            (slot.clone(), arts)
        })
        .collect()
}

fn restore(
    store: &Store,
    p: &Pipeline,
    inst: &Instance,
    rec: &RunRecord,
    opts: &RunOptions,
) -> Result<(), String> {
    let dest = out_dir_of(&opts.out_dir, inst);
    store
        .materialize(&rec.outputs, &dest)
        .map_err(|e| format!("cannot restore outputs: {e}"))?;
    let log = store.log_path(&rec.key);
    if log.exists() {
        let _ = std::fs::copy(&log, dest.join("gantry.log"));
    }
    store
        .set_ref(&p.name, &inst.name, &rec.key)
        .map_err(|e| e.to_string())
}

#[allow(clippy::too_many_arguments)]
fn execute(
    store: &Store,
    p: &Pipeline,
    inst: &Instance,
    key: Hash,
    upstream: BTreeMap<String, Vec<StageRef>>,
    files: BTreeMap<String, Hash>,
    inputs: BTreeMap<String, Vec<Artifact>>,
    gpus: &[usize],
    threads: usize,
    opts: &RunOptions,
    cancel: Arc<AtomicBool>,
    report: Reporter<'_>,
) -> Result<(Outcome, Hash), (Outcome, Option<Hash>)> {
    let fail = |error: String, log: Option<PathBuf>| (Outcome::Failed { error, log }, None::<Hash>);
    let _lock = store
        .lock_key(&key, || report(Event::Waiting { stage: &inst.name }))
        .map_err(|e| fail(e.to_string(), None))?;
    // Another process may have finished it while we waited.
    if let Ok(Some(rec)) = store.usable_record(&key) {
        restore(store, p, inst, &rec, opts).map_err(|e| fail(e, None))?;
        return Ok((Outcome::ComputedElsewhere, rec.output_hash));
    }
    report(Event::Started { stage: &inst.name });
    let started_at = crate::logging::now();
    let started_unix_s = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0);
    let t0 = Instant::now();
    let scratch = store
        .scratch_dir(&inst.name)
        .map_err(|e| fail(e.to_string(), None))?;
    let out = scratch.join("out");
    let log_path = store.log_path(&key);
    let setup = std::fs::create_dir_all(&out).and_then(|_| std::fs::File::create(&log_path));
    let log_file = match setup {
        Ok(f) => Arc::new(Mutex::new(f)),
        Err(e) => {
            let _ = std::fs::remove_dir_all(&scratch);
            return Err(fail(format!("cannot prepare scratch space: {e}"), None));
        }
    };
    let bar = bars().add(ProgressBar::new(0));
    bar.set_style(
        ProgressStyle::with_template("{prefix:>20.cyan} [{bar:30}] {pos}/{len} {msg} ({elapsed})")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar.set_prefix(inst.name.clone());
    let checkpoint_dir =
        store.checkpoint_dir(&crate::plan::checkpoint_key(p, inst, &upstream, &files));
    if inst.kind.uses_backend()
        && let Err(e) = store.claim_checkpoints(&checkpoint_dir, &key)
    {
        let _ = std::fs::remove_dir_all(&scratch);
        return Err(fail(format!("cannot prepare checkpoints: {e}"), None));
    }
    let ctx = StageContext {
        name: inst.name.clone(),
        params: inst.params.clone(),
        inputs,
        out_dir: out.clone(),
        work_dir: store.work_dir(&key),
        checkpoint_dir,
        backend: opts.backend.clone(),
        gpus: gpus.to_vec(),
        backend_used: Mutex::new(None),
        base_dir: p.base_dir.clone(),
        seed: stage_seed(p.seed, inst.kind.name()),
        threads,
        progress: bar.clone(),
        cancel,
    };
    let result = {
        let _guard = StageLogGuard::set(log_file.clone());
        tracing::info!(
            "stage `{}` ({} v{}) key {} on {} thread(s), gpus {:?}",
            inst.name,
            inst.kind.name(),
            inst.kind.version(),
            key.short(),
            threads,
            gpus
        );
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build();
        let r = match pool {
            Ok(pool) => {
                std::panic::catch_unwind(AssertUnwindSafe(|| pool.install(|| inst.kind.run(&ctx))))
                    .unwrap_or_else(|panic| {
                        let msg = panic
                            .downcast_ref::<String>()
                            .cloned()
                            .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                            .unwrap_or_else(|| "unknown panic".into());
                        Err(StageError::Failed(format!("internal error (panic): {msg}")))
                    })
            }
            Err(e) => Err(StageError::Failed(format!("thread pool: {e}"))),
        };
        if let Err(e) = &r {
            tracing::error!("{e}");
        }
        r
    };
    bar.finish_and_clear();
    bars().remove(&bar);
    if let Err(e) = result {
        let _ = std::fs::remove_dir_all(&scratch);
        if matches!(e, StageError::Cancelled) {
            return Err((Outcome::Cancelled, None));
        }
        return Err(fail(e.to_string(), Some(log_path)));
    }
    let publish = || -> Result<RunRecord, String> {
        let manifest = store.publish(&out).map_err(|e| e.to_string())?;
        let metrics = manifest
            .files
            .get("metrics.json")
            .and_then(|e| std::fs::read(store.object_path(&e.hash)).ok())
            .and_then(|b| serde_json::from_slice(&b).ok());
        let rec = RunRecord {
            key,
            stage: inst.name.clone(),
            pipeline: p.name.clone(),
            kind: inst.kind.name().into(),
            kind_version: inst.kind.version(),
            params: inst.params.clone(),
            pipeline_seed: p.seed,
            inputs: upstream,
            files,
            output_hash: manifest.content_hash(),
            outputs: manifest,
            metrics,
            started_at,
            started_unix_s,
            duration_s: t0.elapsed().as_secs_f64(),
            gantry_version: env!("CARGO_PKG_VERSION").into(),
            host: hostname(),
            backend: ctx.backend_used.lock().ok().and_then(|b| b.clone()),
        };
        // The record goes last: until it exists the key is simply not computed yet.
        store.write_record(&rec).map_err(|e| e.to_string())?;
        Ok(rec)
    };
    let rec = publish();
    let _ = std::fs::remove_dir_all(&scratch);
    let rec =
        rec.map_err(|e| fail(format!("cannot store outputs: {e}"), Some(log_path.clone())))?;
    restore(store, p, inst, &rec, opts).map_err(|e| fail(e, Some(log_path)))?;
    Ok((
        Outcome::Executed {
            seconds: t0.elapsed().as_secs_f64(),
        },
        rec.output_hash,
    ))
}

/// A stage's seed: the pipeline seed mixed with its kind, so that two kinds never draw
/// the same stream, and renaming a stage changes nothing.
pub fn stage_seed(seed: u64, kind: &str) -> u64 {
    let h = gantry_cache::Hash::of(format!("{seed}:{kind}").as_bytes());
    u64::from_le_bytes(h.0[..8].try_into().unwrap_or([0; 8]))
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}
