//! Phase 1 of a distributed run (`apply --distributed`): the coordinator
//! hands the plan's backups to workers through the PostgreSQL catalog's
//! queue (`catalog::queue`) instead of reading them itself, then waits,
//! telling the observer as workers take and finish them. Each finished
//! backup is journaled as the runner journals its own, with the worker's
//! name in its outcome, so the run report says who did what. The limits
//! travel with each backup and are counted in the database by the workers.
//! Copies, prunes, gc and drills stay with the coordinator.

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

/// How often the coordinator looks at the queue.
const POLL: Duration = Duration::from_millis(250);

impl Runner<'_> {
    /// Enqueues `actions` (backups) for workers and waits until each is
    /// done or failed; a backup that no worker takes for `self.timeout`
    /// fails, and a cancel fails those still queued.
    pub(super) fn hand_to_workers(
        &mut self,
        actions: &[&Action],
        placement: &Placement<'_>,
        catalog: &mut Catalog,
    ) {
        let mut items = Vec::new();
        let mut by_seq: BTreeMap<i64, &Action> = BTreeMap::new();
        for a in actions {
            let Action::Backup {
                source, vm, tier, ..
            } = a
            else {
                continue;
            };
            let key = (source.clone(), vm.clone());
            let repo_id = match open_tier(self.config, tier) {
                Ok(r) => r.config.id.clone(),
                Err(e) => {
                    self.record(a, Instant::now(), Err(e));
                    continue;
                }
            };
            self.seq += 1;
            let src = &self.config.sources[source];
            items.push(NewWork {
                seq: self.seq,
                action: serde_json::to_value(a).unwrap_or_default().to_string(),
                source: source.clone(),
                vm: vm.clone(),
                host: placement
                    .hosts
                    .get(&key)
                    .cloned()
                    .unwrap_or_else(|| source.clone()),
                datastores: placement.datastores.get(&key).cloned().unwrap_or_default(),
                tier: tier.clone(),
                repo_id,
                max_host: src.max_per_host,
                max_datastore: src.max_per_datastore,
                max_tier: self
                    .config
                    .tiers
                    .get(tier)
                    .map_or(u32::MAX, |t| t.max_parallel),
                read_whole: self.cbt_reset.contains(&key),
            });
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
            "handed {} backups to the workers (run {}); waiting for them",
            items.len(),
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

    /// Records every backup of `by_seq` not yet closed as failed, saying
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

    /// Journals and reports a backup a worker finished.
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
