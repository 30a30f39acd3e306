//! A media changer (tape library robot) as the SCSI Media Changer command
//! set (SMC-3) presents it: storage slots and drives ("data transfer
//! elements") that hold cartridges known by their barcodes, `READ ELEMENT
//! STATUS` to see where each is, `MOVE MEDIUM` to move one.
//!
//! `ScsiChanger` sends those two commands through the Linux SCSI generic
//! driver (`SG_IO` on `/dev/sgN`, the library's changer LUN), as mtx does;
//! `emulated::FileChanger` moves cartridge files between directories.

use std::io;

/// A storage slot and the barcode of the cartridge in it (`None`: empty;
/// `Some("")`: a cartridge without a readable barcode).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Slot {
    pub address: u32,
    pub barcode: Option<String>,
}

/// What a changer holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inventory {
    pub slots: Vec<Slot>,
    /// The cartridge in coffer's drive, by barcode, and the slot it came
    /// from when the changer knows it.
    pub drive: Option<(String, Option<u32>)>,
}

impl Inventory {
    /// The slot holding the cartridge with this barcode.
    pub fn slot_of(&self, barcode: &str) -> Option<u32> {
        self.slots
            .iter()
            .find(|s| s.barcode.as_deref() == Some(barcode))
            .map(|s| s.address)
    }

    /// An empty slot, for a cartridge that must leave the drive.
    pub fn empty_slot(&self) -> Option<u32> {
        self.slots
            .iter()
            .find(|s| s.barcode.is_none())
            .map(|s| s.address)
    }
}

pub trait Changer: Send {
    /// `READ ELEMENT STATUS`.
    fn inventory(&mut self) -> io::Result<Inventory>;
    /// `MOVE MEDIUM` from a slot into coffer's drive.
    fn load(&mut self, slot: u32) -> io::Result<()>;
    /// `MOVE MEDIUM` from coffer's drive into a slot (the drive has
    /// ejected the cartridge first).
    fn unload(&mut self, slot: u32) -> io::Result<()>;
    fn describe(&self) -> String;
}

/// Element type codes (SMC-3, READ ELEMENT STATUS).
const TRANSPORT: u8 = 1;
const STORAGE: u8 = 2;
const DRIVE: u8 = 4;

/// One element descriptor of a READ ELEMENT STATUS answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Element {
    pub kind: u8,
    pub address: u16,
    pub full: bool,
    /// Where the cartridge came from (SVALID).
    pub source: Option<u16>,
    /// The primary volume tag's identifier, trailing spaces removed.
    pub barcode: Option<String>,
}

/// Parses a READ ELEMENT STATUS answer (SMC-3 6.11): an 8-byte header,
/// then pages of one element type, each an 8-byte page header (type,
/// PVOLTAG, descriptor length, byte count) and its descriptors. Bytes the
/// device did not send (a short answer) end the parse; nothing is read
/// past `data`.
pub fn parse_element_status(data: &[u8]) -> Vec<Element> {
    let mut out = Vec::new();
    if data.len() < 8 {
        return out;
    }
    let report = u32::from_be_bytes([0, data[5], data[6], data[7]]) as usize;
    let end = data.len().min(8 + report);
    let mut at = 8;
    while at + 8 <= end {
        let kind = data[at] & 0x0f;
        let pvoltag = data[at + 1] & 0x80 != 0;
        let desc_len = u16::from_be_bytes([data[at + 2], data[at + 3]]) as usize;
        let bytes = u32::from_be_bytes([0, data[at + 5], data[at + 6], data[at + 7]]) as usize;
        at += 8;
        let page_end = end.min(at + bytes);
        if desc_len < 12 {
            break;
        }
        while at + desc_len <= page_end {
            let d = &data[at..at + desc_len];
            let barcode = (pvoltag && desc_len >= 12 + 32).then(|| {
                String::from_utf8_lossy(&d[12..44])
                    .trim_end_matches([' ', '\0'])
                    .to_string()
            });
            let full = d[2] & 0x01 != 0;
            out.push(Element {
                kind,
                address: u16::from_be_bytes([d[0], d[1]]),
                full,
                source: (d[9] & 0x80 != 0).then(|| u16::from_be_bytes([d[10], d[11]])),
                barcode: barcode.filter(|_| full),
            });
            at += desc_len;
        }
        at = page_end;
    }
    out
}

/// A library's changer through SCSI generic.
pub struct ScsiChanger {
    file: std::fs::File,
    path: std::path::PathBuf,
    /// Which data transfer element is coffer's drive (0: the first).
    drive_index: usize,
}

// scsi/sg.h
const SG_IO: u64 = 0x2285;
const SG_DXFER_NONE: i32 = -1;
const SG_DXFER_FROM_DEV: i32 = -3;

/// `struct sg_io_hdr`.
#[repr(C)]
struct SgIoHdr {
    interface_id: libc::c_int,
    dxfer_direction: libc::c_int,
    cmd_len: libc::c_uchar,
    mx_sb_len: libc::c_uchar,
    iovec_count: libc::c_ushort,
    dxfer_len: libc::c_uint,
    dxferp: *mut libc::c_void,
    cmdp: *const libc::c_uchar,
    sbp: *mut libc::c_uchar,
    timeout: libc::c_uint,
    flags: libc::c_uint,
    pack_id: libc::c_int,
    usr_ptr: *mut libc::c_void,
    status: libc::c_uchar,
    masked_status: libc::c_uchar,
    msg_status: libc::c_uchar,
    sb_len_wr: libc::c_uchar,
    host_status: libc::c_ushort,
    driver_status: libc::c_ushort,
    resid: libc::c_int,
    duration: libc::c_uint,
    info: libc::c_uint,
}

impl ScsiChanger {
    pub fn open(path: &std::path::Path, drive_index: usize) -> io::Result<ScsiChanger> {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)?;
        Ok(ScsiChanger {
            file,
            path: path.to_path_buf(),
            drive_index,
        })
    }

    /// Sends one command; `data` receives the answer (empty: none).
    fn command(&mut self, cdb: &[u8], data: &mut [u8], timeout_ms: u32) -> io::Result<()> {
        use std::os::fd::AsRawFd;
        let mut sense = [0u8; 32];
        let mut h = SgIoHdr {
            interface_id: b'S' as libc::c_int,
            dxfer_direction: if data.is_empty() {
                SG_DXFER_NONE
            } else {
                SG_DXFER_FROM_DEV
            },
            cmd_len: cdb.len() as u8,
            mx_sb_len: sense.len() as u8,
            iovec_count: 0,
            dxfer_len: data.len() as u32,
            dxferp: data.as_mut_ptr().cast(),
            cmdp: cdb.as_ptr(),
            sbp: sense.as_mut_ptr(),
            timeout: timeout_ms,
            flags: 0,
            pack_id: 0,
            usr_ptr: std::ptr::null_mut(),
            status: 0,
            masked_status: 0,
            msg_status: 0,
            sb_len_wr: 0,
            host_status: 0,
            driver_status: 0,
            resid: 0,
            duration: 0,
            info: 0,
        };
        // SAFETY: SG_IO reads the header, the command and up to dxfer_len
        // bytes of `data` and writes up to mx_sb_len bytes of `sense`; all
        // three live until the call returns.
        let rc = unsafe { libc::ioctl(self.file.as_raw_fd(), SG_IO as _, &mut h) };
        if rc < 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::ENOTTY) || e.raw_os_error() == Some(libc::EINVAL) {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!(
                        "{} is not a SCSI generic device (SG_IO refused)",
                        self.path.display()
                    ),
                ));
            }
            return Err(e);
        }
        if h.status != 0 || h.host_status != 0 || h.driver_status & 0x0f != 0 {
            // Fixed-format sense: key in byte 2, ASC/ASCQ in 12/13.
            let (key, asc, ascq) = (sense[2] & 0x0f, sense[12], sense[13]);
            return Err(io::Error::other(format!(
                "{}: SCSI command {:#04x} failed: status {:#04x}, sense key {key:#x}, ASC/ASCQ {asc:#04x}/{ascq:#04x}",
                self.path.display(),
                cdb[0],
                h.status
            )));
        }
        Ok(())
    }

    fn elements(&mut self, kind: u8) -> io::Result<Vec<Element>> {
        let len: usize = 64 << 10;
        let mut data = vec![0u8; len];
        let cdb = [
            0xB8,
            0x10 | kind, // VOLTAG: with barcodes
            0,
            0, // from element address 0
            0xff,
            0xff, // as many elements as there are
            0,
            (len >> 16) as u8,
            (len >> 8) as u8,
            len as u8,
            0,
            0,
        ];
        self.command(&cdb, &mut data, 5 * 60_000)?;
        Ok(parse_element_status(&data)
            .into_iter()
            .filter(|e| e.kind == kind)
            .collect())
    }

    fn drive_address(&mut self) -> io::Result<u16> {
        let drives = self.elements(DRIVE)?;
        drives
            .get(self.drive_index)
            .map(|d| d.address)
            .ok_or_else(|| {
                io::Error::other(format!(
                    "{}: the library has {} drives; changer_drive {} names none",
                    self.path.display(),
                    drives.len(),
                    self.drive_index
                ))
            })
    }

    fn move_medium(&mut self, from: u16, to: u16) -> io::Result<()> {
        let transport = self.elements(TRANSPORT)?.first().map_or(0, |t| t.address);
        let [t0, t1] = transport.to_be_bytes();
        let [f0, f1] = from.to_be_bytes();
        let [d0, d1] = to.to_be_bytes();
        let cdb = [0xA5, 0, t0, t1, f0, f1, d0, d1, 0, 0, 0, 0];
        // Moves take the robot up to minutes.
        self.command(&cdb, &mut [], 10 * 60_000)
    }
}

impl Changer for ScsiChanger {
    fn inventory(&mut self) -> io::Result<Inventory> {
        let slots = self
            .elements(STORAGE)?
            .into_iter()
            .map(|e| Slot {
                address: e.address as u32,
                barcode: e.full.then(|| e.barcode.unwrap_or_default()),
            })
            .collect();
        let drives = self.elements(DRIVE)?;
        let drive = drives.get(self.drive_index).filter(|d| d.full).map(|d| {
            (
                d.barcode.clone().unwrap_or_default(),
                d.source.map(u32::from),
            )
        });
        Ok(Inventory { slots, drive })
    }

    fn load(&mut self, slot: u32) -> io::Result<()> {
        let drive = self.drive_address()?;
        self.move_medium(slot as u16, drive)
    }

    fn unload(&mut self, slot: u32) -> io::Result<()> {
        let drive = self.drive_address()?;
        self.move_medium(drive, slot as u16)
    }

    fn describe(&self) -> String {
        self.path.display().to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An answer as SMC-3 lays it out: two slots (one with barcode
    /// "A00001L9"), one drive holding "A00002L9" taken from slot 0x1001.
    fn answer() -> Vec<u8> {
        let desc = |addr: u16, full: bool, source: Option<u16>, tag: &str| {
            let mut d = vec![0u8; 52];
            d[0..2].copy_from_slice(&addr.to_be_bytes());
            d[2] = full as u8;
            if let Some(s) = source {
                d[9] = 0x80;
                d[10..12].copy_from_slice(&s.to_be_bytes());
            }
            let mut t = tag.as_bytes().to_vec();
            t.resize(32, b' ');
            d[12..44].copy_from_slice(&t);
            d
        };
        let page = |kind: u8, descs: Vec<Vec<u8>>| {
            let body: Vec<u8> = descs.concat();
            let mut p = vec![kind, 0x80, 0, 52, 0];
            p.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
            p.extend(body);
            p
        };
        let pages = [
            page(
                STORAGE,
                vec![
                    desc(0x1000, true, None, "A00001L9"),
                    desc(0x1001, false, None, ""),
                ],
            ),
            page(DRIVE, vec![desc(0x0100, true, Some(0x1001), "A00002L9")]),
        ]
        .concat();
        let mut out = vec![0, 0, 0, 3, 0];
        out.extend_from_slice(&(pages.len() as u32).to_be_bytes()[1..]);
        out.extend(pages);
        out
    }

    #[test]
    fn element_status_pages_give_slots_drives_and_barcodes() {
        let e = parse_element_status(&answer());
        assert_eq!(e.len(), 3);
        assert_eq!(
            (e[0].kind, e[0].address, e[0].full, e[0].barcode.as_deref()),
            (STORAGE, 0x1000, true, Some("A00001L9"))
        );
        assert_eq!((e[1].full, e[1].barcode.as_deref()), (false, None));
        assert_eq!(
            (e[2].kind, e[2].source, e[2].barcode.as_deref()),
            (DRIVE, Some(0x1001), Some("A00002L9"))
        );
    }

    #[test]
    fn a_short_or_lying_answer_reads_nothing_past_its_end() {
        let a = answer();
        for cut in 0..a.len() {
            let _ = parse_element_status(&a[..cut]);
        }
        let mut lying = a.clone();
        lying[5..8].copy_from_slice(&[0xff, 0xff, 0xff]);
        assert_eq!(parse_element_status(&lying).len(), 3);
    }

    #[test]
    fn a_file_that_is_no_changer_is_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("sg3");
        std::fs::write(&p, b"").unwrap();
        let mut c = ScsiChanger::open(&p, 0).unwrap();
        let e = c.inventory().unwrap_err();
        assert!(e.to_string().contains("not a SCSI generic device"), "{e}");
    }
}
