//! A distributed run (`apply --distributed`): the coordinator hands the
//! plan's backups (phase 1), copies and gc (phase 2) and drills (phase 3)
//! to workers through the PostgreSQL catalog's queue (`catalog::queue`)
//! instead of carrying them out itself, then waits, telling the observer as
//! workers take and finish them. Each finished action is journaled as the
//! runner journals its own, with the worker's name in its outcome, so the
//! run report says who did what. The limits travel with each row and are
//! counted in the database by the workers: per host and datastore for a
//! backup, per tier (`max_parallel`) for all. A gc is handed out once the
//! phase's copies and prunes have ended, and holds the maintenance lock
//! exclusively on its worker as it would here.
//!
//! What stays with the coordinator: snapshot hygiene, prunes (they wait for
//! the phase's copies: retention counted the copied points), anything on a
//! tape tier (the library is attached to one machine), and boot drills
//! (the drill's host mounts the point from the machine that runs it).
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use super::side_by_side::Placement;
use super::{Runner, outcome_of};
use crate::catalog::Catalog;
use crate::catalog::queue::{NewWork, Work};
use crate::engine::cancel;
use crate::engine::observer::{Bytes, Event, Outcome};
use crate::engine::tiers::open_tier;
use crate::plan::planner::Action;
use crate::policy::Config;
use crate::policy::model::DrillKind;

/// How often the coordinator looks at the queue.
const POLL: Duration = Duration::from_millis(250);

/// Whether a worker may carry out `a` (see the module header).
pub(super) fn for_workers(config: &Config, a: &Action) -> bool {
    let tape = |tier: &str| config.tiers.get(tier).is_some_and(|t| t.is_tape());
    match a {
        Action::Backup { .. } => true,
        Action::Copy { from, to, .. } => !tape(from) && !tape(to),
        Action::Gc { tier, .. } => !tape(tier),
        Action::Drill {
            policy,
            drill,
            tier,
            ..
        } => {
            let kind = (config.policies.get(policy))
                .and_then(|p| p.drills.iter().find(|d| &d.name == drill))
                .map(|d| d.kind);
            !tape(tier) && matches!(kind, Some(DrillKind::Verify | DrillKind::Restore))
        }
        _ => false,
    }
}

/// "3 backups, 2 copies": what was handed out, by kind.
fn counted(actions: &BTreeMap<i64, &Action>) -> String {
    let mut by_kind = BTreeMap::<&str, usize>::new();
    for a in actions.values() {
        *by_kind.entry(a.kind()).or_default() += 1;
    }
    let parts: Vec<String> = (by_kind.iter())
        .map(|(&k, &n)| match (k, n) {
            ("gc", 1) => "the gc of 1 tier".to_string(),
            ("gc", n) => format!("the gc of {n} tiers"),
            ("copy", 1) => "1 copy".to_string(),
            ("copy", n) => format!("{n} copies"),
            (k, 1) => format!("1 {k}"),
            (k, n) => format!("{n} {k}s"),
        })
        .collect();
    parts.join(", ")
}

impl Runner<'_> {
    /// The queue row of `a`: its limits' keys and limits, and the
    /// repository ids a worker must find under its tiers' names. `ids`
    /// holds each tier's id, or why it could not be opened, once it was
    /// asked for: a tier is opened once per hand-out (an encrypted one
    /// derives its keys when it opens), not once per action.
    fn work_for(
        &self,
        a: &Action,
        placement: &Placement<'_>,
        ids: &mut BTreeMap<String, Result<String, String>>,
    ) -> anyhow::Result<NewWork> {
        let max_tier = |tier: &str| {
            self.config
                .tiers
                .get(tier)
                .map_or(u32::MAX, |t| t.max_parallel)
        };
        let mut id = |tier: &str| {
            (ids.entry(tier.to_string()))
                .or_insert_with(|| {
                    open_tier(self.config, tier)
                        .map(|r| r.config.id.clone())
                        .map_err(|e| format!("{e:#}"))
                })
                .clone()
                .map_err(|e| anyhow::anyhow!("{e}"))
        };
        let repo_from = match a {
            Action::Copy { from, .. } => Some(id(from)?),
            _ => None,
        };
        let repo_id = match a {
            Action::Backup { tier, .. } | Action::Drill { tier, .. } | Action::Gc { tier, .. } => {
                id(tier)?
            }
            Action::Copy { to, .. } => id(to)?,
            _ => anyhow::bail!("not work for a worker: {}", a.line()),
        };
        let item = |vm: &str, tier: &str| -> NewWork {
            NewWork {
                seq: 0,
                action: serde_json::to_value(a).unwrap_or_default().to_string(),
                source: String::new(),
                vm: vm.to_string(),
                host: String::new(),
                datastores: Vec::new(),
                tier: tier.to_string(),
                repo_id: repo_id.clone(),
                repo_from: repo_from.clone(),
                max_host: u32::MAX,
                max_datastore: u32::MAX,
                max_tier: max_tier(tier),
                read_whole: false,
            }
        };
        match a {
            Action::Backup {
                source, vm, tier, ..
            } => {
                let key = (source.clone(), vm.clone());
                let src = &self.config.sources[source];
                Ok(NewWork {
                    source: source.clone(),
                    host: (placement.hosts.get(&key).cloned()).unwrap_or_else(|| source.clone()),
                    datastores: placement.datastores.get(&key).cloned().unwrap_or_default(),
                    max_host: src.max_per_host,
                    max_datastore: src.max_per_datastore,
                    read_whole: self.cbt_reset.contains(&key),
                    ..item(vm, tier)
                })
            }
            Action::Copy { vm, to, .. } => Ok(item(vm, to)),
            Action::Drill { vm, tier, .. } => Ok(item(vm, tier)),
            Action::Gc { tier, .. } => Ok(item("", tier)),
            _ => anyhow::bail!("not work for a worker: {}", a.line()),
        }
    }

    /// Enqueues `actions` (those [`for_workers`] allows) for workers and
    /// waits until each is done or failed; one that no worker takes for
    /// `self.timeout` fails, and a cancel fails those still queued.
    pub(super) fn hand_to_workers(
        &mut self,
        actions: &[&Action],
        placement: &Placement<'_>,
        catalog: &mut Catalog,
    ) {
        let mut items = Vec::new();
        let mut by_seq: BTreeMap<i64, &Action> = BTreeMap::new();
        let mut ids = BTreeMap::new();
        for a in actions {
            let mut work = match self.work_for(a, placement, &mut ids) {
                Ok(w) => w,
                Err(e) => {
                    self.record(a, Instant::now(), Err(e));
                    continue;
                }
            };
            self.seq += 1;
            work.seq = self.seq;
            items.push(work);
            by_seq.insert(self.seq, a);
        }
        if items.is_empty() {
            return;
        }
        if let Err(e) = catalog.enqueue(&self.run_id, &items) {
            for a in by_seq.values() {
                self.record(
                    a,
                    Instant::now(),
                    Err(anyhow::anyhow!("handing it to workers: {e}")),
                );
            }
            return;
        }
        self.observer.event(&Event::Message(format!(
            "handed {} to the workers (run {}); waiting for them",
            counted(&by_seq),
            self.run_id
        )));
        let mut announced = std::collections::BTreeSet::new();
        let mut closed = std::collections::BTreeSet::new();
        let mut last_change = Instant::now();
        while closed.len() < by_seq.len() {
            let rows = match catalog.work_of_run(&self.run_id) {
                Ok(rows) => rows,
                Err(e) if !cancel::requested() => {
                    self.observer.event(&Event::Message(format!(
                        "coffer: reading the work queue: {e}; trying again"
                    )));
                    std::thread::sleep(POLL * 4);
                    continue;
                }
                Err(e) => {
                    let why = format!(
                        "the run was cancelled while the work queue could not be read ({e}); its worker may still finish it"
                    );
                    self.fail_open(&by_seq, &closed, &why);
                    return;
                }
            };
            for w in rows {
                let Some(action) = by_seq.get(&w.seq).copied() else {
                    continue;
                };
                if w.state != "queued" && announced.insert(w.seq) {
                    last_change = Instant::now();
                    self.observer.event(&Event::ActionStarted { action });
                }
                if matches!(w.state.as_str(), "done" | "failed") && closed.insert(w.seq) {
                    last_change = Instant::now();
                    self.close_worked(action, &w, catalog);
                }
            }
            if closed.len() == by_seq.len() {
                break;
            }
            let why = if cancel::requested() {
                Some("the run was cancelled before a worker took it".to_string())
            } else if last_change.elapsed() >= self.timeout {
                Some(format!(
                    "no worker took it within {} (--action-timeout): are workers running (`coffer worker`)?",
                    crate::policy::units::format_duration(self.timeout)
                ))
            } else {
                None
            };
            if let Some(why) = why {
                let _ = catalog.abandon_work(Some(&self.run_id), &why);
                if cancel::requested() {
                    // What workers hold stays theirs; this run does not
                    // wait for it.
                    self.fail_open(&by_seq, &closed, &why);
                    return;
                }
                last_change = Instant::now();
            }
            std::thread::sleep(POLL);
        }
    }

    /// Records every action of `by_seq` not yet closed as failed, saying
    /// `why`: the run stops waiting for them.
    fn fail_open(
        &mut self,
        by_seq: &BTreeMap<i64, &Action>,
        closed: &std::collections::BTreeSet<i64>,
        why: &str,
    ) {
        for (seq, action) in by_seq {
            if !closed.contains(seq) {
                self.record(action, Instant::now(), Err(anyhow::anyhow!("{why}")));
            }
        }
    }

    /// Journals and reports an action a worker finished.
    fn close_worked(&mut self, action: &Action, w: &Work, catalog: &mut Catalog) {
        let worker = w.worker.as_deref().unwrap_or("no worker");
        let mut detail = w.detail.clone().unwrap_or_default();
        detail.push_str(&format!(" [worker {worker}"));
        if w.attempt > 1 {
            detail.push_str(&format!(", attempt {}", w.attempt));
        }
        detail.push(']');
        if let Some(r) = &w.recovered {
            detail.push_str(&format!("; {r}"));
        }
        let ok = w.state == "done";
        // As for a copy this runner made: the tier's prunes wait.
        if let (Action::Copy { vm, to, .. }, false) = (action, ok) {
            self.failed_copies.insert((vm.clone(), to.clone()));
        }
        let json = serde_json::to_value(action).unwrap_or_default();
        if let Ok(id) = catalog.action_started(
            &self.run_id,
            w.seq,
            action.kind(),
            &json.to_string(),
            action.reason(),
        ) {
            let _ = catalog.action_finished(id, ok, &detail);
        }
        let bytes = match (w.bytes_read, w.bytes_stored) {
            (Some(read), Some(stored)) => Some(Bytes {
                read: read.max(0) as u64,
                stored: stored.max(0) as u64,
            }),
            _ => None,
        };
        let result = if ok {
            Ok(detail)
        } else {
            Err(anyhow::anyhow!("{detail}"))
        };
        let outcome: Outcome = outcome_of(
            action,
            w.seconds.unwrap_or(0.0),
            result,
            bytes,
            w.worker.clone(),
            self.observer,
        );
        self.outcomes.push(outcome);
    }
}
