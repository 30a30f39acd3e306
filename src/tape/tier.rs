//! A tape tier as a repository store. The repository code above it is the
//! one every tier uses; what differs is where objects live:
//!
//! - chunk blobs are written to tape only, in the copy session's tape file;
//! - indexes and manifests are written to tape (a tape restores without
//!   the catalog) and kept in the tier's catalog directory, so planning,
//!   listing points and retention never load a cartridge;
//! - the repository's `config` and its locks live in the catalog
//!   directory (the config is also the first object of every session).
//!
//! The media catalog (`media.db` in the catalog directory, SQLite) records
//! each medium of the pool (label, state, bytes), each tape file (label,
//! file number, session, which points it holds) and where every object is
//! (label, file number) and whether a kept point still needs it.
//!
//! A copy session starts at the repository's first object put, mounts an
//! appendable or blank medium of the pool, and ends when the manifest is
//! put: manifest record, end record, filemark; only then is the session
//! recorded in the media catalog and the manifest visible. A session cut
//! off earlier (kill, dead drive, end of medium) leaves a tape file coffer
//! never counts; the next session starts after it.
//!
//! Deleting an object (retention, gc) marks it no longer needed; a medium
//! none of whose objects is needed is freed whole (state `scratch`) and is
//! rewritten from its beginning when a session next takes it. Reads of
//! chunks fail: a restore, drill or copy from tape stages the point first
//! (`staging.rs`), reading the tape files it needs front to back; a lost
//! catalog is rebuilt from the tapes (`scan.rs`). The drive and changer
//! this uses are opened and locked in `hardware.rs`.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use rusqlite::{Connection, OptionalExtension, params};

use super::format::{FileWriter, Kind, Label, SessionEnd, SessionHead};
use super::hardware::{Mounted, open_changer, open_hardware, read_label, tape_err};
use crate::repo::local::LocalStore;

pub use super::hardware::Hardware;
pub use super::scan::ScanReport;
pub use super::staging::{StageReport, Staged, stage_point};
use crate::repo::store::{ObjectMeta, Store, StoreError, Thaw, ThawSpeed, check_key};

/// A tape tier's settings.
#[derive(Debug, Clone)]
pub struct TapeSpec {
    pub tier: String,
    /// The media pool: labels of media coffer labels itself start with it.
    pub pool: String,
    pub hardware: Hardware,
    /// The tier's catalog directory (media catalog, manifests, indexes).
    pub catalog: PathBuf,
}

struct Session {
    hw: Mounted,
    label: String,
    file: u32,
    id: String,
    writer: FileWriter,
    pending: Vec<(String, u64)>,
    objects: u64,
}

pub struct TapeStore {
    pub(super) spec: TapeSpec,
    pub(super) meta: LocalStore,
    pub(super) db: Mutex<Connection>,
    session: Mutex<Option<Session>>,
    /// Why a session of this store failed: later writes of the same copy
    /// (its other threads) fail too, instead of starting another session
    /// on another medium. A store opened anew starts afresh.
    failed: Mutex<Option<Failed>>,
}

/// How a session of a store failed.
enum Failed {
    MediumFull(String),
    Other(String),
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS media (
  label TEXT PRIMARY KEY,
  pool TEXT NOT NULL,
  state TEXT NOT NULL,          -- append | full | scratch
  labelled_at TEXT NOT NULL,
  bytes INTEGER NOT NULL DEFAULT 0,
  last_written TEXT,
  freed_at TEXT
);
CREATE TABLE IF NOT EXISTS files (
  label TEXT NOT NULL,
  file INTEGER NOT NULL,
  session TEXT NOT NULL,
  written_at TEXT NOT NULL,
  objects INTEGER NOT NULL,
  bytes INTEGER NOT NULL,
  points TEXT NOT NULL,         -- JSON list of the manifests it holds
  PRIMARY KEY (label, file)
);
CREATE TABLE IF NOT EXISTS objects (
  key TEXT PRIMARY KEY,
  label TEXT NOT NULL,
  file INTEGER NOT NULL,
  size INTEGER NOT NULL,
  written_at TEXT NOT NULL,
  needed INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS objects_by_medium ON objects (label, needed);
";

pub(super) fn db_err(e: rusqlite::Error) -> StoreError {
    StoreError::Backend(format!("tape media catalog: {e}"))
}

/// Data objects go to tape only; everything under `points/` goes to tape
/// and stays in the catalog directory; the rest stays in the catalog.
pub(super) fn on_tape_only(key: &str) -> bool {
    key.starts_with(crate::repo::chunk::CHUNKS_PREFIX)
}
pub(super) fn on_tape_too(key: &str) -> bool {
    key.starts_with("points/")
}
pub(super) fn is_manifest(key: &str) -> bool {
    on_tape_too(key) && key.ends_with("/manifest.json")
}

/// One medium as the media catalog knows it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Medium {
    pub label: String,
    pub pool: String,
    pub state: String,
    pub labelled_at: String,
    pub bytes: u64,
    pub last_written: Option<String>,
    pub files: Vec<TapeFile>,
    /// Objects on it a kept point still needs.
    pub needed_objects: u64,
    /// Where it is now: "drive", "slot N", or "out of the library"
    /// (offsite); `None` when the library was not asked.
    pub location: Option<String>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct TapeFile {
    pub file: u32,
    pub session: String,
    pub written_at: String,
    pub objects: u64,
    pub bytes: u64,
    pub points: Vec<String>,
}

impl TapeStore {
    pub fn new(spec: TapeSpec) -> Result<TapeStore, StoreError> {
        let meta = LocalStore::new(spec.catalog.join("meta"))?;
        let path = spec.catalog.join("media.db");
        let db = Connection::open(&path).map_err(db_err)?;
        db.execute_batch(SCHEMA).map_err(db_err)?;
        db.busy_timeout(std::time::Duration::from_secs(30))
            .map_err(db_err)?;
        Ok(TapeStore {
            spec,
            meta,
            db: Mutex::new(db),
            session: Mutex::new(None),
            failed: Mutex::new(None),
        })
    }

    fn now() -> String {
        chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    }

    fn repository_id(&self) -> String {
        self.meta
            .get("config")
            .ok()
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
            .and_then(|v| v.get("id").and_then(|i| i.as_str()).map(str::to_string))
            .unwrap_or_default()
    }

    /// Frees every medium none of whose objects a kept point needs: it
    /// goes back to `scratch` and its files are forgotten. Answers the
    /// labels freed.
    pub fn free_media(&self) -> Result<Vec<String>, StoreError> {
        let mut db = self.db.lock().unwrap();
        let tx = db.transaction().map_err(db_err)?;
        let freed: Vec<String> = {
            let mut q = tx
                .prepare(
                    "SELECT label FROM media WHERE state != 'scratch' AND EXISTS
                       (SELECT 1 FROM files f WHERE f.label = media.label)
                     AND NOT EXISTS
                       (SELECT 1 FROM objects o WHERE o.label = media.label AND o.needed = 1)",
                )
                .map_err(db_err)?;
            q.query_map([], |r| r.get(0))
                .map_err(db_err)?
                .collect::<Result<_, _>>()
                .map_err(db_err)?
        };
        for label in &freed {
            tx.execute("DELETE FROM objects WHERE label = ?1", [label])
                .map_err(db_err)?;
            tx.execute("DELETE FROM files WHERE label = ?1", [label])
                .map_err(db_err)?;
            tx.execute(
                "UPDATE media SET state = 'scratch', bytes = 0, freed_at = ?2 WHERE label = ?1",
                params![label, Self::now()],
            )
            .map_err(db_err)?;
        }
        tx.commit().map_err(db_err)?;
        Ok(freed)
    }

    /// Every medium of the pool, with its files; `location` when the
    /// library is asked (`with_location`).
    pub fn media(&self, with_location: bool) -> Result<Vec<Medium>, StoreError> {
        self.free_media()?;
        let db = self.db.lock().unwrap();
        let mut out: Vec<Medium> = {
            let mut q = db
                .prepare(
                    "SELECT label, pool, state, labelled_at, bytes, last_written,
                       (SELECT count(*) FROM objects o WHERE o.label = media.label AND o.needed = 1)
                     FROM media ORDER BY label",
                )
                .map_err(db_err)?;
            q.query_map([], |r| {
                Ok(Medium {
                    label: r.get(0)?,
                    pool: r.get(1)?,
                    state: r.get(2)?,
                    labelled_at: r.get(3)?,
                    bytes: r.get::<_, i64>(4)? as u64,
                    last_written: r.get(5)?,
                    files: Vec::new(),
                    needed_objects: r.get::<_, i64>(6)? as u64,
                    location: None,
                })
            })
            .map_err(db_err)?
            .collect::<Result<_, _>>()
            .map_err(db_err)?
        };
        let mut q = db
            .prepare(
                "SELECT file, session, written_at, objects, bytes, points FROM files
                 WHERE label = ?1 ORDER BY file",
            )
            .map_err(db_err)?;
        for m in &mut out {
            m.files = q
                .query_map([&m.label], |r| {
                    let points: String = r.get(5)?;
                    Ok(TapeFile {
                        file: r.get::<_, i64>(0)? as u32,
                        session: r.get(1)?,
                        written_at: r.get(2)?,
                        objects: r.get::<_, i64>(3)? as u64,
                        bytes: r.get::<_, i64>(4)? as u64,
                        points: serde_json::from_str(&points).unwrap_or_default(),
                    })
                })
                .map_err(db_err)?
                .collect::<Result<_, _>>()
                .map_err(db_err)?;
        }
        drop(q);
        drop(db);
        if with_location {
            // Only the changer, and without the drive's lock: a listing
            // never waits for a session.
            let changer = open_changer(&self.spec.hardware)
                .map_err(|e| tape_err("opening the tape library", e))?;
            if let Some(mut ch) = changer {
                let inv = ch
                    .inventory()
                    .map_err(|e| tape_err("reading the library's inventory", e))?;
                for m in &mut out {
                    m.location = Some(if inv.drive.as_ref().is_some_and(|d| d.0 == m.label) {
                        "drive".to_string()
                    } else if let Some(s) = inv.slot_of(&m.label) {
                        format!("slot {s}")
                    } else {
                        "out of the library".to_string()
                    });
                }
            }
        }
        Ok(out)
    }

    /// Puts the medium with this label into the drive (a changer moves
    /// it; a drive without one must already hold it).
    pub(super) fn load(&self, hw: &mut Mounted, label: &str) -> Result<(), StoreError> {
        let Some(ch) = hw.changer.as_mut() else {
            let held = read_label(hw.drive.as_mut())?;
            return match held {
                Some(l) if l.label == label => Ok(()),
                other => Err(StoreError::Backend(format!(
                    "tier `{}`: load medium {label} into {} (it holds {})",
                    self.spec.tier,
                    hw.drive.describe(),
                    other.map_or("no coffer medium".to_string(), |l| format!(
                        "medium {}",
                        l.label
                    ))
                ))),
            };
        };
        let inv = ch
            .inventory()
            .map_err(|e| tape_err("reading the library's inventory", e))?;
        if inv.drive.as_ref().is_some_and(|d| d.0 == label) {
            return Ok(());
        }
        let Some(slot) = inv.slot_of(label) else {
            return Err(StoreError::Backend(format!(
                "tier `{}`: medium {label} is not in the library {} (offsite?); put it back into a slot and run again",
                self.spec.tier,
                ch.describe()
            )));
        };
        if let Some((_, from)) = &inv.drive {
            hw.drive
                .eject()
                .map_err(|e| tape_err("ejecting the cartridge in the drive", e))?;
            let back = from
                .filter(|s| {
                    inv.slots
                        .iter()
                        .any(|x| x.address == *s && x.barcode.is_none())
                })
                .or_else(|| inv.empty_slot())
                .ok_or_else(|| {
                    StoreError::Backend("no empty slot for the cartridge in the drive".into())
                })?;
            ch.unload(back)
                .map_err(|e| tape_err("moving the cartridge back to its slot", e))?;
        }
        ch.load(slot)
            .map_err(|e| tape_err(&format!("loading medium {label}"), e))
    }

    /// Mounts a medium to write a session on: the pool's appendable media
    /// first, then its freed ones, then a blank cartridge (labelled now).
    /// Never writes over a cartridge that holds anything else.
    fn mount_for_write(&self) -> Result<Session, StoreError> {
        self.free_media()?;
        let mut hw = open_hardware(&self.spec.hardware)
            .map_err(|e| tape_err("opening the tape drive", e))?;
        let known: BTreeMap<String, String> = {
            let db = self.db.lock().unwrap();
            let mut q = db
                .prepare("SELECT label, state FROM media")
                .map_err(db_err)?;
            q.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
                .map_err(db_err)?
                .collect::<Result<_, _>>()
                .map_err(db_err)?
        };
        let usable = |label: &str, wanted: &str| known.get(label).is_some_and(|s| s == wanted);
        // Candidates, in order, as (label, fresh): fresh media are labelled
        // from the beginning of the tape.
        let mut candidates: Vec<(String, bool)> = Vec::new();
        if let Some(ch) = hw.changer.as_mut() {
            let inv = ch
                .inventory()
                .map_err(|e| tape_err("reading the library's inventory", e))?;
            let mut here: Vec<String> = inv
                .slots
                .iter()
                .filter_map(|s| s.barcode.clone())
                .filter(|b| !b.is_empty())
                .collect();
            if let Some((b, _)) = &inv.drive {
                here.insert(0, b.clone());
            }
            for wanted in ["append", "scratch"] {
                for b in here.iter().filter(|b| usable(b, wanted)) {
                    candidates.push((b.clone(), wanted == "scratch"));
                }
            }
            // Cartridges the catalog does not know: taken only when blank.
            for b in here.iter().filter(|b| !known.contains_key(*b)) {
                candidates.push((b.clone(), true));
            }
        } else {
            match read_label(hw.drive.as_mut())? {
                Some(l) if usable(&l.label, "append") => candidates.push((l.label, false)),
                Some(l) if usable(&l.label, "scratch") => candidates.push((l.label, true)),
                Some(l) => {
                    return Err(StoreError::Backend(format!(
                        "tier `{}`: the cartridge in {} is medium {} ({} of pool {}); load an appendable medium of pool {}, a freed one or a blank cartridge",
                        self.spec.tier,
                        hw.drive.describe(),
                        l.label,
                        known
                            .get(&l.label)
                            .map_or("not in this tier's catalog", String::as_str),
                        l.pool,
                        self.spec.pool
                    )));
                }
                None => {
                    let n = (1..)
                        .map(|i| format!("{}-{i:04}", self.spec.pool))
                        .find(|l| !known.contains_key(l))
                        .expect("a free label");
                    candidates.push((n, true));
                }
            }
        }
        let mut skipped = Vec::new();
        for (label, fresh) in candidates {
            self.load(&mut hw, &label)?;
            let status = hw
                .drive
                .status()
                .map_err(|e| tape_err("reading the drive's status", e))?;
            if status.write_protected {
                skipped.push(format!("{label}: write-protected"));
                continue;
            }
            let on_tape = match read_label(hw.drive.as_mut()) {
                Ok(l) => l,
                Err(e) => {
                    skipped.push(format!("{label}: {e}"));
                    continue;
                }
            };
            if fresh && !known.contains_key(&label) && on_tape.is_some() {
                skipped.push(format!(
                    "{label}: not blank, and not in this tier's catalog"
                ));
                continue;
            }
            if !fresh && on_tape.as_ref().map(|l| &l.label) != Some(&label) {
                skipped.push(format!(
                    "{label}: its tape label does not match the catalog"
                ));
                continue;
            }
            if fresh {
                self.label_medium(&mut hw, &label)?;
            }
            let drive = hw.drive.as_mut();
            drive
                .end_of_data()
                .map_err(|e| tape_err("spacing to the end of data", e))?;
            let mut s = drive
                .status()
                .map_err(|e| tape_err("reading the drive's status", e))?;
            // A session cut off before its filemark: close its file, so
            // the new session is a file of its own.
            if s.block_number != Some(0) {
                drive
                    .write_filemarks(1)
                    .map_err(|e| tape_err("closing a cut-off tape file", e))?;
                s = drive
                    .status()
                    .map_err(|e| tape_err("reading the drive's status", e))?;
            }
            let file = s.file_number.ok_or_else(|| {
                StoreError::Backend(format!(
                    "{} does not report file numbers after MTEOM (st option fast_mteom?)",
                    drive.describe()
                ))
            })?;
            let mut r = [0u8; 4];
            getrandom::fill(&mut r).expect("the OS random source works");
            let id = format!(
                "{}-{}",
                chrono::Utc::now().format("%Y%m%dT%H%M%SZ"),
                hex::encode(r)
            );
            let mut session = Session {
                hw,
                label: label.clone(),
                file,
                id,
                writer: FileWriter::default(),
                pending: Vec::new(),
                objects: 0,
            };
            let head = SessionHead {
                session: session.id.clone(),
                label,
                file,
                repository: self.repository_id(),
                written_at: Self::now(),
                coffer: env!("CARGO_PKG_VERSION").to_string(),
            };
            let config = self.meta.get("config")?;
            let Session { hw, writer, .. } = &mut session;
            writer
                .record(
                    hw.drive.as_mut(),
                    Kind::Session,
                    "",
                    &serde_json::to_vec(&head).expect("serializes"),
                )
                .and_then(|_| writer.record(hw.drive.as_mut(), Kind::Object, "config", &config))
                .map_err(|e| tape_err("writing the session head", e))?;
            return Ok(session);
        }
        Err(StoreError::Backend(format!(
            "tier `{}`: no medium of pool {} to write on: no appendable or freed medium and no blank cartridge in {}{}",
            self.spec.tier,
            self.spec.pool,
            self.describe(),
            if skipped.is_empty() {
                String::new()
            } else {
                format!(" (skipped {})", skipped.join("; "))
            }
        )))
    }

    /// Writes the label file (file 0) from the beginning of the tape.
    fn label_medium(&self, hw: &mut Mounted, label: &str) -> Result<(), StoreError> {
        let drive = hw.drive.as_mut();
        let l = Label {
            label: label.to_string(),
            pool: self.spec.pool.clone(),
            repository: self.repository_id(),
            labelled_at: Self::now(),
        };
        drive.rewind().map_err(|e| tape_err("rewinding", e))?;
        let mut w = FileWriter::default();
        w.record(
            drive,
            Kind::Label,
            label,
            &serde_json::to_vec(&l).expect("serializes"),
        )
        .and_then(|_| w.finish(drive).map(|_| ()))
        .map_err(|e| tape_err(&format!("labelling medium {label}"), e))?;
        let db = self.db.lock().unwrap();
        db.execute(
            "INSERT INTO media (label, pool, state, labelled_at) VALUES (?1, ?2, 'append', ?3)
             ON CONFLICT (label) DO UPDATE SET state = 'append', labelled_at = ?3, bytes = 0, freed_at = NULL",
            params![label, self.spec.pool, l.labelled_at],
        )
        .map_err(db_err)?;
        db.execute("DELETE FROM objects WHERE label = ?1", [label])
            .map_err(db_err)?;
        db.execute("DELETE FROM files WHERE label = ?1", [label])
            .map_err(db_err)?;
        Ok(())
    }

    /// Appends an object to the open session (opening one first).
    fn write_to_session(&self, key: &str, data: &[u8]) -> Result<(), StoreError> {
        // Under the session's lock, so no other thread of the copy starts
        // a session between a failure and its record.
        let mut guard = self.session.lock().unwrap();
        let mut failed = self.failed.lock().unwrap();
        match failed.as_ref() {
            Some(Failed::MediumFull(medium)) => {
                return Err(StoreError::MediumFull {
                    medium: medium.clone(),
                });
            }
            Some(Failed::Other(why)) => {
                return Err(StoreError::Backend(format!(
                    "not written: an earlier write of this copy failed ({why})"
                )));
            }
            None => {}
        }
        let r = self.write_locked(&mut guard, key, data);
        *failed = match &r {
            Err(StoreError::MediumFull { medium }) => Some(Failed::MediumFull(medium.clone())),
            Err(e) => Some(Failed::Other(e.to_string())),
            Ok(()) => None,
        };
        r
    }

    fn write_locked(
        &self,
        guard: &mut Option<Session>,
        key: &str,
        data: &[u8],
    ) -> Result<(), StoreError> {
        if guard.is_none() {
            *guard = Some(self.mount_for_write()?);
        }
        let s = guard.as_mut().expect("just opened");
        let r = s
            .writer
            .record(s.hw.drive.as_mut(), Kind::Object, key, data);
        if let Err(e) = r {
            let full =
                e.raw_os_error() == Some(libc::ENOSPC) || e.kind() == io::ErrorKind::StorageFull;
            let label = s.label.clone();
            *guard = None;
            if full {
                let db = self.db.lock().unwrap();
                db.execute("UPDATE media SET state = 'full' WHERE label = ?1", [&label])
                    .map_err(db_err)?;
                return Err(StoreError::MediumFull { medium: label });
            }
            return Err(tape_err(&format!("writing to medium {label}"), e));
        }
        s.pending.push((key.to_string(), data.len() as u64));
        s.objects += 1;
        Ok(())
    }

    /// Ends the session with the manifest just written: end record,
    /// filemark, then the media catalog.
    fn commit_session(&self, manifest: &str) -> Result<(), StoreError> {
        let mut guard = self.session.lock().unwrap();
        let Some(mut s) = guard.take() else {
            return Err(StoreError::Backend("no tape session to commit".into()));
        };
        let end = SessionEnd {
            objects: s.objects,
            bytes: s.pending.iter().map(|p| p.1).sum(),
        };
        let drive = s.hw.drive.as_mut();
        let mut writer = std::mem::take(&mut s.writer);
        let written = writer
            .record(
                drive,
                Kind::End,
                "",
                &serde_json::to_vec(&end).expect("serializes"),
            )
            .and_then(|_| writer.finish(drive))
            .map_err(|e| tape_err(&format!("ending the session on medium {}", s.label), e))?;
        let eot = drive.status().map(|st| st.eot).unwrap_or(false);
        self.record_file(&FileRecord {
            label: &s.label,
            file: s.file,
            session: &s.id,
            written_at: &Self::now(),
            bytes: written,
            objects: s.pending.iter().map(|(k, n)| (k.as_str(), *n)).collect(),
            manifests: vec![manifest],
            full: eot,
        })
    }

    /// Records a tape file in the media catalog, in one transaction: the
    /// file, where each of its objects is (needed by a kept point), and
    /// the medium's bytes, last write and fullness.
    pub(super) fn record_file(&self, f: &FileRecord<'_>) -> Result<(), StoreError> {
        let mut db = self.db.lock().unwrap();
        let tx = db.transaction().map_err(db_err)?;
        tx.execute(
            "INSERT OR REPLACE INTO files (label, file, session, written_at, objects, bytes, points)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![
                f.label,
                f.file,
                f.session,
                f.written_at,
                f.objects.len() as i64,
                f.bytes as i64,
                serde_json::to_string(&f.manifests).expect("serializes")
            ],
        )
        .map_err(db_err)?;
        {
            let mut ins = tx
                .prepare(
                    "INSERT OR REPLACE INTO objects (key, label, file, size, written_at, needed)
                     VALUES (?1, ?2, ?3, ?4, ?5, 1)",
                )
                .map_err(db_err)?;
            for (key, size) in &f.objects {
                ins.execute(params![key, f.label, f.file, *size as i64, f.written_at])
                    .map_err(db_err)?;
            }
        }
        tx.execute(
            "UPDATE media SET bytes = bytes + ?2,
               last_written = max(coalesce(last_written, ''), ?3),
               state = CASE WHEN ?4 THEN 'full' ELSE state END
             WHERE label = ?1",
            params![f.label, f.bytes as i64, f.written_at, f.full],
        )
        .map_err(db_err)?;
        tx.commit().map_err(db_err)
    }
}

/// A tape file as the media catalog records it.
pub(super) struct FileRecord<'a> {
    pub label: &'a str,
    pub file: u32,
    pub session: &'a str,
    pub written_at: &'a str,
    pub bytes: u64,
    /// Key and size of each object in it.
    pub objects: Vec<(&'a str, u64)>,
    pub manifests: Vec<&'a str>,
    /// The drive reported the early warning of the end of the medium.
    pub full: bool,
}

impl Drop for TapeStore {
    fn drop(&mut self) {
        // A session never committed: close its tape file, so the medium's
        // next session starts a file of its own. Nothing of it is counted.
        if let Some(mut s) = self.session.get_mut().unwrap().take() {
            let w = std::mem::take(&mut s.writer);
            let _ = w.finish(s.hw.drive.as_mut());
        }
    }
}

impl Store for TapeStore {
    fn put(&self, key: &str, data: &[u8]) -> Result<(), StoreError> {
        check_key(key)?;
        if on_tape_only(key) {
            return self.write_to_session(key, data);
        }
        if on_tape_too(key) {
            self.write_to_session(key, data)?;
            if is_manifest(key) {
                self.commit_session(key)?;
            }
        }
        self.meta.put(key, data)
    }

    fn get(&self, key: &str) -> Result<Vec<u8>, StoreError> {
        check_key(key)?;
        if on_tape_only(key) {
            return Err(self.on_tape(key));
        }
        self.meta.get(key)
    }

    fn get_range(&self, key: &str, range: std::ops::Range<u64>) -> Result<Vec<u8>, StoreError> {
        check_key(key)?;
        if on_tape_only(key) {
            return Err(self.on_tape(key));
        }
        self.meta.get_range(key, range)
    }

    fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, StoreError> {
        if !on_tape_only(prefix) {
            return self.meta.list(prefix);
        }
        let db = self.db.lock().unwrap();
        let mut q = db
            .prepare(
                "SELECT key, size, written_at FROM objects
                 WHERE needed = 1 AND substr(key, 1, length(?1)) = ?1",
            )
            .map_err(db_err)?;
        q.query_map([prefix], |r| {
            let at: String = r.get(2)?;
            Ok(ObjectMeta {
                key: r.get(0)?,
                size_bytes: r.get::<_, i64>(1)? as u64,
                modified: chrono::DateTime::parse_from_rfc3339(&at)
                    .map(std::time::SystemTime::from)
                    .unwrap_or(std::time::UNIX_EPOCH),
                tag: None,
            })
        })
        .map_err(db_err)?
        .collect::<Result<_, _>>()
        .map_err(db_err)
    }

    fn delete(&self, key: &str) -> Result<(), StoreError> {
        check_key(key)?;
        if on_tape_only(key) || on_tape_too(key) {
            self.db
                .lock()
                .unwrap()
                .execute("UPDATE objects SET needed = 0 WHERE key = ?1", [key])
                .map_err(db_err)?;
        }
        if on_tape_only(key) {
            return Ok(());
        }
        self.meta.delete(key)
    }

    fn flush(&self) -> Result<(), StoreError> {
        self.meta.flush()
    }

    fn describe(&self) -> String {
        match &self.spec.hardware {
            Hardware::St { device, .. } => {
                format!("tape:{} (pool {})", device.display(), self.spec.pool)
            }
            Hardware::Emulated { library } => {
                format!(
                    "tape:emulated:{} (pool {})",
                    library.display(),
                    self.spec.pool
                )
            }
        }
    }

    fn immutable_for(&self) -> Option<std::time::Duration> {
        None
    }

    /// Tape has no archive class to thaw; its chunks are staged instead.
    fn thaw(&self, _key: &str, _days: u32, _speed: ThawSpeed) -> Result<Thaw, StoreError> {
        Ok(Thaw::Ready)
    }

    fn incomplete(&self) -> Result<Vec<ObjectMeta>, StoreError> {
        self.meta.incomplete()
    }

    fn remove_empty_dirs(
        &self,
        prefix: &str,
        grace: std::time::Duration,
        emptied: &[String],
    ) -> Result<usize, StoreError> {
        self.meta.remove_empty_dirs(prefix, grace, emptied)
    }
}

impl TapeStore {
    /// The medium and file an object was written to.
    pub fn where_is(&self, key: &str) -> Result<Option<(String, u32)>, StoreError> {
        self.db
            .lock()
            .unwrap()
            .query_row(
                "SELECT label, file FROM objects WHERE key = ?1",
                [key],
                |r| Ok((r.get(0)?, r.get::<_, i64>(1)? as u32)),
            )
            .optional()
            .map_err(db_err)
    }

    fn on_tape(&self, key: &str) -> StoreError {
        let label: Option<String> = self
            .db
            .lock()
            .unwrap()
            .query_row("SELECT label FROM objects WHERE key = ?1", [key], |r| {
                r.get(0)
            })
            .optional()
            .ok()
            .flatten();
        match label {
            Some(medium) => StoreError::OnTape {
                key: key.to_string(),
                medium,
            },
            None => StoreError::NotFound(key.to_string()),
        }
    }
}

/// The catalog directory a tape tier uses by default.
pub fn default_catalog(state_dir: &Path, tier: &str) -> PathBuf {
    state_dir.join("tape").join(tier)
}
