//! Phase 1 of a run: backups side by side, as many at once as the
//! limits allow (`--parallel`, each tier's `max_parallel`, each source's
//! `max_per_host` and `max_per_datastore`), with progress while they read.
//!
//! `max_per_host` counts per ESXi host, the one that runs each VM
//! (`runtime.host`), so through a vCenter the limit holds on every host of
//! it, not on the vCenter as a whole.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::time::Instant;

use super::backup::{BackupJob, backup_action_with_retries};
use super::{Runner, outcome_of};
use crate::engine::observer::{Event, ProgressBoard};
use crate::engine::tiers::open_tier;
use crate::plan::planner::Action;

/// Where each VM of the run is, for the limits: its datastores and its
/// host key (see `hosts_of`), by (source, VM name).
pub(super) struct Placement<'a> {
    pub datastores: &'a BTreeMap<(String, String), Vec<String>>,
    pub hosts: &'a BTreeMap<(String, String), String>,
}

impl Runner<'_> {
    /// Phase 1's backups side by side within the limits: at most
    /// `max_per_host` at once per ESXi host, `max_per_datastore` VMs with a
    /// snapshot at once per datastore, `parallel` in all. Each is journaled
    /// like any action.
    pub(super) fn run_backups(
        &mut self,
        actions: &[&Action],
        placement: &Placement<'_>,
        parallel: usize,
        catalog: &mut crate::catalog::Catalog,
        cancel: &std::sync::atomic::AtomicBool,
    ) {
        use std::sync::{Condvar, Mutex};
        // Connect first, one source at a time.
        let mut runnable = Vec::new();
        for a in actions {
            let Action::Backup { source, .. } = a else {
                continue;
            };
            match self.session(source) {
                Ok(_) => runnable.push(*a),
                Err(e) => self.record(a, Instant::now(), Err(e)),
            }
        }
        struct Slots {
            next: Vec<usize>,
            per_host: BTreeMap<String, u32>,
            per_datastore: BTreeMap<String, u32>,
            per_tier: BTreeMap<String, u32>,
            running: usize,
        }
        let config = self.config;
        let run_id = self.run_id.clone();
        let first_seq = self.seq;
        self.seq += runnable.len() as i64;
        let sessions = &self.sessions;
        let timeout = self.timeout;
        let cbt_reset = &self.cbt_reset;
        let slots = Mutex::new(Slots {
            next: (0..runnable.len()).collect(),
            per_host: BTreeMap::new(),
            per_datastore: BTreeMap::new(),
            per_tier: BTreeMap::new(),
            running: 0,
        });
        let datastores = placement.datastores;
        // A VM whose host is not known counts against its source.
        let host_of = |source: &str, vm: &str| {
            placement
                .hosts
                .get(&(source.to_string(), vm.to_string()))
                .cloned()
                .unwrap_or_else(|| source.to_string())
        };
        let wake = Condvar::new();
        let catalog = Mutex::new(catalog);
        let outcomes = Mutex::new(Vec::new());
        let key = |a: &Action| match a {
            Action::Backup { source, vm, .. } => (source.clone(), vm.clone()),
            _ => (String::new(), String::new()),
        };
        let tier_of = |a: &Action| match a {
            Action::Backup { tier, .. } => tier.clone(),
            _ => String::new(),
        };
        let tier_limit = |t: &str| {
            config
                .tiers
                .get(t)
                .map_or(u32::MAX, |t| t.max_parallel.max(1))
        };
        // Bytes read so far by each running backup, for progress reports.
        let board = ProgressBoard::default();
        let observer = self.observer;
        board.report_while(observer, || {
            let workers: Vec<_> = (0..parallel.max(1).min(runnable.len().max(1))).collect();
            std::thread::scope(|inner| {
                for _ in workers {
                    inner.spawn(|| {
                        loop {
                            // Take the first backup whose limits allow it.
                            let (i, source, host, dss) = {
                                let mut s = slots.lock().unwrap_or_else(|e| e.into_inner());
                                loop {
                                    if s.next.is_empty() || cancel.load(Ordering::SeqCst) {
                                        return;
                                    }
                                    let pick = s.next.iter().position(|&i| {
                                        let (source, vm) = key(runnable[i]);
                                        let src = &config.sources[&source];
                                        let host = host_of(&source, &vm);
                                        let dss = datastores
                                            .get(&(source.clone(), vm))
                                            .cloned()
                                            .unwrap_or_default();
                                        let tier = tier_of(runnable[i]);
                                        s.per_tier.get(&tier).copied().unwrap_or(0)
                                            < tier_limit(&tier)
                                            && s.per_host.get(&host).copied().unwrap_or(0)
                                                < src.max_per_host.max(1)
                                            && dss.iter().all(|d| {
                                                s.per_datastore.get(d).copied().unwrap_or(0)
                                                    < src.max_per_datastore.max(1)
                                            })
                                    });
                                    if let Some(p) = pick {
                                        let i = s.next.remove(p);
                                        let (source, vm) = key(runnable[i]);
                                        let host = host_of(&source, &vm);
                                        let dss = datastores
                                            .get(&(source.clone(), vm))
                                            .cloned()
                                            .unwrap_or_default();
                                        *s.per_host.entry(host.clone()).or_default() += 1;
                                        *s.per_tier.entry(tier_of(runnable[i])).or_default() += 1;
                                        for d in &dss {
                                            *s.per_datastore.entry(d.clone()).or_default() += 1;
                                        }
                                        s.running += 1;
                                        break (i, source, host, dss);
                                    }
                                    s = wake.wait(s).unwrap_or_else(|e| e.into_inner());
                                }
                            };
                            let action = runnable[i];
                            let json = serde_json::to_value(action).unwrap_or_default();
                            let id = catalog
                                .lock()
                                .unwrap_or_else(|e| e.into_inner())
                                .action_started(
                                    &run_id,
                                    first_seq + 1 + i as i64,
                                    "backup",
                                    &json.to_string(),
                                    action.reason(),
                                )
                                .ok();
                            let span = crate::engine::logging::action_span(&run_id, action);
                            let _in_span = span.enter();
                            tracing::info!(reason = action.reason(), "action started");
                            observer.event(&Event::ActionStarted { action });
                            let started = Instant::now();
                            let vm_name = key(action).1;
                            let counter = board.start(&vm_name);
                            let job = BackupJob {
                                config,
                                conn: &sessions[&source],
                                run_id: &run_id,
                                action,
                                progress: Some(&counter),
                                limit: timeout,
                                read_whole_disk: cbt_reset.contains(&key(action)),
                                fence: None,
                                lost: None,
                            };
                            let result = backup_action_with_retries(&job, observer);
                            let lifetime = result.as_ref().ok().map(|d| d.lifetime.clone());
                            let bytes = result.as_ref().ok().map(|d| d.bytes);
                            let result = result.map(|d| d.detail);
                            board.finish(&vm_name);
                            {
                                let mut c = catalog.lock().unwrap_or_else(|e| e.into_inner());
                                if let Some(l) = &lifetime {
                                    let _ = c.record_snapshot_lifetime(l);
                                }
                                if let Some(id) = id {
                                    let (ok, text) = match &result {
                                        Ok(t) => (true, t.clone()),
                                        Err(e) => (false, format!("{e:#}")),
                                    };
                                    let _ = c.action_finished(id, ok, &text);
                                }
                                if let Action::Backup { tier, .. } = action
                                    && let Some(l) = &lifetime
                                    && let Ok(repo) = open_tier(config, tier)
                                {
                                    let _ = c.refresh_points(tier, &repo, &[l.point()]);
                                }
                            }
                            outcomes
                                .lock()
                                .unwrap_or_else(|e| e.into_inner())
                                .push(outcome_of(
                                    action,
                                    started.elapsed().as_secs_f64(),
                                    result,
                                    bytes,
                                    None,
                                    observer,
                                ));
                            let mut s = slots.lock().unwrap_or_else(|e| e.into_inner());
                            *s.per_host.entry(host).or_default() -= 1;
                            *s.per_tier.entry(tier_of(action)).or_default() -= 1;
                            for d in &dss {
                                *s.per_datastore.entry(d.clone()).or_default() -= 1;
                            }
                            s.running -= 1;
                            wake.notify_all();
                        }
                    });
                }
            });
        });
        self.outcomes
            .extend(outcomes.into_inner().unwrap_or_else(|e| e.into_inner()));
    }
}
