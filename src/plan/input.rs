//! What the planner reads: the restore points and their copies on every
//! tier, the finished drills, and the whole input of one plan (`PlanInput`:
//! the configuration, the inventory, the points, `now`). Plain data that the
//! catalog and the inventory fill in and that `planner`, `compliance` and
//! the other planning parts all read, so none of them imports another for
//! its inputs.
//!
//! It owns these types and the small questions about one point (is it good,
//! is its copy on a tier healthy). It must never decide anything, perform
//! I/O or depend on the vSphere client, the runner or the command line.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use chrono::{DateTime, Utc};

use crate::inventory::VmRecord;
use crate::policy::Config;
use crate::repo::manifest::{DiskEntry, PointKind};

/// One restore point and where its copies are. A site holds about a
/// million of these, so the VM's identity is shared by its points.
#[derive(Debug, Clone, PartialEq)]
pub struct PointInfo {
    pub vm_uuid: Arc<str>,
    /// The source the VM was read from: with the UUID, the VM's identity
    /// (`None`: a point from before coffer recorded it).
    pub source: Option<Arc<str>>,
    pub vm_name: Arc<str>,
    pub point_id: String,
    pub created: DateTime<Utc>,
    pub kind: PointKind,
    /// What the snapshot was, as the manifest records it.
    pub consistency: PointConsistency,
    pub disks: Box<[PointDisk]>,
    /// Tier name → that copy.
    pub copies: Copies,
}

/// The consistency a point records (the manifest's `consistency`), in
/// one byte: a site holds a million points.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PointConsistency {
    /// Quiesced, with a VSS manifest.
    Application,
    /// Quiesced without one.
    Filesystem,
    Crash,
    /// A plain image backup ("image"), or a word this coffer does not know.
    Other,
}

impl PointConsistency {
    pub fn parse(text: &str) -> PointConsistency {
        match text {
            "application" => PointConsistency::Application,
            "filesystem" => PointConsistency::Filesystem,
            "crash" => PointConsistency::Crash,
            _ => PointConsistency::Other,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            PointConsistency::Application => "application",
            PointConsistency::Filesystem => "filesystem",
            PointConsistency::Crash => "crash",
            PointConsistency::Other => "other",
        }
    }
}

/// What the planner needs of a point's disk: enough to judge it as the
/// base of an incremental. The manifest's other fields stay out, since a
/// site holds a million points.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PointDisk {
    pub device_key: i32,
    pub size_bytes: u64,
    pub change_id: Option<Box<str>>,
    /// `[datastore] dir/name.vmdk` when it was read, if known.
    pub backing: Option<String>,
}

impl PointDisk {
    /// As the manifest's entry the CBT rules take.
    pub(super) fn as_entry(&self) -> DiskEntry {
        DiskEntry {
            device_key: self.device_key,
            label: String::new(),
            size_bytes: self.size_bytes,
            chunk_size_bytes: 0,
            index_key: String::new(),
            index_sha256: String::new(),
            change_id: self.change_id.as_deref().map(str::to_string),
            backing: self.backing.clone(),
            slot: None,
            bytes_read: 0,
            chunks_new: 0,
            bytes_stored_new: 0,
            chunks_data: 0,
        }
    }
}

/// The copies of a point by tier name, sorted by it. A vector, not a map:
/// a point has one to three copies, and a map node costs about 500 bytes
/// per point; callers share one name per tier between points.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Copies(Vec<(Arc<str>, CopyInfo)>);

type CopyRef<'a> = (&'a str, &'a CopyInfo);

impl Copies {
    fn find(&self, tier: &str) -> Result<usize, usize> {
        self.0.binary_search_by(|(t, _)| (**t).cmp(tier))
    }

    /// From copies given in tier order, one per tier, as the catalog
    /// lists them (sorted here if they are not).
    pub fn from_sorted(list: Vec<(Arc<str>, CopyInfo)>) -> Copies {
        if list.windows(2).all(|w| w[0].0 < w[1].0) {
            Copies(list)
        } else {
            list.into_iter().collect()
        }
    }

    pub fn get(&self, tier: &str) -> Option<&CopyInfo> {
        self.find(tier).ok().map(|i| &self.0[i].1)
    }

    pub fn get_mut(&mut self, tier: &str) -> Option<&mut CopyInfo> {
        self.find(tier).ok().map(|i| &mut self.0[i].1)
    }

    pub fn contains_key(&self, tier: &str) -> bool {
        self.find(tier).is_ok()
    }

    /// Adds or replaces the copy on `tier`; returns the one replaced.
    pub fn insert(&mut self, tier: impl Into<Arc<str>>, copy: CopyInfo) -> Option<CopyInfo> {
        let tier = tier.into();
        match self.find(&tier) {
            Ok(i) => Some(std::mem::replace(&mut self.0[i].1, copy)),
            Err(i) => {
                self.0.insert(i, (tier, copy));
                None
            }
        }
    }

    pub fn remove(&mut self, tier: &str) -> Option<CopyInfo> {
        self.find(tier).ok().map(|i| self.0.remove(i).1)
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Tier and copy, in tier order.
    pub fn iter(&self) -> impl Iterator<Item = CopyRef<'_>> {
        self.into_iter()
    }

    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(|(t, _)| &**t)
    }

    pub fn values(&self) -> impl Iterator<Item = &CopyInfo> {
        self.0.iter().map(|(_, c)| c)
    }
}

impl<T: Into<Arc<str>>> FromIterator<(T, CopyInfo)> for Copies {
    /// A tier given twice keeps its last copy, as a map would.
    fn from_iter<I: IntoIterator<Item = (T, CopyInfo)>>(iter: I) -> Self {
        let mut list: Vec<(Arc<str>, CopyInfo)> =
            iter.into_iter().map(|(t, c)| (t.into(), c)).collect();
        // Stable: of a tier given twice, the last given is the last kept.
        list.sort_by(|a, b| a.0.cmp(&b.0));
        list.reverse();
        list.dedup_by(|a, b| a.0 == b.0);
        list.reverse();
        list.shrink_to_fit();
        Copies(list)
    }
}

impl<'a> IntoIterator for &'a Copies {
    type Item = CopyRef<'a>;
    type IntoIter = std::iter::Map<
        std::slice::Iter<'a, (Arc<str>, CopyInfo)>,
        fn(&'a (Arc<str>, CopyInfo)) -> CopyRef<'a>,
    >;

    fn into_iter(self) -> Self::IntoIter {
        self.0.iter().map(|(t, c)| (&**t, c))
    }
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct CopyInfo {
    /// Object Lock on this copy until then.
    pub locked_until: Option<DateTime<Utc>>,
    /// The last verification of this copy: `Some(false)` when it failed.
    pub verified_ok: Option<bool>,
}

impl CopyInfo {
    /// Healthy: its last verification, if any, passed.
    pub fn healthy(&self) -> bool {
        self.verified_ok != Some(false)
    }
}

impl PointInfo {
    /// Good: restorable from at least one healthy copy. A copy that failed
    /// verification is damage on its tier, not in the point: the point's
    /// other copies stay, and the bad copy is pruned and copied again.
    pub fn good(&self) -> bool {
        self.copies.values().any(CopyInfo::healthy)
    }

    /// Holds a healthy copy on `tier`.
    pub fn healthy_on(&self, tier: &str) -> bool {
        self.copies.get(tier).is_some_and(CopyInfo::healthy)
    }
}

/// A finished drill, for `every` and for the guest-check findings.
#[derive(Debug, Clone)]
pub struct DrillRecord {
    pub policy: String,
    pub drill: String,
    pub vm_uuid: String,
    pub point_id: String,
    pub finished: DateTime<Utc>,
    pub ok: bool,
    /// The guest checks (fsck, boot, scripts): `None` when none ran. A
    /// failure is an alert and a compliance finding, never damage: the
    /// copy's data stands or falls by data verification alone.
    pub guest_ok: Option<bool>,
    /// What the guest checks said, with a failing check's own output.
    pub guest_detail: Option<String>,
}

/// Everything the planner looks at.
#[derive(Debug)]
pub struct PlanInput<'a> {
    pub config: &'a Config,
    /// Source name and VM, as the inventory found them.
    pub inventory: Vec<(String, VmRecord)>,
    /// Sources that could not be read, with the error: their VMs are
    /// `unknown`, neither vanished nor in compliance.
    pub unreachable_sources: BTreeMap<String, String>,
    /// Borrowed from what was gathered: a site holds a million.
    pub points: std::borrow::Cow<'a, [PointInfo]>,
    /// Tiers whose listing failed: nothing is pruned there.
    pub unlisted_tiers: BTreeSet<String>,
    pub drills: Vec<DrillRecord>,
    /// This installation's id when none of its runs is alive but the
    /// caller's: the coffer snapshots it owns are dead and removed.
    pub dead_installation: Option<String>,
    pub now: DateTime<Utc>,
    /// Allow pruning more than half of a tier's points in one run.
    pub allow_mass_prune: bool,
}
