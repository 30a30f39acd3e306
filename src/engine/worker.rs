//! `coffer worker`: one of the runners that share the backups, copies,
//! drills and gc of a coordinator (`apply --distributed`) through a PostgreSQL
//! catalog. Each of its `parallel` threads, with a catalog connection of
//! its own, claims a row (`catalog::queue`), renews the claim's lease from
//! a heartbeat thread while it works, and closes the row with the outcome.
//! A claim that takes over a backup whose lease ran out first removes the
//! snapshot the earlier attempt left, exactly as an `apply` recovers a
//! killed run; that attempt's point was never committed. A copy or a drill
//! taken over is simply done again: a copy sends what the tier still
//! lacks and writes the same point, a drill reads the point again, a gc
//! collects what is still unused.
//!
//! The worker never takes the runner lock: the coordinator holds it for
//! the run, and the limits are counted in the database. A backup or a copy
//! writes under the catalog's maintenance lock held shared, wherever it
//! runs, so a gc or prune on any machine waits for it
//! (`runlock::MaintenanceLock`). Before it starts, a worker checks that each tier it
//! opens under the row's tier names is the repository the coordinator
//! opened (its id), so a local tier that is not shared storage is refused
//! rather than backed up into, copied from or drilled.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow};

use super::apply::backup::{BackupJob, backup_action_with_retries};
use super::apply::execute::{copy, drill, gc, session_in};
use super::apply::recover::{remove_run_snapshot, removed_note};
use super::cancel;
use super::observer::{Bytes, Event, Observer, Outcome};
use super::tiers::open_tier;
use crate::catalog::Catalog;
use crate::catalog::queue::Claimed;
use crate::plan::planner::Action;
use crate::policy::Config;
use crate::run::connect::Connected;

/// How a worker runs: the options of `coffer worker`.
#[derive(Debug, Clone, clap::Args)]
pub struct WorkerOptions {
    /// This worker's name in the queue and the run reports [default: HOST-PID].
    #[arg(long, default_value_t = worker_name(), hide_default_value = true)]
    pub name: String,
    /// Actions (backups, copies, drills) at once in this worker.
    #[arg(long, default_value_t = 2)]
    pub parallel: usize,
    /// How long a claimed action stays this worker's without renewal (it
    /// is renewed every third of it); a worker that dies loses its actions
    /// to the others after this long.
    #[arg(long, default_value = "60s", value_parser = crate::policy::units::parse_timeout)]
    pub lease: Duration,
    /// How often an idle worker asks for work.
    #[arg(long, default_value = "2s", value_parser = parse_poll)]
    pub poll: Duration,
    /// The longest one backup may take; it is then stopped, its snapshot
    /// removed, and it counts as failed.
    #[arg(long, default_value = "12h", value_parser = crate::policy::units::parse_timeout)]
    pub action_timeout: Duration,
    /// Stop after this long without work (default: run until Ctrl-C).
    #[arg(long, value_parser = crate::policy::units::parse_duration)]
    pub idle_exit: Option<Duration>,
}

/// `HOST-PID`, a worker's name by default.
fn worker_name() -> String {
    format!(
        "{}-{}",
        crate::policy::model::host_name(),
        std::process::id()
    )
}

/// How often to poll: at least every tenth of a second.
fn parse_poll(text: &str) -> Result<Duration, String> {
    crate::policy::units::parse_duration(text).map(|d| d.max(Duration::from_millis(100)))
}

impl WorkerOptions {
    /// The defaults, with the name `HOST-PID`.
    pub fn named_after_this_process() -> WorkerOptions {
        WorkerOptions {
            name: worker_name(),
            parallel: 2,
            lease: Duration::from_secs(60),
            poll: Duration::from_secs(2),
            action_timeout: Duration::from_secs(12 * 3600),
            idle_exit: None,
        }
    }
}

/// What a worker did before it stopped.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct WorkerSummary {
    pub done: usize,
    pub failed: usize,
    /// Backups whose lease this worker lost before it finished them (their
    /// outcome was not written; another worker redid them).
    pub lost: usize,
}

/// Runs a worker until Ctrl-C (or `idle_exit`).
pub fn run_worker(
    config: &Config,
    options: &WorkerOptions,
    observer: &dyn Observer,
) -> Result<WorkerSummary> {
    let at = &config.settings.catalog;
    let mut first = Catalog::open_at(at).with_context(|| format!("opening the catalog {at}"))?;
    first.require_shared("a worker")?;
    seen(&mut first, options)?;
    drop(first);
    observer.event(&Event::Message(format!(
        "worker {}: waiting for backups on {at} ({} at once, lease {})",
        options.name,
        options.parallel.max(1),
        crate::policy::units::format_duration(options.lease)
    )));
    let summaries: Vec<Result<WorkerSummary>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..options.parallel.max(1))
            .map(|_| s.spawn(|| worker_thread(config, options, observer)))
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(anyhow!("a worker thread panicked")))
            })
            .collect()
    });
    let mut total = WorkerSummary::default();
    for s in summaries {
        let s = s?;
        total.done += s.done;
        total.failed += s.failed;
        total.lost += s.lost;
    }
    Ok(total)
}

fn worker_thread(
    config: &Config,
    options: &WorkerOptions,
    observer: &dyn Observer,
) -> Result<WorkerSummary> {
    let at = &config.settings.catalog;
    let mut catalog = Catalog::open_at(at)?;
    let mut sessions: BTreeMap<String, Connected> = BTreeMap::new();
    let mut summary = WorkerSummary::default();
    let lease_ms = i64::try_from(options.lease.as_millis()).unwrap_or(i64::MAX);
    let mut idle_since = Instant::now();
    while !cancel::requested() {
        // A database that went away (a restart, the network) is waited
        // for: the worker says so and connects again.
        let claimed =
            seen(&mut catalog, options).and_then(|()| catalog.claim(&options.name, lease_ms));
        let claimed = match claimed {
            Ok(c) => c,
            Err(e) => {
                wait_for_catalog(&mut catalog, config, options, observer, &e.to_string());
                continue;
            }
        };
        let Some(claimed) = claimed else {
            if options.idle_exit.is_some_and(|d| idle_since.elapsed() >= d) {
                break;
            }
            sleep_unless_cancelled(options.poll);
            continue;
        };
        // The action as the observer hears of it (the terminal, the
        // worker's metrics), under this worker's name.
        let action: Option<Action> = serde_json::from_str(&claimed.work.action).ok();
        if let Some(action) = &action {
            observer.event(&Event::ActionStarted { action });
        }
        let finished = |ok: bool, detail: &str, seconds: f64, bytes: Option<(u64, u64)>| {
            let Some(action) = &action else {
                return;
            };
            let result = if ok {
                Ok(detail.to_string())
            } else {
                Err(anyhow!("{detail}"))
            };
            let bytes = bytes.map(|(read, stored)| Bytes { read, stored });
            let outcome = Outcome::of(action, seconds, result, bytes, Some(options.name.clone()));
            observer.event(&Event::ActionFinished { outcome: &outcome });
        };
        let job = Job {
            config,
            options,
            claimed: &claimed,
            observer,
        };
        let (ok, detail, seconds, bytes) = match do_claimed(&job, &mut sessions, &mut catalog) {
            Ok((detail, seconds, _, true)) => {
                summary.lost += 1;
                let why = format!(
                    "worker {}: lost the lease of {} (run {}) before it ended; its outcome is left to the worker that took it over: {detail}",
                    options.name,
                    claimed.work.what(),
                    claimed.work.run_id
                );
                finished(false, &why, seconds, None);
                idle_since = Instant::now();
                continue;
            }
            Ok((detail, seconds, bytes, _)) => (true, detail, seconds, bytes),
            Err((e, seconds)) => (false, format!("{e:#}"), seconds, None),
        };
        // The outcome must reach the catalog: a database that is away is
        // waited for, as for a claim. Meanwhile the lease may run out and
        // another worker redo the action; then this outcome is not written.
        let kept = loop {
            match catalog.finish_work(&claimed.work, &options.name, ok, &detail, seconds, bytes) {
                Ok(kept) => break kept,
                Err(e) if !cancel::requested() => {
                    let why = format!("recording the outcome: {e}");
                    wait_for_catalog(&mut catalog, config, options, observer, &why);
                }
                Err(e) => return Err(e.into()),
            }
        };
        if !kept {
            summary.lost += 1;
            let why = format!(
                "worker {}: {} (run {}) ended after its lease ran out; its outcome is left to the worker that took it over: {detail}",
                options.name,
                claimed.work.what(),
                claimed.work.run_id
            );
            finished(false, &why, seconds, None);
        } else {
            if ok {
                summary.done += 1;
            } else {
                summary.failed += 1;
            }
            finished(ok, &detail, seconds, bytes);
        }
        idle_since = Instant::now();
    }
    Ok(summary)
}

/// After the catalog failed (`why`): says so, waits a poll interval, and
/// connects again. A database that went away (a restart, the network) is
/// waited for, never a reason to exit.
fn wait_for_catalog(
    catalog: &mut Catalog,
    config: &Config,
    options: &WorkerOptions,
    observer: &dyn Observer,
    why: &str,
) {
    let at = &config.settings.catalog;
    observer.event(&Event::Message(format!(
        "worker {}: the catalog {at}: {why}; trying again",
        options.name
    )));
    sleep_unless_cancelled(options.poll);
    if let Ok(c) = Catalog::open_at(at) {
        *catalog = c;
    }
}

/// Tells the fleet this worker is alive.
fn seen(
    catalog: &mut Catalog,
    options: &WorkerOptions,
) -> Result<(), crate::catalog::CatalogError> {
    catalog.worker_seen(
        &options.name,
        &crate::policy::model::host_name(),
        std::process::id(),
    )
}

fn sleep_unless_cancelled(d: Duration) {
    let until = Instant::now() + d;
    while Instant::now() < until && !cancel::requested() {
        std::thread::sleep(Duration::from_millis(50));
    }
}

type Done = (String, f64, Option<(u64, u64)>, bool);

/// What an action a worker carried out came to: its detail, and for a
/// backup the bytes read and stored.
type Worked = (String, Option<(u64, u64)>);

/// One claimed row, and what its worker carries it out with.
#[derive(Clone, Copy)]
struct Job<'j> {
    config: &'j Config,
    options: &'j WorkerOptions,
    claimed: &'j Claimed,
    observer: &'j dyn Observer,
}

/// Checks that tier `tier` here is the repository the coordinator opened
/// (`id`): a tier every worker uses must be one repository for all.
fn same_repository(config: &Config, tier: &str, id: &str) -> Result<()> {
    let repo = open_tier(config, tier)?;
    if repo.config.id != id {
        anyhow::bail!(
            "tier `{tier}` here is repository {}, the coordinator's is {id}: a tier every worker \
             uses must be the same repository for all (a local tier must be shared storage \
             mounted at the same path)",
            repo.config.id,
        );
    }
    Ok(())
}

/// Runs `work` while a heartbeat renews the lease of `w`; `work` is told
/// through its flag when the lease was taken over. Answers its result and
/// whether the lease was lost meanwhile.
fn under_lease<T>(
    config: &Config,
    options: &WorkerOptions,
    w: &crate::catalog::queue::Work,
    work: impl FnOnce(&AtomicBool) -> Result<T>,
) -> (Result<T>, bool) {
    let lost = AtomicBool::new(false);
    let finished = AtomicBool::new(false);
    let lease_ms = i64::try_from(options.lease.as_millis()).unwrap_or(i64::MAX);
    let result = std::thread::scope(|s| {
        s.spawn(|| {
            let Ok(mut beat) = Catalog::open_at(&config.settings.catalog) else {
                return;
            };
            let every = options.lease / 3;
            let mut last = Instant::now();
            while !finished.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(50));
                if last.elapsed() < every {
                    continue;
                }
                last = Instant::now();
                let _ = seen(&mut beat, options);
                match beat.renew(w, &options.name, lease_ms) {
                    Ok(true) => {}
                    Ok(false) => {
                        lost.store(true, Ordering::SeqCst);
                        return;
                    }
                    // The database is away: the lease may run out; the
                    // outcome is written only if it did not.
                    Err(_) => {}
                }
            }
        });
        let r = work(&lost);
        finished.store(true, Ordering::SeqCst);
        r
    });
    (result, lost.load(Ordering::SeqCst))
}

/// Carries out one claimed row: a backup, a copy, a drill or a gc. Answers the
/// outcome's detail, seconds, bytes, and whether the lease was lost
/// meanwhile.
fn do_claimed(
    job: &Job<'_>,
    sessions: &mut BTreeMap<String, Connected>,
    catalog: &mut Catalog,
) -> std::result::Result<Done, (anyhow::Error, f64)> {
    let Job {
        config,
        options,
        claimed,
        observer,
    } = *job;
    let started = Instant::now();
    let fail = |e: anyhow::Error| (e, started.elapsed().as_secs_f64());
    let w = &claimed.work;
    let action: Action = serde_json::from_str(&w.action)
        .map_err(|e| fail(anyhow!("the queued action cannot be read: {e}")))?;
    observer.event(&Event::Message(format!(
        "worker {}: took {} (run {}, attempt {})",
        options.name,
        w.what(),
        w.run_id,
        w.attempt
    )));
    let ended = |(r, lost): (Result<Worked>, bool)| {
        let seconds = started.elapsed().as_secs_f64();
        let (detail, bytes) = r.map_err(|e| (e, seconds))?;
        Ok((detail, seconds, bytes, lost))
    };
    // A copy's, a drill's or a gc's end: no bytes read from a host.
    let no_bytes = |r: Result<String>| r.map(|detail| (detail, None));
    match &action {
        Action::Backup { source, tier, .. } => ended(
            do_backup(job, &action, (source, tier), sessions, catalog)
                .unwrap_or_else(|e| (Err(e), false)),
        ),
        Action::Copy {
            point, from, to, ..
        } => {
            let from_id = w.repo_from.as_deref().unwrap_or_default();
            same_repository(config, to, &w.repo_id)
                .and_then(|()| same_repository(config, from, from_id))
                .map_err(fail)?;
            ended(under_lease(config, options, w, |_| {
                no_bytes(copy(config, catalog, point, from, to, observer))
            }))
        }
        Action::Drill {
            policy,
            drill: name,
            point,
            tier,
            ..
        } => {
            same_repository(config, tier, &w.repo_id).map_err(fail)?;
            ended(under_lease(config, options, w, |_| {
                let what = (
                    policy.as_str(),
                    name.as_str(),
                    point.as_str(),
                    tier.as_str(),
                );
                no_bytes(drill(config, catalog, sessions, what, observer))
            }))
        }
        Action::Gc { tier, .. } => {
            same_repository(config, tier, &w.repo_id).map_err(fail)?;
            ended(under_lease(config, options, w, |_| {
                no_bytes(gc(config, tier))
            }))
        }
        other => Err(fail(anyhow!("not work for a worker: {}", other.line()))),
    }
}

/// The point of `vm` (of `source`) on `tier` that an earlier attempt
/// claimed at `since` committed, if any: a point of the VM named at or
/// after that claim, by the clock of the worker that named both. Under the
/// runner lock nothing else backs the VM up into the tier during the run.
fn earlier_point(
    config: &Config,
    conn: &Connected,
    tier: &str,
    source: &str,
    vm: &str,
    since: &str,
) -> Result<Option<String>> {
    let since = chrono::DateTime::parse_from_rfc3339(since)
        .with_context(|| format!("the earlier claim's time {since}"))?
        .with_timezone(&chrono::Utc);
    let Some(uuid) = conn.vm(vm)?.instance_uuid else {
        return Ok(None);
    };
    let repo = open_tier(config, tier)?;
    for p in repo.points_of_vm(&uuid)?.iter().rev() {
        let named = crate::repo::manifest::point_id_time(&p.point_id);
        if named.is_none_or(|t| t < since) {
            break;
        }
        let m = repo.read_manifest(p)?;
        if m.vm.name == vm && m.vm.source.as_deref() == Some(source) {
            return Ok(Some(p.point_id.clone()));
        }
    }
    Ok(None)
}

/// Carries out one claimed backup: cleans up after an earlier attempt,
/// checks the tier, reads under a renewed lease. Answers the result's
/// detail and bytes, and whether the lease was lost meanwhile; an error
/// of its setup, before anything was read.
fn do_backup(
    job: &Job<'_>,
    action: &Action,
    (source, tier): (&str, &str),
    sessions: &mut BTreeMap<String, Connected>,
    catalog: &mut Catalog,
) -> Result<(Result<Worked>, bool)> {
    let Job {
        config,
        options,
        claimed,
        observer,
    } = *job;
    let w = &claimed.work;
    let conn = session_in(config, sessions, source)?;
    // A point the earlier attempt committed before it lost its lease (its
    // worker cut off, or killed, between the commit and writing the
    // outcome): the VM has its point of this run, and is not backed up a
    // second time.
    let earlier = || -> Option<String> {
        let since = claimed.earlier_started.as_deref()?;
        earlier_point(config, conn, tier, source, &w.vm, since).unwrap_or_else(|e| {
            observer.event(&Event::Message(format!(
                "worker {}: could not look for a point of the earlier attempt of backup {}: {e:#}",
                options.name, w.vm
            )));
            None
        })
    };
    let done_before = |before: &str, point: &str| {
        let detail = format!(
            "point {point} was committed by worker {before} before its lease ran out; not backed up again"
        );
        (Ok((detail, None)), false)
    };
    if let Some(before) = &claimed.taken_from {
        let removed = remove_run_snapshot(conn, &w.vm, &w.run_id);
        let found = (same_repository(config, tier, &w.repo_id).ok()).and_then(|()| earlier());
        let committed = match &found {
            Some(p) => format!("; it had committed point {p}"),
            None => "; its point was never committed".to_string(),
        };
        let note = format!(
            "took over from worker {before}, whose lease ran out{}{committed}",
            removed_note(&w.run_id, removed)
        );
        observer.event(&Event::Message(format!("worker {}: {note}", options.name)));
        catalog.note_recovered(w, &note)?;
        if let Some(p) = found {
            return Ok(done_before(before, &p));
        }
    }
    same_repository(config, tier, &w.repo_id)?;
    // The fence: the point is committed only while the lease is this
    // worker's with a third of it still to run. A worker cut off from the
    // database, whose lease ran out and whose backup another worker took
    // over, then commits nothing: no second point of the VM. Asked on a
    // connection of its own, once, after the last byte was read.
    let fence = || -> std::result::Result<(), String> {
        // A taken-over backup whose earlier attempt committed meanwhile
        // (its commit was still under way at the takeover) adds nothing.
        if let (Some(before), Some(p)) = (&claimed.taken_from, earlier()) {
            return Err(format!(
                "worker {before}'s earlier attempt committed point {p} meanwhile; nothing was committed"
            ));
        }
        let margin = i64::try_from(options.lease.as_millis() / 3).unwrap_or(i64::MAX);
        let held = Catalog::open_at(&config.settings.catalog)
            .and_then(|mut c| c.holds(w, &options.name, margin))
            .map_err(|e| {
                format!(
                    "could not confirm that backup {} is still this worker's: {e}",
                    w.vm
                )
            })?;
        if held {
            Ok(())
        } else {
            Err(format!(
                "the lease of backup {} is no longer this worker's (another worker may have taken it over); nothing was committed",
                w.vm
            ))
        }
    };
    let (result, lost) = under_lease(config, options, w, |lost| {
        let job = BackupJob {
            config,
            conn,
            run_id: &w.run_id,
            action,
            progress: None,
            limit: options.action_timeout,
            read_whole_disk: w.read_whole,
            fence: Some(&fence),
            lost: Some(lost),
        };
        // The lease is renewed while the backup waits for a gc or prune
        // on another machine to end.
        backup_action_with_retries(&job, observer)
    });
    let done = match (result, &claimed.taken_from) {
        (Ok(done), _) => done,
        // Fenced, or failed, while the earlier attempt's point exists:
        // the VM has its point of this run.
        (Err(e), Some(before)) => match earlier() {
            Some(p) => return Ok(done_before(before, &p)),
            None => return Ok((Err(e), lost)),
        },
        (Err(e), None) => return Ok((Err(e), lost)),
    };
    let _ = catalog.record_snapshot_lifetime(&done.lifetime);
    let bytes = Some((done.bytes.read, done.bytes.stored));
    Ok((Ok((done.detail, bytes)), lost))
}

/// The workers of a shared catalog and the backups they hold now, for
/// `coffer status`; `None` for a catalog that is one machine's.
pub fn fleet(
    config: &Config,
) -> Result<
    Option<(
        Vec<crate::catalog::queue::WorkerRecord>,
        Vec<crate::catalog::queue::Work>,
    )>,
> {
    if !matches!(
        config.settings.catalog,
        crate::policy::model::CatalogLocation::Postgres { .. }
    ) {
        return Ok(None);
    }
    let catalog = Catalog::open_at(&config.settings.catalog)?;
    Ok(Some((catalog.workers()?, catalog.claimed_work()?)))
}
