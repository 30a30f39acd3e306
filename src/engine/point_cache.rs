//! The planner's points, kept between runs: a site of 10,000 VMs holds a
//! million points, and reading them all from the catalog takes seconds
//! (minutes of rows across a network to PostgreSQL), while a night changes
//! a few thousand. So the points read last time are saved in the state dir
//! (`points.cache`) with the catalog's change mark (`catalog::changes`),
//! and each read asks the catalog only for the points changed since: those
//! are read again whole, and the others come from the file.
//!
//! The file is a copy, never a source of truth. Whatever does not check out
//! (another format, a checksum that fails, a record that does not parse, a
//! mark the catalog does not trust) means every point is read from the
//! catalog again; a file that cannot be written is only a slower next
//! read. In debug builds (the test suite, the torture test) every read
//! from the file is compared with a full read of the same snapshot.
//!
//! The file holds the catalog's facts, not the policies' view of them:
//! which tiers are immutable, and for how long, is applied when the points
//! are handed to the planner, so a change of policy needs no new read.
//!
//! Layout: a 16-byte magic with the format's version; the header (the
//! change mark, the body's length and CRC-32); the body, one record per
//! point that has a readable copy. Integers are little-endian, strings a
//! `u32` length and UTF-8, times microseconds since the epoch. A record is
//! its length, then its point id, so that replacing the changed points
//! copies the others without decoding them.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;

use anyhow::Result;
use chrono::{DateTime, Utc};

use crate::catalog::{Catalog, ChangeMark, CopyState, PointRecord, PointsRead};
use crate::plan::planner::{Copies, CopyInfo, PointConsistency, PointDisk, PointInfo};
use crate::policy::Config;
use crate::repo::manifest::PointKind;

/// The file, in the state dir.
pub const FILE_NAME: &str = "points.cache";

const MAGIC: &[u8; 16] = b"coffer-points\0v1";

/// How long the catalog keeps its change log: a reader whose last read is
/// older reads every point again.
const KEEP_CHANGES: chrono::TimeDelta = chrono::TimeDelta::days(31);

/// How the points were read, for the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum How {
    /// Every point from the catalog.
    All,
    /// From the file, with this many changed points read again.
    Changed(usize),
}

/// The points of a catalog as the planner takes them, and how they were
/// read.
pub struct Points {
    pub points: Vec<PointInfo>,
    pub how: How,
    /// The file being written; see [`Saving`].
    pub saving: Saving,
}

/// The file being written in a thread of its own, while the planner
/// works. Dropping this waits for it to be in place (or for its failure,
/// which only makes the next read slower).
#[derive(Default)]
pub struct Saving(Option<std::thread::JoinHandle<()>>);

impl Drop for Saving {
    fn drop(&mut self) {
        if let Some(thread) = self.0.take() {
            let _ = thread.join();
        }
    }
}

/// The points of a catalog as the planner takes them: from the file and
/// what changed since, or all from the catalog. The file is decoded while
/// the catalog answers what changed, on another core.
pub fn read_points(config: &Config, catalog: &mut Catalog) -> Result<Points> {
    let path = config.settings.state_dir.join(FILE_NAME);
    let saved = std::fs::read(&path).ok().and_then(Saved::parse);
    let view = View::new(config, catalog)?;
    let (since, kept) = std::thread::scope(|s| {
        let kept = saved
            .as_ref()
            .map(|saved| s.spawn(|| view.decode(saved.body())));
        let since = catalog.points_since(saved.as_ref().map(|s| &s.mark), cfg!(debug_assertions));
        let kept = kept.map(|t| t.join().expect("decoding the saved points does not panic"));
        (since, kept)
    });
    let since = since?;
    let (points, how, saving) = match (since.read, kept) {
        (PointsRead::All { points, verdicts }, _) => {
            return whole(config, catalog, path, &points, &verdicts, since.mark);
        }
        (PointsRead::Changed { ids, .. }, Some(Some(kept))) if ids.is_empty() => {
            (kept, How::Changed(0), Saving::default())
        }
        (
            PointsRead::Changed {
                ids,
                points,
                verdicts,
            },
            Some(Some(mut kept)),
        ) => {
            {
                let gone: HashSet<&str> = ids.iter().map(String::as_str).collect();
                kept.retain(|p| !gone.contains(p.point_id.as_str()));
            }
            let new = encode(&points, &verdicts);
            // VMs first seen since are known now.
            kept.extend(
                View::new(config, catalog)?
                    .decode(&new)
                    .expect("what was just encoded decodes"),
            );
            let how = How::Changed(ids.len());
            let saved = saved.expect("a change read answers a saved mark");
            (
                kept,
                how,
                save(path, since.mark, Body::Merged { saved, ids, new }),
            )
        }
        // A record that does not parse under a checksum that held: a
        // defect, not damage. Read everything again rather than trust it.
        (PointsRead::Changed { .. }, _) => {
            tracing::warn!(
                "the saved points in {} do not parse; reading all",
                path.display()
            );
            let all = catalog.points_since(None, false)?;
            let PointsRead::All { points, verdicts } = all.read else {
                unreachable!("a read without a mark reads every point");
            };
            return whole(config, catalog, path, &points, &verdicts, all.mark);
        }
    };
    if let Some(PointsRead::All {
        points: all,
        verdicts,
    }) = since.all
    {
        check(&View::new(config, catalog)?, &points, &all, &verdicts);
    }
    if how != How::All
        && let Err(e) = catalog.prune_point_changes(Utc::now() - KEEP_CHANGES)
    {
        tracing::warn!("forgetting old catalog changes: {e}");
    }
    Ok(Points {
        points,
        how,
        saving,
    })
}

/// Every point, read from the catalog: handed to the planner and saved.
fn whole(
    config: &Config,
    catalog: &mut Catalog,
    path: std::path::PathBuf,
    points: &[PointRecord],
    verdicts: &HashMap<(String, String), bool>,
    mark: ChangeMark,
) -> Result<Points> {
    let body = encode(points, verdicts);
    let points = View::new(config, catalog)?
        .decode(&body)
        .expect("what was just encoded decodes");
    Ok(Points {
        points,
        how: How::All,
        saving: save(path, mark, Body::Whole(body)),
    })
}

/// Debug builds: the points read through the file are the points of a
/// full read of the same snapshot, made into the planner's points
/// directly, without the file's encoding.
fn check(
    view: &View,
    points: &[PointInfo],
    all: &[PointRecord],
    verdicts: &HashMap<(String, String), bool>,
) {
    let mut fresh: Vec<PointInfo> = all.iter().filter_map(|p| view.point(p, verdicts)).collect();
    let mut kept = points.to_vec();
    fresh.sort_by(|a, b| a.point_id.cmp(&b.point_id));
    kept.sort_by(|a, b| a.point_id.cmp(&b.point_id));
    assert!(
        kept == fresh,
        "the points read through {FILE_NAME} differ from a full read of the catalog"
    );
}

/// A saved read: the file's bytes, checked, and where its body starts.
struct Saved {
    mark: ChangeMark,
    bytes: Vec<u8>,
    start: usize,
}

impl Saved {
    fn parse(bytes: Vec<u8>) -> Option<Saved> {
        let mut r = In::new(&bytes);
        if r.take(MAGIC.len())? != MAGIC {
            return None;
        }
        let mark = ChangeMark {
            log: r.str()?.to_string(),
            seq: r.i64()?,
            nonce: r.i64()?,
            xmin: r.i64()?,
        };
        let len = usize::try_from(r.u64()?).ok()?;
        let crc = r.u32()?;
        let start = r.at;
        if bytes.len() - start != len || crc32fast::hash(&bytes[start..]) != crc {
            return None;
        }
        Some(Saved { mark, bytes, start })
    }

    fn body(&self) -> &[u8] {
        &self.bytes[self.start..]
    }
}

/// A new file's body.
enum Body {
    Whole(Vec<u8>),
    /// The saved file's records but those of `ids`, then `new`.
    Merged {
        saved: Saved,
        ids: BTreeSet<String>,
        new: Vec<u8>,
    },
}

/// Writes the file whole beside itself, then puts it in place, in a
/// thread: a reader sees the old file or the new one.
fn save(path: std::path::PathBuf, mark: ChangeMark, body: Body) -> Saving {
    let thread = std::thread::Builder::new()
        .name("points-save".into())
        .spawn(move || {
            let body = match body {
                Body::Whole(body) => body,
                Body::Merged { saved, ids, new } => {
                    let mut body = without(saved.body(), &ids);
                    body.extend(new);
                    body
                }
            };
            let mut head = Out(Vec::with_capacity(128));
            head.0.extend_from_slice(MAGIC);
            head.str(&mark.log);
            head.i64(mark.seq);
            head.i64(mark.nonce);
            head.i64(mark.xmin);
            head.u64(body.len() as u64);
            head.u32(crc32fast::hash(&body));
            let dir = path.parent().unwrap_or(Path::new("."));
            remove_stale_copies(dir);
            let written = (|| -> std::io::Result<()> {
                let mut tmp = tempfile::Builder::new()
                    .prefix(TMP_PREFIX)
                    .tempfile_in(dir)?;
                use std::io::Write;
                tmp.write_all(&head.0)?;
                tmp.write_all(&body)?;
                tmp.persist(&path).map_err(|e| e.error)?;
                Ok(())
            })();
            if let Err(e) = written {
                tracing::warn!("saving the points read to {}: {e}", path.display());
            }
        });
    match thread {
        Ok(t) => Saving(Some(t)),
        Err(e) => {
            tracing::warn!("saving the points read: {e}");
            Saving::default()
        }
    }
}

/// The name of a file being written starts so.
const TMP_PREFIX: &str = "points.cache.new-";

/// Removes what a process killed while writing the file left: a copy
/// being written that is an hour old belongs to no live writer.
fn remove_stale_copies(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let stale = e.file_name().to_string_lossy().starts_with(TMP_PREFIX)
            && e.metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|age| age > std::time::Duration::from_secs(3600));
        if stale {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

/// The body without the records of `ids`.
fn without(body: &[u8], ids: &BTreeSet<String>) -> Vec<u8> {
    let ids: HashSet<&str> = ids.iter().map(String::as_str).collect();
    let mut out = Vec::with_capacity(body.len());
    let mut r = In::new(body);
    while r.at < body.len() {
        let start = r.at;
        // A body that decoded: every record parses.
        let Some(record) = r.record() else {
            out.extend_from_slice(&body[start..]);
            break;
        };
        if In::new(record).str().is_some_and(|id| ids.contains(id)) {
            continue;
        }
        out.extend_from_slice(&body[start..r.at]);
    }
    out
}

/// The records of the points that have a readable copy.
fn encode(points: &[PointRecord], verdicts: &HashMap<(String, String), bool>) -> Vec<u8> {
    let mut out = Out(Vec::with_capacity(points.len() * 160));
    let mut key = (String::new(), String::new());
    for p in points {
        if !p.copies.iter().any(|c| c.state == CopyState::Present) {
            continue;
        }
        let start = out.0.len();
        out.u32(0);
        out.str(&p.point_id);
        out.str(&p.vm_uuid);
        out.opt_str(p.vm_name.as_deref());
        out.opt_str(p.source.as_deref());
        out.i64(p.created.timestamp_micros());
        out.u8(match p.kind {
            PointKind::Full => 0,
            PointKind::Incremental => 1,
        });
        out.u8(match PointConsistency::parse(&p.consistency) {
            PointConsistency::Application => 0,
            PointConsistency::Filesystem => 1,
            PointConsistency::Crash => 2,
            PointConsistency::Other => 3,
        });
        out.u32(p.disks.len() as u32);
        for d in &p.disks {
            out.i64(i64::from(d.device_key));
            out.u64(d.size_bytes);
            out.opt_str(d.change_id.as_deref());
            out.opt_str(d.backing.as_deref());
        }
        let present = p.copies.iter().filter(|c| c.state == CopyState::Present);
        out.u32(present.clone().count() as u32);
        key.0.clone_from(&p.point_id);
        for c in present {
            out.str(&c.tier);
            out.i64(c.first_seen.timestamp_micros());
            match c.locked_until {
                Some(t) => {
                    out.u8(1);
                    out.i64(t.timestamp_micros());
                }
                None => out.u8(0),
            }
            key.1.clone_from(&c.tier);
            out.u8(match verdicts.get(&key) {
                None => 0,
                Some(true) => 1,
                Some(false) => 2,
            });
        }
        let len = (out.0.len() - start - 4) as u32;
        out.0[start..start + 4].copy_from_slice(&len.to_le_bytes());
    }
    out.0
}

/// A VM's UUID and name, shared by its points.
type VmNames = (Arc<str>, Arc<str>);

/// What the policies say of the catalog's facts: the names shared between
/// points, and how long each tier keeps a copy immutable.
struct View {
    vms: HashMap<String, VmNames>,
    sources: BTreeMap<String, Arc<str>>,
    tiers: BTreeMap<String, (Arc<str>, Option<chrono::Duration>)>,
}

impl View {
    fn new(config: &Config, catalog: &Catalog) -> Result<View> {
        Ok(View {
            vms: catalog
                .vms()?
                .into_iter()
                .map(|v| {
                    let ids = (Arc::from(v.uuid.as_str()), Arc::from(v.name.as_str()));
                    (v.uuid, ids)
                })
                .collect(),
            sources: config
                .sources
                .keys()
                .map(|s| (s.clone(), Arc::from(s.as_str())))
                .collect(),
            tiers: config
                .tiers
                .iter()
                .map(|(name, t)| {
                    let lock = t
                        .immutable_for
                        .and_then(|d| chrono::Duration::from_std(d).ok());
                    (name.clone(), (Arc::from(name.as_str()), lock))
                })
                .collect(),
        })
    }

    /// A readable copy on `tier` as the planner sees it: the tier's shared
    /// name, and locked until the catalog says or, on a tier the policies
    /// make immutable, that long after its first sight.
    fn copy(
        &self,
        tier: &str,
        first_seen: DateTime<Utc>,
        locked_until: Option<DateTime<Utc>>,
        verified_ok: Option<bool>,
    ) -> (Arc<str>, CopyInfo) {
        let (name, lock) = match self.tiers.get(tier) {
            Some((name, lock)) => (name.clone(), *lock),
            None => (Arc::from(tier), None),
        };
        let locked_until = locked_until.or(lock.map(|d| first_seen + d));
        (
            name,
            CopyInfo {
                locked_until,
                verified_ok,
            },
        )
    }

    /// The planner's point of a catalog record, if it has a readable copy
    /// and its VM is known.
    fn point(
        &self,
        p: &PointRecord,
        verdicts: &HashMap<(String, String), bool>,
    ) -> Option<PointInfo> {
        let vm = self.vms.get(&p.vm_uuid)?;
        let copies: Copies = p
            .copies
            .iter()
            .filter(|c| c.state == CopyState::Present)
            .map(|c| {
                let verified_ok = verdicts.get(&(p.point_id.clone(), c.tier.clone())).copied();
                self.copy(&c.tier, c.first_seen, c.locked_until, verified_ok)
            })
            .collect();
        if copies.is_empty() {
            return None;
        }
        Some(PointInfo {
            vm_uuid: vm.0.clone(),
            source: p.source.as_deref().map(Arc::from),
            vm_name: p.vm_name.as_deref().map_or_else(|| vm.1.clone(), Arc::from),
            point_id: p.point_id.clone(),
            created: p.created,
            kind: p.kind,
            consistency: PointConsistency::parse(&p.consistency),
            disks: p
                .disks
                .iter()
                .map(|d| PointDisk {
                    device_key: d.device_key,
                    size_bytes: d.size_bytes,
                    change_id: d.change_id.as_deref().map(Box::from),
                    backing: d.backing.clone(),
                })
                .collect(),
            copies,
        })
    }

    /// The planner's points from a body; `None` when a record does not
    /// parse. A point of a VM the catalog does not know is left out, as
    /// the planner never saw such points.
    fn decode(&self, body: &[u8]) -> Option<Vec<PointInfo>> {
        let mut points = Vec::with_capacity(body.len() / 150);
        let mut r = In::new(body);
        // Points of one VM follow one another: its names are looked up once.
        let mut last: Option<(&str, &VmNames)> = None;
        let mut last_source: Option<Arc<str>> = None;
        while r.at < body.len() {
            let mut p = In::new(r.record()?);
            let point_id = p.str()?.to_string();
            let uuid = p.str()?;
            let vm = match last {
                Some((u, vm)) if u == uuid => vm,
                _ => match self.vms.get(uuid) {
                    Some(vm) => {
                        last = Some((uuid, vm));
                        vm
                    }
                    None => continue,
                },
            };
            let vm_name = match p.opt_str()? {
                Some(n) if n != &*vm.1 => Arc::from(n),
                _ => vm.1.clone(),
            };
            let source = p.opt_str()?.map(|s| match &last_source {
                Some(l) if **l == *s => l.clone(),
                _ => {
                    let shared = self.sources.get(s).cloned().unwrap_or_else(|| Arc::from(s));
                    last_source = Some(shared.clone());
                    shared
                }
            });
            let created = time(p.i64()?)?;
            let kind = match p.u8()? {
                0 => PointKind::Full,
                1 => PointKind::Incremental,
                _ => return None,
            };
            let consistency = match p.u8()? {
                0 => PointConsistency::Application,
                1 => PointConsistency::Filesystem,
                2 => PointConsistency::Crash,
                3 => PointConsistency::Other,
                _ => return None,
            };
            let n = p.u32()? as usize;
            let mut disks = Vec::with_capacity(n.min(256));
            for _ in 0..n {
                disks.push(PointDisk {
                    device_key: i32::try_from(p.i64()?).ok()?,
                    size_bytes: p.u64()?,
                    change_id: p.opt_str()?.map(Box::from),
                    backing: p.opt_str()?.map(str::to_string),
                });
            }
            let n = p.u32()? as usize;
            let mut copies = Vec::with_capacity(n.min(64));
            for _ in 0..n {
                let tier = p.str()?;
                let first_seen = time(p.i64()?)?;
                let locked_until = match p.u8()? {
                    0 => None,
                    1 => Some(time(p.i64()?)?),
                    _ => return None,
                };
                let verified_ok = match p.u8()? {
                    0 => None,
                    1 => Some(true),
                    2 => Some(false),
                    _ => return None,
                };
                copies.push(self.copy(tier, first_seen, locked_until, verified_ok));
            }
            if p.at != p.b.len() {
                return None;
            }
            points.push(PointInfo {
                vm_uuid: vm.0.clone(),
                source,
                vm_name,
                point_id,
                created,
                kind,
                consistency,
                disks: disks.into_boxed_slice(),
                copies: Copies::from_sorted(copies),
            });
        }
        Some(points)
    }
}

fn time(micros: i64) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp_micros(micros)
}

/// Writing the file's integers and strings.
struct Out(Vec<u8>);

impl Out {
    fn u8(&mut self, v: u8) {
        self.0.push(v);
    }
    fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn i64(&mut self, v: i64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn str(&mut self, s: &str) {
        self.u32(s.len() as u32);
        self.0.extend_from_slice(s.as_bytes());
    }
    fn opt_str(&mut self, s: Option<&str>) {
        match s {
            Some(s) => {
                self.u8(1);
                self.str(s);
            }
            None => self.u8(0),
        }
    }
}

/// Reading them back: `None` past the end or on text that is not UTF-8.
struct In<'a> {
    b: &'a [u8],
    at: usize,
}

impl<'a> In<'a> {
    fn new(b: &'a [u8]) -> In<'a> {
        In { b, at: 0 }
    }
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.at.checked_add(n)?;
        let out = self.b.get(self.at..end)?;
        self.at = end;
        Some(out)
    }
    fn u8(&mut self) -> Option<u8> {
        Some(self.take(1)?[0])
    }
    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?))
    }
    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }
    fn i64(&mut self) -> Option<i64> {
        Some(i64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }
    fn str(&mut self) -> Option<&'a str> {
        let n = self.u32()? as usize;
        std::str::from_utf8(self.take(n)?).ok()
    }
    fn opt_str(&mut self) -> Option<Option<&'a str>> {
        match self.u8()? {
            0 => Some(None),
            1 => Some(Some(self.str()?)),
            _ => None,
        }
    }
    fn record(&mut self) -> Option<&'a [u8]> {
        let n = self.u32()? as usize;
        self.take(n)
    }
}
