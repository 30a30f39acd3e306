//! The daemon: sleeps until the next time any policy (or a notifier's
//! compliance schedule) is due, then applies, forever. A missed fire time
//! (the machine was off) is caught up once at start, not once per missed
//! fire: the plan sees one backup due. Policies are read again after every
//! run (they may have changed in git). One runner per policy directory (the
//! runner lock); a cancel ends it.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Result, anyhow};
use chrono::{DateTime, Utc};

use super::apply::ApplyOptions;
use super::cancel;
use super::observer::{Event, Observer};
use super::workspace::Workspace;
use crate::policy::Config;

/// Environment variable that makes the daemon's clock start at a given
/// instant and jump to each wake-up time instead of sleeping (for tests).
pub const FAKE_CLOCK_ENV: &str = "COFFER_FAKE_CLOCK";

/// The instant `FAKE_CLOCK_ENV` starts the clock at, when it is set.
pub fn fake_clock() -> Result<Option<DateTime<Utc>>> {
    let Ok(t) = std::env::var(FAKE_CLOCK_ENV) else {
        return Ok(None);
    };
    crate::policy::units::parse_time(&t)
        .map(Some)
        .map_err(|e| anyhow!("{FAKE_CLOCK_ENV}={t}: {e}"))
}

#[derive(Debug, Clone, Default)]
pub struct DaemonOptions {
    /// The state directory, when not the policy's.
    pub state: Option<PathBuf>,
    /// How each run applies (`plan_file` is ignored).
    pub apply: ApplyOptions,
    /// Stop after this many runs (default: never).
    pub max_runs: Option<u32>,
    /// Start the clock here and jump instead of sleeping (tests).
    pub fake_clock: Option<DateTime<Utc>>,
}

/// Why the daemon stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DaemonEnd {
    Cancelled,
    MaxRuns,
}

/// The daemon's notion of now: real, or a fake one a test moves.
struct Clock {
    fake: Option<std::cell::Cell<DateTime<Utc>>>,
}

impl Clock {
    fn now(&self) -> DateTime<Utc> {
        self.fake.as_ref().map_or_else(Utc::now, |f| f.get())
    }

    /// Waits until `t` (or a cancel); the fake clock just jumps.
    fn sleep_until(&self, t: DateTime<Utc>) {
        if let Some(f) = &self.fake {
            f.set(t.max(f.get()));
            return;
        }
        while Utc::now() < t && !cancel::requested() {
            let left = (t - Utc::now()).to_std().unwrap_or_default();
            std::thread::sleep(left.min(Duration::from_secs(1)));
        }
    }
}

/// Runs the daemon. `load` reads the policy directory (again before every
/// run); a run that fails is told to the observer and the daemon goes on.
pub fn run_daemon(
    load: &dyn Fn() -> Result<Config>,
    options: &DaemonOptions,
    observer: &dyn Observer,
) -> Result<DaemonEnd> {
    let clock = Clock {
        fake: options.fake_clock.map(std::cell::Cell::new),
    };
    let say = |m: String| observer.event(&Event::Message(m));
    let apply = ApplyOptions {
        plan_file: None,
        ..options.apply.clone()
    };
    let mut runs = 0;
    // At start: catch up whatever is due now (once), then follow the schedules.
    let mut next = clock.now();
    let mut last_wake = clock.now();
    loop {
        clock.sleep_until(next);
        if cancel::requested() {
            return Ok(DaemonEnd::Cancelled);
        }
        observer.event(&Event::DaemonApplying { at: clock.now() });
        let run = load()
            .and_then(|config| Workspace::open_for_run(config, options.state.as_deref(), observer))
            .and_then(|mut ws| ws.apply(&apply, &|| clock.now()));
        match run {
            Ok(r) if r.cancelled => return Ok(DaemonEnd::Cancelled),
            Ok(_) => {}
            // A failed run is reported and the daemon goes on.
            Err(e) => say(format!("daemon: the run failed: {e:#}")),
        }
        runs += 1;
        if options.max_runs.is_some_and(|m| runs >= m) {
            return Ok(DaemonEnd::MaxRuns);
        }
        // Policies may have changed in git meanwhile: read them again.
        let config = load()?;
        // Compliance reports whose schedule fired since the last wake-up.
        for n in config.notify.values() {
            let Some(s) = &n.compliance_schedule else {
                continue;
            };
            if s.next_after(last_wake).is_some_and(|t| t <= clock.now()) && apply.mail {
                let sent = Workspace::open(config.clone(), options.state.as_deref(), observer)
                    .and_then(|mut ws| ws.compliance_report(true, Some(&n.name)));
                if let Err(e) = sent {
                    say(format!(
                        "daemon: the compliance report for `{}` failed: {e:#}",
                        n.name
                    ));
                }
            }
        }
        let after = clock.now();
        last_wake = after;
        next = config
            .policies
            .values()
            .filter_map(|p| p.schedule.next_after(after))
            .chain(
                config
                    .notify
                    .values()
                    .filter_map(|n| n.compliance_schedule.as_ref()?.next_after(after)),
            )
            .min()
            .ok_or_else(|| anyhow!("no policy has a next fire time"))?;
        tracing::info!(until = %next, "daemon sleeping");
        observer.event(&Event::DaemonSleeping { until: next });
    }
}
