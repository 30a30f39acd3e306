//! The tier log: what a rebuild could not learn from manifests — drill and
//! verification results, how runs ended — is also written to every tier it
//! concerns, one small JSON object per event under `log/`, so that a
//! catalog rebuilt from the tiers (after it was lost or damaged) loses
//! nothing.
//!
//! An event's key is built only from the time it was written and a random
//! id (`log/20261201T224753.123456Z-0011223344556677.json`), never from
//! what it says; replay accepts only keys of that form. On an encrypted
//! tier each event carries a MAC under the manifest key, like a manifest,
//! and replay drops an event that does not authenticate.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::db::args;
use super::{Catalog, CatalogError, Verification, VerificationKind, time_text};
use crate::repo::chunk::Keys;
use crate::repo::{RepoError, Repository};

/// Where the events live in a repository.
pub const PREFIX: &str = "log/";

/// One fact a rebuild needs from the log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "kebab-case")]
pub enum LogEvent {
    /// A verification or drill of a point of this tier.
    Verification {
        kind: String,
        point_id: String,
        tier: String,
        drill: Option<String>,
        started: DateTime<Utc>,
        finished: Option<DateTime<Utc>>,
        ok: Option<bool>,
        detail: Option<String>,
        /// Data verification and guest checks, kept apart (absent in
        /// events logged before they were).
        #[serde(default)]
        data_ok: Option<bool>,
        #[serde(default)]
        guest_ok: Option<bool>,
        #[serde(default)]
        guest_detail: Option<String>,
        restore_seconds: Option<f64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        heartbeat_seconds: Option<f64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        method: Option<String>,
    },
    /// A run ended (the journal's outcome).
    RunFinished {
        run_id: String,
        command: String,
        started: DateTime<Utc>,
        finished: DateTime<Utc>,
        outcome: String,
    },
}

impl LogEvent {
    pub fn verification(v: &Verification) -> LogEvent {
        LogEvent::Verification {
            kind: v.kind.as_str().to_string(),
            point_id: v.point_id.clone(),
            tier: v.tier.clone(),
            drill: v.drill.clone(),
            started: v.started,
            finished: v.finished,
            ok: v.ok,
            detail: v.detail.clone(),
            data_ok: v.data_ok,
            guest_ok: v.guest_ok,
            guest_detail: v.guest_detail.clone(),
            restore_seconds: v.restore_seconds,
            heartbeat_seconds: v.heartbeat_seconds,
            method: v.method.clone(),
        }
    }
}

#[derive(Serialize, Deserialize)]
struct Stored {
    #[serde(flatten)]
    event: LogEvent,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    mac: Option<String>,
}

fn mac_of(keys: Option<&Keys>, event: &LogEvent) -> Option<String> {
    let keys = keys?;
    let bytes = serde_json::to_vec(event).expect("a log event serializes");
    Some(hex::encode(Keys::mac(&keys.manifest_key, &bytes)))
}

/// A new event key: the time, then 64 random bits.
fn new_key(now: DateTime<Utc>) -> String {
    let mut r = [0u8; 8];
    getrandom::fill(&mut r).expect("the OS random source works");
    format!(
        "{PREFIX}{}-{}.json",
        now.format("%Y%m%dT%H%M%S%.6fZ"),
        hex::encode(r)
    )
}

/// Whether `key` is of the form `new_key` makes.
fn is_event_key(key: &str) -> bool {
    let Some(name) = key
        .strip_prefix(PREFIX)
        .and_then(|k| k.strip_suffix(".json"))
    else {
        return false;
    };
    let Some((time, id)) = name.split_once('-') else {
        return false;
    };
    id.len() == 16
        && id.bytes().all(|b| b.is_ascii_hexdigit())
        && time.len() == 23
        && time
            .bytes()
            .all(|b| b.is_ascii_digit() || matches!(b, b'T' | b'Z' | b'.'))
}

/// Writes one event to `repo` (atomically: `Store::put`).
pub fn append(repo: &Repository, event: &LogEvent) -> Result<(), RepoError> {
    let stored = Stored {
        mac: mac_of(repo.keys(), event),
        event: event.clone(),
    };
    let bytes = serde_json::to_vec(&stored).expect("a log event serializes");
    repo.store().put(&new_key(Utc::now()), &bytes)?;
    repo.store().flush()?;
    Ok(())
}

/// What a replay found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Replayed {
    /// Events added to the catalog.
    pub applied: usize,
    /// Events the catalog already held, or about points it does not know
    /// (pruned since).
    pub skipped: usize,
    /// Objects under `log/` that are not events or do not authenticate.
    pub rejected: usize,
}

impl Catalog {
    /// Replays the log of `repo` into the catalog. Idempotent: an event the
    /// catalog already holds is skipped.
    pub fn replay_tier_log(&mut self, repo: &Repository) -> Result<Replayed, CatalogError> {
        let listing = |source: RepoError| CatalogError::Listing {
            tier: repo.describe(),
            source,
        };
        let mut keys: Vec<String> = repo
            .store()
            .list(PREFIX)
            .map_err(|e| listing(e.into()))?
            .into_iter()
            .map(|o| o.key)
            .collect();
        keys.sort();
        let mut out = Replayed::default();
        for key in keys {
            if !is_event_key(&key) {
                out.rejected += 1;
                continue;
            }
            let bytes = repo.store().get(&key).map_err(|e| listing(e.into()))?;
            let Ok(stored) = serde_json::from_slice::<Stored>(&bytes) else {
                out.rejected += 1;
                continue;
            };
            if repo.keys().is_some() && stored.mac != mac_of(repo.keys(), &stored.event) {
                out.rejected += 1;
                continue;
            }
            if self.apply_event(&stored.event)? {
                out.applied += 1;
            } else {
                out.skipped += 1;
            }
        }
        Ok(out)
    }

    /// Adds one event; false when it was there already or concerns a point
    /// the catalog does not know.
    fn apply_event(&mut self, event: &LogEvent) -> Result<bool, CatalogError> {
        match event {
            LogEvent::Verification {
                kind,
                point_id,
                tier,
                drill,
                started,
                finished,
                ok,
                detail,
                data_ok,
                guest_ok,
                guest_detail,
                restore_seconds,
                heartbeat_seconds,
                method,
            } => {
                let kind = VerificationKind::parse(kind)?;
                let known = self
                    .db
                    .query_one("SELECT 1 FROM points WHERE point_id = ?1", args![point_id])?;
                let held = self.db.query_one(
                    "SELECT 1 FROM verifications WHERE point_id = ?1 AND tier = ?2 \
                     AND kind = ?3 AND started = ?4",
                    args![point_id, tier, kind.as_str(), time_text(*started)],
                )?;
                if known.is_none() || held.is_some() {
                    return Ok(false);
                }
                self.record_verification(&Verification {
                    kind,
                    point_id: point_id.clone(),
                    tier: tier.clone(),
                    drill: drill.clone(),
                    started: *started,
                    finished: *finished,
                    ok: *ok,
                    detail: detail.clone(),
                    data_ok: *data_ok,
                    guest_ok: *guest_ok,
                    guest_detail: guest_detail.clone(),
                    restore_seconds: *restore_seconds,
                    heartbeat_seconds: *heartbeat_seconds,
                    method: method.clone(),
                })?;
                Ok(true)
            }
            LogEvent::RunFinished {
                run_id,
                command,
                started,
                finished,
                outcome,
            } => {
                let n = self.db.execute(
                    "INSERT INTO runs (run_id, command, started, finished, outcome) \
                     VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT DO NOTHING",
                    args![
                        run_id,
                        command,
                        time_text(*started),
                        time_text(*finished),
                        outcome
                    ],
                )?;
                Ok(n == 1)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_keys_are_made_only_of_time_and_a_random_id() {
        let k = new_key("2026-12-01T22:47:53.123456Z".parse().unwrap());
        assert!(k.starts_with("log/20261201T224753.123456Z-"), "{k}");
        assert!(is_event_key(&k), "{k}");
        assert!(!is_event_key("log/../config"));
        assert!(!is_event_key(
            "log/20261201T224753.123456Z-00112233445566zz.json"
        ));
        assert!(!is_event_key("points/x.json"));
    }

    #[test]
    fn a_replay_restores_run_outcomes_once_and_rejects_foreign_objects() {
        let t = tempfile::tempdir().unwrap();
        let store = std::sync::Arc::new(
            crate::repo::local::LocalStore::new(t.path().join("repo")).unwrap(),
        );
        let repo = Repository::init(store, None).unwrap();
        let event = LogEvent::RunFinished {
            run_id: "20261201T000000Z-ab12".into(),
            command: "apply".into(),
            started: "2026-12-01T00:00:00Z".parse().unwrap(),
            finished: "2026-12-01T00:05:00Z".parse().unwrap(),
            outcome: "success".into(),
        };
        append(&repo, &event).unwrap();
        repo.store().put("log/planted.json", b"{}").unwrap();
        let mut catalog = Catalog::open(&t.path().join("catalog.db")).unwrap();
        let first = catalog.replay_tier_log(&repo).unwrap();
        assert_eq!((first.applied, first.rejected), (1, 1));
        let again = catalog.replay_tier_log(&repo).unwrap();
        assert_eq!((again.applied, again.skipped), (0, 1));
        let outcome: String = catalog
            .db
            .query_one(
                "SELECT outcome FROM runs WHERE run_id = '20261201T000000Z-ab12'",
                &[],
            )
            .unwrap()
            .unwrap()
            .get(0)
            .unwrap();
        assert_eq!(outcome, "success");
    }
}
