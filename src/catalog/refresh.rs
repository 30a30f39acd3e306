//! Refreshing the catalog from a tier's repository, like `terraform
//! refresh`: list the points, read their manifests (never indexes or
//! chunks), record what is there, and report what differs from what the
//! catalog knew. All repository reads happen before the write transaction,
//! so a slow tier never holds the database locked.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

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

/// What reading one listed manifest gave.
enum Read {
    Good(Box<Manifest>),
    Bad(String),
}

impl Catalog {
    /// Refreshes what the catalog knows of `tier` from its repository and
    /// reports the drift. A failed listing changes no copy; it is recorded,
    /// so the planner can refuse to prune on that tier.
    pub fn refresh_tier(&mut self, tier: &str, repo: &Repository) -> Result<Drift, CatalogError> {
        self.sync_tier(tier, repo, false)
    }

    /// Forgets every copy the catalog recorded on `tier` and reads the tier
    /// again. Points and their history (verifications, drills) stay.
    pub fn rebuild_tier(&mut self, tier: &str, repo: &Repository) -> Result<Drift, CatalogError> {
        self.sync_tier(tier, repo, true)
    }

    fn sync_tier(
        &mut self,
        tier: &str,
        repo: &Repository,
        forget_first: bool,
    ) -> Result<Drift, CatalogError> {
        let now = Utc::now();
        let read = match read_tier(tier, repo) {
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
            let drift = record(tx, tier, &read, now)?;
            tx.execute(
                "INSERT INTO tier_refreshes (tier, refreshed_at, ok, error) \
                 VALUES (?1, ?2, 1, NULL) ON CONFLICT(tier) DO UPDATE SET \
                 refreshed_at = excluded.refreshed_at, ok = 1, error = NULL",
                args![tier, time_text(now)],
            )?;
            Ok(drift)
        })
    }
}

/// Lists the tier and reads every manifest. A manifest that does not parse
/// or authenticate is a finding; a store that cannot be read is an error
/// (a flaky network must never mark copies corrupt).
fn read_tier(tier: &str, repo: &Repository) -> Result<BTreeMap<PointRef, Read>, CatalogError> {
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
    let listed = repo.list_points().map_err(listing_failed)?;
    let mut out = BTreeMap::new();
    for p in listed {
        let read = match repo.read_manifest(&p) {
            Ok(m) if m.point_id != p.point_id || m.vm.uuid != p.vm_uuid => Read::Bad(format!(
                "the manifest names point {} of VM {}",
                m.point_id, m.vm.uuid
            )),
            Ok(m) => Read::Good(Box::new(m)),
            Err(RepoError::BadManifest { reason, .. }) => Read::Bad(reason),
            // Pruned between the listing and the read: not there.
            Err(RepoError::Store(StoreError::NotFound(_))) => continue,
            Err(source) => {
                return Err(CatalogError::Manifest {
                    tier: tier.to_string(),
                    point: p.point_id.clone(),
                    source,
                });
            }
        };
        out.insert(p, read);
    }
    Ok(out)
}

/// Writes what was read into the catalog and returns the drift.
fn record(
    tx: &Db,
    tier: &str,
    read: &BTreeMap<PointRef, Read>,
    now: DateTime<Utc>,
) -> Result<Drift, CatalogError> {
    let now_text = time_text(now);
    let known_copies: BTreeMap<String, CopyState> = {
        let rows = tx.query(
            "SELECT point_id, state FROM copies WHERE tier = ?1",
            args![tier],
        )?;
        let mut known = BTreeMap::new();
        for r in rows {
            let state = match r.get::<String>(1)?.as_str() {
                "present" => CopyState::Present,
                "missing" => CopyState::Missing,
                _ => CopyState::Corrupt,
            };
            known.insert(r.get::<String>(0)?, state);
        }
        known
    };
    let mut items = Vec::new();
    for (p, result) in read {
        let before = known_copies.get(&p.point_id).copied();
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
                upsert_copy(tx, p, tier, CopyState::Present, None, &now_text)?;
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
                upsert_copy(tx, p, tier, CopyState::Corrupt, Some(reason), &now_text)?;
            }
        }
    }
    let listed: BTreeSet<&str> = read.keys().map(|p| p.point_id.as_str()).collect();
    let rows = tx.query(
        "SELECT vm_uuid, point_id FROM copies WHERE tier = ?1 AND state != 'missing' \
         ORDER BY vm_uuid, point_id",
        args![tier],
    )?;
    let mut gone = Vec::new();
    for r in rows {
        let p = PointRef {
            vm_uuid: r.get(0)?,
            point_id: r.get(1)?,
        };
        if !listed.contains(p.point_id.as_str()) {
            gone.push(p);
        }
    }
    for p in gone {
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
        listed: read.len(),
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
    state: CopyState,
    detail: Option<&String>,
    now: &str,
) -> Result<(), CatalogError> {
    tx.execute(
        "INSERT INTO copies (point_id, vm_uuid, tier, state, detail, first_seen, last_seen) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6) \
         ON CONFLICT(point_id, tier) DO UPDATE SET state = excluded.state, \
         detail = excluded.detail, last_seen = excluded.last_seen",
        args![p.point_id, p.vm_uuid, tier, state.as_str(), detail, now],
    )?;
    Ok(())
}
