//! How the engine's events look on a terminal: lines for people (results on
//! stdout, warnings on stderr, one progress bar per running backup on a
//! terminal's stderr, with lines printed above the bars), or
//! newline-delimited JSON events on stdout (`--json`). Colour marks the
//! actions' symbols and the standings on a terminal, unless `NO_COLOR` or
//! `--color never`.

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU8, Ordering};

use anyhow::Result;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::engine::Gathered;
use crate::engine::observer::{Event, Observer, ReportKind};
use crate::engine::report::{standing_word, vm_label};
use crate::plan::planner::{self, Plan};
use crate::policy::units::format_time;

pub struct Terminal {
    /// JSON events instead of lines for people.
    pub json: bool,
    /// stderr is a terminal: progress bars there.
    bars: bool,
    /// Colour on stdout (a terminal, no `NO_COLOR`, no `--color never`).
    colour: bool,
    /// The bars of the backups reading now.
    progress: Mutex<Option<Bars>>,
    /// The time zone times are shown in (the policy's).
    zone: chrono_tz::Tz,
}

struct Bars {
    multi: MultiProgress,
    by_vm: BTreeMap<String, ProgressBar>,
}

/// `--color`: when stdout gets colour.
static COLOUR: AtomicU8 = AtomicU8::new(0);

/// Sets `--color` for this process: auto (0), always (1), never (2).
pub fn set_colour(choice: ColorChoice) {
    let v = match choice {
        ColorChoice::Auto => 0,
        ColorChoice::Always => 1,
        ColorChoice::Never => 2,
    };
    COLOUR.store(v, Ordering::Relaxed);
}

/// When to colour output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum ColorChoice {
    /// On a terminal, unless `NO_COLOR` is set.
    #[default]
    Auto,
    Always,
    Never,
}

/// Whether stdout gets colour (no-color.org: `NO_COLOR` set and not empty
/// turns it off).
pub fn colour_on_stdout() -> bool {
    match COLOUR.load(Ordering::Relaxed) {
        1 => true,
        2 => false,
        _ => {
            // SAFETY: isatty only inspects a descriptor.
            let tty = unsafe { libc::isatty(1) } == 1;
            tty && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
        }
    }
}

/// `text` in an ANSI colour when `on`.
fn paint(on: bool, code: &str, text: &str) -> String {
    if on {
        format!("\x1b[{code}m{text}\x1b[0m")
    } else {
        text.to_string()
    }
}

/// An action's line with its symbol coloured by what it does: `+` backups
/// green, `-` removals yellow, `!` alerts bold red, `>` copies cyan, `?`
/// drills blue, `~` repairs magenta.
pub fn paint_action(on: bool, line: &str) -> String {
    let code = match line.chars().next() {
        Some('+') => "32",
        Some('-') => "33",
        Some('!') => "1;31",
        Some('>') => "36",
        Some('?') => "34",
        Some('~') => "35",
        _ => return line.to_string(),
    };
    let (symbol, rest) = line.split_at(1);
    format!("{}{rest}", paint(on, code, symbol))
}

impl Terminal {
    pub fn new(json: bool) -> Terminal {
        // SAFETY: isatty only inspects a descriptor.
        let bars = unsafe { libc::isatty(2) } == 1;
        Terminal {
            json,
            bars,
            colour: !json && colour_on_stdout(),
            progress: Mutex::new(None),
            zone: chrono_tz::UTC,
        }
    }

    /// Shows times in `zone` (the policy's time zone).
    pub fn in_zone(mut self, zone: chrono_tz::Tz) -> Terminal {
        self.zone = zone;
        self
    }

    /// Lines for people.
    pub fn human() -> Terminal {
        Terminal::new(false)
    }

    /// Draws the running backups as bars on stderr: bytes, rate, and once
    /// the areas to read are known, a bar with its ETA.
    fn draw(&self, running: &[crate::engine::observer::Progress]) {
        let mut guard = self.progress.lock().unwrap_or_else(|e| e.into_inner());
        let bars = guard.get_or_insert_with(|| Bars {
            multi: MultiProgress::with_draw_target(ProgressDrawTarget::stderr()),
            by_vm: BTreeMap::new(),
        });
        let gone: Vec<String> = bars
            .by_vm
            .keys()
            .filter(|vm| !running.iter().any(|p| &p.vm == *vm))
            .cloned()
            .collect();
        for vm in gone {
            if let Some(b) = bars.by_vm.remove(&vm) {
                b.finish_and_clear();
                bars.multi.remove(&b);
            }
        }
        for p in running {
            let bar = bars.by_vm.entry(p.vm.clone()).or_insert_with(|| {
                let b = bars.multi.add(ProgressBar::new(0));
                b.set_style(spinner_style());
                b.set_prefix(p.vm.clone());
                b
            });
            if p.bytes_planned > 0 && bar.length() != Some(p.bytes_planned) {
                bar.set_length(p.bytes_planned);
                bar.set_style(bar_style());
            }
            bar.set_position(p.bytes_read);
        }
    }

    /// Runs `print` with the bars cleared and draws them again after, so
    /// a line never lands glued to a bar.
    fn above_bars(&self, print: impl FnOnce()) {
        let guard = self.progress.lock().unwrap_or_else(|e| e.into_inner());
        match guard.as_ref() {
            Some(bars) => bars.multi.suspend(print),
            None => print(),
        }
    }
}

fn bar_style() -> ProgressStyle {
    ProgressStyle::with_template(
        "{prefix:>16.bold} [{wide_bar}] {binary_bytes}/{binary_total_bytes} {binary_bytes_per_sec} ETA {eta}",
    )
    .unwrap_or_else(|_| ProgressStyle::default_bar())
    .progress_chars("=> ")
}

fn spinner_style() -> ProgressStyle {
    ProgressStyle::with_template(
        "{prefix:>16.bold} {spinner} {binary_bytes} {binary_bytes_per_sec}",
    )
    .unwrap_or_else(|_| ProgressStyle::default_spinner())
}

impl Observer for Terminal {
    fn wants_progress(&self) -> bool {
        self.json || self.bars
    }

    fn event(&self, event: &Event<'_>) {
        if let Event::Message(m) = event {
            self.above_bars(|| eprintln!("{m}"));
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
            Event::Progress { running } => return self.draw(running),
            Event::ProgressEnded => {
                let mut guard = self.progress.lock().unwrap_or_else(|e| e.into_inner());
                if let Some(bars) = guard.take() {
                    let _ = bars.multi.clear();
                }
                return;
            }
            _ => {}
        }
        self.above_bars(|| self.say(event));
    }
}

impl Terminal {
    /// An event as lines for people.
    fn say(&self, event: &Event<'_>) {
        match event {
            Event::RunStarted { run_id } => println!("run {run_id}"),
            Event::Recovered { note } => println!("recovered: {note}"),
            Event::Planned { plan, gathered } => {
                let _ = print_plan(
                    &mut std::io::stdout().lock(),
                    plan,
                    gathered,
                    self.colour,
                    self.zone,
                );
            }
            // The plan showed each action with its reason: the result
            // line names the action and says what it came to.
            Event::ActionFinished { outcome } => println!(
                "{} {} ({:.1}s)\n    {}",
                if outcome.ok {
                    paint(self.colour, "32", "done")
                } else {
                    paint(self.colour, "1;31", "FAILED")
                },
                outcome
                    .planned
                    .as_ref()
                    .map_or_else(|| outcome.action.clone(), |a| a.short_line()),
                outcome.seconds,
                outcome.detail,
            ),
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
                println!("daemon: applying at {}", format_time(self.zone, *at))
            }
            Event::DaemonSleeping { until } => {
                println!("daemon: next run at {}", format_time(self.zone, *until))
            }
            // People see an action when its result is known; progress is
            // drawn as bars.
            Event::ActionStarted { .. }
            | Event::Message(_)
            | Event::Progress { .. }
            | Event::ProgressEnded => {}
        }
    }
}

/// Prints a plan for people: notes, one line per action, compliance, a summary.
pub fn print_plan(
    out: &mut dyn Write,
    plan: &Plan,
    g: &Gathered,
    colour: bool,
    zone: chrono_tz::Tz,
) -> Result<()> {
    let notes = &g.notes;
    for n in notes {
        writeln!(out, "note: {n}")?;
    }
    for a in &plan.actions {
        writeln!(out, "{}", paint_action(colour, &a.line_in(zone)))?;
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
            paint(colour, "1;31", standing_word(c)),
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
