//! Whether a disk's Changed Block Tracking can be trusted for an
//! incremental from a given base point. Pure: the disk as the snapshot shows
//! it, the disk as the base point recorded it, in; a verdict with its reason
//! out. The backup loop asks this per disk; the planner asks it to say
//! "full" or "incremental" with the reason before anything runs.

use crate::repo::manifest::DiskEntry;

/// The disk as the new snapshot shows it.
#[derive(Debug, Clone)]
pub struct LiveDisk<'a> {
    pub device_key: i32,
    pub capacity_bytes: u64,
    /// `[datastore] dir/name.vmdk` of the VM's disk (the snapshot's base).
    pub backing: &'a str,
    /// The snapshot's change id for this disk; `None` when CBT is off.
    pub change_id: Option<&'a str>,
}

/// Incremental from the base's change id, or a full read, with the reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CbtVerdict {
    Incremental { since: String },
    Full { reason: String },
}

impl CbtVerdict {
    fn full(reason: impl Into<String>) -> CbtVerdict {
        CbtVerdict::Full {
            reason: reason.into(),
        }
    }
}

/// The part of a change id that names the tracking session (`52 … 3c/17`
/// → `52 … 3c`): when it changes, CBT was reset and older ids mean nothing.
pub fn change_id_epoch(change_id: &str) -> &str {
    change_id.rsplit_once('/').map_or(change_id, |(e, _)| e)
}

/// Decides for one disk. `cbt_was_enabled` is whether the VM had CBT on
/// before this backup (turning it on now invalidates older ids).
pub fn verdict(base: Option<&DiskEntry>, live: &LiveDisk<'_>, cbt_was_enabled: bool) -> CbtVerdict {
    let Some(base) = base else {
        return CbtVerdict::full("first backup of this disk");
    };
    if !cbt_was_enabled {
        return CbtVerdict::full("CBT was off until this backup");
    }
    let Some(since) = base.change_id.as_deref() else {
        return CbtVerdict::full("the base point has no change id for this disk");
    };
    let Some(now) = live.change_id else {
        return CbtVerdict::full("the snapshot has no change id for this disk (CBT off)");
    };
    if base.size_bytes != live.capacity_bytes {
        return CbtVerdict::full(format!(
            "disk resized from {} to {} bytes",
            base.size_bytes, live.capacity_bytes
        ));
    }
    if let Some(old) = base.backing.as_deref()
        && moved(old, live.backing)
    {
        return CbtVerdict::full(format!(
            "disk moved from {old} to {} (Storage vMotion)",
            live.backing
        ));
    }
    if change_id_epoch(since) != change_id_epoch(now) {
        return CbtVerdict::full("the change-id chain was reset since the base point");
    }
    CbtVerdict::Incremental {
        since: since.to_string(),
    }
}

/// A disk's base file, whichever snapshot delta of it a path names: a
/// snapshot makes the VM's disk `<name>-000001.vmdk` beside `<name>.vmdk`
/// (VMware KB 1015180), which is the same disk, not a moved one.
fn base_file(backing: &str) -> &str {
    let stem = backing.strip_suffix(".vmdk").unwrap_or(backing);
    match stem.rsplit_once('-') {
        Some((base, n)) if n.len() == 6 && n.bytes().all(|b| b.is_ascii_digit()) => base,
        _ => stem,
    }
}

/// Whether the disk was moved (another datastore or folder), as opposed
/// to gaining or losing snapshot deltas in place.
fn moved(old: &str, now: &str) -> bool {
    base_file(old) != base_file(now)
}

/// Why a disk's change tracking must be reset before the next full, or
/// `None`. Forcing a full is not enough when the disk was resized or moved:
/// the tracking file (`-ctk.vmdk`) stays in place and can be wrong from
/// then on, so every later incremental would be suspect. After a resize,
/// QueryChangedDiskAreas has returned wrong areas (VMware KB 2090639);
/// after a Storage vMotion the tracking state may not follow the disk
/// (VMware KB 2048201); VMware's answer to both is to reset CBT (KB 2139574:
/// disable it, let a snapshot create/remove apply that, enable it).
pub fn reset_reason(base: Option<&DiskEntry>, live: &LiveDisk<'_>) -> Option<String> {
    let base = base?;
    if base.size_bytes != live.capacity_bytes {
        return Some(format!(
            "disk {} resized from {} to {} bytes",
            live.device_key, base.size_bytes, live.capacity_bytes
        ));
    }
    match base.backing.as_deref() {
        Some(old) if moved(old, live.backing) => Some(format!(
            "disk {} moved from {old} to {} (Storage vMotion)",
            live.device_key, live.backing
        )),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> DiskEntry {
        DiskEntry {
            device_key: 2000,
            label: "Hard disk 1".into(),
            size_bytes: 1 << 30,
            chunk_size_bytes: 256 << 10,
            index_key: "points/x/y/disk-2000.index".into(),
            index_sha256: String::new(),
            change_id: Some("52 aa bb-cc dd/7".into()),
            backing: Some("[ds1] db01/db01.vmdk".into()),
            slot: None,
            bytes_read: 0,
            chunks_new: 0,
            bytes_stored_new: 0,
            chunks_data: 0,
        }
    }

    fn live() -> LiveDisk<'static> {
        LiveDisk {
            device_key: 2000,
            capacity_bytes: 1 << 30,
            backing: "[ds1] db01/db01.vmdk",
            change_id: Some("52 aa bb-cc dd/9"),
        }
    }

    #[test]
    fn a_resized_or_moved_disk_needs_its_tracking_reset_and_nothing_else_does() {
        assert_eq!(reset_reason(Some(&base()), &live()), None);
        assert_eq!(reset_reason(None, &live()), None);
        let mut resized = live();
        resized.capacity_bytes = 2 << 30;
        assert!(
            reset_reason(Some(&base()), &resized)
                .unwrap()
                .contains("resized")
        );
        let mut moved = live();
        moved.backing = "[ds2] db01/db01.vmdk";
        assert!(
            reset_reason(Some(&base()), &moved)
                .unwrap()
                .contains("Storage vMotion")
        );
        // A snapshot delta of the same disk is not a move.
        let mut delta = live();
        delta.backing = "[ds1] db01/db01-000002.vmdk";
        assert_eq!(reset_reason(Some(&base()), &delta), None);
        assert!(matches!(
            verdict(Some(&base()), &delta, true),
            CbtVerdict::Incremental { .. }
        ));
        // A chain reset by someone else starts a fresh epoch: a full, no reset.
        let mut reset = live();
        reset.change_id = Some("52 11 22-33 44/1");
        assert_eq!(reset_reason(Some(&base()), &reset), None);
    }

    #[test]
    fn an_unchanged_disk_is_incremental_from_the_base_change_id() {
        assert_eq!(
            verdict(Some(&base()), &live(), true),
            CbtVerdict::Incremental {
                since: "52 aa bb-cc dd/7".into()
            }
        );
    }

    #[test]
    fn every_reason_to_distrust_cbt_gives_a_full_with_that_reason() {
        let reason = |v: CbtVerdict| match v {
            CbtVerdict::Full { reason } => reason,
            v => panic!("expected a full, got {v:?}"),
        };
        assert!(reason(verdict(None, &live(), true)).contains("first backup"));
        assert!(reason(verdict(Some(&base()), &live(), false)).contains("CBT was off"));
        let mut resized = live();
        resized.capacity_bytes = 2 << 30;
        assert!(reason(verdict(Some(&base()), &resized, true)).contains("resized"));
        let mut moved = live();
        moved.backing = "[ds2] db01/db01.vmdk";
        assert!(reason(verdict(Some(&base()), &moved, true)).contains("Storage vMotion"));
        let mut reset = live();
        reset.change_id = Some("52 11 22-33 44/1");
        assert!(reason(verdict(Some(&base()), &reset, true)).contains("reset"));
        let mut off = live();
        off.change_id = None;
        assert!(reason(verdict(Some(&base()), &off, true)).contains("CBT off"));
        let mut no_id = base();
        no_id.change_id = None;
        assert!(reason(verdict(Some(&no_id), &live(), true)).contains("no change id"));
    }
}
