//! The tracing subscriber, the only one in the workspace.
//!
//! In a terminal a person reads progress bars, one rounded line per epoch and a summary (printed
//! by the subcommands); the `tracing` events, whose fields are the raw values, are kept for
//! `-v` / `NMOCO_LOG` and for logs (stderr not a terminal). Warnings and errors always show.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;
use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::prelude::*;

/// The environment variable holding an explicit filter (`EnvFilter` syntax, e.g. `info` or
/// `nmoco_train=debug`).
pub const LOG_ENV: &str = "NMOCO_LOG";

/// The filter of the text log: `NMOCO_LOG` when set (it names exactly what to show), else a
/// level from `-v` (`-v` info, `-vv` debug, `-vvv` trace), else `warn` in a terminal and `info`
/// in a log. In a terminal the frame-cache progress events are drawn as a bar, so they are
/// filtered out of the text unless `NMOCO_LOG` names their target.
pub fn filter_spec(is_terminal: bool, verbosity: u8, env: Option<&str>) -> String {
    let env = env.map(str::trim).filter(|s| !s.is_empty());
    let mut spec = match (env, verbosity) {
        (Some(e), _) => e.to_string(),
        (None, 0) if is_terminal => "warn".into(),
        (None, 0 | 1) => "info".into(),
        (None, 2) => "debug".into(),
        (None, _) => "trace".into(),
    };
    if is_terminal && !env.is_some_and(|e| e.contains(nmoco_data::PROGRESS_TARGET)) {
        spec.push(',');
        spec.push_str(nmoco_data::PROGRESS_TARGET);
        spec.push_str("=warn");
    }
    spec
}

/// Install the subscriber: the text log on stderr, filtered by [`filter_spec`], and in a
/// terminal the frame-cache progress bar ([`CacheProgress`]).
pub fn install(verbosity: u8) {
    let tty = std::io::stderr().is_terminal();
    let env = std::env::var(LOG_ENV).ok();
    let spec = filter_spec(tty, verbosity, env.as_deref());
    let filter = EnvFilter::try_new(&spec).unwrap_or_else(|e| {
        eprintln!("warning: {LOG_ENV}={spec:?} is not a valid filter ({e}); using the default");
        EnvFilter::new(filter_spec(tty, verbosity, None))
    });
    tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                // Colours for a person; none in a log file.
                .with_ansi(tty)
                .with_filter(filter),
        )
        .with(tty.then(|| {
            // Every level: the bar needs each progress event, whatever level nmoco-data uses.
            CacheProgress::default().with_filter(
                Targets::new().with_target(nmoco_data::PROGRESS_TARGET, LevelFilter::TRACE),
            )
        }))
        .init();
}

/// Draws a progress bar from nmoco-data's cache-building events (target
/// [`nmoco_data::PROGRESS_TARGET`], fields `done`, `total`, `dataset`, `split`).
#[derive(Default)]
pub struct CacheProgress {
    bar: std::sync::Mutex<Option<indicatif::ProgressBar>>,
}

#[derive(Default)]
struct ProgressFields {
    done: Option<u64>,
    total: Option<u64>,
    dataset: String,
    split: String,
}

impl tracing::field::Visit for ProgressFields {
    fn record_u64(&mut self, field: &tracing::field::Field, value: u64) {
        match field.name() {
            "done" => self.done = Some(value),
            "total" => self.total = Some(value),
            _ => {}
        }
    }
    fn record_i64(&mut self, field: &tracing::field::Field, value: i64) {
        self.record_u64(field, value.max(0) as u64);
    }
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        match field.name() {
            "dataset" => self.dataset = value.to_string(),
            "split" => self.split = value.to_string(),
            _ => {}
        }
    }
    fn record_debug(&mut self, _field: &tracing::field::Field, _value: &dyn std::fmt::Debug) {}
}

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for CacheProgress {
    fn on_event(
        &self,
        event: &tracing::Event<'_>,
        _ctx: tracing_subscriber::layer::Context<'_, S>,
    ) {
        if event.metadata().target() != nmoco_data::PROGRESS_TARGET {
            return;
        }
        let mut f = ProgressFields::default();
        event.record(&mut f);
        let (Some(done), Some(total)) = (f.done, f.total) else {
            return;
        };
        let Ok(mut slot) = self.bar.lock() else {
            return;
        };
        if slot.is_none() || done == 0 {
            let pb = indicatif::ProgressBar::new(total);
            if let Ok(style) =
                indicatif::ProgressStyle::with_template("{msg} [{bar:40}] {pos}/{len} ({eta} left)")
            {
                pb.set_style(style.progress_chars("=> "));
            }
            pb.set_message(format!("frame cache {} {}", f.dataset, f.split));
            *slot = Some(pb);
        }
        if let Some(pb) = slot.as_ref() {
            pb.set_position(done);
            if done >= total {
                // Cleared: the commands print what was built (and a bar left on screen would
                // take the next printed line on its own).
                pb.finish_and_clear();
                *slot = None;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const QUIET_CACHE: &str = ",nmoco_data::progress=warn";

    #[test]
    fn terminal_shows_warnings_only_unless_asked() {
        assert_eq!(filter_spec(true, 0, None), format!("warn{QUIET_CACHE}"));
        assert_eq!(filter_spec(true, 1, None), format!("info{QUIET_CACHE}"));
        assert_eq!(filter_spec(true, 2, None), format!("debug{QUIET_CACHE}"));
        assert_eq!(filter_spec(true, 5, None), format!("trace{QUIET_CACHE}"));
        // An empty variable counts as unset.
        assert_eq!(
            filter_spec(true, 0, Some("  ")),
            format!("warn{QUIET_CACHE}")
        );
    }

    #[test]
    fn log_file_gets_the_records() {
        assert_eq!(filter_spec(false, 0, None), "info");
        assert_eq!(filter_spec(false, 1, None), "info");
        assert_eq!(filter_spec(false, 2, None), "debug");
        assert_eq!(filter_spec(false, 3, None), "trace");
    }

    #[test]
    fn env_names_exactly_what_to_show() {
        assert_eq!(filter_spec(false, 2, Some("warn")), "warn");
        assert_eq!(
            filter_spec(false, 0, Some("nmoco_train=debug")),
            "nmoco_train=debug"
        );
        assert_eq!(
            filter_spec(true, 0, Some("info")),
            format!("info{QUIET_CACHE}")
        );
        // Naming the progress target shows its lines next to the bar.
        assert_eq!(
            filter_spec(true, 0, Some("nmoco_data::progress=info")),
            "nmoco_data::progress=info"
        );
    }

    #[test]
    fn every_spec_parses() {
        for tty in [false, true] {
            for v in 0..4 {
                for env in [None, Some("info"), Some("nmoco_train=debug,warn")] {
                    let spec = filter_spec(tty, v, env);
                    assert!(EnvFilter::try_new(&spec).is_ok(), "{spec}");
                }
            }
        }
    }
}
