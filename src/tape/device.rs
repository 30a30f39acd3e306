//! A tape drive as the Linux `st` driver presents it (st(4), linux/mtio.h):
//! a sequence of variable-length blocks and filemarks, read and written
//! only where the tape stands. The trait holds exactly the operations
//! coffer uses; there is no seek: a drive positions by spacing over
//! filemarks, so nothing above this layer can read or write at random.
//!
//! `StDrive` speaks to a real drive (`/dev/nst0`, the non-rewinding
//! device) through `MTIOCTOP` / `MTIOCGET` and read(2) / write(2) in
//! variable-block mode; `emulated::FileDrive` keeps a cartridge in a file
//! for the tests and for trying coffer without a drive.

use std::io;

/// Where the tape stands and what the drive says about it (`MTIOCGET`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TapeStatus {
    /// Files (filemarks) passed since the beginning of the tape; `None`
    /// when the driver lost count (after an error, or `MTEOM` on drives
    /// with `fast_mteom`).
    pub file_number: Option<u32>,
    /// Blocks passed since the last filemark.
    pub block_number: Option<u32>,
    /// At the beginning of the tape (`GMT_BOT`).
    pub bot: bool,
    /// At the end of recorded data (`GMT_EOD`).
    pub eod: bool,
    /// Past the early-warning end of the medium (`GMT_EOT`).
    pub eot: bool,
    /// The cartridge's write-protect tab is set (`GMT_WR_PROT`).
    pub write_protected: bool,
    /// A cartridge is loaded and ready (`GMT_ONLINE`).
    pub online: bool,
}

/// A tape drive. Every operation acts at the current position.
pub trait TapeDrive: Send {
    /// `MTREW`: back to the beginning of the tape.
    fn rewind(&mut self) -> io::Result<()>;
    /// `MTFSF`: forward over `n` filemarks, to the first block of the file
    /// after the last. Fails (`EIO`) when the data ends first.
    fn space_forward_files(&mut self, n: u32) -> io::Result<()>;
    /// `MTBSF`: backward over `n` filemarks, to just before the last one
    /// passed (the end of the file before it).
    fn space_back_files(&mut self, n: u32) -> io::Result<()>;
    /// `MTEOM`: to the end of the recorded data, where the next file is
    /// appended.
    fn end_of_data(&mut self) -> io::Result<()>;
    /// `MTWEOF`: writes `n` filemarks here (what follows on the tape is
    /// gone, as with every write). Also flushes the drive's buffer: once it
    /// returns, the blocks before it are on the medium.
    fn write_filemarks(&mut self, n: u32) -> io::Result<()>;
    /// `MTIOCGET`.
    fn status(&mut self) -> io::Result<TapeStatus>;
    /// read(2): the next block into `buf` (its length), `0` at a filemark
    /// (which is passed). `ENOMEM` when the block is longer than `buf`.
    fn read_block(&mut self, buf: &mut [u8]) -> io::Result<usize>;
    /// write(2): `data` as one block. `ENOSPC` at the end of the medium.
    fn write_block(&mut self, data: &[u8]) -> io::Result<()>;
    /// `MTOFFL`: rewinds and ejects (a changer can then move the cartridge).
    fn eject(&mut self) -> io::Result<()>;
    /// For messages: "/dev/nst0".
    fn describe(&self) -> String;
}

/// The block size coffer writes: 256 KiB, a size every LTO generation
/// streams at full speed (IBM LTO SCSI reference: "transfer length of
/// 256 KB or more recommended"), and below the st driver's default
/// maximum buffer.
pub const BLOCK_SIZE: usize = 256 << 10;

// linux/mtio.h
const MTFSF: i16 = 1;
const MTBSF: i16 = 2;
const MTWEOF: i16 = 5;
const MTREW: i16 = 6;
const MTOFFL: i16 = 7;
const MTEOM: i16 = 12;
const MTSETBLK: i16 = 20;
const GMT_BOT: libc::c_long = 0x4000_0000;
const GMT_EOT: libc::c_long = 0x2000_0000;
const GMT_EOD: libc::c_long = 0x0800_0000;
const GMT_WR_PROT: libc::c_long = 0x0400_0000;
const GMT_ONLINE: libc::c_long = 0x0100_0000;

/// `struct mtop`.
#[repr(C)]
struct MtOp {
    mt_op: libc::c_short,
    mt_count: libc::c_int,
}

/// `struct mtget`.
#[repr(C)]
#[derive(Default)]
struct MtGet {
    mt_type: libc::c_long,
    mt_resid: libc::c_long,
    mt_dsreg: libc::c_long,
    mt_gstat: libc::c_long,
    mt_erreg: libc::c_long,
    mt_fileno: libc::c_int,
    mt_blkno: libc::c_int,
}

/// `_IOW('m', 1, struct mtop)` and `_IOR('m', 2, struct mtget)`: direction
/// in bits 30-31, size in bits 16-29, type and number below.
const fn ioc(dir: u64, nr: u64, size: usize) -> u64 {
    (dir << 30) | ((size as u64) << 16) | ((b'm' as u64) << 8) | nr
}
const MTIOCTOP: u64 = ioc(1, 1, std::mem::size_of::<MtOp>());
const MTIOCGET: u64 = ioc(2, 2, std::mem::size_of::<MtGet>());

/// A real drive through the `st` driver. Open the non-rewinding device
/// (`/dev/nstN`): the rewinding one rewinds on every close, and coffer
/// positions by file number between sessions.
pub struct StDrive {
    file: std::fs::File,
    path: std::path::PathBuf,
}

impl StDrive {
    /// Opens the device and sets variable-block mode (`MTSETBLK 0`), so
    /// every write(2) is one block and a read(2) returns one block.
    pub fn open(path: &std::path::Path) -> io::Result<StDrive> {
        use std::os::unix::fs::OpenOptionsExt;
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(path)?;
        let mut d = StDrive {
            file,
            path: path.to_path_buf(),
        };
        // O_NONBLOCK only so that the open does not wait for a cartridge;
        // the operations themselves block.
        clear_nonblock(&d.file)?;
        d.op(MTSETBLK, 0).map_err(|e| {
            if e.raw_os_error() == Some(libc::ENOTTY) {
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!(
                        "{} is not a tape device (the st driver's ioctls are refused)",
                        path.display()
                    ),
                )
            } else {
                e
            }
        })?;
        Ok(d)
    }

    fn op(&mut self, op: i16, count: i32) -> io::Result<()> {
        use std::os::fd::AsRawFd;
        let arg = MtOp {
            mt_op: op,
            mt_count: count,
        };
        // SAFETY: MTIOCTOP reads one `struct mtop`, which `arg` is.
        let rc = unsafe { libc::ioctl(self.file.as_raw_fd(), MTIOCTOP as _, &arg) };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}

fn clear_nonblock(file: &std::fs::File) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let fd = file.as_raw_fd();
    // SAFETY: plain fcntl on a descriptor we own.
    unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFL);
        if flags < 0 || libc::fcntl(fd, libc::F_SETFL, flags & !libc::O_NONBLOCK) < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

impl TapeDrive for StDrive {
    fn rewind(&mut self) -> io::Result<()> {
        self.op(MTREW, 1)
    }
    fn space_forward_files(&mut self, n: u32) -> io::Result<()> {
        if n == 0 {
            return Ok(());
        }
        self.op(MTFSF, n as i32)
    }
    fn space_back_files(&mut self, n: u32) -> io::Result<()> {
        if n == 0 {
            return Ok(());
        }
        self.op(MTBSF, n as i32)
    }
    fn end_of_data(&mut self) -> io::Result<()> {
        self.op(MTEOM, 1)
    }
    fn write_filemarks(&mut self, n: u32) -> io::Result<()> {
        self.op(MTWEOF, n as i32)
    }
    fn status(&mut self) -> io::Result<TapeStatus> {
        use std::os::fd::AsRawFd;
        let mut g = MtGet::default();
        // SAFETY: MTIOCGET fills one `struct mtget`, which `g` is.
        let rc = unsafe { libc::ioctl(self.file.as_raw_fd(), MTIOCGET as _, &mut g) };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        let s = g.mt_gstat;
        Ok(TapeStatus {
            file_number: u32::try_from(g.mt_fileno).ok(),
            block_number: u32::try_from(g.mt_blkno).ok(),
            bot: s & GMT_BOT != 0,
            eod: s & GMT_EOD != 0,
            eot: s & GMT_EOT != 0,
            write_protected: s & GMT_WR_PROT != 0,
            online: s & GMT_ONLINE != 0,
        })
    }
    fn read_block(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        use std::io::Read;
        self.file.read(buf)
    }
    fn write_block(&mut self, data: &[u8]) -> io::Result<()> {
        use std::io::Write;
        let n = self.file.write(data)?;
        if n != data.len() {
            // st reports the early warning as a short write, then ENOSPC.
            return Err(io::Error::from_raw_os_error(libc::ENOSPC));
        }
        Ok(())
    }
    fn eject(&mut self) -> io::Result<()> {
        self.op(MTOFFL, 1)
    }
    fn describe(&self) -> String {
        self.path.display().to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ioctl_numbers_are_those_of_linux_mtio_h() {
        // x86_64 and aarch64: struct mtop is 8 bytes, struct mtget 48.
        assert_eq!(MTIOCTOP, 0x4008_6d01);
        assert_eq!(MTIOCGET, 0x8030_6d02);
    }

    #[test]
    fn a_file_that_is_no_tape_is_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("nst0");
        std::fs::write(&p, b"").unwrap();
        let e = StDrive::open(&p).err().expect("a plain file is no tape");
        assert!(e.to_string().contains("is not a tape device"), "{e}");
    }
}
