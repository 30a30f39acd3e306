//! Refreshing the catalog from a tier's repository, like `terraform
//! refresh`: list the points, read their manifests (never indexes or
//! chunks), record what is there, and report what differs from what the
//! catalog knew. All repository reads happen before the write transaction,
//! so a slow tier never holds the database locked.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::Mutex;

use super::db::{Db, args};
use super::{Catalog, CatalogError, CopyState, time_text};
use crate::repo::manifest::{Manifest, PointKind};
use crate::repo::store::StoreError;
use crate::repo::{PointRef, RepoConfig, RepoError, Repository};
use chrono::{DateTime, Utc};

/// How a tier differs from what the catalog knew of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DriftKind {
    /// The catalog had a copy on this tier; the tier no longer lists it.
    Missing,
    /// A readable manifest of a point the catalog never saw on any tier.
    NeverSeen,
    /// A known point newly (or again) readable on this tier.
    Appeared,
    /// The manifest is listed but cannot be read or does not check out.
    Corrupt { reason: String },
}

/// One difference, on one point.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DriftItem {
    pub point: PointRef,
    pub kind: DriftKind,
}

impl fmt::Display for DriftItem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let p = &self.point;
        match &self.kind {
            DriftKind::Missing => write!(f, "point {} of VM {} is missing", p.point_id, p.vm_uuid),
            DriftKind::NeverSeen => write!(
                f,
                "point {} of VM {} was never seen before",
                p.point_id, p.vm_uuid
            ),
            DriftKind::Appeared => {
                write!(f, "point {} of VM {} appeared", p.point_id, p.vm_uuid)
            }
            DriftKind::Corrupt { reason } => write!(
                f,
                "point {} of VM {} is corrupt: {reason}",
                p.point_id, p.vm_uuid
            ),
        }
    }
}

/// What one refresh of one tier found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Drift {
    pub tier: String,
    /// Points the tier lists (readable or not).
    pub listed: usize,
    /// The differences, by point.
    pub items: Vec<DriftItem>,
}

impl Drift {
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    fn of(&self, pred: impl Fn(&DriftKind) -> bool) -> Vec<&PointRef> {
        self.items
            .iter()
            .filter(|i| pred(&i.kind))
            .map(|i| &i.point)
            .collect()
    }

    pub fn missing(&self) -> Vec<&PointRef> {
        self.of(|k| *k == DriftKind::Missing)
    }

    pub fn never_seen(&self) -> Vec<&PointRef> {
        self.of(|k| *k == DriftKind::NeverSeen)
    }

    pub fn appeared(&self) -> Vec<&PointRef> {
        self.of(|k| *k == DriftKind::Appeared)
    }

    pub fn corrupt(&self) -> Vec<&PointRef> {
        self.of(|k| matches!(k, DriftKind::Corrupt { .. }))
    }
}

/// Manifests read at once by a refresh.
const MANIFEST_READERS: usize = 16;

/// How long a refresh trusts a manifest it read, which the listing shows
/// unchanged since, before reading it again: a week, and up to a week more
/// by the point's id ([`reread_after`]), so that the manifests read at
/// once (by the first refresh of a tier) are read again over a week, not
/// by one plan.
pub const REREAD_AFTER: chrono::TimeDelta = chrono::TimeDelta::days(7);

/// How long after its last read the manifest of `point_id` is read again.
pub fn reread_after(point_id: &str) -> chrono::TimeDelta {
    let spread = crc32fast::hash(point_id.as_bytes()) % (7 * 24 * 60);
    REREAD_AFTER + chrono::TimeDelta::minutes(i64::from(spread))
}

/// What reading one listed manifest gave.
enum Read {
    Good(Box<Manifest>),
    Bad(String),
    /// Not there (pruned since it was listed, or not written).
    Gone,
    /// Not read: present when last read, within [`REREAD_AFTER`], and
    /// listed as it was then.
    Unchanged,
}

/// What a refresh reads of a tier's manifests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reads {
    /// Every manifest listed.
    All,
    /// Those the listing shows written since they were read, new ones,
    /// and those read longer than [`REREAD_AFTER`] ago.
    Written,
}

impl Catalog {
    /// Refreshes what the catalog knows of `tier` from its repository and
    /// reports the drift. A failed listing changes no copy; it is recorded,
    /// so the planner can refuse to prune on that tier. Only the manifests
    /// written since they were read are read (see [`Reads::Written`]).
    pub fn refresh_tier(&mut self, tier: &str, repo: &Repository) -> Result<Drift, CatalogError> {
        self.sync_tier(tier, repo, false, Reads::Written)
    }

    /// [`Catalog::refresh_tier`], reading every manifest listed (`coffer
    /// catalog refresh`: an operator's check of the tier).
    pub fn reread_tier(&mut self, tier: &str, repo: &Repository) -> Result<Drift, CatalogError> {
        self.sync_tier(tier, repo, false, Reads::All)
    }

    /// Forgets every copy the catalog recorded on `tier` and reads the tier
    /// again. Points and their history (verifications, drills) stay.
    pub fn rebuild_tier(&mut self, tier: &str, repo: &Repository) -> Result<Drift, CatalogError> {
        self.sync_tier(tier, repo, true, Reads::All)
    }

    /// Records what the manifests of `points` on `tier` say now, without
    /// listing the tier: after the runner wrote, copied or pruned them. A
    /// point whose manifest is not there is missing on the tier. The
    /// tier's own refresh (and its record of a failed listing) is left to
    /// [`Catalog::refresh_tier`].
    pub fn refresh_points(
        &mut self,
        tier: &str,
        repo: &Repository,
        points: &[PointRef],
    ) -> Result<Drift, CatalogError> {
        let listed: Vec<(PointRef, Option<String>)> =
            points.iter().map(|p| (p.clone(), None)).collect();
        let read = read_manifests(tier, repo, &listed, &BTreeMap::new())?;
        let now = Utc::now();
        self.db
            .transaction(|tx| record(tx, tier, &read, now, false))
    }

    fn sync_tier(
        &mut self,
        tier: &str,
        repo: &Repository,
        forget_first: bool,
        reads: Reads,
    ) -> Result<Drift, CatalogError> {
        let now = Utc::now();
        let trusted = match reads {
            Reads::All => BTreeMap::new(),
            Reads::Written => self.trusted_manifests(tier, now)?,
        };
        let read = match read_tier(tier, repo, &trusted) {
            Ok(r) => r,
            Err(e) => {
                // Best effort: the failure itself is what must be reported.
                let _ = self.db.execute(
                    "INSERT INTO tier_refreshes (tier, refreshed_at, ok, error) \
                     VALUES (?1, ?2, 0, ?3) ON CONFLICT(tier) DO UPDATE SET \
                     refreshed_at = excluded.refreshed_at, ok = 0, error = excluded.error",
                    args![tier, time_text(now), e.to_string()],
                );
                return Err(e);
            }
        };
        self.db.transaction(|tx| {
            if forget_first {
                tx.execute("DELETE FROM copies WHERE tier = ?1", args![tier])?;
            }
            let drift = record(tx, tier, &read, now, true)?;
            tx.execute(
                "INSERT INTO tier_refreshes (tier, refreshed_at, ok, error) \
                 VALUES (?1, ?2, 1, NULL) ON CONFLICT(tier) DO UPDATE SET \
                 refreshed_at = excluded.refreshed_at, ok = 1, error = NULL",
                args![tier, time_text(now)],
            )?;
            Ok(drift)
        })
    }

    /// The copies on `tier` a refresh need not read again if the listing
    /// shows them as it did: present when last read, less than
    /// [`reread_after`] ago. Point → manifest as then listed.
    fn trusted_manifests(
        &self,
        tier: &str,
        now: DateTime<Utc>,
    ) -> Result<BTreeMap<PointRef, String>, CatalogError> {
        // Read within the longest delay: the rest is read again anyway.
        let longest = REREAD_AFTER + REREAD_AFTER;
        let rows = self.db.query(
            "SELECT vm_uuid, point_id, manifest_seen, last_seen FROM copies WHERE tier = ?1 \
             AND state = 'present' AND manifest_seen IS NOT NULL AND last_seen >= ?2",
            args![tier, time_text(now - longest)],
        )?;
        let mut out = BTreeMap::new();
        for r in rows {
            let p = PointRef {
                vm_uuid: r.get(0)?,
                point_id: r.get(1)?,
            };
            let read_at = super::parse_time("copy last seen", &r.get::<String>(3)?)?;
            if read_at >= now - reread_after(&p.point_id) {
                out.insert(p, r.get::<String>(2)?);
            }
        }
        Ok(out)
    }
}

/// Lists the tier and reads its manifests but those `trusted` names as
/// listed the same way (point → fingerprint). A manifest that does not
/// parse or authenticate is a finding; a store that cannot be read is an
/// error (a flaky network must never mark copies corrupt).
fn read_tier(
    tier: &str,
    repo: &Repository,
    trusted: &BTreeMap<PointRef, String>,
) -> Result<BTreeMap<PointRef, (Read, Option<String>)>, CatalogError> {
    let listing_failed = |source| CatalogError::Listing {
        tier: tier.to_string(),
        source,
    };
    // An unmounted disk or a wrong bucket lists as empty, which would read
    // as "every copy is gone": first make sure the repository that was
    // opened is still the one there.
    let config = match repo.store().get("config") {
        Ok(bytes) => serde_json::from_slice::<RepoConfig>(&bytes)
            .map_err(|e| listing_failed(RepoError::BadConfig(e.to_string())))?,
        Err(StoreError::NotFound(_)) => {
            return Err(listing_failed(RepoError::NotARepository(repo.describe())));
        }
        Err(e) => return Err(listing_failed(e.into())),
    };
    if config.id != repo.config.id {
        return Err(listing_failed(RepoError::Invalid(format!(
            "{} now holds repository {}, not {}",
            repo.describe(),
            config.id,
            repo.config.id
        ))));
    }
    let listed = repo.list_points_seen().map_err(listing_failed)?;
    let listed: Vec<(PointRef, Option<String>)> = listed
        .into_iter()
        .map(|(p, seen)| (p, Some(seen)))
        .collect();
    read_manifests(tier, repo, &listed, trusted)
}

/// Reads the manifests of `listed` (each with its fingerprint when a
/// listing gave one), but for those `trusted` holds as listed the same.
fn read_manifests(
    tier: &str,
    repo: &Repository,
    listed: &[(PointRef, Option<String>)],
    trusted: &BTreeMap<PointRef, String>,
) -> Result<BTreeMap<PointRef, (Read, Option<String>)>, CatalogError> {
    // Manifests are small and a tier may hold a million: on object storage
    // each is a request whose time is mostly the round trip, so several
    // are in flight at once.
    let out = Mutex::new(BTreeMap::new());
    crate::repo::parallel::for_each(
        listed,
        MANIFEST_READERS,
        || (),
        |_, (p, seen)| {
            let read = if seen.is_some() && trusted.get(p) == seen.as_ref() {
                // Not read at all: the listing shows it as it was read.
                Read::Unchanged
            } else {
                match repo.read_manifest(p) {
                    Ok(m) if m.point_id != p.point_id || m.vm.uuid != p.vm_uuid => {
                        Read::Bad(format!(
                            "the manifest names point {} of VM {}",
                            m.point_id, m.vm.uuid
                        ))
                    }
                    Ok(m) => Read::Good(Box::new(m)),
                    Err(RepoError::BadManifest { reason, .. }) => Read::Bad(reason),
                    Err(RepoError::Store(StoreError::NotFound(_))) => Read::Gone,
                    Err(source) => {
                        return Err(CatalogError::Manifest {
                            tier: tier.to_string(),
                            point: p.point_id.clone(),
                            source,
                        });
                    }
                }
            };
            out.lock().unwrap().insert(p.clone(), (read, seen.clone()));
            Ok(())
        },
    )?;
    Ok(out.into_inner().unwrap())
}

/// Writes what was read into the catalog and returns the drift. With
/// `whole_tier`, `read` holds the tier's whole listing: a copy the catalog
/// knows there that it does not hold is missing.
fn record(
    tx: &Db,
    tier: &str,
    read: &BTreeMap<PointRef, (Read, Option<String>)>,
    now: DateTime<Utc>,
    whole_tier: bool,
) -> Result<Drift, CatalogError> {
    let now_text = time_text(now);
    // Point id → VM and state of each copy the catalog knows on the tier
    // (of the points read, when not the whole tier).
    let mut known_copies: BTreeMap<String, (String, CopyState)> = BTreeMap::new();
    if whole_tier {
        let rows = tx.query(
            "SELECT point_id, vm_uuid, state FROM copies WHERE tier = ?1",
            args![tier],
        )?;
        for r in rows {
            let state = CopyState::parse(&r.get::<String>(2)?)?;
            known_copies.insert(r.get::<String>(0)?, (r.get(1)?, state));
        }
    } else {
        for p in read.keys() {
            let row = tx.query_one(
                "SELECT state FROM copies WHERE point_id = ?1 AND tier = ?2",
                args![p.point_id, tier],
            )?;
            if let Some(r) = row {
                let state = CopyState::parse(&r.get::<String>(0)?)?;
                known_copies.insert(p.point_id.clone(), (p.vm_uuid.clone(), state));
            }
        }
    }
    let mut items = Vec::new();
    let mut missing = Vec::new();
    for (p, (result, seen)) in read {
        let before = known_copies.get(&p.point_id).map(|(_, state)| *state);
        match result {
            Read::Good(m) => {
                let known_point = tx
                    .query_one(
                        "SELECT 1 FROM points WHERE point_id = ?1",
                        args![p.point_id],
                    )?
                    .is_some();
                upsert_vm(tx, m, &now_text)?;
                if !known_point {
                    insert_point(tx, m)?;
                    items.push(DriftItem {
                        point: p.clone(),
                        kind: DriftKind::NeverSeen,
                    });
                } else if before != Some(CopyState::Present) {
                    items.push(DriftItem {
                        point: p.clone(),
                        kind: DriftKind::Appeared,
                    });
                }
                let state = (CopyState::Present, None);
                upsert_copy(tx, p, tier, state, seen.as_ref(), &now_text)?;
            }
            Read::Bad(reason) => {
                if before != Some(CopyState::Corrupt) {
                    items.push(DriftItem {
                        point: p.clone(),
                        kind: DriftKind::Corrupt {
                            reason: reason.clone(),
                        },
                    });
                }
                let state = (CopyState::Corrupt, Some(reason));
                upsert_copy(tx, p, tier, state, seen.as_ref(), &now_text)?;
            }
            Read::Gone if before.is_some_and(|s| s != CopyState::Missing) => {
                missing.push(p.clone());
            }
            Read::Gone | Read::Unchanged => {}
        }
    }
    if whole_tier {
        // What the listing did not name at all (a point read as gone is
        // counted above).
        let named: BTreeSet<&str> = read.keys().map(|p| p.point_id.as_str()).collect();
        for (point_id, (vm_uuid, state)) in &known_copies {
            if *state != CopyState::Missing && !named.contains(point_id.as_str()) {
                missing.push(PointRef {
                    vm_uuid: vm_uuid.clone(),
                    point_id: point_id.clone(),
                });
            }
        }
    }
    let listed = read
        .values()
        .filter(|(r, _)| !matches!(r, Read::Gone))
        .count();
    for p in missing {
        tx.execute(
            "UPDATE copies SET state = 'missing', detail = NULL WHERE point_id = ?1 AND tier = ?2",
            args![p.point_id, tier],
        )?;
        items.push(DriftItem {
            point: p,
            kind: DriftKind::Missing,
        });
    }
    items.sort_by(|a, b| a.point.cmp(&b.point));
    Ok(Drift {
        tier: tier.to_string(),
        listed,
        items,
    })
}

fn upsert_vm(tx: &Db, m: &Manifest, now: &str) -> Result<(), CatalogError> {
    tx.execute(
        "INSERT INTO vms (uuid, name, source, first_seen, last_seen) VALUES (?1, ?2, ?3, ?4, ?4) \
         ON CONFLICT(uuid) DO UPDATE SET name = excluded.name, last_seen = excluded.last_seen, \
         source = COALESCE(excluded.source, vms.source)",
        args![m.vm.uuid, m.vm.name, m.vm.source, now],
    )?;
    Ok(())
}

fn insert_point(tx: &Db, m: &Manifest) -> Result<(), CatalogError> {
    let created = DateTime::parse_from_rfc3339(&m.created)
        .map(|t| time_text(t.with_timezone(&Utc)))
        .map_err(|_| CatalogError::BadValue {
            what: "manifest creation time",
            value: m.created.clone(),
        })?;
    tx.execute(
        "INSERT INTO points \
         (point_id, vm_uuid, created, kind, parent, consistency, duration_ms, source, vm_name) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        args![
            m.point_id,
            m.vm.uuid,
            created,
            match m.kind {
                PointKind::Full => "full",
                PointKind::Incremental => "incremental",
            },
            m.parent,
            m.consistency,
            i64::try_from(m.duration_ms).unwrap_or(i64::MAX),
            m.vm.source,
            m.vm.name,
        ],
    )?;
    for d in &m.disks {
        tx.execute(
            "INSERT INTO point_disks \
             (point_id, device_key, label, size_bytes, chunk_size_bytes, index_sha256, change_id, \
              backing) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            args![
                m.point_id,
                d.device_key,
                d.label,
                i64::try_from(d.size_bytes).unwrap_or(i64::MAX),
                i64::from(d.chunk_size_bytes),
                d.index_sha256,
                d.change_id,
                d.backing,
            ],
        )?;
    }
    Ok(())
}

fn upsert_copy(
    tx: &Db,
    p: &PointRef,
    tier: &str,
    (state, detail): (CopyState, Option<&String>),
    seen: Option<&String>,
    now: &str,
) -> Result<(), CatalogError> {
    tx.execute(
        "INSERT INTO copies \
         (point_id, vm_uuid, tier, state, detail, first_seen, last_seen, manifest_seen) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6, ?7) \
         ON CONFLICT(point_id, tier) DO UPDATE SET state = excluded.state, \
         detail = excluded.detail, last_seen = excluded.last_seen, \
         manifest_seen = excluded.manifest_seen",
        args![
            p.point_id,
            p.vm_uuid,
            tier,
            state.as_str(),
            detail,
            now,
            seen
        ],
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifests_read_together_are_read_again_over_a_week() {
        let days: Vec<i64> = (0..7000)
            .map(|i| {
                let id = crate::repo::manifest::new_point_id(Utc::now()) + &i.to_string();
                let after = reread_after(&id);
                assert!(after >= REREAD_AFTER && after < REREAD_AFTER + REREAD_AFTER);
                (after - REREAD_AFTER).num_days()
            })
            .collect();
        for day in 0..7 {
            let n = days.iter().filter(|d| **d == day).count();
            assert!((700..1300).contains(&n), "day {day}: {n} of 7000");
        }
        assert_eq!(
            reread_after("a"),
            reread_after("a"),
            "the same for one point"
        );
    }
}
