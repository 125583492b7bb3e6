//! Logging: `tracing` to stderr (above the progress bars), and each stage's own events
//! into its log file, which is kept beside its outputs.

use std::cell::RefCell;
use std::fs::File;
use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};

use indicatif::MultiProgress;
use tracing::field::{Field, Visit};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

thread_local! {
    static STAGE_LOG: RefCell<Option<Arc<Mutex<File>>>> = const { RefCell::new(None) };
}

static BARS: OnceLock<MultiProgress> = OnceLock::new();

/// The progress bars every view draws into.
pub fn bars() -> &'static MultiProgress {
    BARS.get_or_init(MultiProgress::new)
}

/// Route this thread's events into `file` until the guard is dropped.
pub struct StageLogGuard;

impl StageLogGuard {
    pub fn set(file: Arc<Mutex<File>>) -> StageLogGuard {
        STAGE_LOG.with(|s| *s.borrow_mut() = Some(file));
        StageLogGuard
    }
}

impl Drop for StageLogGuard {
    fn drop(&mut self) {
        STAGE_LOG.with(|s| *s.borrow_mut() = None);
    }
}

/// Set up logging once per process. `verbose` raises stderr to debug; `RUST_LOG` wins.
pub fn init(verbose: u8, quiet: bool) {
    let level = match (quiet, verbose) {
        (true, _) => "error",
        (_, 0) => "warn",
        (_, 1) => "info",
        (_, 2) => "debug",
        _ => "trace",
    };
    let filter = EnvFilter::try_from_env("GANTRY_LOG").unwrap_or_else(|_| EnvFilter::new(level));
    let stderr = tracing_subscriber::fmt::layer()
        .with_writer(|| BarSafeStderr)
        .with_target(false)
        .without_time()
        .with_filter(filter);
    let _ = tracing_subscriber::registry()
        .with(stderr)
        .with(StageFileLayer.with_filter(tracing_subscriber::filter::LevelFilter::INFO))
        .try_init();
}

struct BarSafeStderr;

impl Write for BarSafeStderr {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        bars().suspend(|| std::io::stderr().write_all(buf))?;
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

struct StageFileLayer;

struct Message(String);

impl Visit for Message {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            self.0.insert_str(0, &format!("{value:?}"));
        } else {
            self.0.push_str(&format!(" {}={value:?}", field.name()));
        }
    }
}

impl<S: tracing::Subscriber> Layer<S> for StageFileLayer {
    fn on_event(&self, event: &tracing::Event<'_>, _ctx: Context<'_, S>) {
        STAGE_LOG.with(|s| {
            if let Some(file) = s.borrow().as_ref() {
                let mut m = Message(String::new());
                event.record(&mut m);
                if let Ok(mut f) = file.lock() {
                    let _ = writeln!(f, "{} {:>5} {}", now(), event.metadata().level(), m.0);
                }
            }
        });
    }
}

/// UTC time as RFC 3339, without pulling in a calendar crate.
pub fn now() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0);
    let days = (secs / 86400.0).floor() as i64;
    let rem = secs - days as f64 * 86400.0;
    let (h, m, s) = (
        (rem / 3600.0) as u32,
        ((rem % 3600.0) / 60.0) as u32,
        rem % 60.0,
    );
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let mo = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if mo <= 2 { y + 1 } else { y };
    format!("{y:04}-{mo:02}-{d:02}T{h:02}:{m:02}:{s:06.3}Z")
}
