//! The drive and changer a tape tier uses: which they are, opening them
//! under the drive's lock (one session or staging at a time per drive,
//! across processes and tiers), and reading a cartridge's label.

use std::io;
use std::path::PathBuf;

use super::changer::{Changer, ScsiChanger};
use super::device::{StDrive, TapeDrive};
use super::emulated::{FileChanger, FileDrive};
use super::format::{FileReader, Kind, Label};
use crate::repo::store::StoreError;

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

pub(super) struct Mounted {
    pub drive: Box<dyn TapeDrive>,
    pub changer: Option<Box<dyn Changer>>,
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

pub(super) fn open_changer(h: &Hardware) -> io::Result<Option<Box<dyn Changer>>> {
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

pub(super) fn open_hardware(h: &Hardware) -> io::Result<Mounted> {
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

pub(super) fn tape_err(what: &str, e: io::Error) -> StoreError {
    if e.raw_os_error() == Some(libc::ENOSPC) || e.kind() == io::ErrorKind::StorageFull {
        return StoreError::Backend(format!("{what}: end of the medium"));
    }
    StoreError::Backend(format!("{what}: {e}"))
}

/// The label of the cartridge in the drive: `None` when it is blank (the
/// drive finds no data at its beginning). A cartridge whose first record
/// is not a coffer label is an error: coffer never writes over it.
pub(super) fn read_label(drive: &mut dyn TapeDrive) -> Result<Option<Label>, StoreError> {
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
