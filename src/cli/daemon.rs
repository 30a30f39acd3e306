//! `coffer daemon`: sleeps until the next time any policy is due, then
//! applies, forever. A missed fire time (the machine was off) is caught up
//! once at start, not once per missed fire: the plan sees one backup due.
//! One runner per policy directory (the runner lock), Ctrl-C ends it.

use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::{Result, anyhow};
use chrono::{DateTime, Utc};

use super::apply;
use super::backup::{EXIT_CANCELLED, install_cancel_handler};
use super::catalog::Location;
use super::{EXIT_OK, load_or_report};

/// Environment variable that makes the daemon's clock start at a given
/// instant and jump to each wake-up time instead of sleeping (for tests).
pub const FAKE_CLOCK_ENV: &str = "COFFER_FAKE_CLOCK";

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub location: Location,
    /// Stop after this many runs (default: never).
    #[arg(long)]
    pub max_runs: Option<u32>,
    #[arg(long)]
    pub allow_mass_prune: bool,
    #[arg(long)]
    pub no_mail: bool,
    /// Backups at once, in all.
    #[arg(long, default_value_t = 4)]
    pub parallel: usize,
}

/// The daemon's notion of now: real, or a fake one a test moves.
struct Clock {
    fake: Option<std::cell::Cell<DateTime<Utc>>>,
}

impl Clock {
    fn now(&self) -> DateTime<Utc> {
        self.fake.as_ref().map_or_else(Utc::now, |f| f.get())
    }

    /// Waits until `t` (or Ctrl-C); the fake clock just jumps.
    fn sleep_until(&self, t: DateTime<Utc>, cancel: &std::sync::atomic::AtomicBool) {
        if let Some(f) = &self.fake {
            f.set(t.max(f.get()));
            return;
        }
        while Utc::now() < t && !cancel.load(Ordering::SeqCst) {
            let left = (t - Utc::now()).to_std().unwrap_or_default();
            std::thread::sleep(left.min(Duration::from_secs(1)));
        }
    }
}

pub fn run(args: Args) -> Result<u8> {
    let cancel = install_cancel_handler();
    let fake = std::env::var(FAKE_CLOCK_ENV)
        .ok()
        .map(|t| {
            DateTime::parse_from_rfc3339(&t)
                .map(|d| std::cell::Cell::new(d.with_timezone(&Utc)))
                .map_err(|e| anyhow!("{FAKE_CLOCK_ENV}={t}: {e}"))
        })
        .transpose()?;
    let clock = Clock { fake };
    let mut runs = 0;
    // At start: catch up whatever is due now (once), then follow the schedules.
    let mut next = clock.now();
    let mut last_wake = clock.now();
    loop {
        clock.sleep_until(next, cancel);
        if cancel.load(Ordering::SeqCst) {
            return Ok(EXIT_CANCELLED);
        }
        println!(
            "daemon: applying at {}",
            clock.now().format("%Y-%m-%d %H:%M:%S UTC")
        );
        let code = apply::run_at(
            apply::Args {
                plan: None,
                location: Location {
                    state: args.location.state.clone(),
                    policy: args.location.policy.clone(),
                },
                allow_mass_prune: args.allow_mass_prune,
                no_mail: args.no_mail,
                parallel: args.parallel,
                json: false,
                action_timeout: "12h".into(),
            },
            &|| clock.now(),
        );
        match code {
            Ok(c) if c == EXIT_CANCELLED => return Ok(c),
            Ok(_) => {}
            // A failed run is reported and the daemon goes on.
            Err(e) => eprintln!("daemon: the run failed: {e:#}"),
        }
        runs += 1;
        if args.max_runs.is_some_and(|m| runs >= m) {
            return Ok(EXIT_OK);
        }
        // Policies may have changed in git meanwhile: read them again.
        let config =
            load_or_report(&args.location.policy).map_err(|_| crate::cli::InvalidPolicyDir)?;
        // Compliance reports whose schedule fired since the last wake-up.
        for n in config.notify.values() {
            let Some(s) = &n.compliance_schedule else {
                continue;
            };
            if s.next_after(last_wake).is_some_and(|t| t <= clock.now()) && !args.no_mail {
                let sent = super::catalog::open_catalog(
                    &super::catalog::catalog_path(&args.location, Some(&config))?,
                    Some(&config),
                )
                .and_then(|mut c| super::plan::gather(&config, &mut c))
                .and_then(|g| super::report::send_compliance(&config, &g, true, Some(&n.name)));
                if let Err(e) = sent {
                    eprintln!(
                        "daemon: the compliance report for `{}` failed: {e:#}",
                        n.name
                    );
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
        println!(
            "daemon: next run at {}",
            next.format("%Y-%m-%d %H:%M:%S UTC")
        );
    }
}
