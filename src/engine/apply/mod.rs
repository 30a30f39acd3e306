//! `apply`: the runner. It takes the runner lock, journals as a new run,
//! cleans up after a killed run, then plans and carries out the plan in
//! three phases, planning again before each: snapshot hygiene and backups
//! (side by side within the limits); copies, prunes and gc (so the points
//! just taken are copied in the same run); drills on the copies. Every
//! action is journaled before it starts and closed when it ends, and its
//! outcome goes to the observer. At the end the standing is planned once
//! more, the run report is written under the report directory and mailed
//! as the notifiers' `send` rules say. One failed action never stops the
//! others; a cancel ([`crate::engine::cancel`]) stops starting actions and
//! lets the running backups remove their snapshots.
//!
//! A saved plan is checked three ways before anything runs: its actions are
//! the ones it was saved with, the policies and the catalog are as they
//! were, and the plan made now holds every action it lists. While it runs,
//! each phase is planned again and only the actions both plans hold are
//! carried out (the fresh ones: their safety floors checked now), so an
//! edited or stale file can never add work.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use chrono::{DateTime, Utc};

use super::cancel;
use super::gather::{Gathered, gather, make_plan};
use super::healthcheck::Ping;
use super::observer::{Bytes, Event, Observer, Outcome, ReportKind};
use super::saved_plan::{Fingerprint, load_plan};
use super::tiers::open_tier;
use crate::catalog::{Catalog, tierlog};
use crate::plan::planner::{Action, Plan};
use crate::policy::Config;
use crate::policy::model::SendWhen;
use crate::run::connect::Connected;
use crate::run::vm_backup::VmBackupError;

pub(crate) mod backup;
mod distributed;
pub(crate) mod execute;
pub(crate) mod recover;
mod side_by_side;

/// How `apply` runs: the options `coffer apply` and `coffer daemon` share.
#[derive(Debug, Clone, clap::Args)]
pub struct ApplyOptions {
    /// A plan saved by `plan --out`: carry out those of its actions the
    /// plan made now also holds.
    #[arg(skip)]
    pub plan_file: Option<PathBuf>,
    /// Let retention prune more than half of a tier's points in one run
    /// (without it, one run prunes the oldest half and the rest waits).
    #[arg(long)]
    pub allow_mass_prune: bool,
    /// Do not send email, even when the notifiers' rules say to (reports
    /// are still written).
    #[arg(long = "no-mail", action = clap::ArgAction::SetFalse)]
    pub mail: bool,
    /// The longest one backup may take; it is then stopped, its snapshot
    /// removed, and it counts as failed.
    #[arg(long, default_value = "12h", value_parser = crate::policy::units::parse_timeout)]
    pub action_timeout: Duration,
    /// Backups at once, in all (each source's `max_per_host` and
    /// `max_per_datastore` limit them further).
    #[arg(long, default_value_t = 4)]
    pub parallel: usize,
    /// Hand the backups, copies, gc and verify and restore drills to
    /// workers (`coffer worker`, on any machine) through the shared
    /// PostgreSQL catalog instead of doing them here; hygiene, prunes,
    /// what is on a tape tier and boot drills stay with this run.
    #[arg(long)]
    pub distributed: bool,
}

impl Default for ApplyOptions {
    fn default() -> Self {
        ApplyOptions {
            plan_file: None,
            allow_mass_prune: false,
            mail: true,
            action_timeout: Duration::from_secs(12 * 3600),
            parallel: 4,
            distributed: false,
        }
    }
}

/// What a run came to.
#[derive(Debug)]
pub struct RunOutcome {
    pub run_id: String,
    /// Every action's outcome, in the order they ended.
    pub outcomes: Vec<Outcome>,
    /// Stopped by a cancel before its end.
    pub cancelled: bool,
    /// Some action failed.
    pub failed: bool,
    /// Some VM is out of compliance after the run.
    pub breach: bool,
    /// The run report, without extension (`.txt` and `.html` exist).
    pub report: PathBuf,
    pub subject: String,
    /// The plan made after the run: the standing the report shows.
    pub after: Plan,
}

pub(super) struct Runner<'a> {
    config: &'a Config,
    run_id: String,
    seq: i64,
    sessions: BTreeMap<String, Connected>,
    outcomes: Vec<Outcome>,
    /// (VM, tier) of copies that failed in this run: retention counted the
    /// copied point when it chose the tier's prunes, so those prunes wait.
    failed_copies: BTreeSet<(String, String)>,
    timeout: Duration,
    /// (source, VM) whose change tracking this run reset: their backups
    /// read whole disks.
    cbt_reset: BTreeSet<(String, String)>,
    /// Backups, copies and drills go to workers (`apply --distributed`).
    distributed: bool,
    observer: &'a dyn Observer,
}

/// Pings the healthcheck URL, if the policies name one; a ping that fails
/// is said, never more.
fn healthcheck(config: &Config, ping: Ping, body: &str, observer: &dyn Observer) {
    let Some(url) = &config.settings.healthcheck_url else {
        return;
    };
    if let Err(e) = super::healthcheck::ping(url, ping, body) {
        observer.event(&Event::Message(format!("coffer: {e:#}")));
    }
}

/// An action's outcome, told to the observer as it is known.
fn outcome_of(
    action: &Action,
    seconds: f64,
    result: Result<String>,
    bytes: Option<Bytes>,
    worker: Option<String>,
    observer: &dyn Observer,
) -> Outcome {
    let outcome = Outcome::of(action, seconds, result, bytes, worker);
    if outcome.ok {
        tracing::info!(seconds = outcome.seconds, detail = %outcome.detail, "action finished");
    } else {
        tracing::error!(seconds = outcome.seconds, detail = %outcome.detail, "action failed");
    }
    observer.event(&Event::ActionFinished { outcome: &outcome });
    outcome
}

impl Runner<'_> {
    fn session(&mut self, source: &str) -> Result<&Connected> {
        execute::session_in(self.config, &mut self.sessions, source)
    }

    fn record(&mut self, action: &Action, started: Instant, result: Result<String>) {
        if let (Action::Copy { vm, to, .. }, Err(_)) = (action, &result) {
            self.failed_copies.insert((vm.clone(), to.clone()));
        }
        let seconds = started.elapsed().as_secs_f64();
        let outcome = outcome_of(action, seconds, result, None, None, self.observer);
        self.outcomes.push(outcome);
    }

    /// Runs one action with its journal entries around it; answers whether
    /// it was cancelled.
    fn run_action(&mut self, action: &Action, catalog: &mut Catalog) -> bool {
        self.seq += 1;
        let json = serde_json::to_value(action).unwrap_or_default();
        let id = match catalog.action_started(
            &self.run_id,
            self.seq,
            action.kind(),
            &json.to_string(),
            action.reason(),
        ) {
            Ok(id) => Some(id),
            Err(e) => {
                self.observer.event(&Event::Message(format!(
                    "coffer: the journal could not record the action: {e}"
                )));
                None
            }
        };
        let span = super::logging::action_span(&self.run_id, action);
        let _in_span = span.enter();
        tracing::info!(reason = action.reason(), "action started");
        self.observer.event(&Event::ActionStarted { action });
        let started = Instant::now();
        let result = self.execute(action, catalog);
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

    /// One phase's actions, in four stages: what runs here one at a time
    /// (hygiene first); backups side by side within the limits; prunes,
    /// once the phase's copies ended (retention counted the copied
    /// points); gc, once the prunes ended. In a distributed run, what
    /// workers may do (`distributed::for_workers`: backups, copies, gc,
    /// drills) is handed to them at its stage instead.
    fn run_phase(
        &mut self,
        catalog: &mut Catalog,
        actions: Vec<&Action>,
        datastores: &BTreeMap<(String, String), Vec<String>>,
        hosts: &BTreeMap<(String, String), String>,
        parallel: usize,
    ) {
        let (config, distributed) = (self.config, self.distributed);
        let handed = |a: &Action| match distributed {
            true => distributed::for_workers(config, a),
            false => matches!(a, Action::Backup { .. }),
        };
        let stage = |a: &Action| match a {
            Action::Prune { .. } => 2,
            Action::Gc { .. } => 3,
            _ if handed(a) => 1,
            _ => 0,
        };
        let limits = side_by_side::Placement { datastores, hosts };
        for s in 0..4 {
            let (side_by_side, here): (Vec<&Action>, Vec<&Action>) = (actions.iter())
                .filter(|a| stage(a) == s)
                .partition(|a| handed(a));
            for action in here {
                if cancel::requested() || self.run_action(action, catalog) {
                    return;
                }
            }
            if side_by_side.is_empty() || cancel::requested() {
                continue;
            }
            if distributed {
                self.hand_to_workers(&side_by_side, &limits, catalog);
            } else {
                self.run_backups(&side_by_side, &limits, parallel, catalog, cancel::flag());
            }
        }
    }
}

/// Each VM's datastores, by (source, VM name), for the per-datastore limit.
fn datastores_of(g: &Gathered) -> BTreeMap<(String, String), Vec<String>> {
    g.inventory
        .iter()
        .map(|(source, vm)| {
            let mut ds: Vec<String> = vm
                .disks
                .iter()
                .filter_map(|d| crate::vsphere::datastore::DatastorePath::parse(&d.file_name))
                // Two datacenters of a vCenter may each have a datastore
                // of one name: they are two datastores.
                .map(|p| match &vm.datacenter {
                    Some(dc) => format!("{dc}/{}", p.datastore),
                    None => p.datastore,
                })
                .collect();
            ds.sort();
            ds.dedup();
            ((source.clone(), vm.name.clone()), ds)
        })
        .collect()
}

/// The ESXi host each VM runs on, by (source, VM name), for the per-host
/// limit: `source/host-moref`, or the source alone when the host is not
/// known (a standalone host is its own only host).
fn hosts_of(g: &Gathered) -> BTreeMap<(String, String), String> {
    g.inventory
        .iter()
        .map(|(source, vm)| {
            let host = match &vm.host {
                Some(h) => format!("{source}/{}", h.value),
                None => source.clone(),
            };
            ((source.clone(), vm.name.clone()), host)
        })
        .collect()
}

/// The phase an action runs in: hygiene and backups; copies, prunes and
/// gc; drills on the copies.
fn phase_of(a: &Action) -> Option<u8> {
    match a {
        Action::RemoveSnapshot { .. }
        | Action::Consolidate { .. }
        | Action::ResetCbt { .. }
        | Action::Backup { .. } => Some(1),
        Action::Copy { .. } | Action::Prune { .. } | Action::Gc { .. } => Some(2),
        Action::Drill { .. } => Some(3),
        _ => None,
    }
}

/// Checks a saved plan against what is gathered now (see the module
/// header); answers the identities of the actions it lists.
fn check_saved_plan(
    file: &std::path::Path,
    saved: &super::saved_plan::SavedPlan,
    config: &Config,
    catalog: &mut Catalog,
    now: DateTime<Utc>,
    allow_mass_prune: bool,
    observer: &dyn Observer,
) -> Result<()> {
    let say = |m: String| observer.event(&Event::Message(m));
    let gathered = gather(config, catalog)?;
    let changes = saved
        .fingerprint
        .changes(&Fingerprint::of(config, &gathered)?);
    if !changes.is_empty() {
        say(format!(
            "the plan in {} is stale; what changed since it was made:",
            file.display()
        ));
        for c in &changes {
            say(format!("  {c}"));
        }
        anyhow::bail!(
            "refusing a stale plan: run `coffer plan --out {}` again",
            file.display()
        );
    }
    let fresh = make_plan(config, &gathered, now, allow_mass_prune);
    let fresh_ids: BTreeSet<Vec<&str>> =
        fresh.actions.iter().filter_map(Action::identity).collect();
    let foreign: Vec<&Action> = saved
        .actions
        .iter()
        .filter(|a| a.identity().is_some_and(|id| !fresh_ids.contains(&id)))
        .collect();
    if !foreign.is_empty() {
        say(format!(
            "the plan in {} holds actions the plan made now does not:",
            file.display()
        ));
        for a in &foreign {
            say(format!("  {}", a.line()));
        }
        anyhow::bail!(
            "refusing the plan in {}: it was edited or is stale, and nothing of it was carried out; run `coffer plan --out {}` again",
            file.display(),
            file.display()
        );
    }
    Ok(())
}

/// Carries out a run (see the module header). `clock` is the planning
/// clock (the daemon's, which a test can set).
pub fn apply(
    config: &Config,
    catalog: &mut Catalog,
    options: &ApplyOptions,
    clock: &dyn Fn() -> DateTime<Utc>,
    observer: &dyn Observer,
) -> Result<RunOutcome> {
    if options.distributed {
        catalog.require_shared("--distributed (handing work to workers)")?;
    }
    let run_id = super::new_run_id();
    let _lock = crate::run::runlock::RunnerLock::take(
        &config.settings,
        &format!("coffer apply, run {run_id}"),
    )?;
    tracing::info!(run_id = %run_id, "run started");
    observer.event(&Event::RunStarted { run_id: &run_id });
    healthcheck(
        config,
        Ping::Start,
        &format!("run {run_id} started"),
        observer,
    );
    let run_started = Utc::now();
    catalog.start_run(&run_id, "apply")?;
    let mut runner = Runner {
        config,
        run_id: run_id.clone(),
        seq: 0,
        sessions: BTreeMap::new(),
        outcomes: Vec::new(),
        failed_copies: BTreeSet::new(),
        timeout: options.action_timeout,
        cbt_reset: BTreeSet::new(),
        distributed: options.distributed,
        observer,
    };
    for note in runner.recover(catalog)? {
        observer.event(&Event::Recovered { note: &note });
    }
    let saved = match &options.plan_file {
        Some(file) => {
            let saved = load_plan(file)?;
            check_saved_plan(
                file,
                &saved,
                config,
                catalog,
                clock(),
                options.allow_mass_prune,
                observer,
            )?;
            Some(saved)
        }
        None => None,
    };
    let saved_ids: Option<BTreeSet<Vec<&str>>> = saved
        .as_ref()
        .map(|s| s.actions.iter().filter_map(Action::identity).collect());
    // Plan, run a phase, plan again for the next, so the points just taken
    // are copied and drilled in the same run. With a saved plan, only what
    // it also holds runs: the points just taken are not copied by this run.
    for phase in [1, 2, 3] {
        let gathered = gather(config, catalog)?;
        let plan = make_plan(config, &gathered, clock(), options.allow_mass_prune);
        // The reviewed plan was printed when it was saved.
        if saved.is_none() && phase == 1 {
            observer.event(&Event::Planned {
                plan: &plan,
                gathered: &gathered,
            });
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
        runner.run_phase(
            catalog,
            actions,
            &datastores_of(&gathered),
            &hosts_of(&gathered),
            options.parallel,
        );
        if cancel::requested() {
            break;
        }
    }
    // The standing after the run, for the report.
    let gathered = gather(config, catalog)?;
    let after = make_plan(config, &gathered, clock(), options.allow_mass_prune);
    let cancelled = cancel::requested();
    let outcomes = std::mem::take(&mut runner.outcomes);
    let mail_body = super::report::run_mail(
        config,
        &run_id,
        run_started,
        &after,
        &gathered,
        &outcomes,
        cancelled,
    )?;
    std::fs::create_dir_all(&config.settings.report_dir)
        .with_context(|| format!("creating {}", config.settings.report_dir.display()))?;
    let base = config.settings.report_dir.join(format!("run-{run_id}"));
    std::fs::write(base.with_extension("txt"), &mail_body.text)?;
    std::fs::write(base.with_extension("html"), &mail_body.html)?;
    let failed = outcomes.iter().any(|o| !o.ok);
    let status = if cancelled {
        "cancelled"
    } else if failed {
        "partial"
    } else {
        "success"
    };
    let _ = catalog.finish_run(&run_id, status);
    // Also kept on the tiers, for a rebuilt catalog.
    let finished = tierlog::LogEvent::RunFinished {
        run_id: run_id.clone(),
        command: "apply".into(),
        started: run_started,
        finished: Utc::now(),
        outcome: status.into(),
    };
    for name in config.tiers.keys() {
        if let Err(e) = open_tier(config, name).and_then(|r| Ok(tierlog::append(&r, &finished)?)) {
            observer.event(&Event::Message(format!(
                "coffer: could not log the run's outcome on tier `{name}`: {e:#}"
            )));
        }
    }
    let breach = after.compliance.iter().any(|c| !c.violations.is_empty());
    tracing::info!(run_id = %run_id, failed, cancelled, breach, "run finished");
    let ping = if failed || cancelled {
        Ping::Fail
    } else {
        Ping::Success
    };
    healthcheck(config, ping, &mail_body.text, observer);
    observer.event(&Event::RunFinished {
        run_id: &run_id,
        subject: &mail_body.subject,
        failed,
        cancelled,
        report: &base,
        compliance: &after.compliance,
    });
    if options.mail {
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
            super::report::mail_through(n, &mail_body, ReportKind::Run, &base, observer);
        }
    }
    Ok(RunOutcome {
        run_id,
        outcomes,
        cancelled,
        failed,
        breach,
        report: base,
        subject: mail_body.subject,
        after,
    })
}
