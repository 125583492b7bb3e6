//! The `gantry` command: parses arguments, calls the runner, renders what it reports.

use std::collections::HashSet;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand, ValueEnum};
use gantry_cache::Store;
use gantry_runner::exec::{self, Event, Outcome, RunOptions};
use gantry_runner::plan::{self, FileHashes, Freshness};
use gantry_runner::{Pipeline, SpecError, logging};

/// mimalloc keeps freed memory for reuse (for a second, by default) where glibc's malloc
/// unmapped every block over its mmap threshold: a training step's tensors are mostly
/// above it, so each step faulted its memory in anew. On the DCGAN benchmark step (2
/// threads) that was about 10,000 page faults a step and 8–10% of its time.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Declarative, incremental experiment pipelines for GAN research.
#[derive(Parser)]
#[command(name = "gantry", version, about, max_term_width = 100)]
struct Cli {
    /// The cache folder (objects, run records, logs).
    #[arg(
        long,
        global = true,
        env = "GANTRY_CACHE_DIR",
        default_value = ".gantry"
    )]
    cache_dir: PathBuf,
    /// More log output (-v debug, -vv trace).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
    /// Only errors.
    #[arg(short, long, global = true)]
    quiet: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a pipeline: every stage whose inputs changed, and nothing else.
    Run(RunArgs),
    /// Say which stages are fresh and why the others are stale.
    Status {
        #[command(flatten)]
        pipeline: PipelineArgs,
        #[arg(long)]
        json: bool,
    },
    /// Print the stage graph as Graphviz dot or Mermaid.
    Dag {
        #[command(flatten)]
        pipeline: PipelineArgs,
        #[arg(long, value_enum, default_value_t = DagFormat::Dot)]
        format: DagFormat,
    },
    /// Outputs, metrics and provenance of a stage's latest run.
    Show {
        /// A stage or instance name, e.g. `small` or `train[lr=0.01]`.
        stage: String,
        /// The pipeline file (otherwise: the latest run of that stage in any pipeline).
        #[arg(short, long)]
        pipeline: Option<PathBuf>,
        /// `-S name=value` overrides for --pipeline.
        #[arg(short = 'S', long = "set", value_parser = parse_override)]
        set: Vec<(String, String)>,
        #[arg(long)]
        json: bool,
    },
    /// Metrics of the latest run of each stage (and with --diff, the change since the
    /// run before it).
    Metrics {
        #[command(flatten)]
        pipeline: PipelineArgs,
        #[arg(long)]
        diff: bool,
        #[arg(long)]
        json: bool,
    },
    /// Inspect and maintain the cache.
    Cache {
        #[command(subcommand)]
        command: CacheCommand,
    },
    /// Print the JSON Schema of pipeline files (for editors).
    Schema,
}

#[derive(Subcommand)]
enum CacheCommand {
    /// Rehash every object; name (and set aside) every corrupt one.
    Verify {
        #[arg(long)]
        json: bool,
    },
    /// Delete everything the given pipelines no longer reference.
    Gc {
        /// Pipelines whose current stages to keep.
        #[arg(required = true)]
        pipelines: Vec<PathBuf>,
    },
    /// Disk usage by kind of entry.
    Du,
}

#[derive(Args)]
struct PipelineArgs {
    /// The pipeline file.
    pipeline: PathBuf,
    /// Override a pipeline param: `-S lr=0.01`, `-S 'data={folder: {path: ~/faces}}'`.
    #[arg(short = 'S', long = "set", value_parser = parse_override)]
    set: Vec<(String, String)>,
}

#[derive(Args)]
struct RunArgs {
    #[command(flatten)]
    pipeline: PipelineArgs,
    /// Stages to run at once.
    #[arg(short, long, default_value_t = default_jobs())]
    jobs: usize,
    /// Run only this stage (and what it needs); repeatable.
    #[arg(long)]
    only: Vec<String>,
    /// Where stage outputs are materialised (default: out/<pipeline name>).
    #[arg(long, env = "GANTRY_OUT_DIR")]
    out_dir: Option<PathBuf>,
    /// Override the pipeline's backend.
    #[arg(long, value_parser = ["auto", "cpu", "cuda", "wgpu"])]
    backend: Option<String>,
    /// Where stages run.
    #[arg(long, value_enum, default_value_t = Executor::Local)]
    executor: Executor,
    /// GPUs available to stages (default: the NVIDIA devices found).
    #[arg(long, env = "GANTRY_GPUS")]
    gpus: Option<usize>,
    /// CPU cores stages may use in all (default: all).
    #[arg(long)]
    cpus: Option<f64>,
    /// Print a JSON summary on stdout at the end.
    #[arg(long)]
    json: bool,
}

#[derive(Clone, Copy, ValueEnum)]
enum Executor {
    Local,
}

#[derive(Clone, Copy, ValueEnum)]
enum DagFormat {
    Dot,
    Mermaid,
}

fn parse_override(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.trim().to_string(), v.to_string()))
        .ok_or_else(|| format!("`{s}` is not NAME=VALUE"))
}

fn default_jobs() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

/// Exit codes: 0 ok, 1 a stage failed, 2 bad input, 130 interrupted.
enum Failure {
    Stage,
    BadInput(anyhow::Error),
    Interrupted,
}

impl From<anyhow::Error> for Failure {
    fn from(e: anyhow::Error) -> Self {
        Failure::BadInput(e)
    }
}

impl From<SpecError> for Failure {
    fn from(e: SpecError) -> Self {
        Failure::BadInput(e.into())
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    logging::init(cli.verbose, cli.quiet);
    match dispatch(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Stage) => ExitCode::from(1),
        Err(Failure::Interrupted) => ExitCode::from(130),
        Err(Failure::BadInput(e)) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn dispatch(cli: Cli) -> Result<(), Failure> {
    let open_store = || Store::open(&cli.cache_dir).context("cannot open the cache");
    match cli.command {
        Command::Run(args) => run(&open_store()?, args, cli.quiet),
        Command::Status { pipeline, json } => status(&open_store()?, &pipeline, json),
        Command::Dag { pipeline, format } => {
            let p = load(&pipeline)?;
            print!("{}", dag(&p, format));
            Ok(())
        }
        Command::Show {
            stage,
            pipeline,
            set,
            json,
        } => show(&open_store()?, &stage, pipeline.as_deref(), &set, json),
        Command::Metrics {
            pipeline,
            diff,
            json,
        } => metrics(&open_store()?, &pipeline, diff, json),
        Command::Cache { command } => cache(&open_store()?, command),
        Command::Schema => {
            let s = serde_json::to_string_pretty(&gantry_runner::schema::pipeline_schema())
                .context("schema")?;
            println!("{s}");
            Ok(())
        }
    }
}

fn load(args: &PipelineArgs) -> Result<Pipeline, SpecError> {
    gantry_runner::load(&args.pipeline, &args.set)
}

fn detect_gpus() -> usize {
    std::fs::read_dir("/dev")
        .map(|rd| {
            rd.flatten()
                .filter(|e| {
                    let n = e.file_name().to_string_lossy().into_owned();
                    n.strip_prefix("nvidia")
                        .is_some_and(|d| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit()))
                })
                .count()
        })
        .unwrap_or(0)
}

fn total_memory() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map(|kb| kb * 1024)
        .unwrap_or(0)
}

fn run(store: &Store, args: RunArgs, quiet: bool) -> Result<(), Failure> {
    let p = load(&args.pipeline)?;
    let Executor::Local = args.executor;
    let opts = RunOptions {
        jobs: args.jobs,
        only: args.only,
        out_dir: args
            .out_dir
            .unwrap_or_else(|| PathBuf::from("out"))
            .join(&p.name),
        cpus: args.cpus.unwrap_or(default_jobs() as f64),
        gpus: args.gpus.unwrap_or_else(detect_gpus),
        mem_bytes: total_memory(),
        backend: args.backend.unwrap_or_else(|| p.backend.clone()),
    };
    let cancel = Arc::new(AtomicBool::new(false));
    {
        let cancel = cancel.clone();
        let presses = AtomicUsize::new(0);
        // First Ctrl-C: stop starting stages and let running ones stop at their next
        // check. Second: leave now (the cache is consistent at every instant anyway).
        let _ = ctrlc::set_handler(move || {
            if presses.fetch_add(1, Ordering::SeqCst) > 0 {
                std::process::exit(130);
            }
            eprintln!("interrupted: stopping running stages (Ctrl-C again to quit now)");
            cancel.store(true, Ordering::SeqCst);
        });
    }
    let hashing = logging::bars().add(indicatif::ProgressBar::hidden());
    let started = std::time::Instant::now();
    let width = p.instances.iter().map(|i| i.name.len()).max().unwrap_or(8);
    let tty = std::io::stderr().is_terminal();
    let report = |e: Event<'_>| match e {
        Event::Hashing { path, done, total } => {
            if total > 200 && tty {
                if hashing.is_hidden() {
                    hashing.set_draw_target(indicatif::ProgressDrawTarget::stderr());
                    hashing.set_style(
                        indicatif::ProgressStyle::with_template(
                            "{prefix:>20.cyan} [{bar:30}] {pos}/{len} files",
                        )
                        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
                    );
                    hashing.set_prefix("hashing");
                    hashing.set_length(total as u64);
                    tracing::info!("hashing {}", path.display());
                }
                hashing.set_position(done as u64);
                if done == total {
                    hashing.finish_and_clear();
                }
            }
        }
        Event::Started { stage } => tracing::debug!("started {stage}"),
        Event::Waiting { stage } => line(
            quiet,
            &format!("  waiting  {stage:width$}  another gantry process is computing it"),
        ),
        Event::Finished { stage, outcome } => {
            let text = match outcome {
                Outcome::Executed { seconds } => {
                    format!("  ran      {stage:width$}  {seconds:.2}s")
                }
                Outcome::Cached { restored: false } => format!("  fresh    {stage:width$}"),
                Outcome::Cached { restored: true } => {
                    format!("  restored {stage:width$}  from the run-cache (seen before)")
                }
                Outcome::ComputedElsewhere => {
                    format!("  fresh    {stage:width$}  computed by another gantry process")
                }
                Outcome::Failed { error, log } => {
                    let log = log
                        .as_ref()
                        .map(|l| format!("\n           log: {}", l.display()))
                        .unwrap_or_default();
                    format!("  FAILED   {stage:width$}  {error}{log}")
                }
                Outcome::Skipped { because } => format!("  skipped  {stage:width$}  {because}"),
                Outcome::Cancelled => format!("  stopped  {stage:width$}  interrupted"),
                Outcome::NotSelected => return,
            };
            let failed = matches!(outcome, Outcome::Failed { .. });
            if failed {
                logging::bars().suspend(|| eprintln!("{text}"));
            } else {
                line(quiet, &text);
            }
            // What the stage wants a person to see, right after it ran.
            if matches!(outcome, Outcome::Executed { .. }) && !quiet {
                let report = p
                    .index_of(stage)
                    .map(|i| exec::out_dir_of(&opts.out_dir, &p.instances[i]))
                    .map(|dir| dir.join(gantry_runner::REPORT_FILE));
                if let Some(Ok(text)) = report.map(std::fs::read_to_string) {
                    logging::bars().suspend(|| {
                        eprintln!();
                        for l in text.lines() {
                            eprintln!("    {l}");
                        }
                        eprintln!();
                    });
                }
            }
        }
    };
    let summary = exec::run(store, &p, &opts, cancel.clone(), &report)
        .map_err(|e| Failure::BadInput(anyhow::anyhow!(e)))?;
    let ran = summary.count(|o| matches!(o, Outcome::Executed { .. }));
    let cached =
        summary.count(|o| matches!(o, Outcome::Cached { .. } | Outcome::ComputedElsewhere));
    let failed = summary.count(|o| matches!(o, Outcome::Failed { .. }));
    let skipped = summary.count(|o| matches!(o, Outcome::Skipped { .. } | Outcome::Cancelled));
    line(
        quiet,
        &format!(
            "{}: {ran} ran, {cached} fresh, {failed} failed, {skipped} not run ({:.2}s); outputs in {}",
            p.name,
            started.elapsed().as_secs_f64(),
            opts.out_dir.display()
        ),
    );
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&summary).context("summary")?
        );
    }
    if summary.cancelled {
        return Err(Failure::Interrupted);
    }
    if failed > 0 {
        let names: Vec<&str> = summary
            .stages
            .iter()
            .filter(|(_, o)| matches!(o, Outcome::Failed { .. }))
            .map(|(n, _)| n.as_str())
            .collect();
        eprintln!("error: stage(s) failed: {}", names.join(", "));
        return Err(Failure::Stage);
    }
    Ok(())
}

fn metrics(store: &Store, args: &PipelineArgs, diff: bool, json: bool) -> Result<(), Failure> {
    let p = load(args)?;
    let mut rows: Vec<serde_json::Value> = Vec::new();
    for inst in &p.instances {
        let history = store.ref_history(&p.name, &inst.name);
        let get = |i: usize| {
            history
                .get(i)
                .and_then(|k| store.record(k).ok().flatten())
                .and_then(|r| r.metrics)
        };
        let Some(now) = get(0) else { continue };
        let before = if diff { get(1) } else { None };
        let mut now_flat = Vec::new();
        flatten("", &now, &mut now_flat);
        let mut before_flat = Vec::new();
        if let Some(b) = &before {
            flatten("", b, &mut before_flat);
        }
        for (path, value) in now_flat {
            let old = before_flat
                .iter()
                .find(|(p, _)| *p == path)
                .map(|(_, v)| *v);
            rows.push(serde_json::json!({
                "stage": inst.name,
                "metric": path,
                "value": value,
                "previous": old,
                "change": old.map(|o| value - o),
            }));
        }
    }
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&rows).context("metrics")?
        );
        return Ok(());
    }
    if rows.is_empty() {
        println!("no metrics yet: run the pipeline first");
        return Ok(());
    }
    let w1 = rows
        .iter()
        .filter_map(|r| r["stage"].as_str())
        .map(str::len)
        .max()
        .unwrap_or(5);
    let w2 = rows
        .iter()
        .filter_map(|r| r["metric"].as_str())
        .map(str::len)
        .max()
        .unwrap_or(6);
    if diff {
        println!(
            "{:w1$}  {:w2$}  {:>14}  {:>14}  {:>14}",
            "stage", "metric", "value", "previous", "change"
        );
    } else {
        println!("{:w1$}  {:w2$}  {:>14}", "stage", "metric", "value");
    }
    for r in &rows {
        let num = |v: &serde_json::Value| {
            v.as_f64()
                .map(|x| format!("{x:.6}"))
                .unwrap_or_else(|| "-".into())
        };
        let stage = r["stage"].as_str().unwrap_or("");
        let metric = r["metric"].as_str().unwrap_or("");
        if diff {
            let change = r["change"]
                .as_f64()
                .map(|x| format!("{x:+.6}"))
                .unwrap_or_else(|| "-".into());
            println!(
                "{stage:w1$}  {metric:w2$}  {:>14}  {:>14}  {change:>14}",
                num(&r["value"]),
                num(&r["previous"])
            );
        } else {
            println!("{stage:w1$}  {metric:w2$}  {:>14}", num(&r["value"]));
        }
    }
    Ok(())
}

/// Every number in a metrics document, by dotted path.
fn flatten(prefix: &str, v: &serde_json::Value, out: &mut Vec<(String, f64)>) {
    match v {
        serde_json::Value::Number(n) => {
            if let Some(x) = n.as_f64() {
                out.push((prefix.to_string(), x));
            }
        }
        serde_json::Value::Object(m) => {
            for (k, child) in m {
                let p = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                flatten(&p, child, out);
            }
        }
        serde_json::Value::Array(items) => {
            for (i, child) in items.iter().enumerate() {
                flatten(&format!("{prefix}.{i}"), child, out);
            }
        }
        _ => {}
    }
}

fn line(quiet: bool, s: &str) {
    if !quiet {
        logging::bars().suspend(|| eprintln!("{s}"));
    }
}

fn status(store: &Store, args: &PipelineArgs, json: bool) -> Result<(), Failure> {
    let p = load(args)?;
    let all = vec![true; p.instances.len()];
    let hashes = FileHashes::compute(store, &p, &all, &|_, _, _| {});
    let st = plan::status(store, &p, &hashes);
    if json {
        println!("{}", serde_json::to_string_pretty(&st).context("status")?);
        return Ok(());
    }
    let width = st.iter().map(|s| s.stage.len()).max().unwrap_or(8);
    for s in &st {
        match &s.freshness {
            Freshness::Fresh {
                restored: false, ..
            } => println!("{:width$}  fresh", s.stage),
            Freshness::Fresh { restored: true, .. } => println!(
                "{:width$}  fresh (in the run-cache: will be restored without running)",
                s.stage
            ),
            Freshness::Stale { reasons, .. } => {
                println!("{:width$}  stale: {}", s.stage, reasons.join("; "))
            }
            Freshness::Broken { reason } => println!("{:width$}  cannot run: {reason}", s.stage),
        }
    }
    Ok(())
}

fn dag(p: &Pipeline, format: DagFormat) -> String {
    let mut out = String::new();
    match format {
        DagFormat::Dot => {
            out.push_str(&format!(
                "digraph \"{}\" {{\n  rankdir=LR;\n  node [shape=box];\n",
                p.name
            ));
            for (i, inst) in p.instances.iter().enumerate() {
                out.push_str(&format!(
                    "  n{i} [label=\"{}\\n({})\"];\n",
                    inst.name.replace('"', "\\\""),
                    inst.kind.name()
                ));
            }
            for (i, inst) in p.instances.iter().enumerate() {
                for (slot, ups) in &inst.inputs {
                    for u in ups {
                        out.push_str(&format!("  n{u} -> n{i} [label=\"{slot}\"];\n"));
                    }
                }
            }
            out.push_str("}\n");
        }
        DagFormat::Mermaid => {
            out.push_str("flowchart LR\n");
            for (i, inst) in p.instances.iter().enumerate() {
                out.push_str(&format!(
                    "  n{i}[\"{}<br/>({})\"]\n",
                    inst.name.replace('"', "#quot;"),
                    inst.kind.name()
                ));
            }
            for (i, inst) in p.instances.iter().enumerate() {
                for (slot, ups) in &inst.inputs {
                    for u in ups {
                        out.push_str(&format!("  n{u} -->|{slot}| n{i}\n"));
                    }
                }
            }
        }
    }
    out
}

fn show(
    store: &Store,
    stage: &str,
    pipeline: Option<&Path>,
    set: &[(String, String)],
    json: bool,
) -> Result<(), Failure> {
    let rec = match pipeline {
        Some(path) => {
            let p = gantry_runner::load(path, set)?;
            if p.select(stage).is_empty() {
                return Err(anyhow::anyhow!("{}: no stage `{stage}`", p.file).into());
            }
            store
                .ref_history(&p.name, stage)
                .first()
                .and_then(|k| store.record(k).ok().flatten())
        }
        None => store
            .records()
            .into_iter()
            .filter(|r| r.stage == stage)
            .max_by(|a, b| a.started_at.cmp(&b.started_at)),
    };
    let Some(rec) = rec else {
        return Err(anyhow::anyhow!("stage `{stage}` has not run yet (with this cache)").into());
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&rec).context("record")?);
        return Ok(());
    }
    println!(
        "stage     {}  ({} v{})",
        rec.stage, rec.kind, rec.kind_version
    );
    println!("pipeline  {}", rec.pipeline);
    println!("key       {}", rec.key);
    println!(
        "ran       {} for {:.2}s on {} (gantry {})",
        rec.started_at, rec.duration_s, rec.host, rec.gantry_version
    );
    if let Some(b) = &rec.backend {
        println!("backend   {b}");
    }
    println!("params    {}", gantry_cache::canonical_json(&rec.params));
    for (slot, refs) in &rec.inputs {
        for r in refs {
            println!("input     {slot} ← {} ({})", r.stage, r.output_hash.short());
        }
    }
    for (f, h) in &rec.files {
        println!("file      {f} ({})", h.short());
    }
    println!(
        "outputs   ({} files, {} bytes, {})",
        rec.outputs.files.len(),
        rec.outputs.total_size(),
        rec.output_hash.short()
    );
    for (path, e) in &rec.outputs.files {
        println!("  {path:40} {:>12}  {}", e.size, e.hash.short());
    }
    if let Some(m) = &rec.metrics {
        println!(
            "metrics   {}",
            serde_json::to_string_pretty(m).context("metrics")?
        );
    }
    println!("log       {}", store.log_path(&rec.key).display());
    Ok(())
}

fn cache(store: &Store, command: CacheCommand) -> Result<(), Failure> {
    match command {
        CacheCommand::Verify { json } => {
            let bar = indicatif::ProgressBar::new(0);
            let report = store
                .verify(&|done, total| {
                    bar.set_length(total as u64);
                    bar.set_position(done as u64);
                })
                .context("verify")?;
            bar.finish_and_clear();
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&report).context("report")?
                );
            } else {
                for c in &report.corrupt {
                    println!(
                        "corrupt  {}  expected {}: {} (set aside; will be recomputed)",
                        c.path.display(),
                        c.expected.short(),
                        c.message
                    );
                }
                for (k, stage) in &report.incomplete_records {
                    println!(
                        "missing  run of `{stage}` ({}) lacks objects; it will be recomputed",
                        k.short()
                    );
                }
                for (p, why) in &report.unreadable_records {
                    println!("corrupt  {}: {why}", p.display());
                }
                println!(
                    "{} objects, {} run records checked: {} corrupt",
                    report.objects,
                    report.records,
                    report.corrupt.len() + report.unreadable_records.len()
                );
            }
            if report.corrupt.is_empty() && report.unreadable_records.is_empty() {
                Ok(())
            } else {
                Err(Failure::Stage)
            }
        }
        CacheCommand::Gc { pipelines } => {
            let mut live = HashSet::new();
            for path in &pipelines {
                let p = gantry_runner::load(path, &[])?;
                let all = vec![true; p.instances.len()];
                let hashes = FileHashes::compute(store, &p, &all, &|_, _, _| {});
                for s in plan::status(store, &p, &hashes) {
                    match s.freshness {
                        Freshness::Fresh { key, .. } => {
                            live.insert(key);
                        }
                        Freshness::Stale { key: Some(key), .. } => {
                            live.insert(key);
                        }
                        _ => {}
                    }
                }
            }
            let r = store.gc(&live).context("gc")?;
            println!(
                "removed {} run records, {} objects ({} bytes) and {} checkpoint folders; kept {} records, {} objects",
                r.records_removed,
                r.objects_removed,
                r.bytes_freed,
                r.checkpoints_removed,
                r.records_kept,
                r.objects_kept
            );
            Ok(())
        }
        CacheCommand::Du => {
            for (k, v) in store.disk_usage() {
                println!("{k:12} {v:>14} bytes");
            }
            Ok(())
        }
    }
}
