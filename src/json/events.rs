//! The events of `apply --json`: one JSON object per line, as they happen.

use std::path::PathBuf;

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::Serialize;

use super::FORMAT;
use crate::engine::observer::{Event, ReportKind};
use crate::plan::planner::Action;

/// One line of `apply --json`. (Open to unknown keys: draft-07 cannot
/// close an object whose keys depend on `event`.)
#[derive(Debug, Serialize, JsonSchema)]
pub struct EventLine {
    /// Version of coffer's JSON output formats (docs/json.md).
    pub format: u32,
    /// When it happened (RFC 3339, UTC).
    pub time: DateTime<Utc>,
    #[serde(flatten)]
    pub body: EventBody,
}

/// What happened; `event` names it.
#[derive(Debug, Serialize, JsonSchema)]
#[serde(tag = "event", rename_all = "kebab-case")]
pub enum EventBody {
    /// The run took the runner lock; its journal and report use this id.
    RunStarted { run_id: String },
    /// An action a killed run left unfinished was cleaned up.
    Recovered { detail: String },
    /// The plan the run carries out, with what gathering noticed.
    Plan {
        notes: Vec<String>,
        actions: Vec<Action>,
    },
    /// An action starts: `action` is its line, `plan_action` the action as
    /// the plan holds it.
    ActionStarted { action: String, plan_action: Action },
    /// An action succeeded.
    ActionFinished {
        action: String,
        detail: String,
        seconds: f64,
    },
    /// An action failed; `detail` says why.
    ActionFailed {
        action: String,
        detail: String,
        seconds: f64,
    },
    /// A running backup, about once a second.
    ActionProgress {
        vm: String,
        bytes_read: u64,
        bytes_per_second: u64,
        /// What the backup plans to read (0 until known).
        bytes_planned: u64,
    },
    /// The run is over; `report` is its text report.
    RunFinished {
        run_id: String,
        subject: String,
        failed: bool,
        cancelled: bool,
        report: PathBuf,
    },
    /// The run report was mailed.
    Mailed { notifier: String, to: Vec<String> },
    /// The run report could not be mailed; `detail` says why.
    MailFailed { notifier: String, detail: String },
}

/// An event as `apply --json` writes it: one JSON object a line, nothing
/// for an event that is not part of that stream.
pub fn event_text(event: &Event<'_>, time: DateTime<Utc>) -> String {
    event_lines(event, time)
        .iter()
        .filter_map(|line| serde_json::to_string(line).ok())
        .map(|line| line + "\n")
        .collect()
}

/// The lines an event is in `apply --json` (several for a progress event,
/// none for what is not part of that stream: messages, the daemon's own
/// lines, mails of other reports).
pub fn event_lines(event: &Event<'_>, time: DateTime<Utc>) -> Vec<EventLine> {
    let bodies = match event {
        Event::RunStarted { run_id } => vec![EventBody::RunStarted {
            run_id: run_id.to_string(),
        }],
        Event::Recovered { note } => vec![EventBody::Recovered {
            detail: note.to_string(),
        }],
        Event::Planned { plan, gathered } => vec![EventBody::Plan {
            notes: gathered.notes.clone(),
            actions: plan.actions.clone(),
        }],
        Event::ActionStarted { action } => vec![EventBody::ActionStarted {
            action: action.line(),
            plan_action: (*action).clone(),
        }],
        Event::ActionFinished { outcome } => {
            let (action, detail, seconds) = (
                outcome.action.clone(),
                outcome.detail.clone(),
                outcome.seconds,
            );
            vec![if outcome.ok {
                EventBody::ActionFinished {
                    action,
                    detail,
                    seconds,
                }
            } else {
                EventBody::ActionFailed {
                    action,
                    detail,
                    seconds,
                }
            }]
        }
        Event::Progress { running } => running
            .iter()
            .map(|p| EventBody::ActionProgress {
                vm: p.vm.clone(),
                bytes_read: p.bytes_read,
                bytes_per_second: p.bytes_per_second,
                bytes_planned: p.bytes_planned,
            })
            .collect(),
        Event::RunFinished {
            run_id,
            subject,
            failed,
            cancelled,
            report,
            ..
        } => vec![EventBody::RunFinished {
            run_id: run_id.to_string(),
            subject: subject.to_string(),
            failed: *failed,
            cancelled: *cancelled,
            report: report.with_extension("txt"),
        }],
        Event::Mailed {
            report: ReportKind::Run,
            notifier,
            to,
        } => vec![EventBody::Mailed {
            notifier: notifier.to_string(),
            to: to.to_vec(),
        }],
        Event::MailFailed {
            report: ReportKind::Run,
            notifier,
            error,
            ..
        } => vec![EventBody::MailFailed {
            notifier: notifier.to_string(),
            detail: error.clone(),
        }],
        Event::Message(_)
        | Event::ProgressEnded
        | Event::Mailed { .. }
        | Event::MailFailed { .. }
        | Event::DaemonApplying { .. }
        | Event::DaemonSleeping { .. } => vec![],
    };
    bodies
        .into_iter()
        .map(|body| EventLine {
            format: FORMAT,
            time,
            body,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::event_text;
    use crate::engine::observer::Event;

    #[test]
    fn an_event_is_one_json_line_and_a_message_none() {
        let time = crate::policy::units::parse_time("2026-11-25T01:00:00Z").unwrap();
        let text = event_text(&Event::RunStarted { run_id: "r1" }, time);
        assert_eq!(text.lines().count(), 1);
        assert!(text.ends_with("}\n"), "{text}");
        let line: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(line["event"], "run-started");
        assert_eq!(line["run_id"], "r1");
        assert_eq!(event_text(&Event::Message("hello".into()), time), "");
    }
}
