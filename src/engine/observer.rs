//! What the engine tells whoever drives it. The engine never prints: every
//! line an operator may see (a run starting, an action's result, progress,
//! a mail sent, a warning) is an [`Event`] handed to an [`Observer`]. The
//! command line renders events as lines for people or as JSON events; the
//! tests record them. An observer is called from the runner's worker
//! threads, so it is `Sync`, and it must be quick: a backup waits for it.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde_json::Value;

use super::gather::Gathered;
use crate::plan::compliance::VmCompliance;
use crate::plan::planner::{Action, Plan};

/// What one action came to.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Outcome {
    pub action: String,
    pub ok: bool,
    pub detail: String,
    pub seconds: f64,
    /// The action as planned (its kind, VM and policy, for metrics).
    #[serde(skip)]
    pub planned: Option<Action>,
    /// What a backup read from the host and stored as new chunks.
    #[serde(skip)]
    pub bytes: Option<Bytes>,
    /// The worker (`coffer worker --name`) that carried it out, when a
    /// worker did rather than this process.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub worker: Option<String>,
}

impl Outcome {
    /// The outcome of `action`: its result's detail (or error), how long
    /// it took, what it moved, and the worker that did it.
    pub fn of(
        action: &Action,
        seconds: f64,
        result: anyhow::Result<String>,
        bytes: Option<Bytes>,
        worker: Option<String>,
    ) -> Outcome {
        let (ok, detail) = match result {
            Ok(detail) => (true, detail),
            Err(e) => (false, format!("{e:#}")),
        };
        Outcome {
            action: action.line(),
            ok,
            detail,
            seconds,
            planned: Some(action.clone()),
            bytes,
            worker,
        }
    }
}

/// What a backup moved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bytes {
    pub read: u64,
    pub stored: u64,
}

/// A running backup's progress.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Progress {
    pub vm: String,
    pub bytes_read: u64,
    pub bytes_per_second: u64,
    /// What the backup plans to read (0 until known).
    pub bytes_planned: u64,
}

/// Which report a mail event is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ReportKind {
    /// The report of the run that just ended.
    Run,
    Compliance,
    /// A run report read back from the report directory.
    StoredRun,
}

/// One thing that happened, in the order it happened.
pub enum Event<'a> {
    /// A line for the operator's error stream, verbatim: a warning, a
    /// catalog rebuilt, a retry, why a saved plan is refused.
    Message(String),
    /// `apply` took the runner lock and journals as this run.
    RunStarted {
        run_id: &'a str,
    },
    /// An action an earlier, killed run left unfinished was cleaned up.
    Recovered {
        note: &'a str,
    },
    /// The plan `apply` carries out (first phase; later phases are planned
    /// again and not announced).
    Planned {
        plan: &'a Plan,
        gathered: &'a Gathered,
    },
    ActionStarted {
        action: &'a Action,
    },
    ActionFinished {
        outcome: &'a Outcome,
    },
    /// Running backups, about once a second (only to an observer that
    /// [`Observer::wants_progress`]).
    Progress {
        running: &'a [Progress],
    },
    /// No backup runs any more: a progress line may be cleared.
    ProgressEnded,
    /// The run is over; its report is written (`report` without extension).
    RunFinished {
        run_id: &'a str,
        subject: &'a str,
        failed: bool,
        cancelled: bool,
        report: &'a Path,
        /// Every VM's standing after the run.
        compliance: &'a [VmCompliance],
    },
    /// A report went out through a notifier.
    Mailed {
        report: ReportKind,
        notifier: &'a str,
        to: &'a [String],
    },
    /// A report could not be mailed; it stays where it was written.
    MailFailed {
        report: ReportKind,
        notifier: &'a str,
        error: String,
        kept_in: &'a Path,
    },
    /// The daemon starts a run.
    DaemonApplying {
        at: DateTime<Utc>,
    },
    /// The daemon sleeps until then.
    DaemonSleeping {
        until: DateTime<Utc>,
    },
}

impl Event<'_> {
    /// The event as `apply --json` streams it: one object, an array of
    /// them for a progress event, `None` for events that are not part of
    /// that stream (messages, progress ends, the daemon's own lines).
    pub fn to_json(&self) -> Option<Value> {
        let lines = crate::json::event_lines(self, Utc::now());
        match lines.len() {
            0 => None,
            1 if !matches!(self, Event::Progress { .. }) => serde_json::to_value(&lines[0]).ok(),
            _ => serde_json::to_value(&lines).ok(),
        }
    }

    /// A short name of the event's kind, for recorders and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Event::Message(_) => "message",
            Event::RunStarted { .. } => "run-started",
            Event::Recovered { .. } => "recovered",
            Event::Planned { .. } => "plan",
            Event::ActionStarted { .. } => "action-started",
            Event::ActionFinished { outcome } if outcome.ok => "action-finished",
            Event::ActionFinished { .. } => "action-failed",
            Event::Progress { .. } => "action-progress",
            Event::ProgressEnded => "progress-ended",
            Event::RunFinished { .. } => "run-finished",
            Event::Mailed { .. } => "mailed",
            Event::MailFailed { .. } => "mail-failed",
            Event::DaemonApplying { .. } => "daemon-applying",
            Event::DaemonSleeping { .. } => "daemon-sleeping",
        }
    }
}

/// Receives the engine's events.
pub trait Observer: Sync {
    fn event(&self, event: &Event<'_>);

    /// Whether to send [`Event::Progress`] while backups read (a terminal
    /// or a JSON stream wants it; a log file does not).
    fn wants_progress(&self) -> bool {
        false
    }
}

/// The jobs running now (backups, restores), each with its byte counter,
/// reported to an observer as [`Event::Progress`] about once a second
/// while work runs.
#[derive(Debug, Default)]
pub struct ProgressBoard {
    running: Mutex<BTreeMap<String, (Arc<crate::progress::ReadProgress>, Instant)>>,
}

impl ProgressBoard {
    /// A job named `label` starts: its counter.
    pub fn start(&self, label: &str) -> Arc<crate::progress::ReadProgress> {
        let counter = Arc::new(crate::progress::ReadProgress::default());
        self.running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(label.to_string(), (counter.clone(), Instant::now()));
        counter
    }

    /// The job named `label` is over: its bar goes.
    pub fn finish(&self, label: &str) {
        self.running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(label);
    }

    fn now(&self) -> Vec<Progress> {
        self.running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(vm, (c, t))| {
                let b = c.read.load(Ordering::Relaxed);
                Progress {
                    vm: vm.clone(),
                    bytes_read: b,
                    bytes_per_second: (b as f64 / t.elapsed().as_secs_f64().max(0.001)) as u64,
                    bytes_planned: c.planned.load(Ordering::Relaxed),
                }
            })
            .collect()
    }

    /// Runs one job named `label`, handing `work` its counter, while its
    /// progress is reported to `observer`.
    pub fn track<T>(
        observer: &dyn Observer,
        label: &str,
        work: impl FnOnce(&Arc<crate::progress::ReadProgress>) -> T,
    ) -> T {
        let board = ProgressBoard::default();
        let counter = board.start(label);
        board.report_while(observer, || work(&counter))
    }

    /// Runs `work` while the running jobs are reported to `observer` each
    /// second (when it wants progress), then [`Event::ProgressEnded`].
    pub fn report_while<T>(&self, observer: &dyn Observer, work: impl FnOnce() -> T) -> T {
        if !observer.wants_progress() {
            return work();
        }
        let done = AtomicBool::new(false);
        std::thread::scope(|scope| {
            scope.spawn(|| {
                let mut last = Instant::now();
                while !done.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(100));
                    if last.elapsed() < Duration::from_secs(1) {
                        continue;
                    }
                    last = Instant::now();
                    let now = self.now();
                    if !now.is_empty() {
                        observer.event(&Event::Progress { running: &now });
                    }
                }
                observer.event(&Event::ProgressEnded);
            });
            let result = work();
            done.store(true, Ordering::Relaxed);
            result
        })
    }
}

/// An observer that drops everything.
#[derive(Debug, Default, Clone, Copy)]
pub struct Silent;

impl Observer for Silent {
    fn event(&self, _: &Event<'_>) {}
}

/// One recorded event: its kind, its JSON form when it has one, and its
/// text when it is a message.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub kind: &'static str,
    pub json: Option<Value>,
    pub message: Option<String>,
}

/// An observer that keeps every event, for tests and for callers that
/// look at a run afterwards.
#[derive(Debug, Default)]
pub struct Recorder {
    events: Mutex<Vec<Recorded>>,
}

impl Recorder {
    pub fn events(&self) -> Vec<Recorded> {
        self.events
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The kinds of the events, in order.
    pub fn kinds(&self) -> Vec<&'static str> {
        self.events().iter().map(|e| e.kind).collect()
    }
}

impl Observer for Recorder {
    fn event(&self, event: &Event<'_>) {
        let recorded = Recorded {
            kind: event.kind(),
            json: event.to_json(),
            message: match event {
                Event::Message(m) => Some(m.clone()),
                _ => None,
            },
        };
        self.events
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(recorded);
    }
}
