//! Recovery at the start of a run: actions an earlier run started and never
//! finished (it was killed, or the machine went down) are closed as
//! interrupted, and a backup's snapshot is removed (its point was never
//! committed, so nothing counts it).

use std::time::Duration;

use anyhow::Result;

use super::Runner;
use crate::plan::planner::Action;
use crate::run::connect::Connected;
use crate::run::vm_backup;

/// Removes the snapshot the backups of run `run_id` take on `vm`, if it is
/// there; answers whether it was.
pub(crate) fn remove_run_snapshot(conn: &Connected, vm: &str, run_id: &str) -> Result<bool> {
    let snap_name = vm_backup::snapshot_name(run_id);
    let record = conn.session.list_vms()?.into_iter().find(|v| v.name == vm);
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
}

/// What `remove_run_snapshot` did, as a note (`; removed its snapshot …`).
pub(crate) fn removed_note(run_id: &str, removed: Result<bool>) -> String {
    let snap_name = vm_backup::snapshot_name(run_id);
    match removed {
        Ok(true) => format!("; removed its snapshot {snap_name}"),
        Ok(false) => "; it left no snapshot".into(),
        Err(e) => format!("; could not remove its snapshot {snap_name}: {e:#}"),
    }
}

impl Runner<'_> {
    /// Cleans up after actions an earlier run started and never finished
    /// (it was killed, or the machine went down): a backup's snapshot is
    /// removed (its point was never committed, so nothing counts it); the
    /// action is closed as interrupted.
    pub(super) fn recover(&mut self, catalog: &mut crate::catalog::Catalog) -> Result<Vec<String>> {
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
                let removed = self
                    .session(source)
                    .and_then(|conn| remove_run_snapshot(conn, vm, &u.run_id));
                note.push_str(&removed_note(&u.run_id, removed));
                note.push_str("; its point was never committed");
            }
            catalog.mark_interrupted(&u, "interrupted: coffer stopped during the action")?;
            notes.push(note);
        }
        // Work handed to workers by a run that is over (only one runner
        // works at a time): what no worker took is dropped; a backup whose
        // worker's lease ran out is cleaned up like an interrupted one (a
        // copy, a drill or a gc leaves nothing on a host). What a worker still
        // holds is left to it.
        for w in catalog.abandon_work(None, "its run ended before a worker finished it")? {
            let mut note = format!(
                "run {} handed {} to worker {}, whose lease ran out",
                w.run_id,
                w.what(),
                w.worker.as_deref().unwrap_or("?")
            );
            if w.kind() == "backup" {
                let removed = self
                    .session(&w.source)
                    .and_then(|conn| remove_run_snapshot(conn, &w.vm, &w.run_id));
                note.push_str(&removed_note(&w.run_id, removed));
            }
            notes.push(note);
        }
        Ok(notes)
    }
}
