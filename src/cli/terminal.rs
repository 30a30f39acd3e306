//! How the engine's events look on a terminal: lines for people (results on
//! stdout, warnings on stderr, a progress line on a terminal's stderr), or
//! newline-delimited JSON events on stdout (`--json`).

use std::io::Write;

use anyhow::Result;

use crate::engine::Gathered;
use crate::engine::observer::{Event, Observer, ReportKind};
use crate::engine::report::{standing_word, vm_label};
use crate::plan::planner::{self, Plan};

pub struct Terminal {
    /// JSON events instead of lines for people.
    pub json: bool,
    /// stdout is a terminal: show a progress line.
    tty: bool,
}

impl Terminal {
    pub fn new(json: bool) -> Terminal {
        // SAFETY: isatty only inspects a descriptor.
        let tty = unsafe { libc::isatty(1) } == 1;
        Terminal { json, tty }
    }

    /// Lines for people.
    pub fn human() -> Terminal {
        Terminal::new(false)
    }
}

impl Observer for Terminal {
    fn wants_progress(&self) -> bool {
        self.json || self.tty
    }

    fn event(&self, event: &Event<'_>) {
        if let Event::Message(m) = event {
            eprintln!("{m}");
            return;
        }
        if self.json {
            let lines = crate::json::event_lines(event, chrono::Utc::now());
            if !lines.is_empty() {
                let mut out = std::io::stdout().lock();
                for line in lines {
                    let _ = serde_json::to_writer(&mut out, &line);
                    let _ = writeln!(out);
                }
                return;
            }
        }
        match event {
            Event::RunStarted { run_id } => println!("run {run_id}"),
            Event::Recovered { note } => println!("recovered: {note}"),
            Event::Planned { plan, gathered } => {
                let _ = print_plan(&mut std::io::stdout().lock(), plan, gathered);
            }
            // The plan showed each action with its reason: the result
            // line names the action and says what it came to.
            Event::ActionFinished { outcome } => println!(
                "{} {} ({:.1}s)\n    {}",
                if outcome.ok { "done" } else { "FAILED" },
                outcome
                    .planned
                    .as_ref()
                    .map_or_else(|| outcome.action.clone(), |a| a.short_line()),
                outcome.seconds,
                outcome.detail,
            ),
            Event::Progress { running } => {
                let size = crate::policy::units::format_size;
                let line: Vec<String> = running
                    .iter()
                    .map(|p| {
                        format!(
                            "{} {} ({}/s)",
                            p.vm,
                            size(p.bytes_read),
                            size(p.bytes_per_second)
                        )
                    })
                    .collect();
                eprint!("\r\x1b[Kreading: {}", line.join(", "));
            }
            Event::ProgressEnded => {
                if self.tty && !self.json {
                    eprint!("\r\x1b[K");
                }
            }
            Event::RunFinished {
                subject, report, ..
            } => println!("{subject}\nreport: {}.txt and .html", report.display()),
            Event::Mailed {
                report: ReportKind::Run,
                notifier,
                to,
            } => println!(
                "mailed the report through `{notifier}` to {}",
                to.join(", ")
            ),
            Event::MailFailed {
                report: ReportKind::Run,
                error,
                kept_in,
                ..
            } => println!(
                "warning: {error}; the report stays in {}",
                kept_in.display()
            ),
            Event::Mailed {
                report: ReportKind::Compliance,
                notifier,
                ..
            } => println!("mailed the compliance report through `{notifier}`"),
            Event::MailFailed {
                report: ReportKind::Compliance,
                error,
                kept_in,
                ..
            } => eprintln!(
                "warning: {error}; the report stays in {}",
                kept_in.display()
            ),
            Event::Mailed {
                report: ReportKind::StoredRun,
                notifier,
                ..
            } => println!("mailed the run report through `{notifier}`"),
            Event::MailFailed {
                report: ReportKind::StoredRun,
                error,
                ..
            } => eprintln!("warning: {error}"),
            Event::DaemonApplying { at } => {
                println!("daemon: applying at {}", at.format("%Y-%m-%d %H:%M:%S UTC"))
            }
            Event::DaemonSleeping { until } => {
                println!(
                    "daemon: next run at {}",
                    until.format("%Y-%m-%d %H:%M:%S UTC")
                )
            }
            // People see an action when its result is known.
            Event::ActionStarted { .. } | Event::Message(_) => {}
        }
    }
}

/// Prints a plan for people: notes, one line per action, compliance, a summary.
pub fn print_plan(out: &mut dyn Write, plan: &Plan, g: &Gathered) -> Result<()> {
    let notes = &g.notes;
    for n in notes {
        writeln!(out, "note: {n}")?;
    }
    for a in &plan.actions {
        writeln!(out, "{}", a.line())?;
    }
    // A compact standing: the count, and only the VMs out of policy in
    // full (`coffer compliance` lists every VM).
    let ok = plan
        .compliance
        .iter()
        .filter(|c| c.violations.is_empty())
        .count();
    writeln!(
        out,
        "compliance: {ok} of {} VMs meet their policy",
        plan.compliance.len()
    )?;
    for c in plan.compliance.iter().filter(|c| !c.violations.is_empty()) {
        writeln!(
            out,
            "compliance {} ({}): {}: {}",
            vm_label(c, &plan.compliance),
            c.policy,
            standing_word(c),
            c.violations.join("; ")
        )?;
    }
    let count = |p: fn(&planner::Action) -> bool| plan.actions.iter().filter(|a| p(a)).count();
    writeln!(
        out,
        "plan: {} backups, {} copies, {} prunes, {} drills, {} snapshot removals, {} kept by a safety floor, {} alerts",
        count(|a| matches!(a, planner::Action::Backup { .. })),
        count(|a| matches!(a, planner::Action::Copy { .. })),
        count(|a| matches!(a, planner::Action::Prune { .. })),
        count(|a| matches!(a, planner::Action::Drill { .. })),
        count(|a| matches!(a, planner::Action::RemoveSnapshot { .. })),
        count(|a| matches!(a, planner::Action::KeepBlocked { .. })),
        count(|a| matches!(a, planner::Action::Alert { .. })),
    )?;
    let (full, incremental, copy, prune) = volumes(plan, g);
    if full + copy + prune > 0 || incremental > 0 {
        let size = crate::policy::units::format_size;
        writeln!(
            out,
            "volume: full backups read at most {} (allocated areas only){}; copies cover {} of disks (only chunks the target lacks are sent); prunes release points of {} of disks (gc frees what no other point shares)",
            size(full),
            if incremental > 0 {
                format!(", {incremental} incremental backups read only what CBT reports changed")
            } else {
                String::new()
            },
            size(copy),
            size(prune)
        )?;
    }
    Ok(())
}

/// What a plan moves, in bytes of disk: full backups (their disks'
/// capacity, an upper bound), the number of incrementals, copies and
/// prunes (the points' disk sizes).
fn volumes(plan: &Plan, g: &Gathered) -> (u64, usize, u64, u64) {
    let point_bytes = |id: &str| -> u64 {
        g.points
            .iter()
            .find(|p| p.point_id == id)
            .map_or(0, |p| p.disks.iter().map(|d| d.size_bytes).sum())
    };
    let (mut full, mut incremental, mut copy, mut prune) = (0, 0, 0, 0);
    for a in &plan.actions {
        match a {
            planner::Action::Backup {
                source,
                vm,
                full: true,
                ..
            } => {
                full += g
                    .inventory
                    .iter()
                    .find(|(s, v)| s == source && &v.name == vm)
                    .map_or(0, |(_, v)| v.disks.iter().map(|d| d.capacity_bytes).sum());
            }
            planner::Action::Backup { .. } => incremental += 1,
            planner::Action::Copy { point, .. } => copy += point_bytes(point),
            planner::Action::Prune { point, .. } => prune += point_bytes(point),
            _ => {}
        }
    }
    (full, incremental, copy, prune)
}
