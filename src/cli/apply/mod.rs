//! `coffer apply`: plan, then carry the plan out, one action at a time:
//! snapshot hygiene and backups first; then the catalog is refreshed and the
//! plan made again, so the points just taken are copied, retention prunes
//! what no tier keeps, gc frees it; then due verify drills run on the copies. Every result
//! is printed, a run report is written under the report directory, and the
//! notifiers are mailed as their `send` rules say. One failed VM never stops
//! the others; Ctrl-C stops starting actions, lets the running backup remove
//! its snapshot, and exits 130.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use chrono::Utc;

use super::backup::{EXIT_CANCELLED, install_cancel_handler, new_run_id};
use super::catalog::{Location, catalog_path, open_catalog, open_tier};
use super::load_or_report;
use super::plan::{Fingerprint, SavedPlan, gather, make_plan, print_plan};
use crate::catalog::{Verification, VerificationKind, tierlog};
use crate::plan::planner::Action;
use crate::policy::Config;
use crate::policy::model::{DrillKind, SendWhen};
use crate::repo::ops;
use crate::report::mail::{self, Retry};
use crate::run::connect::{self, Connected};
use crate::run::drill;
use crate::run::restore::HostTarget;
use crate::run::vm_backup::{self, VmBackupError};

mod backup;
mod side_by_side;

use backup::{ACTION_TIMEOUT_SECS, backup_action_with_retries};
/// `--json`: newline-delimited events on stdout instead of lines for people.
static JSON_EVENTS: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

fn json_events() -> bool {
    JSON_EVENTS.load(Ordering::Relaxed)
}

/// One event line (`--json`).
fn event(v: serde_json::Value) {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{v}");
}

/// Says that an action starts (`--json` only: people see its result).
fn started_event(action: &Action) {
    if json_events() {
        event(serde_json::json!({
            "event": "action-started",
            "action": action.line(),
            "detail": action,
        }));
    }
}

/// Exit code of a run in which some actions failed.
pub const EXIT_PARTIAL: u8 = 1;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// A plan saved by `coffer plan --out FILE`: carry out those of its
    /// actions the plan made now also holds; refused when it was edited,
    /// when the policies or the catalog changed since, or when it lists an
    /// action the plan made now does not.
    pub plan: Option<std::path::PathBuf>,
    #[command(flatten)]
    pub location: Location,
    /// Let retention prune more than half of a tier's points in one run
    /// (without it, one run prunes the oldest half and the rest waits).
    #[arg(long)]
    pub allow_mass_prune: bool,
    /// Do not send email, even when the notifiers' rules say to.
    #[arg(long)]
    pub no_mail: bool,
    /// The longest one backup may take; it is then stopped, its snapshot
    /// removed, and it counts as failed.
    #[arg(long, default_value = "12h")]
    pub action_timeout: String,
    /// Newline-delimited JSON events (run, plan, action started / finished /
    /// failed, mail) on stdout instead of lines for people.
    #[arg(long)]
    pub json: bool,
    /// Backups at once, in all (each source's `max_per_host` and
    /// `max_per_datastore` limit them further).
    #[arg(long, default_value_t = 4)]
    pub parallel: usize,
}

/// Each VM's datastores, by (source, VM name), for the per-datastore limit.
fn datastores_of(g: &super::plan::Gathered) -> BTreeMap<(String, String), Vec<String>> {
    g.inventory
        .iter()
        .map(|(source, vm)| {
            let mut ds: Vec<String> = vm
                .disks
                .iter()
                .filter_map(|d| crate::vsphere::datastore::DatastorePath::parse(&d.file_name))
                .map(|p| p.datastore)
                .collect();
            ds.sort();
            ds.dedup();
            ((source.clone(), vm.name.clone()), ds)
        })
        .collect()
}

/// What one action came to.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub action: String,
    pub ok: bool,
    pub detail: String,
    pub seconds: f64,
}

struct Runner<'a> {
    config: &'a Config,
    run_id: String,
    seq: i64,
    sessions: BTreeMap<String, Connected>,
    outcomes: Vec<Outcome>,
    /// (VM, tier) of copies that failed in this run: retention counted the
    /// copied point when it chose the tier's prunes, so those prunes wait.
    failed_copies: BTreeSet<(String, String)>,
}

impl Runner<'_> {
    fn session(&mut self, source: &str) -> Result<&Connected> {
        if !self.sessions.contains_key(source) {
            let s = self
                .config
                .sources
                .get(source)
                .ok_or_else(|| anyhow!("no source `{source}`"))?;
            let c = connect::connect(s, &self.config.settings.state_dir)?;
            self.sessions.insert(source.to_string(), c);
        }
        Ok(&self.sessions[source])
    }

    fn record(&mut self, action: &Action, started: Instant, result: Result<String>) {
        self.outcomes.push(outcome_of(action, started, result));
    }
}

/// An action's outcome, printed as it is known.
fn outcome_of(action: &Action, started: Instant, result: Result<String>) -> Outcome {
    {
        let outcome = match result {
            Ok(detail) => Outcome {
                action: action.line(),
                ok: true,
                detail,
                seconds: started.elapsed().as_secs_f64(),
            },
            Err(e) => Outcome {
                action: action.line(),
                ok: false,
                detail: format!("{e:#}"),
                seconds: started.elapsed().as_secs_f64(),
            },
        };
        if json_events() {
            event(serde_json::json!({
                "event": if outcome.ok { "action-finished" } else { "action-failed" },
                "action": outcome.action,
                "detail": outcome.detail,
                "seconds": outcome.seconds,
            }));
        } else {
            println!(
                "{} {}\n    {} ({:.1}s)",
                if outcome.ok { "done" } else { "FAILED" },
                outcome.action,
                outcome.detail,
                outcome.seconds
            );
        }
        outcome
    }
}

impl Runner<'_> {
    /// Runs one action with its journal entries around it; answers whether
    /// it was cancelled (Ctrl-C).
    fn run_action(&mut self, action: &Action, catalog: &mut crate::catalog::Catalog) -> bool {
        self.seq += 1;
        let json = serde_json::to_value(action).unwrap_or_default();
        let kind = json["action"].as_str().unwrap_or("action").to_string();
        let reason = json["reason"].as_str().unwrap_or("").to_string();
        let id =
            match catalog.action_started(&self.run_id, self.seq, &kind, &json.to_string(), &reason)
            {
                Ok(id) => Some(id),
                Err(e) => {
                    eprintln!("coffer: the journal could not record the action: {e}");
                    None
                }
            };
        started_event(action);
        let started = Instant::now();
        let result = self.execute(action, catalog);
        if let (Action::Copy { vm, to, .. }, Err(_)) = (action, &result) {
            self.failed_copies.insert((vm.clone(), to.clone()));
        }
        let cancelled = matches!(
            result
                .as_ref()
                .err()
                .and_then(|e| e.downcast_ref::<VmBackupError>()),
            Some(VmBackupError::Cancelled { .. })
        );
        if let Some(id) = id {
            let (ok, text) = match &result {
                Ok(t) => (true, t.clone()),
                Err(e) => (false, format!("{e:#}")),
            };
            let _ = catalog.action_finished(id, ok, &text);
        }
        self.record(action, started, result);
        cancelled
    }

    /// Cleans up after actions an earlier run started and never finished
    /// (it was killed, or the machine went down): a backup's snapshot is
    /// removed (its point was never committed, so nothing counts it); the
    /// action is closed as interrupted.
    fn recover(&mut self, catalog: &mut crate::catalog::Catalog) -> Result<Vec<String>> {
        let mut notes = Vec::new();
        for u in catalog.unfinished_actions()? {
            let action: Option<Action> = serde_json::from_str(&u.target).ok();
            let mut note = format!(
                "run {} stopped during {} {}",
                u.run_id,
                u.kind,
                action.as_ref().map(Action::line).unwrap_or_default()
            );
            if let Some(Action::Backup { source, vm, .. }) = &action {
                let snap_name = vm_backup::snapshot_name(&u.run_id);
                let removed = self.session(source).and_then(|conn| {
                    let record = conn.session.list_vms()?.into_iter().find(|v| &v.name == vm);
                    let snap = record.and_then(|r| {
                        r.all_snapshots()
                            .into_iter()
                            .find(|s| s.name == snap_name)
                            .map(|s| s.snapshot.clone())
                    });
                    match snap {
                        Some(s) => {
                            conn.session
                                .remove_snapshot(&s, Duration::from_secs(30 * 60))?;
                            Ok(true)
                        }
                        None => Ok(false),
                    }
                });
                match removed {
                    Ok(true) => note.push_str(&format!("; removed its snapshot {snap_name}")),
                    Ok(false) => note.push_str("; it left no snapshot"),
                    Err(e) => note.push_str(&format!(
                        "; could not remove its snapshot {snap_name}: {e:#}"
                    )),
                }
                note.push_str("; its point was never committed");
            }
            catalog.mark_interrupted(&u, "interrupted: coffer stopped during the action")?;
            notes.push(note);
        }
        Ok(notes)
    }

    fn execute(
        &mut self,
        action: &Action,
        catalog: &mut crate::catalog::Catalog,
    ) -> Result<String> {
        let config = self.config;
        match action {
            Action::RemoveSnapshot {
                source,
                vm,
                snapshot,
                ..
            } => {
                let conn = self.session(source)?;
                let record = conn
                    .session
                    .list_vms()?
                    .into_iter()
                    .find(|v| &v.name == vm)
                    .ok_or_else(|| anyhow!("VM {vm} is gone"))?;
                let snap = record
                    .all_snapshots()
                    .into_iter()
                    .find(|s| &s.name == snapshot)
                    .map(|s| s.snapshot.clone())
                    .ok_or_else(|| anyhow!("snapshot {snapshot} is already gone"))?;
                conn.session
                    .remove_snapshot(&snap, Duration::from_secs(30 * 60))?;
                Ok(format!("removed snapshot {snapshot}"))
            }
            Action::Backup { source, tier, .. } => {
                let run_id = self.run_id.clone();
                let conn = self.session(source)?;
                let detail = backup_action_with_retries(config, conn, &run_id, action, None)?;
                if let Ok(repo) = open_tier(config, tier) {
                    let _ = catalog.refresh_tier(tier, &repo);
                }
                Ok(detail)
            }
            Action::Copy {
                point, from, to, ..
            } => {
                let src = open_tier(config, from)?;
                let dst = open_tier(config, to)?;
                let p = src.find_point(point)?;
                let threads = super::threads();
                let (_, r) = ops::copy_point(&src, &dst, &p, threads)?;
                let _ = catalog.refresh_tier(to, &dst);
                Ok(format!(
                    "{} chunks sent ({}), {} already there",
                    r.chunks_sent,
                    crate::policy::units::format_size(r.bytes_sent),
                    r.chunks_present
                ))
            }
            Action::Prune {
                vm, point, tier, ..
            } => {
                if self.failed_copies.contains(&(vm.clone(), tier.clone())) {
                    anyhow::bail!(
                        "deferred: a copy of a newer point of {vm} to tier `{tier}` failed in this \
                         run, and retention counted that point when it chose this prune"
                    );
                }
                let repo = open_tier(config, tier)?;
                let p = repo.find_point(point)?;
                ops::prune_point(&repo, &p)?;
                let _ = catalog.refresh_tier(tier, &repo);
                Ok("pruned".into())
            }
            Action::Gc { tier, .. } => {
                let repo = open_tier(config, tier)?;
                let r = ops::gc(&repo, Duration::from_secs(3600), false)?;
                Ok(format!(
                    "{} chunks deleted, {} freed, {} stale locks and {} empty directories removed{}",
                    r.chunks_deleted,
                    crate::policy::units::format_size(r.bytes_freed),
                    r.stale_locks_removed,
                    r.empty_dirs_removed,
                    if r.chunks_locked > 0 {
                        format!(", {} still locked", r.chunks_locked)
                    } else {
                        String::new()
                    }
                ))
            }
            Action::Drill {
                policy,
                drill,
                point,
                tier,
                ..
            } => {
                let d = config.policies[policy]
                    .drills
                    .iter()
                    .find(|d| &d.name == drill)
                    .ok_or_else(|| anyhow!("no drill {drill}"))?;
                let started = Utc::now();
                let repo = open_tier(config, tier)?;
                let p = repo.find_point(point)?;
                let threads = super::threads();
                let scratch = config.settings.state_dir.join("drills");
                std::fs::create_dir_all(&scratch)?;
                let (kind, o) = match d.kind {
                    DrillKind::Verify => {
                        let r = ops::verify(&repo, Some(std::slice::from_ref(&p)), None, threads)?;
                        let detail = if r.ok() {
                            format!(
                                "data verified: {} chunks ({}) read back and proven",
                                r.chunks_checked,
                                crate::policy::units::format_size(r.bytes_checked)
                            )
                        } else {
                            // Damaged chunks go to quarantine, so a copy from
                            // a healthy tier can put them back.
                            let moved = ops::quarantine(&repo, &r.bad_chunks)?;
                            format!(
                                "{} damaged chunks (moved to quarantine/: {moved}); the copy on `{tier}` is marked bad",
                                r.bad_chunks.len()
                            )
                        };
                        let o = drill::DrillOutcome {
                            ok: r.ok(),
                            detail,
                            data_ok: Some(r.ok()),
                            guest_ok: None,
                            guest_detail: None,
                            restore_seconds: None,
                        };
                        (VerificationKind::Verify, o)
                    }
                    DrillKind::Restore => {
                        let m = repo.read_manifest(&p)?;
                        let o = drill::restore_drill(&repo, &m, d, &scratch, threads);
                        (VerificationKind::Restore, o)
                    }
                    DrillKind::Boot => {
                        let m = repo.read_manifest(&p)?;
                        let host = d
                            .host
                            .clone()
                            .ok_or_else(|| anyhow!("boot drill {drill} names no host"))?;
                        let conn = self.session(&host)?;
                        let target = HostTarget::esxi(conn, "datastore1");
                        let o = drill::boot_drill(&repo, &m, d, &target, &scratch, threads);
                        (VerificationKind::Boot, o)
                    }
                };
                // Data and guest checks are recorded as separate facts: only
                // the data fact can mark the copy damaged.
                let verification = Verification {
                    kind,
                    point_id: point.clone(),
                    tier: tier.clone(),
                    drill: Some(drill.clone()),
                    started,
                    finished: Some(Utc::now()),
                    ok: Some(o.ok),
                    detail: Some(o.detail.clone()),
                    data_ok: o.data_ok,
                    guest_ok: o.guest_ok,
                    guest_detail: o.guest_detail.clone(),
                    restore_seconds: o.restore_seconds,
                };
                catalog.record_verification(&verification)?;
                // A rebuilt catalog finds it again in the tier's log.
                if let Err(e) =
                    tierlog::append(&repo, &tierlog::LogEvent::verification(&verification))
                {
                    eprintln!("coffer: could not log drill {drill} on tier `{tier}`: {e}");
                }
                if o.ok {
                    Ok(match o.restore_seconds {
                        Some(s) => format!("{} (RTO {s:.1}s)", o.detail),
                        None => o.detail,
                    })
                } else {
                    anyhow::bail!("{}", o.detail)
                }
            }
            Action::Wait { .. } | Action::KeepBlocked { .. } | Action::Alert { .. } => {
                Ok(String::new())
            }
        }
    }
}

/// A tier without a repository would fail every backup to it one by one:
/// refuse the run up front and name the command that creates them all.
fn refuse_uninitialised_tiers(config: &Config, dir: &std::path::Path) -> Result<()> {
    let missing: Vec<&str> = config
        .tiers
        .keys()
        .filter(|name| {
            open_tier(config, name).is_err_and(|e| {
                e.chain().any(|c| {
                    matches!(
                        c.downcast_ref::<crate::repo::RepoError>(),
                        Some(crate::repo::RepoError::NotARepository(_))
                    )
                })
            })
        })
        .map(String::as_str)
        .collect();
    if !missing.is_empty() {
        bail!(
            "{} no repository yet: {}; create them with `coffer repo init --all -p {}`, then run apply again",
            if missing.len() == 1 {
                "this tier has"
            } else {
                "these tiers have"
            },
            missing
                .iter()
                .map(|n| format!("`{n}`"))
                .collect::<Vec<_>>()
                .join(", "),
            dir.display()
        );
    }
    Ok(())
}

pub fn run(args: Args) -> Result<u8> {
    run_at(args, &Utc::now)
}

/// `apply` with the planning clock given (the daemon's, which a test can
/// set).
pub fn run_at(args: Args, clock: &dyn Fn() -> chrono::DateTime<Utc>) -> Result<u8> {
    let cancel = install_cancel_handler();
    let config = load_or_report(&args.location.policy).map_err(|_| crate::cli::InvalidPolicyDir)?;
    crate::cli::check_secrets(&config)?;
    refuse_uninitialised_tiers(&config, &args.location.policy.dir)?;
    let path = catalog_path(&args.location, Some(&config))?;
    let mut catalog = open_catalog(&path, Some(&config))?;
    let run_id = new_run_id();
    let _lock = crate::run::runlock::RunnerLock::take(
        &config.settings.state_dir,
        &format!("coffer apply, run {run_id}"),
    )?;
    JSON_EVENTS.store(args.json, Ordering::Relaxed);
    // A second Ctrl-C: once no backup holds a snapshot, stop at once. A copy
    // or gc cut short leaves nothing counted (manifests are written last);
    // the journal tells the next run what was interrupted.
    std::thread::spawn(|| {
        loop {
            if super::backup::ABORT.load(Ordering::SeqCst)
                && super::backup::SNAPSHOTS_OPEN.load(Ordering::SeqCst) == 0
            {
                eprintln!("coffer: aborted by a second Ctrl-C; no snapshot is left open");
                std::process::exit(i32::from(EXIT_CANCELLED));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    });
    let timeout = crate::policy::units::parse_duration(&args.action_timeout)
        .map_err(|e| anyhow!("--action-timeout: {e}"))?;
    ACTION_TIMEOUT_SECS.store(timeout.as_secs().max(1), Ordering::Relaxed);
    if args.json {
        event(serde_json::json!({ "event": "run-started", "run_id": run_id }));
    } else {
        println!("run {run_id}");
    }
    let run_started = Utc::now();
    catalog.start_run(&run_id, "apply")?;
    let mut runner = Runner {
        config: &config,
        run_id: run_id.clone(),
        seq: 0,
        sessions: BTreeMap::new(),
        outcomes: Vec::new(),
        failed_copies: BTreeSet::new(),
    };
    for note in runner.recover(&mut catalog)? {
        if args.json {
            event(serde_json::json!({ "event": "recovered", "note": note }));
        } else {
            println!("recovered: {note}");
        }
    }
    // The phase an action runs in: hygiene and backups; copies, prunes and
    // gc; drills on the copies.
    let phase_of = |a: &Action| match a {
        Action::RemoveSnapshot { .. } | Action::Backup { .. } => Some(1),
        Action::Copy { .. } | Action::Prune { .. } | Action::Gc { .. } => Some(2),
        Action::Drill { .. } => Some(3),
        _ => None,
    };
    // A saved plan is checked three ways before anything runs: its actions
    // are the ones it was saved with, the policies and the catalog are as
    // they were, and the plan made now holds every action it lists. While
    // it runs, each phase is planned again and only the actions both plans
    // hold are carried out (the fresh ones: their safety floors checked
    // now), so an edited or stale file can never add work.
    let saved = match &args.plan {
        Some(file) => {
            let text = std::fs::read_to_string(file)
                .with_context(|| format!("reading the plan {}", file.display()))?;
            let saved: SavedPlan = serde_json::from_str(&text).with_context(|| {
                format!(
                    "{} is not a plan saved by `coffer plan --out`",
                    file.display()
                )
            })?;
            if saved.format != crate::plan::planner::PLAN_FORMAT {
                anyhow::bail!(
                    "plan format {} is not {}",
                    saved.format,
                    crate::plan::planner::PLAN_FORMAT
                );
            }
            if !saved.fingerprint.seals(saved.now, &saved.actions)? {
                anyhow::bail!(
                    "refusing the plan in {}: it was changed after `coffer plan --out` saved it (its actions do not match its fingerprint), or an older coffer saved it; run `coffer plan --out {}` again and review it",
                    file.display(),
                    file.display()
                );
            }
            let gathered = gather(&config, &mut catalog)?;
            let changes = saved
                .fingerprint
                .changes(&Fingerprint::of(&config, &gathered)?);
            if !changes.is_empty() {
                eprintln!(
                    "the plan in {} is stale; what changed since it was made:",
                    file.display()
                );
                for c in &changes {
                    eprintln!("  {c}");
                }
                anyhow::bail!(
                    "refusing a stale plan: run `coffer plan --out {}` again",
                    file.display()
                );
            }
            let fresh = make_plan(&config, &gathered, clock(), args.allow_mass_prune);
            let fresh_ids: std::collections::BTreeSet<Vec<&str>> =
                fresh.actions.iter().filter_map(Action::identity).collect();
            let foreign: Vec<&Action> = saved
                .actions
                .iter()
                .filter(|a| a.identity().is_some_and(|id| !fresh_ids.contains(&id)))
                .collect();
            if !foreign.is_empty() {
                eprintln!(
                    "the plan in {} holds actions the plan made now does not:",
                    file.display()
                );
                for a in &foreign {
                    eprintln!("  {}", a.line());
                }
                anyhow::bail!(
                    "refusing the plan in {}: it was edited or is stale, and nothing of it was carried out; run `coffer plan --out {}` again",
                    file.display(),
                    file.display()
                );
            }
            Some(saved)
        }
        None => None,
    };
    let saved_ids: Option<std::collections::BTreeSet<Vec<&str>>> = saved
        .as_ref()
        .map(|s| s.actions.iter().filter_map(Action::identity).collect());
    // Runs one phase's actions: backups side by side within the limits,
    // everything else one at a time.
    let run_phase = |runner: &mut Runner<'_>,
                     catalog: &mut crate::catalog::Catalog,
                     actions: Vec<&Action>,
                     datastores: &BTreeMap<(String, String), Vec<String>>| {
        let (backups, others): (Vec<&Action>, Vec<&Action>) = actions
            .into_iter()
            .partition(|a| matches!(a, Action::Backup { .. }));
        for action in others {
            if cancel.load(Ordering::SeqCst) || runner.run_action(action, catalog) {
                return;
            }
        }
        if !backups.is_empty() && !cancel.load(Ordering::SeqCst) {
            runner.run_backups(&backups, datastores, args.parallel, catalog, cancel);
        }
    };
    // Plan, run a phase, plan again for the next, so the points just taken
    // are copied and drilled in the same run. With a saved plan, only what
    // it also holds runs: the points just taken are not copied by this run.
    for phase in [1, 2, 3] {
        let gathered = gather(&config, &mut catalog)?;
        let plan = make_plan(&config, &gathered, clock(), args.allow_mass_prune);
        if saved.is_some() {
            // The reviewed plan was printed when it was saved.
        } else if phase == 1 && args.json {
            event(serde_json::json!({
                "event": "plan",
                "notes": gathered.notes,
                "actions": plan.actions,
            }));
        } else if phase == 1 {
            print_plan(&mut std::io::stdout().lock(), &plan, &gathered)?;
        }
        let actions = plan
            .actions
            .iter()
            .filter(|a| phase_of(a) == Some(phase))
            .filter(|a| match (&saved_ids, a.identity()) {
                (None, _) => true,
                (Some(ids), Some(id)) => ids.contains(&id),
                (Some(_), None) => false,
            })
            .collect();
        run_phase(
            &mut runner,
            &mut catalog,
            actions,
            &datastores_of(&gathered),
        );
        if cancel.load(Ordering::SeqCst) {
            break;
        }
    }
    // The standing after the run, for the report.
    let gathered = gather(&config, &mut catalog)?;
    let after = make_plan(&config, &gathered, clock(), args.allow_mass_prune);
    let cancelled = cancel.load(Ordering::SeqCst);
    let mail_body = super::report::run_mail(
        &config,
        &run_id,
        &after,
        &gathered,
        &runner.outcomes,
        cancelled,
    )?;
    std::fs::create_dir_all(&config.settings.report_dir)
        .with_context(|| format!("creating {}", config.settings.report_dir.display()))?;
    let base = config.settings.report_dir.join(format!("run-{run_id}"));
    std::fs::write(base.with_extension("txt"), &mail_body.text)?;
    std::fs::write(base.with_extension("html"), &mail_body.html)?;
    let failed = runner.outcomes.iter().any(|o| !o.ok);
    let outcome = if cancelled {
        "cancelled"
    } else if failed {
        "partial"
    } else {
        "success"
    };
    let _ = catalog.finish_run(&run_id, outcome);
    // Also kept on the tiers, for a rebuilt catalog.
    let finished = tierlog::LogEvent::RunFinished {
        run_id: run_id.clone(),
        command: "apply".into(),
        started: run_started,
        finished: Utc::now(),
        outcome: outcome.into(),
    };
    for name in config.tiers.keys() {
        if let Err(e) = open_tier(&config, name).and_then(|r| Ok(tierlog::append(&r, &finished)?)) {
            eprintln!("coffer: could not log the run's outcome on tier `{name}`: {e:#}");
        }
    }
    let breach = after.compliance.iter().any(|c| !c.violations.is_empty());
    let mut out = std::io::stdout().lock();
    let mut said = |human: String, json: serde_json::Value| -> Result<()> {
        if args.json {
            event(json);
        } else {
            writeln!(out, "{human}")?;
        }
        Ok(())
    };
    said(
        format!(
            "{}\nreport: {}.txt and .html",
            mail_body.subject,
            base.display()
        ),
        serde_json::json!({
            "event": "run-finished",
            "run_id": run_id,
            "subject": mail_body.subject,
            "failed": failed,
            "cancelled": cancelled,
            "report": base.with_extension("txt"),
        }),
    )?;
    if !args.no_mail {
        for n in config.notify.values() {
            let wanted = n.send.iter().any(|w| match w {
                SendWhen::Always => true,
                SendWhen::OnFailure => failed || cancelled,
                SendWhen::OnBreach => breach,
            });
            if !wanted {
                continue;
            }
            // A mail problem is reported, never a failed run.
            match mail::send(n, &mail_body, Retry::default()) {
                Ok(()) => said(
                    format!(
                        "mailed the report through `{}` to {}",
                        n.name,
                        n.to.join(", ")
                    ),
                    serde_json::json!({ "event": "mailed", "notifier": n.name, "to": n.to }),
                )?,
                Err(e) => said(
                    format!("warning: {e}; the report stays in {}", base.display()),
                    serde_json::json!({ "event": "mail-failed", "notifier": n.name, "error": e.to_string() }),
                )?,
            }
        }
    }
    Ok(if cancelled {
        EXIT_CANCELLED
    } else if failed {
        EXIT_PARTIAL
    } else {
        super::EXIT_OK
    })
}
