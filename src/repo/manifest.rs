//! The manifest of a restore point: what was backed up, from where, how, and
//! which index holds each disk. It is written last and is the commit point:
//! a point without a manifest does not exist. On an encrypted tier it carries
//! an HMAC over its canonical JSON, so a tampered manifest is refused.

use serde::{Deserialize, Serialize};

use super::ids::{IdError, PointId, VmUuid};

/// The newest manifest format this coffer reads and writes. Format 2 adds
/// `skipped_disks` and each disk's `slot`; a manifest that uses neither is
/// written as format 1, which every earlier coffer reads. A format 1
/// reader refuses format 2 by its number ("newer than this coffer")
/// rather than misreading it: on an encrypted tier it would otherwise take
/// the fields it does not know for tampering (the MAC covers them).
pub const FORMAT: u32 = 2;

/// The format a manifest needs: the lowest that holds every field it uses.
pub fn format_needed(m: &Manifest) -> u32 {
    if m.skipped_disks.is_empty() && m.disks.iter().all(|d| d.slot.is_none()) {
        1
    } else {
        2
    }
}

/// A VM's identity as the repository records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmIdentity {
    pub name: String,
    /// The VM's instance UUID (the repository's directory for its points).
    pub uuid: String,
    /// The policy's name of the source (host or vCenter) the VM was read
    /// from. An instance UUID is unique within one vCenter only, so two
    /// sources may hold VMs with the same one: the VM is the pair. `None`
    /// in manifests written before coffer recorded it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// The instance UUID of that host or vCenter (`AboutInfo.instanceUuid`),
    /// when it reports one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_instance: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum PointKind {
    Full,
    Incremental,
}

/// One disk of a point.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiskEntry {
    /// vSphere device key (2000, 2001, …), or 0 for an image file.
    pub device_key: i32,
    pub label: String,
    pub size_bytes: u64,
    pub chunk_size_bytes: u32,
    /// Object key of the index. Kept in the format for compatibility;
    /// readers derive the key from the point's ids and the device key
    /// (`index_key`) and refuse a manifest whose field says otherwise.
    pub index_key: String,
    /// SHA-256 of the index object.
    pub index_sha256: String,
    /// CBT change id recorded at the snapshot, for the next incremental.
    pub change_id: Option<String>,
    /// `[datastore] dir/name.vmdk` of the disk when it was read (VM backups).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backing: Option<String>,
    /// The disk's place in the VM's .vmx, its controller and unit
    /// (`scsi0:1`): a restore puts the disk back there. Points written
    /// before it was recorded have none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slot: Option<String>,
    /// Bytes read from the source for this disk.
    pub bytes_read: u64,
    /// Chunks that were new to the repository, and their stored bytes.
    pub chunks_new: u64,
    pub bytes_stored_new: u64,
    /// Chunks of the disk that hold data (not zero).
    pub chunks_data: u64,
}

/// A disk of the VM a point leaves out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SkippedDisk {
    pub device_key: i32,
    /// `[datastore] dir/name.vmdk`
    pub file: String,
    pub reason: String,
    /// Its place in the .vmx (`scsi0:2`), as for `DiskEntry::slot`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slot: Option<String>,
}

/// A restore point's manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: u32,
    pub point_id: String,
    pub vm: VmIdentity,
    pub kind: PointKind,
    /// The point an incremental started from.
    pub parent: Option<String>,
    /// "application" (quiesced, with a VSS manifest), "filesystem" (quiesced
    /// without one: file systems only), "crash", or "image" for a plain
    /// image backup. Points written before "filesystem" existed say
    /// "application" for any quiesced snapshot.
    pub consistency: String,
    /// RFC 3339, UTC.
    pub created: String,
    /// Whole milliseconds: an integer survives the JSON round trip the
    /// manifest MAC is computed over (a float may not).
    pub duration_ms: u64,
    pub disks: Vec<DiskEntry>,
    /// Small files of the VM (.vmx, .nvram), as chunk ids.
    #[serde(default)]
    pub files: Vec<(String, String)>,
    /// Disks of the VM this point does not hold, and why (an independent
    /// disk, which snapshots leave out; a raw device mapping).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub skipped_disks: Vec<SkippedDisk>,
    /// HMAC-SHA-256 of the manifest with this field empty (encrypted tiers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
}

impl VmIdentity {
    /// A VM known by name and instance UUID only (an image file, a test):
    /// no source recorded.
    pub fn new(name: impl Into<String>, uuid: impl Into<String>) -> VmIdentity {
        VmIdentity {
            name: name.into(),
            uuid: uuid.into(),
            source: None,
            source_instance: None,
        }
    }
}

impl Manifest {
    /// The point's validated ids, or why the manifest names no valid point.
    pub fn ids(&self) -> Result<(VmUuid, PointId), IdError> {
        Ok((
            VmUuid::parse(&self.vm.uuid)?,
            PointId::parse(&self.point_id)?,
        ))
    }

    /// The manifest's object key, built from its validated ids.
    pub fn key(&self) -> Result<String, IdError> {
        let (vm, point) = self.ids()?;
        Ok(manifest_key(&vm, &point))
    }

    /// The object key of a disk's index, derived from the point's ids and
    /// the device key, never taken from the manifest's `index_key`.
    pub fn index_key_of(&self, disk: &DiskEntry) -> Result<String, IdError> {
        let (vm, point) = self.ids()?;
        Ok(index_key(&vm, &point, disk.device_key))
    }

    /// The chunk ids of the point's files (.vmx, .nvram); an id that does not
    /// parse is left out (verify reports such a manifest through the MAC or
    /// the format check before this matters).
    pub fn file_digests(&self) -> Vec<super::chunk::ChunkDigest> {
        self.files
            .iter()
            .filter_map(|(_, d)| super::chunk::ChunkDigest::from_hex(d))
            .collect()
    }
}

pub fn point_prefix(vm_uuid: &VmUuid, point_id: &PointId) -> String {
    format!("points/{vm_uuid}/{point_id}/")
}

pub fn manifest_key(vm_uuid: &VmUuid, point_id: &PointId) -> String {
    format!("{}manifest.json", point_prefix(vm_uuid, point_id))
}

/// `points/<vm>/<point>/disk-<device key>.index`.
pub fn index_key(vm_uuid: &VmUuid, point_id: &PointId, device_key: i32) -> String {
    format!("{}disk-{device_key}.index", point_prefix(vm_uuid, point_id))
}

/// A new point id: sortable by time, unique across concurrent writers.
pub fn new_point_id(now: chrono::DateTime<chrono::Utc>) -> String {
    let mut r = [0u8; 3];
    getrandom::fill(&mut r).expect("the OS random source works");
    // Milliseconds keep ids of one VM in creation order; the random tail
    // keeps concurrent writers apart.
    format!("{}-{}", now.format("%Y%m%dT%H%M%S%3fZ"), hex::encode(r))
}

/// The time a point id was named at (see [`new_point_id`]), to the
/// millisecond; `None` for an id of another form.
pub fn point_id_time(point_id: &str) -> Option<chrono::DateTime<chrono::Utc>> {
    let stamp = point_id.split('-').next()?;
    chrono::NaiveDateTime::parse_from_str(stamp, "%Y%m%dT%H%M%S%3fZ")
        .ok()
        .map(|t| t.and_utc())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_point_id_tells_the_millisecond_it_was_named_at() {
        let at = chrono::DateTime::parse_from_rfc3339("2026-12-03T22:58:59.950Z")
            .unwrap()
            .with_timezone(&chrono::Utc);
        let id = new_point_id(at);
        assert_eq!(point_id_time(&id), Some(at));
        assert_eq!(point_id_time("20261203T225859Z-2b78"), None);
        assert_eq!(point_id_time("not-an-id"), None);
    }
}
