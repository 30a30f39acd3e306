//! A tape library kept in a directory, for the tests and for trying coffer
//! without a drive. It implements exactly `TapeDrive` and `Changer`, with
//! a drive's semantics and refusals, and nothing more:
//!
//! - a cartridge is a file of blocks and filemarks; the drive reads and
//!   writes only where the tape stands and positions only by spacing over
//!   filemarks, rewinding or going to the end of data (there is no seek);
//! - a write anywhere makes that point the end of the data: what followed
//!   is gone, as on a real tape (st(4): "writing ... erases everything
//!   after");
//! - a read past the end of the data fails (`EIO`, the drive's "blank
//!   check"), a block longer than the read buffer fails (`ENOMEM`, st(4)
//!   in variable-block mode), a write past the cartridge's capacity fails
//!   (`ENOSPC`, the end of the medium), a write-protected cartridge (a
//!   read-only file) refuses writes (`EROFS`... st says `EACCES`);
//! - a filemark flushes: the cartridge file is synced.
//!
//! Layout of the directory: `slot-NN/` (storage elements, each empty or
//! holding one cartridge file named by its barcode), `drive/` (the data
//! transfer element, with a `from` file naming the slot the cartridge
//! came from) and `capacity` (bytes per cartridge). A cartridge taken out
//! of the directory is out of the library (offsite).

use std::fs::{File, OpenOptions};
use std::io::{self, Seek, SeekFrom};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::changer::{Changer, Inventory, Slot};
use super::device::{TapeDrive, TapeStatus};

const BLOCK: u8 = b'B';
const FILEMARK: u8 = b'F';
const HEADER: u64 = 5;

fn err(code: i32, what: &str) -> io::Error {
    let os = io::Error::from_raw_os_error(code);
    io::Error::new(os.kind(), format!("{what} ({os})"))
}

/// One cartridge file: its entries (offset, kind, length) read once when
/// loaded, the position an index into them.
struct Cartridge {
    file: File,
    entries: Vec<(u64, u8, u32)>,
    pos: usize,
    capacity: u64,
    read_only: bool,
}

impl Cartridge {
    fn open(path: &Path, capacity: u64) -> io::Result<Cartridge> {
        let read_only = std::fs::metadata(path)?.permissions().readonly();
        let file = OpenOptions::new().read(true).write(!read_only).open(path)?;
        let len = file.metadata()?.len();
        let mut entries = Vec::new();
        let mut off = 0u64;
        let mut head = [0u8; HEADER as usize];
        // A torn last entry (the writer was killed) is past the end of the
        // data, as an incomplete block is on a tape.
        while off + HEADER <= len {
            file.read_exact_at(&mut head, off)?;
            let n = u32::from_le_bytes(head[1..5].try_into().unwrap());
            let kind = head[0];
            if (kind != BLOCK && kind != FILEMARK) || off + HEADER + n as u64 > len {
                break;
            }
            entries.push((off, kind, n));
            off += HEADER + n as u64;
        }
        Ok(Cartridge {
            file,
            entries,
            pos: 0,
            capacity,
            read_only,
        })
    }

    fn end(&self) -> u64 {
        self.entries
            .last()
            .map_or(0, |(o, _, n)| o + HEADER + *n as u64)
    }

    /// Drops everything from the position on: a write makes it the end.
    fn cut_here(&mut self) -> io::Result<()> {
        if self.read_only {
            return Err(err(libc::EACCES, "the cartridge is write-protected"));
        }
        self.entries.truncate(self.pos);
        let end = self.end();
        self.file.set_len(end)?;
        self.file.seek(SeekFrom::Start(end))?;
        Ok(())
    }

    fn append(&mut self, kind: u8, data: &[u8]) -> io::Result<()> {
        let off = self.end();
        let mut entry = Vec::with_capacity(HEADER as usize + data.len());
        entry.push(kind);
        entry.extend_from_slice(&(data.len() as u32).to_le_bytes());
        entry.extend_from_slice(data);
        self.file.write_all_at(&entry, off)?;
        self.entries.push((off, kind, data.len() as u32));
        self.pos = self.entries.len();
        Ok(())
    }
}

/// The drive of an emulated library: works on whatever cartridge is in
/// `drive/`, and sees a cartridge change as a real drive does (a newly
/// loaded cartridge stands at its beginning).
pub struct FileDrive {
    dir: PathBuf,
    loaded: Option<(String, Cartridge)>,
}

impl FileDrive {
    pub fn new(library: &Path) -> FileDrive {
        FileDrive {
            dir: library.to_path_buf(),
            loaded: None,
        }
    }

    fn cartridge(&mut self) -> io::Result<&mut Cartridge> {
        let now = drive_holds(&self.dir)?;
        let same = matches!((&self.loaded, &now), (Some((a, _)), Some(b)) if a == b);
        if !same {
            self.loaded = match now {
                None => None,
                Some(barcode) => {
                    let c = Cartridge::open(
                        &self.dir.join("drive").join(&barcode),
                        capacity(&self.dir)?,
                    )?;
                    Some((barcode, c))
                }
            };
        }
        match &mut self.loaded {
            Some((_, c)) => Ok(c),
            None => Err(err(libc::ENOMEDIUM, "no cartridge in the drive")),
        }
    }
}

impl TapeDrive for FileDrive {
    fn rewind(&mut self) -> io::Result<()> {
        self.cartridge()?.pos = 0;
        Ok(())
    }

    fn space_forward_files(&mut self, n: u32) -> io::Result<()> {
        let c = self.cartridge()?;
        for _ in 0..n {
            loop {
                let Some(&(_, kind, _)) = c.entries.get(c.pos) else {
                    return Err(err(libc::EIO, "spacing forward ran into the end of data"));
                };
                c.pos += 1;
                if kind == FILEMARK {
                    break;
                }
            }
        }
        Ok(())
    }

    fn space_back_files(&mut self, n: u32) -> io::Result<()> {
        let c = self.cartridge()?;
        for _ in 0..n {
            loop {
                if c.pos == 0 {
                    return Err(err(
                        libc::EIO,
                        "spacing back ran into the beginning of the tape",
                    ));
                }
                c.pos -= 1;
                if c.entries[c.pos].1 == FILEMARK {
                    break;
                }
            }
        }
        Ok(())
    }

    fn end_of_data(&mut self) -> io::Result<()> {
        let c = self.cartridge()?;
        c.pos = c.entries.len();
        Ok(())
    }

    fn write_filemarks(&mut self, n: u32) -> io::Result<()> {
        let c = self.cartridge()?;
        c.cut_here()?;
        for _ in 0..n {
            c.append(FILEMARK, &[])?;
        }
        c.file.sync_data()
    }

    fn status(&mut self) -> io::Result<TapeStatus> {
        let c = match self.cartridge() {
            Ok(c) => c,
            Err(e) if e.raw_os_error() == Some(libc::ENOMEDIUM) => {
                return Ok(TapeStatus::default());
            }
            Err(e) => return Err(e),
        };
        let before = &c.entries[..c.pos];
        let files = before.iter().filter(|e| e.1 == FILEMARK).count();
        let blocks = before.iter().rev().take_while(|e| e.1 == BLOCK).count();
        Ok(TapeStatus {
            file_number: Some(files as u32),
            block_number: Some(blocks as u32),
            bot: c.pos == 0,
            eod: c.pos == c.entries.len(),
            eot: c.end() * 100 >= c.capacity * 95,
            write_protected: c.read_only,
            online: true,
        })
    }

    fn read_block(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let c = self.cartridge()?;
        let Some(&(off, kind, n)) = c.entries.get(c.pos) else {
            return Err(err(libc::EIO, "read past the end of data (blank check)"));
        };
        if kind == FILEMARK {
            c.pos += 1;
            return Ok(0);
        }
        if n as usize > buf.len() {
            return Err(err(
                libc::ENOMEM,
                "the block is longer than the read buffer",
            ));
        }
        c.file.read_exact_at(&mut buf[..n as usize], off + HEADER)?;
        c.pos += 1;
        Ok(n as usize)
    }

    fn write_block(&mut self, data: &[u8]) -> io::Result<()> {
        let c = self.cartridge()?;
        c.cut_here()?;
        if c.end() + HEADER + data.len() as u64 > c.capacity {
            return Err(err(libc::ENOSPC, "end of the medium"));
        }
        c.append(BLOCK, data)
    }

    fn eject(&mut self) -> io::Result<()> {
        self.rewind()
    }

    fn describe(&self) -> String {
        format!("emulated drive of {}", self.dir.display())
    }
}

/// The cartridge in the drive, by barcode.
fn drive_holds(dir: &Path) -> io::Result<Option<String>> {
    let mut held = None;
    for e in std::fs::read_dir(dir.join("drive"))? {
        let name = e?.file_name().to_string_lossy().into_owned();
        if name != "from" {
            held = Some(name);
        }
    }
    Ok(held)
}

fn capacity(dir: &Path) -> io::Result<u64> {
    let text = std::fs::read_to_string(dir.join("capacity"))?;
    text.trim()
        .parse()
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "bad capacity file"))
}

fn slot_dir(dir: &Path, slot: u32) -> PathBuf {
    dir.join(format!("slot-{slot:02}"))
}

/// The changer of an emulated library: moves cartridge files between the
/// slot directories and `drive/`.
pub struct FileChanger {
    dir: PathBuf,
}

impl FileChanger {
    pub fn new(library: &Path) -> FileChanger {
        FileChanger {
            dir: library.to_path_buf(),
        }
    }

    /// Creates a library with `slots` slots, blank cartridges with the
    /// given barcodes in the first slots, and `capacity` bytes per
    /// cartridge.
    pub fn create(library: &Path, slots: u32, barcodes: &[&str], capacity: u64) -> io::Result<()> {
        if barcodes.len() > slots as usize {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "more cartridges than slots",
            ));
        }
        std::fs::create_dir_all(library.join("drive"))?;
        std::fs::write(library.join("capacity"), capacity.to_string())?;
        for slot in 1..=slots {
            std::fs::create_dir_all(slot_dir(library, slot))?;
        }
        for (i, b) in barcodes.iter().enumerate() {
            File::create(slot_dir(library, i as u32 + 1).join(b))?;
        }
        Ok(())
    }
}

impl FileChanger {
    /// `create` with `cartridges` LTO-9 barcodes: `prefix`, a number from
    /// 0001, and "L9". Answers the barcodes.
    pub fn create_lto(
        library: &Path,
        slots: u32,
        cartridges: u32,
        capacity: u64,
        prefix: &str,
    ) -> io::Result<Vec<String>> {
        let barcodes: Vec<String> = (1..=cartridges)
            .map(|i| format!("{prefix}{i:04}L9"))
            .collect();
        let refs: Vec<&str> = barcodes.iter().map(String::as_str).collect();
        FileChanger::create(library, slots, &refs, capacity)?;
        Ok(barcodes)
    }
}

impl Changer for FileChanger {
    fn inventory(&mut self) -> io::Result<Inventory> {
        let mut slots = Vec::new();
        for e in std::fs::read_dir(&self.dir)? {
            let e = e?;
            let name = e.file_name().to_string_lossy().into_owned();
            let Some(n) = name.strip_prefix("slot-").and_then(|n| n.parse().ok()) else {
                continue;
            };
            let mut barcode = None;
            for c in std::fs::read_dir(e.path())? {
                barcode = Some(c?.file_name().to_string_lossy().into_owned());
            }
            slots.push(Slot {
                address: n,
                barcode,
            });
        }
        slots.sort_by_key(|s| s.address);
        let drive = match drive_holds(&self.dir)? {
            None => None,
            Some(b) => {
                let from = std::fs::read_to_string(self.dir.join("drive/from"))
                    .ok()
                    .and_then(|t| t.trim().parse().ok());
                Some((b, from))
            }
        };
        Ok(Inventory { slots, drive })
    }

    fn load(&mut self, slot: u32) -> io::Result<()> {
        if drive_holds(&self.dir)?.is_some() {
            return Err(err(libc::EBUSY, "the drive is full"));
        }
        let from = slot_dir(&self.dir, slot);
        let Some(c) = std::fs::read_dir(&from)?.next() else {
            return Err(err(libc::ENOENT, &format!("slot {slot} is empty")));
        };
        let name = c?.file_name();
        std::fs::write(self.dir.join("drive/from"), slot.to_string())?;
        std::fs::rename(from.join(&name), self.dir.join("drive").join(&name))
    }

    fn unload(&mut self, slot: u32) -> io::Result<()> {
        let Some(b) = drive_holds(&self.dir)? else {
            return Err(err(libc::ENOENT, "the drive is empty"));
        };
        let to = slot_dir(&self.dir, slot);
        if std::fs::read_dir(&to)?.next().is_some() {
            return Err(err(libc::EBUSY, &format!("slot {slot} is full")));
        }
        std::fs::rename(self.dir.join("drive").join(&b), to.join(&b))?;
        let _ = std::fs::remove_file(self.dir.join("drive/from"));
        Ok(())
    }

    fn describe(&self) -> String {
        format!("emulated library {}", self.dir.display())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn library(capacity: u64) -> (tempfile::TempDir, FileDrive, FileChanger) {
        let dir = tempfile::tempdir().unwrap();
        FileChanger::create(dir.path(), 3, &["A00001L9", "A00002L9"], capacity).unwrap();
        let mut ch = FileChanger::new(dir.path());
        ch.load(1).unwrap();
        let d = FileDrive::new(dir.path());
        (dir, d, ch)
    }

    fn read_file(d: &mut FileDrive) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        let mut buf = vec![0u8; 64];
        loop {
            let n = d.read_block(&mut buf).unwrap();
            if n == 0 {
                return out;
            }
            out.push(buf[..n].to_vec());
        }
    }

    #[test]
    fn files_are_found_by_spacing_over_filemarks_and_only_so() {
        let (_dir, mut d, _ch) = library(1 << 20);
        for file in 0..3u8 {
            d.write_block(&[file; 10]).unwrap();
            d.write_block(&[file + 100; 5]).unwrap();
            d.write_filemarks(1).unwrap();
        }
        let s = d.status().unwrap();
        assert_eq!(
            (s.file_number, s.block_number, s.eod),
            (Some(3), Some(0), true)
        );
        d.rewind().unwrap();
        assert!(d.status().unwrap().bot);
        d.space_forward_files(2).unwrap();
        assert_eq!(read_file(&mut d), vec![vec![2; 10], vec![102; 5]]);
        // Back over the filemark just read and the one before (to the end
        // of file 1), forward over that one: the file just read, again.
        d.space_back_files(2).unwrap();
        d.space_forward_files(1).unwrap();
        assert_eq!(read_file(&mut d), vec![vec![2; 10], vec![102; 5]]);
        // Back over three: the end of file 0, so forward once reads file 1.
        d.space_back_files(3).unwrap();
        d.space_forward_files(1).unwrap();
        assert_eq!(read_file(&mut d), vec![vec![1; 10], vec![101; 5]]);
        // Past the end of data: the drive's blank check.
        d.end_of_data().unwrap();
        assert_eq!(
            d.read_block(&mut [0u8; 64]).unwrap_err().raw_os_error(),
            None
        );
        d.rewind().unwrap();
        assert!(d.space_forward_files(4).is_err());
    }

    #[test]
    fn a_write_ends_the_data_where_the_tape_stands() {
        let (_dir, mut d, _ch) = library(1 << 20);
        for file in 0..3u8 {
            d.write_block(&[file; 10]).unwrap();
            d.write_filemarks(1).unwrap();
        }
        d.rewind().unwrap();
        d.space_forward_files(1).unwrap();
        d.write_block(&[9; 3]).unwrap();
        d.write_filemarks(1).unwrap();
        d.end_of_data().unwrap();
        assert_eq!(d.status().unwrap().file_number, Some(2));
        d.rewind().unwrap();
        d.space_forward_files(1).unwrap();
        assert_eq!(read_file(&mut d), vec![vec![9; 3]]);
    }

    #[test]
    fn refusals_are_the_drives() {
        let (dir, mut d, mut ch) = library(64);
        // A block longer than the buffer.
        d.write_block(&[1; 40]).unwrap();
        d.rewind().unwrap();
        let e = d.read_block(&mut [0u8; 8]).unwrap_err();
        assert!(e.to_string().contains("longer than the read buffer"), "{e}");
        // The end of the medium.
        d.end_of_data().unwrap();
        let e = d.write_block(&[2; 40]).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::StorageFull, "{e}");
        // No cartridge, then another one (which stands at its beginning).
        ch.unload(1).unwrap();
        assert!(d.rewind().is_err());
        ch.load(2).unwrap();
        let s = d.status().unwrap();
        assert!(s.bot && s.eod, "{s:?}");
        assert!(ch.load(1).is_err(), "the drive is full");
        let inv = ch.inventory().unwrap();
        assert_eq!(inv.drive, Some(("A00002L9".into(), Some(2))));
        assert_eq!(inv.slots[0].barcode.as_deref(), Some("A00001L9"));
        assert_eq!(inv.slots[1].barcode, None);
        // A write-protected cartridge.
        ch.unload(2).unwrap();
        let p = dir.path().join("slot-01/A00001L9");
        let mut perm = std::fs::metadata(&p).unwrap().permissions();
        perm.set_readonly(true);
        std::fs::set_permissions(&p, perm).unwrap();
        ch.load(1).unwrap();
        if d.status().unwrap().write_protected {
            assert!(d.write_filemarks(1).is_err());
        }
    }

    #[test]
    fn a_torn_last_block_is_past_the_end_of_data() {
        let (dir, mut d, _ch) = library(1 << 20);
        d.write_block(&[1; 10]).unwrap();
        d.write_filemarks(1).unwrap();
        d.write_block(&[2; 10]).unwrap();
        drop(d);
        let p = dir.path().join("drive/A00001L9");
        let len = std::fs::metadata(&p).unwrap().len();
        OpenOptions::new()
            .write(true)
            .open(&p)
            .unwrap()
            .set_len(len - 3)
            .unwrap();
        let mut d = FileDrive::new(dir.path());
        d.end_of_data().unwrap();
        let s = d.status().unwrap();
        assert_eq!((s.file_number, s.block_number), (Some(1), Some(0)));
    }
}
