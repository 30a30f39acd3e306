//! What coffer writes on a tape (docs/repository-format.md §7).
//!
//! File 0 of every medium is its label: one `Label` record. Every later
//! file is one copy session: a `Session` record, the repository's `config`
//! as an `Object` record, the objects the session adds (chunk blobs,
//! indexes, the manifest last), and an `End` record with the session's
//! counts, then a filemark. A file without its `End` record was cut off
//! and holds nothing coffer counts.
//!
//! Records run on across blocks of `device::BLOCK_SIZE` bytes (the last
//! block of a file may be shorter), each:
//!
//! ```text
//! "CTR1" | kind u8 | key length u16 BE | key | data length u64 BE | data | CRC-32 (IEEE) of kind..data, u32 BE
//! ```
//!
//! so a tape read with nothing but this page gives back every object
//! under its repository key.

use std::io;

use super::device::{BLOCK_SIZE, TapeDrive};

pub const MAGIC: &[u8; 4] = b"CTR1";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    Label = 1,
    Session = 2,
    Object = 3,
    End = 4,
}

impl Kind {
    fn from_u8(b: u8) -> Option<Kind> {
        Some(match b {
            1 => Kind::Label,
            2 => Kind::Session,
            3 => Kind::Object,
            4 => Kind::End,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub kind: Kind,
    pub key: String,
    pub data: Vec<u8>,
}

/// A medium's label (file 0), JSON in the `Label` record.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Label {
    pub label: String,
    pub pool: String,
    /// The repository id of the tier whose media pool it belongs to.
    pub repository: String,
    pub labelled_at: String,
}

/// The head of a session file, JSON in the `Session` record.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct SessionHead {
    pub session: String,
    pub label: String,
    pub file: u32,
    pub repository: String,
    pub written_at: String,
    pub coffer: String,
}

/// The end of a session file, JSON in the `End` record.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct SessionEnd {
    pub objects: u64,
    pub bytes: u64,
}

fn crc(kind: u8, key: &[u8], data: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&[kind]);
    h.update(&(key.len() as u16).to_be_bytes());
    h.update(key);
    h.update(&(data.len() as u64).to_be_bytes());
    h.update(data);
    h.finalize()
}

/// Writes one tape file: records into blocks, a filemark at the end.
pub struct FileWriter {
    buf: Vec<u8>,
    /// Bytes handed to the drive so far.
    pub written: u64,
}

impl Default for FileWriter {
    fn default() -> Self {
        FileWriter {
            buf: Vec::with_capacity(2 * BLOCK_SIZE),
            written: 0,
        }
    }
}

impl FileWriter {
    pub fn record(
        &mut self,
        drive: &mut dyn TapeDrive,
        kind: Kind,
        key: &str,
        data: &[u8],
    ) -> io::Result<()> {
        if key.len() > u16::MAX as usize {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "key too long"));
        }
        self.buf.extend_from_slice(MAGIC);
        self.buf.push(kind as u8);
        self.buf
            .extend_from_slice(&(key.len() as u16).to_be_bytes());
        self.buf.extend_from_slice(key.as_bytes());
        self.buf
            .extend_from_slice(&(data.len() as u64).to_be_bytes());
        self.buf.extend_from_slice(data);
        self.buf
            .extend_from_slice(&crc(kind as u8, key.as_bytes(), data).to_be_bytes());
        let mut at = 0;
        while self.buf.len() - at >= BLOCK_SIZE {
            drive.write_block(&self.buf[at..at + BLOCK_SIZE])?;
            at += BLOCK_SIZE;
            self.written += BLOCK_SIZE as u64;
        }
        self.buf.drain(..at);
        Ok(())
    }

    /// Writes what is left as a last, shorter block and the filemark: the
    /// file is on the medium once this returns.
    pub fn finish(mut self, drive: &mut dyn TapeDrive) -> io::Result<u64> {
        if !self.buf.is_empty() {
            drive.write_block(&self.buf)?;
            self.written += self.buf.len() as u64;
            self.buf.clear();
        }
        drive.write_filemarks(1)?;
        Ok(self.written)
    }
}

/// Reads the records of the tape file the drive stands at, up to its
/// filemark.
pub struct FileReader {
    pending: Vec<u8>,
    block: Vec<u8>,
    ended: bool,
}

impl Default for FileReader {
    fn default() -> Self {
        FileReader {
            pending: Vec::new(),
            block: vec![0u8; BLOCK_SIZE],
            ended: false,
        }
    }
}

fn bad(what: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what)
}

impl FileReader {
    /// Reads blocks until `n` bytes are pending; false at the filemark.
    fn fill(&mut self, drive: &mut dyn TapeDrive, n: usize) -> io::Result<bool> {
        while self.pending.len() < n {
            if self.ended {
                return Ok(false);
            }
            let got = drive.read_block(&mut self.block)?;
            if got == 0 {
                self.ended = true;
                return Ok(false);
            }
            self.pending.extend_from_slice(&self.block[..got]);
        }
        Ok(true)
    }

    /// The next record; `None` at the filemark. A record cut off by the
    /// filemark, a wrong magic or a CRC mismatch is an error.
    pub fn next(&mut self, drive: &mut dyn TapeDrive) -> io::Result<Option<Record>> {
        if !self.fill(drive, 7)? {
            if self.pending.is_empty() {
                return Ok(None);
            }
            return Err(bad("the tape file ends inside a record".into()));
        }
        if &self.pending[..4] != MAGIC {
            return Err(bad("not a coffer tape record (bad magic)".into()));
        }
        let kind_byte = self.pending[4];
        let kind = Kind::from_u8(kind_byte)
            .ok_or_else(|| bad(format!("unknown record kind {kind_byte}")))?;
        let key_len = u16::from_be_bytes([self.pending[5], self.pending[6]]) as usize;
        if !self.fill(drive, 7 + key_len + 8)? {
            return Err(bad("the tape file ends inside a record".into()));
        }
        let at = 7 + key_len;
        let data_len = u64::from_be_bytes(self.pending[at..at + 8].try_into().unwrap());
        // The largest object coffer writes is a disk's index (32 bytes a
        // chunk): 1 GiB covers a 8 TiB disk at 256 KiB chunks. A crafted
        // length beyond it is refused before anything is buffered.
        if data_len > (1 << 30) {
            return Err(bad(format!("record of {data_len} bytes")));
        }
        let total = at + 8 + data_len as usize + 4;
        if !self.fill(drive, total)? {
            return Err(bad("the tape file ends inside a record".into()));
        }
        let key = String::from_utf8(self.pending[7..at].to_vec())
            .map_err(|_| bad("record key is not UTF-8".into()))?;
        let data = self.pending[at + 8..total - 4].to_vec();
        let want = u32::from_be_bytes(self.pending[total - 4..total].try_into().unwrap());
        if crc(kind_byte, key.as_bytes(), &data) != want {
            return Err(bad(format!("record `{key}` fails its CRC")));
        }
        self.pending.drain(..total);
        Ok(Some(Record { kind, key, data }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tape::changer::Changer;
    use crate::tape::emulated::{FileChanger, FileDrive};

    #[test]
    fn records_cross_blocks_and_come_back_whole() {
        let dir = tempfile::tempdir().unwrap();
        FileChanger::create(dir.path(), 1, &["T1"], 64 << 20).unwrap();
        FileChanger::new(dir.path()).load(1).unwrap();
        let mut d = FileDrive::new(dir.path());
        let mut w = FileWriter::default();
        let big: Vec<u8> = (0..(BLOCK_SIZE * 2 + 77)).map(|i| i as u8).collect();
        w.record(&mut d, Kind::Session, "", b"{}").unwrap();
        w.record(&mut d, Kind::Object, "chunks/ab/cd/x", &big)
            .unwrap();
        w.record(&mut d, Kind::End, "", b"{}").unwrap();
        w.finish(&mut d).unwrap();
        d.rewind().unwrap();
        let mut r = FileReader::default();
        let kinds: Vec<_> = std::iter::from_fn(|| r.next(&mut d).unwrap()).collect();
        assert_eq!(kinds.len(), 3);
        assert_eq!(kinds[1].data, big);
        assert_eq!(kinds[1].key, "chunks/ab/cd/x");
        assert_eq!(kinds[2].kind, Kind::End);
    }
}
