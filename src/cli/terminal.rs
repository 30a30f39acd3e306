//! How the engine's events reach a terminal: the lines `text::event` makes
//! for people (results on stdout, warnings on stderr), one progress bar per
//! running backup on a terminal's stderr with those lines printed above the
//! bars, or newline-delimited JSON events on stdout (`--json`). Colour
//! marks the actions' symbols and the standings on a terminal, unless
//! `NO_COLOR` or `--color never`; this file decides when, `text` how.

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU8, Ordering};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::engine::observer::{Event, Observer};
use crate::text::{self, Line, Stream};

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

/// Sets `--color` for this process.
pub fn set_colour(choice: ColorChoice) {
    COLOUR.store(choice as u8, Ordering::Relaxed);
}

/// When to colour output (as `COLOUR` holds it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum ColorChoice {
    /// On a terminal, unless `NO_COLOR` is set.
    #[default]
    Auto = 0,
    Always = 1,
    Never = 2,
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
        // The bars of backups that ended go.
        bars.by_vm.retain(|vm, b| {
            let running = running.iter().any(|p| &p.vm == vm);
            if !running {
                b.finish_and_clear();
                bars.multi.remove(b);
            }
            running
        });
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
    ProgressStyle::with_template(text::PROGRESS_BAR)
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ")
}

fn spinner_style() -> ProgressStyle {
    ProgressStyle::with_template(text::PROGRESS_SPINNER)
        .unwrap_or_else(|_| ProgressStyle::default_spinner())
}

impl Observer for Terminal {
    fn wants_progress(&self) -> bool {
        self.json || self.bars
    }

    fn event(&self, event: &Event<'_>) {
        if let Event::Message(_) = event {
            self.above_bars(|| self.say(event));
            return;
        }
        if self.json {
            let lines = crate::json::event_text(event, chrono::Utc::now());
            if !lines.is_empty() {
                let _ = std::io::stdout().lock().write_all(lines.as_bytes());
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
    /// An event as lines for people, on the stream they belong to. A
    /// closed stream (`coffer apply | head`) loses the line, never the run:
    /// the runner's threads call this, and a panic there would stop them
    /// mid-action.
    fn say(&self, event: &Event<'_>) {
        let Some(Line { stream, text }) = text::event(event, self.colour, self.zone) else {
            return;
        };
        let _ = match stream {
            Stream::Stdout => std::io::stdout().lock().write_all(text.as_bytes()),
            Stream::Stderr => std::io::stderr().lock().write_all(text.as_bytes()),
        };
    }
}
