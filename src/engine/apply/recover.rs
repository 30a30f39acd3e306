//! Recovery at the start of a run: actions an earlier run started and never
//! finished (it was killed, or the machine went down) are closed as
//! interrupted, and a backup's snapshot is removed (its point was never
//! committed, so nothing counts it).

use std::time::Duration;

use anyhow::Result;

use super::Runner;
use crate::plan::planner::Action;
use crate::run::vm_backup;

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
}
