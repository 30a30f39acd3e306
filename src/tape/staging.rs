//! Reading a tape tier's point back: the tape files that hold it are read
//! front to back into a local staging repository, which restores, drills,
//! copies and verifies then read like any other.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::path::Path;

use rusqlite::OptionalExtension;

use super::format::{FileReader, Kind};
use super::hardware::{open_hardware, tape_err};
use super::tier::{TapeStore, db_err};
use crate::repo::local::LocalStore;
use crate::repo::store::{Store, StoreError, check_key};

impl TapeStore {
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
