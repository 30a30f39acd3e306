//! Disk data through the datastore HTTP interface (`/folder/<path>?dcPath=…
//! &dsName=…`, the session cookie, HTTP Range). A disk is read by fetching
//! its descriptor and following its extent lines to the flat files, never
//! by guessing a `-flat.vmdk` name. Reads are strict: a range answer must be
//! 206 with the Content-Range asked for and exactly that many bytes; 404 and
//! 416 are reported for what they mean.
//!
//! Reads respect the host: every request passes the host's gate (`gate`),
//! which holds the number in flight to the source's `max_requests` and
//! halves it when the host answers 503 or drops a connection. A busy answer
//! is asked again, with growing pauses, for as long as the source's
//! patience allows (the host is loaded, not broken); a dropped connection
//! or a cut body at most `READ_ATTEMPTS` times. The backup asks for few,
//! large requests (`ReadShape`, from the source's `read_request` and
//! `read_gap`), which a disk read here passes on as one Range request per
//! extent piece.
//!
//! `DatastorePath` itself (`[datastore] dir/name.vmdk`, parsed) is part of the
//! neutral inventory model and is re-exported here; this file adds its
//! datastore HTTP URL.
//!
//! A disk under snapshots the VM already had is a chain: the descriptor
//! coffer's snapshot names is a delta (`parentFileNameHint`), whose parent
//! may be another delta, down to the base with its flat extents. coffer
//! follows the hints, opens every delta (`vmfsSparse` or `SEsparse`, see
//! `delta`) and reads each area through the chain: a grain the top delta
//! holds from there, the rest from the next one down, the base last, all
//! with the same Range requests and back-off. The base is flat extents, or
//! the mapping file of a raw device mapping in virtual compatibility mode,
//! which the host serves as the mapped LUN's bytes. Formats it does not
//! read (a hosted `sparse` disk, a monolithic file, a physical-mode raw
//! device mapping) are refused with their name.

use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use std::sync::Arc;

use super::Error;
use super::delta::{Chain, Delta, DeltaError, DeltaFormat, ReadAt};
use super::gate::{self, HostGate};
use super::transport::Transport;
pub use crate::inventory::DatastorePath;
use crate::repo::backup::{DiskReader, ReadShape};

impl DatastorePath {
    /// The path and query of this file's datastore HTTP URL.
    pub fn url(&self, datacenter: &str) -> String {
        let path: Vec<String> = self.path.split('/').map(percent).collect();
        format!(
            "/folder/{}?dcPath={}&dsName={}",
            path.join("/"),
            percent(datacenter),
            percent(&self.datastore)
        )
    }
}

fn percent(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// One extent line: `RW 8388608 VMFS "name-flat.vmdk" 0`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Extent {
    pub access: String,
    pub sectors: u64,
    /// FLAT, VMFS, VMFSSPARSE, SESPARSE, VMFSRDM, VMFSRAW, …
    pub kind: String,
    pub file: String,
    /// Where the extent starts in its file, in sectors (FLAT only).
    pub offset_sectors: u64,
}

/// What coffer needs of a VMDK descriptor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Descriptor {
    pub create_type: String,
    /// Present for delta disks (a snapshot chain).
    pub parent_file_name_hint: Option<String>,
    pub extents: Vec<Extent>,
}

/// Parses a descriptor; a file that is not one is an error naming why.
pub fn parse_descriptor(text: &str) -> Result<Descriptor, String> {
    let mut create_type = None;
    let mut parent = None;
    let mut extents = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some((key, value)) = line.split_once('=') {
            let value = value.trim().trim_matches('"').to_string();
            match key.trim() {
                "createType" => create_type = Some(value),
                "parentFileNameHint" => parent = Some(value),
                _ => {}
            }
            continue;
        }
        let mut words = line.splitn(3, ' ');
        let (Some(access), Some(sectors), Some(rest)) = (words.next(), words.next(), words.next())
        else {
            continue;
        };
        if !matches!(access, "RW" | "RDONLY" | "NOACCESS") {
            continue;
        }
        let sectors: u64 = sectors
            .parse()
            .map_err(|_| format!("extent line `{line}`: bad sector count"))?;
        let (kind, rest) = rest.split_once(' ').unwrap_or((rest, ""));
        let rest = rest.trim();
        let (file, tail) = match rest.strip_prefix('"') {
            Some(r) => r
                .split_once('"')
                .ok_or_else(|| format!("extent line `{line}`: unterminated file name"))?,
            None => (rest, ""),
        };
        let offset_sectors = tail.trim().parse().unwrap_or(0);
        extents.push(Extent {
            access: access.to_string(),
            sectors,
            kind: kind.to_string(),
            file: file.to_string(),
            offset_sectors,
        });
    }
    let create_type = create_type.ok_or("no createType: not a VMDK descriptor")?;
    if extents.is_empty() {
        return Err("no extent lines: not a VMDK descriptor".into());
    }
    Ok(Descriptor {
        create_type,
        parent_file_name_hint: parent,
        extents,
    })
}

/// Whether extent `e` of the base descriptor `desc` (the bottom of a
/// chain) is a file coffer reads by disk offset, or why not. Flat extents
/// are; so is the mapping file of a raw device mapping in virtual
/// compatibility mode (`vmfsRawDeviceMap`, a `VMFSRDM` extent): VMFS
/// serves it as the mapped LUN's bytes, "using the mapping file as a
/// proxy. Most operations that are valid for an ordinary file can be
/// applied to the mapping file and are redirected to operate on the mapped
/// device" (vSphere Storage guide, "Raw Device Mapping", "File System
/// Operations"), and snapshots put their deltas over it as over any disk.
/// A physical-mode mapping (`vmfsPassthroughRawDeviceMap`) is not: no
/// snapshot holds its LUN, so what would be read is the LUN as the guest
/// writes it now, not as it was at coffer's snapshot.
pub fn base_extent_readable(desc: &Descriptor, e: &Extent) -> Result<(), String> {
    match (e.kind.as_str(), desc.create_type.as_str()) {
        ("FLAT" | "VMFS", _) => Ok(()),
        ("VMFSRDM", "vmfsRawDeviceMap") => Ok(()),
        ("VMFSRDM", "vmfsPassthroughRawDeviceMap") => Err(format!(
            "a raw device mapping in physical compatibility mode (createType \"{}\", mapping file {}): \
             snapshots do not hold its LUN, so it cannot be read as it was at the snapshot",
            desc.create_type, e.file
        )),
        ("VMFSRDM" | "VMFSRAW", create_type) => Err(format!(
            "a raw device mapping ({} extent, createType \"{create_type}\"); coffer reads \
             virtual-mode mappings (createType \"vmfsRawDeviceMap\") only",
            e.kind
        )),
        (other, create_type) => Err(format!(
            "{other} extents (createType \"{create_type}\") are not flat files; coffer reads \
             flat disks, virtual-mode raw device mappings and vmfsSparse and SEsparse deltas over them"
        )),
    }
}

/// Why a disk cannot be read through the datastore interface.
#[derive(Debug, thiserror::Error)]
pub enum DiskError {
    #[error("{disk}: {source}")]
    Vsphere {
        disk: String,
        #[source]
        source: Error,
    },
    #[error(
        "{disk}: the datastore has no such file (HTTP 404); vSAN and vVols disks have no flat file and are not supported"
    )]
    NotFound { disk: String },
    #[error("{disk}: descriptor: {reason}")]
    BadDescriptor { disk: String, reason: String },
    #[error("{disk}: unsupported: {reason}")]
    Unsupported { disk: String, reason: String },
    #[error("{disk}: snapshot delta: {source}")]
    Delta {
        disk: String,
        #[source]
        source: DeltaError,
    },
    #[error("{disk}: HTTP {status} reading the descriptor")]
    Status { disk: String, status: u16 },
    #[error("{disk}: HTTP {status} uploading")]
    Upload { disk: String, status: u16 },
}

/// Uploads a local file to `dest` on a datastore (a restored disk, a .vmx).
/// Refuses to replace a file that exists unless `overwrite`.
pub fn upload(
    transport: &Transport,
    datacenter: &str,
    dest: &DatastorePath,
    local: &std::path::Path,
    overwrite: bool,
) -> Result<u64, DiskError> {
    upload_counted(transport, datacenter, dest, local, overwrite, None)
}

/// [`upload`], counting the bytes sent into `progress`.
pub fn upload_counted(
    transport: &Transport,
    datacenter: &str,
    dest: &DatastorePath,
    local: &std::path::Path,
    overwrite: bool,
    progress: Option<std::sync::Arc<crate::progress::ReadProgress>>,
) -> Result<u64, DiskError> {
    let name = dest.to_string();
    let vs = |source| DiskError::Vsphere {
        disk: name.clone(),
        source,
    };
    if !overwrite {
        let head = transport
            .datastore_get(&dest.url(datacenter), Some(0..1))
            .map_err(vs)?;
        if head.status != 404 {
            return Err(DiskError::Unsupported {
                disk: name,
                reason: "the file exists on the datastore; refusing to overwrite it".into(),
            });
        }
    }
    let file = std::fs::File::open(local).map_err(|e| DiskError::BadDescriptor {
        disk: name.clone(),
        reason: format!("reading {}: {e}", local.display()),
    })?;
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    let resp = transport
        .datastore_put_file(&dest.url(datacenter), file, len, progress)
        .map_err(vs)?;
    match resp.status {
        200 | 201 | 204 => Ok(len),
        status => Err(DiskError::Upload { disk: name, status }),
    }
}

/// How often a range read cut by a dropped connection is tried again, and
/// the first pause after a failed request.
const READ_ATTEMPTS: u32 = 6;
const FIRST_PAUSE: Duration = Duration::from_millis(200);
const LONGEST_PAUSE: Duration = Duration::from_secs(5);

/// How coffer reads the datastores of one source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadOptions {
    /// Requests in flight at once against the host, before any back-off.
    pub max_requests: usize,
    /// The requests a backup asks for.
    pub shape: ReadShape,
    /// How long one request is asked again while the host answers 503.
    pub busy_patience: Duration,
}

/// The environment variable that shortens the patience (tests).
pub const BUSY_PATIENCE_ENV: &str = "COFFER_BUSY_PATIENCE_MS";

impl Default for ReadOptions {
    fn default() -> Self {
        ReadOptions {
            max_requests: DEFAULT_MAX_REQUESTS,
            shape: ReadShape::default(),
            busy_patience: std::env::var(BUSY_PATIENCE_ENV)
                .ok()
                .and_then(|v| v.parse().ok())
                .map_or(Duration::from_secs(120), Duration::from_millis),
        }
    }
}

/// Datastore requests in flight per host unless the source says otherwise.
pub const DEFAULT_MAX_REQUESTS: usize = 4;

/// What the reads of one disk share: the connection, the host's gate, the
/// patience, and the counts.
struct Reads<'a> {
    transport: &'a Transport,
    gate: Arc<HostGate>,
    busy_patience: Duration,
    counters: Counters,
}

/// One flat extent, placed in the disk.
#[derive(Debug)]
struct Piece {
    disk_start: u64,
    len: u64,
    file: HttpFile,
    file_start: u64,
}

/// Bytes and requests a disk's reads cost, shared by its files.
#[derive(Debug, Default)]
struct Counters {
    bytes_fetched: AtomicU64,
    requests: AtomicU64,
    busy_answers: AtomicU64,
}

/// One file on the datastore, read by HTTP Range.
#[derive(Debug)]
struct HttpFile {
    url: String,
    name: String,
}

/// A file read through one transport, for the delta reader.
struct DeltaFile<'a> {
    reads: Arc<Reads<'a>>,
    file: HttpFile,
}

impl ReadAt for DeltaFile<'_> {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        let range = offset..offset + buf.len() as u64;
        fetch_range(&self.reads, &self.file, range, buf)
    }
}

/// How deep a chain coffer follows: ESXi allows 32 snapshots per VM; more
/// links than this is a loop in the hints.
const MAX_CHAIN: usize = 255;

/// The base disk: its flat extents, read by disk offset.
struct BaseDisk<'a> {
    reads: Arc<Reads<'a>>,
    pieces: Vec<Piece>,
}

impl ReadAt for BaseDisk<'_> {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        let end = offset + buf.len() as u64;
        let mut pos = offset;
        while pos < end {
            let piece = self
                .pieces
                .iter()
                .find(|p| p.disk_start <= pos && pos < p.disk_start + p.len)
                .expect("extents cover the disk");
            let stop = end.min(piece.disk_start + piece.len);
            let file_range = piece.file_start + (pos - piece.disk_start)
                ..piece.file_start + (stop - piece.disk_start);
            let out = &mut buf[(pos - offset) as usize..(stop - offset) as usize];
            fetch_range(&self.reads, &piece.file, file_range, out)?;
            pos = stop;
        }
        Ok(())
    }
}

/// A disk of a snapshot, read through datastore HTTP: the base's flat
/// extents under the deltas (top, coffer's snapshot's view, first).
pub struct DatastoreDisk<'a> {
    chain: Chain<BaseDisk<'a>, DeltaFile<'a>>,
    size: u64,
    reads: Arc<Reads<'a>>,
    shape: ReadShape,
}

impl std::fmt::Debug for DatastoreDisk<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DatastoreDisk")
            .field("pieces", &self.chain.base.pieces)
            .field("deltas", &self.chain.deltas)
            .field("size", &self.size)
            .finish_non_exhaustive()
    }
}

/// GETs a whole small file (a descriptor, a .vmx) through the host's gate;
/// 503 is asked again while `options`' patience lasts, as for reads. The
/// answer's status is the caller's to judge.
pub fn fetch_small_file(
    transport: &Transport,
    options: &ReadOptions,
    url: &str,
) -> Result<super::transport::RawResponse, Error> {
    let gate = gate::for_host(transport.host(), options.max_requests);
    let started = std::time::Instant::now();
    let mut pause = FIRST_PAUSE;
    loop {
        let permit = gate.enter();
        let resp = transport.datastore_get(url, None)?;
        if resp.status != 503 || started.elapsed() >= options.busy_patience {
            permit.done();
            return Ok(resp);
        }
        permit.busy();
        std::thread::sleep(pause);
        pause = (pause * 2).min(LONGEST_PAUSE);
    }
}

/// Fetches and parses the descriptor at `disk`.
fn fetch_descriptor(
    transport: &Transport,
    options: &ReadOptions,
    datacenter: &str,
    disk: &DatastorePath,
) -> Result<Descriptor, DiskError> {
    let name = disk.to_string();
    let resp = fetch_small_file(transport, options, &disk.url(datacenter)).map_err(|source| {
        DiskError::Vsphere {
            disk: name.clone(),
            source,
        }
    })?;
    match resp.status {
        200 => {}
        404 => return Err(DiskError::NotFound { disk: name }),
        status => return Err(DiskError::Status { disk: name, status }),
    }
    let magic = resp.body.get(..4).unwrap_or_default();
    if resp.body.len() > 64 << 10 || magic == b"KDMV" || magic == b"COWD" {
        return Err(DiskError::Unsupported {
            disk: name,
            reason: "the descriptor file is a monolithic VMDK (embedded descriptor), not a descriptor; coffer reads flat, vmfsSparse and SEsparse disks"
                .into(),
        });
    }
    let text = String::from_utf8_lossy(&resp.body);
    parse_descriptor(&text).map_err(|reason| DiskError::BadDescriptor { disk: name, reason })
}

/// Where a delta's parent is: a name beside it, or an absolute
/// `/vmfs/volumes/<datastore>/<path>` on the same datastore.
fn parent_path(child: &DatastorePath, hint: &str) -> Result<DatastorePath, DiskError> {
    let Some(abs) = hint.strip_prefix('/') else {
        return Ok(child.sibling(hint));
    };
    let on_same = abs
        .strip_prefix("vmfs/volumes/")
        .and_then(|rest| rest.split_once('/'))
        .filter(|(volume, _)| *volume == child.datastore);
    match on_same {
        Some((_, path)) => Ok(DatastorePath {
            datastore: child.datastore.clone(),
            path: path.to_string(),
        }),
        None => Err(DiskError::Unsupported {
            disk: child.to_string(),
            reason: format!(
                "the parent of this delta is `{hint}`, not on datastore `{}` by name; coffer follows chains within one datastore",
                child.datastore
            ),
        }),
    }
}

impl<'a> DatastoreDisk<'a> {
    /// Reads the descriptor at `disk`, follows its chain of snapshot deltas
    /// (if the VM had snapshots before coffer's) down to the base, and
    /// checks every link covers `capacity_bytes` in a format coffer reads.
    pub fn open(
        transport: &'a Transport,
        datacenter: &str,
        disk: &DatastorePath,
        capacity_bytes: u64,
        options: &ReadOptions,
    ) -> Result<DatastoreDisk<'a>, DiskError> {
        let reads = Arc::new(Reads {
            transport,
            gate: gate::for_host(transport.host(), options.max_requests),
            busy_patience: options.busy_patience,
            counters: Counters::default(),
        });
        let mut deltas = Vec::new();
        let mut current = disk.clone();
        let desc = loop {
            let desc = fetch_descriptor(transport, options, datacenter, &current)?;
            let Some(hint) = desc.parent_file_name_hint.clone() else {
                break desc;
            };
            let name = current.to_string();
            if deltas.len() >= MAX_CHAIN {
                return Err(DiskError::Unsupported {
                    disk: name,
                    reason: format!(
                        "a chain of more than {MAX_CHAIN} deltas (its parent hints loop?)"
                    ),
                });
            }
            let [e] = desc.extents.as_slice() else {
                return Err(DiskError::Unsupported {
                    disk: name,
                    reason: format!(
                        "a delta disk of {} extents; ESXi deltas have one",
                        desc.extents.len()
                    ),
                });
            };
            if DeltaFormat::from_extent_kind(&e.kind).is_none() {
                return Err(DiskError::Unsupported {
                    disk: name,
                    reason: format!(
                        "a delta disk with {} extents (createType \"{}\"); coffer reads vmfsSparse and SEsparse deltas",
                        e.kind, desc.create_type
                    ),
                });
            }
            if e.sectors * 512 != capacity_bytes {
                return Err(DiskError::BadDescriptor {
                    disk: name,
                    reason: format!(
                        "the delta covers {} bytes but the disk has {capacity_bytes}: the disk changed size",
                        e.sectors * 512
                    ),
                });
            }
            let data = current.sibling(&e.file);
            let file = DeltaFile {
                reads: reads.clone(),
                file: HttpFile {
                    url: data.url(datacenter),
                    name: data.to_string(),
                },
            };
            let delta = Delta::open(file).map_err(|source| DiskError::Delta {
                disk: data.to_string(),
                source,
            })?;
            if delta.capacity_bytes() != capacity_bytes {
                return Err(DiskError::BadDescriptor {
                    disk: data.to_string(),
                    reason: format!(
                        "the delta's header says {} bytes but the disk has {capacity_bytes}",
                        delta.capacity_bytes()
                    ),
                });
            }
            deltas.push(delta);
            current = parent_path(&current, &hint)?;
        };
        let name = current.to_string();
        let mut pieces = Vec::new();
        let mut at = 0u64;
        for e in &desc.extents {
            base_extent_readable(&desc, e).map_err(|reason| DiskError::Unsupported {
                disk: name.clone(),
                reason,
            })?;
            let file = current.sibling(&e.file);
            pieces.push(Piece {
                disk_start: at,
                len: e.sectors * 512,
                file: HttpFile {
                    url: file.url(datacenter),
                    name: file.to_string(),
                },
                file_start: e.offset_sectors * 512,
            });
            at += e.sectors * 512;
        }
        if at != capacity_bytes {
            return Err(DiskError::BadDescriptor {
                disk: name,
                reason: format!(
                    "extents cover {at} bytes but the disk has {capacity_bytes}: the disk changed size"
                ),
            });
        }
        Ok(DatastoreDisk {
            chain: Chain {
                base: BaseDisk {
                    reads: reads.clone(),
                    pieces,
                },
                deltas,
            },
            size: at,
            reads,
            shape: options.shape,
        })
    }

    /// Bytes received from the host so far, and how many requests it took.
    pub fn fetched(&self) -> (u64, u64) {
        let c = &self.reads.counters;
        (
            c.bytes_fetched.load(Ordering::Relaxed),
            c.requests.load(Ordering::Relaxed),
        )
    }

    /// How many requests the host answered 503 (busy).
    pub fn busy_answers(&self) -> u64 {
        self.reads.counters.busy_answers.load(Ordering::Relaxed)
    }

    /// How many snapshot deltas lie between coffer's view and the base.
    pub fn chain_len(&self) -> usize {
        self.chain.deltas.len()
    }
}

/// One Range request for `range` of `file`, strict about the answer, through
/// the host's gate. 503 is asked again while the patience lasts; a dropped
/// connection or a cut body `READ_ATTEMPTS` times; both make the gate
/// lower the number of requests in flight.
fn fetch_range(
    reads: &Reads<'_>,
    file: &HttpFile,
    range: Range<u64>,
    out: &mut [u8],
) -> std::io::Result<()> {
    let started = std::time::Instant::now();
    let counters = &reads.counters;
    let mut pause = FIRST_PAUSE;
    let mut broken = 0;
    let bytes = |r: &Range<u64>| format!("bytes {}-{}", r.start, r.end - 1);
    loop {
        let permit = reads.gate.enter();
        counters.requests.fetch_add(1, Ordering::Relaxed);
        let failure = match reads
            .transport
            .datastore_get(&file.url, Some(range.clone()))
        {
            // A dropped or refused connection: try again.
            Err(e) => e.to_string(),
            Ok(resp) => match resp.status {
                206 => {
                    let expected = format!("bytes {}-{}/", range.start, range.end - 1);
                    if !resp
                        .content_range
                        .as_deref()
                        .is_some_and(|c| c.starts_with(&expected))
                    {
                        return Err(io_error(format!(
                            "{}: asked for {expected}…, the host answered Content-Range {:?}",
                            file.name, resp.content_range
                        )));
                    }
                    if resp.body.len() as u64 == range.end - range.start {
                        permit.done();
                        tracing::trace!(
                            file = %file.name,
                            offset = range.start,
                            bytes = resp.body.len(),
                            ms = started.elapsed().as_millis() as u64,
                            "datastore read"
                        );
                        counters
                            .bytes_fetched
                            .fetch_add(resp.body.len() as u64, Ordering::Relaxed);
                        out.copy_from_slice(&resp.body);
                        return Ok(());
                    }
                    // A truncated answer: the connection broke mid-body.
                    format!(
                        "{} of {} bytes arrived",
                        resp.body.len(),
                        range.end - range.start
                    )
                }
                503 => {
                    permit.busy();
                    counters.busy_answers.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(file = %file.name, offset = range.start, "the host is busy (503); asking again");
                    if started.elapsed() >= reads.busy_patience {
                        return Err(io_error(format!(
                            "{}: {} not read: the host answered 503 (busy) for {}s",
                            file.name,
                            bytes(&range),
                            started.elapsed().as_secs()
                        )));
                    }
                    std::thread::sleep(pause);
                    pause = (pause * 2).min(LONGEST_PAUSE);
                    continue;
                }
                404 => {
                    return Err(io_error(format!(
                        "{}: the datastore has no such file (HTTP 404); vSAN and vVols disks have no flat file",
                        file.name
                    )));
                }
                416 => {
                    return Err(io_error(format!(
                        "{}: {} are beyond the end of the file (HTTP 416): the disk changed size",
                        file.name,
                        bytes(&range)
                    )));
                }
                200 => {
                    return Err(io_error(format!(
                        "{}: the host ignored the Range header (HTTP 200)",
                        file.name
                    )));
                }
                s => {
                    return Err(io_error(format!(
                        "{}: HTTP {s} ({}) reading {}",
                        file.name,
                        resp.content_type,
                        bytes(&range)
                    )));
                }
            },
        };
        permit.busy();
        broken += 1;
        tracing::debug!(file = %file.name, offset = range.start, attempt = broken, %failure, "datastore read failed");
        if broken >= READ_ATTEMPTS {
            return Err(io_error(format!(
                "{}: {} failed {READ_ATTEMPTS} times, last: {failure}",
                file.name,
                bytes(&range)
            )));
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(LONGEST_PAUSE);
    }
}

fn io_error(text: String) -> std::io::Error {
    std::io::Error::other(text)
}

impl DiskReader for DatastoreDisk<'_> {
    fn size_bytes(&self) -> u64 {
        self.size
    }

    fn read_shape(&self) -> ReadShape {
        self.shape
    }

    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        let end = offset + buf.len() as u64;
        if end > self.size {
            return Err(io_error(format!(
                "read of {}..{end} beyond the disk's {} bytes",
                offset, self.size
            )));
        }
        self.chain.read_at(buf, offset)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn datastore_paths_split_and_make_urls() {
        let p = DatastorePath::parse("[datastore 1] db01/db01.vmdk").unwrap();
        assert_eq!(p.datastore, "datastore 1");
        assert_eq!(p.path, "db01/db01.vmdk");
        assert_eq!(
            p.sibling("db01-flat.vmdk").url("ha-datacenter"),
            "/folder/db01/db01-flat.vmdk?dcPath=ha-datacenter&dsName=datastore%201"
        );
        assert_eq!(
            DatastorePath::parse("[ds] top.vmdk")
                .unwrap()
                .sibling("x.vmdk")
                .path,
            "x.vmdk"
        );
        assert!(DatastorePath::parse("db01.vmdk").is_none());
        assert!(DatastorePath::parse("[] x").is_none());
    }

    #[test]
    fn delta_parents_resolve_beside_the_delta_or_on_the_same_datastore() {
        let child = DatastorePath::parse("[ds 1] vm/vm-000002.vmdk").unwrap();
        assert_eq!(
            parent_path(&child, "vm-000001.vmdk").unwrap().to_string(),
            "[ds 1] vm/vm-000001.vmdk"
        );
        assert_eq!(
            parent_path(&child, "/vmfs/volumes/ds 1/other/base.vmdk")
                .unwrap()
                .to_string(),
            "[ds 1] other/base.vmdk"
        );
        let err = parent_path(&child, "/vmfs/volumes/5f3a-uuid/vm/vm.vmdk").unwrap_err();
        assert!(err.to_string().contains("within one datastore"), "{err}");
    }

    #[test]
    fn descriptors_give_their_extents() {
        let d = parse_descriptor(
            "# Disk DescriptorFile\nversion=1\nCID=fffffffe\nparentCID=ffffffff\ncreateType=\"vmfs\"\n\n# Extent description\nRW 8192 VMFS \"db01-flat.vmdk\"\n\nddb.adapterType = \"pvscsi\"\n",
        )
        .unwrap();
        assert_eq!(d.create_type, "vmfs");
        assert_eq!(
            d.extents,
            vec![Extent {
                access: "RW".into(),
                sectors: 8192,
                kind: "VMFS".into(),
                file: "db01-flat.vmdk".into(),
                offset_sectors: 0
            }]
        );
        let two = parse_descriptor(
            "createType=\"twoGbMaxExtentFlat\"\nRW 4192256 FLAT \"a-f001.vmdk\" 0\nRW 4192256 FLAT \"a f002.vmdk\" 0\n",
        )
        .unwrap();
        assert_eq!(two.extents.len(), 2);
        assert_eq!(two.extents[1].file, "a f002.vmdk");
        let delta = parse_descriptor(
            "createType=\"vmfsSparse\"\nparentFileNameHint=\"db01.vmdk\"\nRW 8192 VMFSSPARSE \"db01-000001-delta.vmdk\"\n",
        )
        .unwrap();
        assert_eq!(delta.parent_file_name_hint.as_deref(), Some("db01.vmdk"));
        assert!(parse_descriptor("<html>login</html>").is_err());
    }

    /// The descriptors `vmkfstools -r` (virtual) and `-z` (physical) write:
    /// one VMFSRDM extent naming the mapping file, without an offset.
    const VIRTUAL_RDM: &str = "# Disk DescriptorFile\nversion=1\nencoding=\"UTF-8\"\nCID=4e3b2c1a\nparentCID=ffffffff\ncreateType=\"vmfsRawDeviceMap\"\n\n# Extent description\nRW 2097152 VMFSRDM \"db01_1-rdm.vmdk\"\n\n# The Disk Data Base\n#DDB\n\nddb.adapterType = \"lsilogic\"\n";
    const PHYSICAL_RDM: &str = "# Disk DescriptorFile\nversion=1\nCID=4e3b2c1b\nparentCID=ffffffff\ncreateType=\"vmfsPassthroughRawDeviceMap\"\n\n# Extent description\nRW 2097152 VMFSRDM \"db01_2-rdmp.vmdk\"\n";

    #[test]
    fn a_virtual_mode_rdm_is_read_through_its_mapping_file() {
        let d = parse_descriptor(VIRTUAL_RDM).unwrap();
        assert_eq!(d.create_type, "vmfsRawDeviceMap");
        assert_eq!(d.parent_file_name_hint, None);
        assert_eq!(
            d.extents,
            vec![Extent {
                access: "RW".into(),
                sectors: 2097152,
                kind: "VMFSRDM".into(),
                file: "db01_1-rdm.vmdk".into(),
                offset_sectors: 0
            }]
        );
        assert_eq!(base_extent_readable(&d, &d.extents[0]), Ok(()));
    }

    #[test]
    fn a_physical_mode_rdm_or_an_old_raw_extent_is_refused_with_why() {
        let d = parse_descriptor(PHYSICAL_RDM).unwrap();
        assert_eq!(d.extents[0].file, "db01_2-rdmp.vmdk");
        let why = base_extent_readable(&d, &d.extents[0]).unwrap_err();
        assert!(
            why.contains("physical compatibility mode")
                && why.contains("snapshots do not hold its LUN"),
            "{why}"
        );
        // A VMFSRDM extent under any other createType, and ESX 2's VMFSRAW.
        let odd = parse_descriptor("createType=\"vmfs\"\nRW 8 VMFSRDM \"x-rdm.vmdk\"\n").unwrap();
        assert!(base_extent_readable(&odd, &odd.extents[0]).is_err());
        let raw = parse_descriptor(
            "createType=\"vmfsRaw\"\nRW 8 VMFSRAW \"/vmfs/devices/disks/naa.1\"\n",
        )
        .unwrap();
        let why = base_extent_readable(&raw, &raw.extents[0]).unwrap_err();
        assert!(why.contains("VMFSRAW"), "{why}");
        let sparse =
            parse_descriptor("createType=\"monolithicSparse\"\nRW 8 SPARSE \"x.vmdk\"\n").unwrap();
        let why = base_extent_readable(&sparse, &sparse.extents[0]).unwrap_err();
        assert!(why.contains("not flat files"), "{why}");
    }
}
