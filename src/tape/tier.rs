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
//! (`stage_point`), reading the tape files it needs front to back.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use rusqlite::{Connection, OptionalExtension, params};

use super::changer::{Changer, ScsiChanger};
use super::device::{StDrive, TapeDrive};
use super::emulated::{FileChanger, FileDrive};
use super::format::{FileReader, FileWriter, Kind, Label, SessionEnd, SessionHead};
use crate::repo::local::LocalStore;
use crate::repo::store::{ObjectMeta, Store, StoreError, Thaw, ThawSpeed, check_key};

/// The drive (and changer) a tape tier uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hardware {
    /// A drive through the Linux `st` driver, with an optional SCSI media
    /// changer (`changer_drive`: which of its drives `device` is).
    St {
        device: PathBuf,
        changer: Option<PathBuf>,
        changer_drive: usize,
    },
    /// A library emulated in a directory (`emulated.rs`).
    Emulated { library: PathBuf },
}

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

struct Mounted {
    drive: Box<dyn TapeDrive>,
    changer: Option<Box<dyn Changer>>,
    /// Held while the drive is in use: one session or staging at a time
    /// per drive, across processes and across tiers sharing the drive.
    _lock: std::fs::File,
}

/// Where the drive's lock lives: in the emulated library, or beside the
/// device's name in the system's temporary directory.
fn lock_path(h: &Hardware) -> PathBuf {
    match h {
        Hardware::Emulated { library } => library.join("drive.lock"),
        Hardware::St { device, .. } => std::env::temp_dir().join(format!(
            "coffer-tape-{}.lock",
            device
                .to_string_lossy()
                .trim_start_matches('/')
                .replace('/', "-")
        )),
    }
}

/// Takes the drive's lock, waiting while another session or staging holds
/// it (flock(2): released when the holder exits, however it exits).
fn lock_drive(h: &Hardware) -> io::Result<std::fs::File> {
    use std::os::fd::AsRawFd;
    let path = lock_path(h);
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)?;
    // SAFETY: flock on a descriptor we own.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(file)
}

fn open_changer(h: &Hardware) -> io::Result<Option<Box<dyn Changer>>> {
    Ok(match h {
        Hardware::Emulated { library } => Some(Box::new(FileChanger::new(library))),
        Hardware::St {
            changer: Some(c),
            changer_drive,
            ..
        } => Some(Box::new(ScsiChanger::open(c, *changer_drive)?)),
        Hardware::St { changer: None, .. } => None,
    })
}

fn open_hardware(h: &Hardware) -> io::Result<Mounted> {
    let _lock = lock_drive(h)?;
    Ok(match h {
        Hardware::Emulated { library } => Mounted {
            drive: Box::new(FileDrive::new(library)),
            changer: open_changer(h)?,
            _lock,
        },
        Hardware::St { device, .. } => Mounted {
            drive: Box::new(StDrive::open(device)?),
            changer: open_changer(h)?,
            _lock,
        },
    })
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
    spec: TapeSpec,
    meta: LocalStore,
    db: Mutex<Connection>,
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

fn db_err(e: rusqlite::Error) -> StoreError {
    StoreError::Backend(format!("tape media catalog: {e}"))
}

fn tape_err(what: &str, e: io::Error) -> StoreError {
    if e.raw_os_error() == Some(libc::ENOSPC) || e.kind() == io::ErrorKind::StorageFull {
        return StoreError::Backend(format!("{what}: end of the medium"));
    }
    StoreError::Backend(format!("{what}: {e}"))
}

/// Data objects go to tape only; everything under `points/` goes to tape
/// and stays in the catalog directory; the rest stays in the catalog.
fn on_tape_only(key: &str) -> bool {
    key.starts_with(crate::repo::chunk::CHUNKS_PREFIX)
}
fn on_tape_too(key: &str) -> bool {
    key.starts_with("points/")
}
fn is_manifest(key: &str) -> bool {
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
    fn load(&self, hw: &mut Mounted, label: &str) -> Result<(), StoreError> {
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
    fn record_file(&self, f: &FileRecord<'_>) -> Result<(), StoreError> {
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

    /// Reads the tape files that hold `keys` front to back and puts each
    /// object into `into`, proving each record's CRC. Fails naming what
    /// the catalog places on tape but the tape did not give back.
    pub fn stage_objects(
        &self,
        keys: &BTreeSet<String>,
        into: &dyn Store,
    ) -> Result<StageReport, StoreError> {
        // Where each is, grouped by medium and file.
        let mut wanted: BTreeMap<String, BTreeMap<u32, BTreeSet<String>>> = BTreeMap::new();
        {
            let db = self.db.lock().unwrap();
            let mut q = db
                .prepare("SELECT label, file FROM objects WHERE key = ?1")
                .map_err(db_err)?;
            for key in keys {
                let at: Option<(String, u32)> = q
                    .query_row([key], |r| Ok((r.get(0)?, r.get::<_, i64>(1)? as u32)))
                    .optional()
                    .map_err(db_err)?;
                let Some((label, file)) = at else {
                    return Err(StoreError::NotFound(key.clone()));
                };
                wanted
                    .entry(label)
                    .or_default()
                    .entry(file)
                    .or_default()
                    .insert(key.clone());
            }
        }
        let mut report = StageReport::default();
        if wanted.is_empty() {
            return Ok(report);
        }
        let mut hw = open_hardware(&self.spec.hardware)
            .map_err(|e| tape_err("opening the tape drive", e))?;
        for (label, files) in &wanted {
            self.load(&mut hw, label)?;
            report.media.push(label.clone());
            let drive = hw.drive.as_mut();
            for (file, keys) in files {
                drive
                    .rewind()
                    .and_then(|_| drive.space_forward_files(*file))
                    .map_err(|e| tape_err(&format!("spacing to file {file} of {label}"), e))?;
                let mut reader = FileReader::default();
                let mut left = keys.clone();
                loop {
                    let rec = reader.next(drive).map_err(|e| {
                        tape_err(&format!("reading file {file} of medium {label}"), e)
                    })?;
                    let Some(rec) = rec else { break };
                    report.bytes_read += rec.data.len() as u64;
                    if rec.kind == Kind::Object && left.remove(&rec.key) {
                        check_key(&rec.key)?;
                        into.put(&rec.key, &rec.data)?;
                        report.objects += 1;
                    }
                }
                if let Some(k) = left.first() {
                    return Err(StoreError::Backend(format!(
                        "file {file} of medium {label} does not hold `{k}` (and {} more) that the media catalog places there",
                        left.len() - 1
                    )));
                }
                report.files += 1;
            }
        }
        Ok(report)
    }
}

/// A tape file as the media catalog records it.
struct FileRecord<'a> {
    label: &'a str,
    file: u32,
    session: &'a str,
    written_at: &'a str,
    bytes: u64,
    /// Key and size of each object in it.
    objects: Vec<(&'a str, u64)>,
    manifests: Vec<&'a str>,
    /// The drive reported the early warning of the end of the medium.
    full: bool,
}

/// What a scan of the tapes found.
#[derive(Debug, Default, Clone)]
pub struct ScanReport {
    /// Media of the pool read.
    pub media: Vec<String>,
    /// Complete session files recorded.
    pub files: usize,
    /// Points (manifests) found in them.
    pub points: usize,
    /// What was not recorded, and why.
    pub skipped: Vec<String>,
}

/// What staging read.
#[derive(Debug, Default, Clone)]
pub struct StageReport {
    /// How long staging took, from the first tape read to the staging
    /// repository opened.
    pub seconds: f64,
    pub media: Vec<String>,
    pub files: usize,
    pub objects: usize,
    pub bytes_read: u64,
}

impl StageReport {
    /// What staging read, and how long it took, for logs and reports.
    pub fn describe(&self) -> String {
        format!(
            "staged from tape in {:.1}s: {} objects from {} tape files on {} ({} read)",
            self.seconds,
            self.objects,
            self.files,
            if self.media.is_empty() {
                "no medium".to_string()
            } else {
                format!("medium {}", self.media.join(", "))
            },
            crate::policy::units::format_size(self.bytes_read)
        )
    }
}

/// The label of the cartridge in the drive: `None` when it is blank (the
/// drive finds no data at its beginning). A cartridge whose first record
/// is not a coffer label is an error: coffer never writes over it.
fn read_label(drive: &mut dyn TapeDrive) -> Result<Option<Label>, StoreError> {
    drive.rewind().map_err(|e| tape_err("rewinding", e))?;
    if drive
        .status()
        .map_err(|e| tape_err("reading the drive's status", e))?
        .eod
    {
        return Ok(None);
    }
    let mut reader = FileReader::default();
    let rec = match reader.next(drive) {
        Ok(r) => r,
        // A blank tape: the drive's blank check at its beginning.
        Err(e) if e.raw_os_error() == Some(libc::EIO) => return Ok(None),
        Err(e) => {
            return Err(StoreError::Backend(format!(
                "the cartridge in {} holds data coffer did not write ({e}); coffer never writes over it",
                drive.describe()
            )));
        }
    };
    match rec {
        Some(r) if r.kind == Kind::Label => serde_json::from_slice(&r.data)
            .map(Some)
            .map_err(|e| StoreError::Backend(format!("unreadable medium label: {e}"))),
        _ => Err(StoreError::Backend(format!(
            "the cartridge in {} does not start with a coffer label; coffer never writes over it",
            drive.describe()
        ))),
    }
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
    /// Rebuilds the media catalog and the catalog directory from the tapes
    /// themselves (after the catalog was lost): reads every cartridge of
    /// the library (without a changer: the one in the drive) whose label
    /// is of this pool, every file of it front to back, and records each
    /// complete session (one with its end record) as a copy would have:
    /// its objects, its indexes and manifest, the repository's config.
    /// Files cut off or unreadable are named and skipped. Everything found
    /// counts as kept; retention prunes again what it no longer keeps.
    pub fn scan(&self) -> Result<ScanReport, StoreError> {
        let mut hw = open_hardware(&self.spec.hardware)
            .map_err(|e| tape_err("opening the tape drive", e))?;
        let mut report = ScanReport::default();
        let labels: Vec<Option<String>> = match hw.changer.as_mut() {
            Some(ch) => {
                let inv = ch
                    .inventory()
                    .map_err(|e| tape_err("reading the library's inventory", e))?;
                inv.drive
                    .iter()
                    .map(|d| d.0.clone())
                    .chain(inv.slots.iter().filter_map(|s| s.barcode.clone()))
                    .filter(|b| !b.is_empty())
                    .map(Some)
                    .collect()
            }
            None => vec![None],
        };
        for barcode in labels {
            if let Some(b) = &barcode {
                self.load(&mut hw, b)?;
            }
            let drive = hw.drive.as_mut();
            let label = match read_label(drive) {
                Ok(Some(l)) if l.pool == self.spec.pool => l,
                Ok(Some(l)) => {
                    report
                        .skipped
                        .push(format!("{}: of pool {}", l.label, l.pool));
                    continue;
                }
                Ok(None) => {
                    report.skipped.push(format!(
                        "{}: blank",
                        barcode.as_deref().unwrap_or("the cartridge in the drive")
                    ));
                    continue;
                }
                Err(e) => {
                    report.skipped.push(format!(
                        "{}: {e}",
                        barcode.as_deref().unwrap_or("the cartridge in the drive")
                    ));
                    continue;
                }
            };
            self.scan_medium(drive, &label, &mut report)?;
            report.media.push(label.label);
        }
        Ok(report)
    }

    fn scan_medium(
        &self,
        drive: &mut dyn TapeDrive,
        label: &Label,
        report: &mut ScanReport,
    ) -> Result<(), StoreError> {
        let name = &label.label;
        {
            let db = self.db.lock().unwrap();
            db.execute(
                "INSERT INTO media (label, pool, state, labelled_at) VALUES (?1, ?2, 'append', ?3)
                 ON CONFLICT (label) DO UPDATE SET state = 'append', pool = ?2",
                params![name, label.pool, label.labelled_at],
            )
            .map_err(db_err)?;
        }
        // Past the label, then file after file: each read ends past its
        // filemark, at the start of the next (one pass over the tape).
        drive
            .rewind()
            .and_then(|_| drive.space_forward_files(1))
            .map_err(|e| tape_err(&format!("spacing past the label of {name}"), e))?;
        for file in 1u32.. {
            if drive
                .status()
                .map_err(|e| tape_err("reading the drive's status", e))?
                .eod
            {
                break;
            }
            let mut reader = FileReader::default();
            let mut objects: Vec<(String, u64, Vec<u8>)> = Vec::new();
            let mut session: Option<SessionHead> = None;
            let mut ended = false;
            let mut bytes = 0u64;
            let outcome = loop {
                match reader.next(drive) {
                    Ok(None) => break Ok(()),
                    Ok(Some(r)) => {
                        bytes += r.data.len() as u64;
                        match r.kind {
                            Kind::Session => session = serde_json::from_slice(&r.data).ok(),
                            Kind::End => ended = true,
                            Kind::Object => {
                                // Chunk data is checked and dropped: only
                                // where it is goes into the catalog.
                                let size = r.data.len() as u64;
                                let data = if on_tape_only(&r.key) {
                                    Vec::new()
                                } else {
                                    r.data
                                };
                                objects.push((r.key, size, data));
                            }
                            Kind::Label => {}
                        }
                    }
                    Err(e) => break Err(e),
                }
            };
            let where_ = format!("{name} file {file}");
            match (outcome, &session, ended) {
                (Err(e), _, _) => {
                    report.skipped.push(format!("{where_}: {e}"));
                    // On to the start of the next file.
                    if drive.space_forward_files(1).is_err() {
                        break;
                    }
                    continue;
                }
                (Ok(()), Some(head), true) => {
                    self.record_scanned(name, file, head, &objects, bytes)?;
                    report.files += 1;
                    report.points += objects.iter().filter(|o| is_manifest(&o.0)).count();
                }
                _ => report
                    .skipped
                    .push(format!("{where_}: cut off (no end record), not counted")),
            }
        }
        Ok(())
    }

    fn record_scanned(
        &self,
        label: &str,
        file: u32,
        head: &SessionHead,
        objects: &[(String, u64, Vec<u8>)],
        bytes: u64,
    ) -> Result<(), StoreError> {
        for (key, _, data) in objects {
            check_key(key)?;
            if key == "config" {
                if matches!(self.meta.get("config"), Err(StoreError::NotFound(_))) {
                    self.meta.put(key, data)?;
                }
            } else if on_tape_too(key) {
                self.meta.put(key, data)?;
            }
        }
        self.record_file(&FileRecord {
            label,
            file,
            session: &head.session,
            written_at: &head.written_at,
            bytes,
            objects: objects
                .iter()
                .filter(|o| o.0 != "config")
                .map(|(k, n, _)| (k.as_str(), *n))
                .collect(),
            manifests: objects
                .iter()
                .map(|o| o.0.as_str())
                .filter(|k| is_manifest(k))
                .collect(),
            full: false,
        })?;
        self.meta.flush()
    }

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

/// Staging directories are named `pid<PID>.<tier>-<point>-<random>`: the
/// process that stages owns its directory until it drops it.
const STAGING_PID: &str = "pid";

/// Removes the staging directories of processes that are gone (killed
/// while they restored or drilled from tape): nothing is left to grow in
/// the state directory. A directory whose owner still runs is left alone.
fn remove_orphaned_staging(parent: &Path) {
    let Ok(entries) = std::fs::read_dir(parent) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix(STAGING_PID)
            .and_then(|r| r.split('.').next())
            .and_then(|p| p.parse::<libc::pid_t>().ok())
        else {
            continue;
        };
        // SAFETY: kill with signal 0 only asks whether the process exists.
        let gone = unsafe { libc::kill(pid, 0) } != 0
            && io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH);
        if gone {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

/// A point of a tape tier read into a local repository; the staging
/// directory is removed when this is dropped.
pub struct Staged {
    pub repo: crate::repo::Repository,
    pub report: StageReport,
    _dir: tempfile::TempDir,
}

/// Reads point `m` of the tape tier `repo` (whose store is `tape`) into a
/// new staging repository under `parent`: its config, manifest and indexes
/// from the catalog directory, its chunks from the tape files that hold
/// them, each file front to back. `secret` is the tier's encryption key.
pub fn stage_point(
    tape: &TapeStore,
    repo: &crate::repo::Repository,
    m: &crate::repo::manifest::Manifest,
    parent: &Path,
    secret: Option<&[u8]>,
) -> Result<Staged, crate::repo::RepoError> {
    let started = std::time::Instant::now();
    let io = |what: &str, e: io::Error| StoreError::from_io("create", what, e);
    std::fs::create_dir_all(parent).map_err(|e| io(&parent.display().to_string(), e))?;
    remove_orphaned_staging(parent);
    let dir = tempfile::Builder::new()
        .prefix(&format!(
            "{}{}.{}-{}-",
            STAGING_PID,
            std::process::id(),
            tape.spec.tier,
            m.point_id
        ))
        .tempdir_in(parent)
        .map_err(|e| io(&parent.display().to_string(), e))?;
    let staging = LocalStore::new(dir.path())?;
    let mut keys = vec!["config".to_string(), m.key()?];
    let mut chunks = BTreeSet::new();
    for d in m.file_digests() {
        chunks.insert(d.key());
    }
    for disk in &m.disks {
        keys.push(m.index_key_of(disk)?);
        for d in repo.read_index(m, disk)?.chunks {
            if d != crate::repo::chunk::ZERO_DIGEST {
                chunks.insert(d.key());
            }
        }
    }
    for key in &keys {
        staging.put(key, &tape.get(key)?)?;
    }
    let mut report = tape.stage_objects(&chunks, &staging)?;
    staging.flush()?;
    let staged = crate::repo::Repository::open(std::sync::Arc::new(staging), secret)?;
    report.seconds = started.elapsed().as_secs_f64();
    Ok(Staged {
        repo: staged,
        report,
        _dir: dir,
    })
}
