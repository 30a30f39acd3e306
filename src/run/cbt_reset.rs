//! Resetting a VM's Changed Block Tracking, the way VMware documents it
//! (KB 2139574, "Resetting Changed Block Tracking for VMware vSphere
//! virtual machines"): disable tracking; create and remove a snapshot, so a
//! running VM applies the change (a stun/unstun); enable tracking, which the
//! next snapshot (the full backup's own) applies with a fresh change-id
//! epoch. Forcing a full alone leaves a suspect `-ctk.vmdk` in place.
//!
//! The snapshot is coffer's own (named and described like a backup's, so a
//! killed reset's snapshot is found and removed by the next run) and is
//! removed on every path; a failure after tracking was disabled enables it
//! again before answering.

use std::time::Duration;

use crate::inventory::VmRecord;
use crate::plan::hygiene::{snapshot_description, snapshot_name};
use crate::vsphere::soap::SnapshotRequest;
use crate::vsphere::{Error as VsphereError, Session};

/// Why a reset failed, and at which step.
#[derive(Debug, thiserror::Error)]
#[error("VM {vm}: resetting change tracking failed while {step}: {source}")]
pub struct CbtResetError {
    pub vm: String,
    pub step: &'static str,
    #[source]
    pub source: Box<VsphereError>,
}

/// Resets the change tracking of `vm`; answers what was done.
pub fn reset_cbt(
    session: &Session,
    vm: &VmRecord,
    run_id: &str,
    installation: &str,
    task_timeout: Duration,
) -> Result<String, CbtResetError> {
    let fail = |step: &'static str| {
        move |source: VsphereError| CbtResetError {
            vm: vm.name.clone(),
            step,
            source: Box::new(source),
        }
    };
    session
        .set_change_tracking(&vm.moref, false, task_timeout)
        .map_err(fail("disabling it"))?;
    let cycled = stun_cycle(session, vm, run_id, installation, task_timeout);
    // Tracking goes back on whatever the snapshot did.
    let enabled = session
        .set_change_tracking(&vm.moref, true, task_timeout)
        .map_err(fail("enabling it again"));
    cycled.map_err(fail("applying it with a snapshot"))?;
    enabled?;
    Ok(format!(
        "change tracking of {} disabled, applied by snapshot {} (created and removed), enabled; \
         the next snapshot starts a new change-id epoch",
        vm.name,
        reset_snapshot_name(run_id)
    ))
}

/// The reset's snapshot: a coffer snapshot (so hygiene knows it), apart
/// from the backup's of the same run.
fn reset_snapshot_name(run_id: &str) -> String {
    format!("{}-cbt-reset", snapshot_name(run_id))
}

/// Creates and removes a snapshot; the removal is tried whenever the
/// creation answered a snapshot.
fn stun_cycle(
    session: &Session,
    vm: &VmRecord,
    run_id: &str,
    installation: &str,
    task_timeout: Duration,
) -> Result<(), VsphereError> {
    let name = reset_snapshot_name(run_id);
    let description = snapshot_description(run_id, installation);
    let snapshot = session.create_snapshot(
        &vm.moref,
        &SnapshotRequest {
            name: &name,
            description: &description,
            memory: false,
            quiesce: false,
        },
        task_timeout,
    )?;
    session.remove_snapshot(&snapshot, task_timeout)
}
