//! Which consistency a backup's snapshot has, from what the host says
//! rather than what was asked: a quiesced snapshot is application-consistent
//! only when the guest's VSS writers took part, and then the host stores a
//! VSS manifest with it ("VMware Tools generate a vss-manifest.zip file
//! containing the backup components document (BCD) and writer manifests.
//! The host agent stores this manifest file in the snapshotDir of the
//! virtual machine", and "the VSS snapshot is created with the vss-manifest
//! file, or without this file in the error case": VDDK Programming Guide,
//! "Working with Microsoft Shadow Copy" and "Application-Consistent Backup
//! and Restore"). Only a Windows guest with `disk.EnableUUID`, SCSI disks
//! and no dynamic disks lets them take part; any other guest VMware Tools
//! quiesces is file-system-consistent (same guide, table "Driver Type and
//! Quiescing Mechanisms Used According to Guest Operating Systems"; VMware
//! KB 1018194, KB 1028881).
//!
//! The manifest is found by its name among the VM's files
//! (`layoutEx.file`), since the API's file types have none of their own for
//! it, and it must be new since before the snapshot: another snapshot's is
//! no evidence for this one.

use crate::policy::model::Consistency;
use crate::vsphere::Session;
use crate::vsphere::types::MoRef;

/// The consistency a point records: quiesced with the guest's VSS writers
/// (the host stored a VSS manifest with the snapshot).
pub const CONSISTENCY_APPLICATION: &str = "application";
/// Quiesced without VSS writers: file systems flushed and frozen.
pub const CONSISTENCY_FILESYSTEM: &str = "filesystem";
/// Not quiesced.
pub const CONSISTENCY_CRASH: &str = "crash";
/// The name a point keeps its snapshot's VSS manifest under.
pub const VSS_MANIFEST_FILE: &str = "vss-manifest.zip";

/// A policy's `consistency`, as it is written.
pub(super) fn consistency_asked(c: Consistency) -> &'static str {
    match c {
        Consistency::Application => "application",
        Consistency::ApplicationPreferred => "application-preferred",
        Consistency::Filesystem => "filesystem",
        Consistency::Crash => "crash",
    }
}

/// What a backup's snapshot turned out to be.
pub(super) struct Achieved {
    /// `CONSISTENCY_APPLICATION`, `_FILESYSTEM` or `_CRASH`.
    pub consistency: &'static str,
    /// The datastore path of its VSS manifest, when application-consistent.
    pub vss_manifest: Option<String>,
    /// Why a quiesced snapshot is only file-system-consistent.
    pub filesystem_only: Option<String>,
}

/// Reads, right after the snapshot was taken, what consistency it has.
/// `manifests_before`: the VSS manifests among the VM's files before it
/// was taken (empty when the host did not say).
pub(super) fn achieved(
    session: &Session,
    vm: &MoRef,
    quiesced: bool,
    manifests_before: &[String],
) -> Achieved {
    if !quiesced {
        return Achieved {
            consistency: CONSISTENCY_CRASH,
            vss_manifest: None,
            filesystem_only: None,
        };
    }
    let filesystem = |why: String| Achieved {
        consistency: CONSISTENCY_FILESYSTEM,
        vss_manifest: None,
        filesystem_only: Some(why),
    };
    match session.guest_quiesce_facts(vm) {
        Ok(facts) => match facts
            .vss_manifests
            .iter()
            .find(|m| !manifests_before.contains(m))
        {
            Some(m) => Achieved {
                consistency: CONSISTENCY_APPLICATION,
                vss_manifest: Some(m.clone()),
                filesystem_only: None,
            },
            None => filesystem(facts.why_no_vss()),
        },
        Err(e) => filesystem(format!(
            "the host did not list the VM's files ({e}), so no VSS manifest was found"
        )),
    }
}
