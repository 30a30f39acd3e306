//! A tape tier's catalog rebuilt from the tapes themselves.

use rusqlite::params;

use super::device::TapeDrive;
use super::format::{FileReader, Kind, Label, SessionHead};
use super::hardware::{open_hardware, read_label, tape_err};
use super::tier::{FileRecord, TapeStore, db_err, is_manifest, on_tape_only, on_tape_too};
use crate::repo::store::{Store, StoreError, check_key};

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
}
