//! The datastore HTTP interface: `GET`, `HEAD` and `PUT` of
//! `/folder/<path>?dcPath=<datacenter>&dsName=<datastore>` with the session
//! cookie, single `Range` requests answered 206 (416 when unsatisfiable),
//! and the download faults (503s, a connection cut mid-body).

use std::fs::File;
use std::sync::Arc;

use super::faults::{Faults, Stats};
use super::http::{Body, FileBody, Head, Payload, Response};
use super::state::{State, Store, datastore_folder, datastore_type};

/// The running VM whose disk chain has `rel` on datastore `ds` as its
/// writable top (descriptor or data), if any.
fn writer_of(state: &State, ds: &str, rel: &str) -> Option<String> {
    state
        .vms
        .iter()
        .filter(|vm| vm.powered_on)
        .find(|vm| {
            vm.disks.iter().any(|d| {
                let top = &d.layers[d.top()];
                d.datastore_name() == ds && (top.data_file == rel || top.descriptor == rel)
            })
        })
        .map(|vm| vm.name.clone())
}

/// Decodes `%XX` and, in a query, `+`.
pub fn percent_decode(text: &str, plus_is_space: bool) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
                match u8::from_str_radix(hex, 16) {
                    Ok(b) => {
                        out.push(b);
                        i += 3;
                        continue;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            b'+' if plus_is_space => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn query_param(query: &str, name: &str) -> Option<String> {
    query.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (percent_decode(k, true) == name).then(|| percent_decode(v, true))
    })
}

/// A single byte range of a file of `len` bytes: `Ok(None)` for no Range
/// header, `Err(())` when it cannot be satisfied.
pub fn parse_range(header: Option<&str>, len: u64) -> Result<Option<(u64, u64)>, ()> {
    let Some(h) = header else { return Ok(None) };
    let spec = h.trim().strip_prefix("bytes=").ok_or(())?;
    if spec.contains(',') {
        return Err(());
    }
    let (a, b) = spec.split_once('-').ok_or(())?;
    let (a, b) = (a.trim(), b.trim());
    let (start, end) = if a.is_empty() {
        let n: u64 = b.parse().map_err(|_| ())?;
        if n == 0 {
            return Err(());
        }
        (len.saturating_sub(n), len - 1)
    } else {
        let start: u64 = a.parse().map_err(|_| ())?;
        let end = if b.is_empty() {
            len.saturating_sub(1)
        } else {
            b.parse::<u64>().map_err(|_| ())?.min(len.saturating_sub(1))
        };
        (start, end)
    };
    if start >= len || end < start {
        return Err(());
    }
    Ok(Some((start, end)))
}

pub fn handle(
    store: &Store,
    faults: &Arc<Faults>,
    stats: &Arc<Stats>,
    authenticated: bool,
    vcenter: bool,
    head: &Head,
    body: &mut Body<'_>,
) -> Response {
    let Some(raw) = head.path().strip_prefix("/folder/") else {
        return Response::text(404, "not found");
    };
    let rel = percent_decode(raw, false);
    let ds = query_param(head.query(), "dsName");
    let dc = query_param(head.query(), "dcPath");
    if !authenticated {
        return Response::text(401, "a valid vmware_soap_session cookie is needed");
    }
    // A VM's files only through its own datacenter (see `inventory`).
    // A standalone host's check needs no look at the state.
    let dc_serves = if vcenter {
        store
            .read(|st, _| Ok(super::inventory::datacenter_serves(st, dc.as_deref(), &rel)))
            .unwrap_or(false)
    } else {
        dc.as_deref().is_none_or(|d| d == super::state::DATACENTER)
    };
    let Some(ds) = ds
        .clone()
        .filter(|d| datastore_type(d).is_some())
        .filter(|_| dc_serves)
    else {
        return Response::text(404, format!("no datastore {ds:?} in datacenter {dc:?}"));
    };
    if rel.is_empty() || rel.split('/').any(|p| p == ".." || p.is_empty()) {
        return Response::text(400, format!("bad datastore path {rel:?}"));
    }
    let path = datastore_folder(&store.datastore_root(), &ds).join(&rel);
    match head.method.as_str() {
        "GET" | "HEAD" => {
            if head.method == "GET" && faults.take_unavailable() {
                return Response::text(503, "service unavailable (fault injected by the lab)")
                    .header("Retry-After", "1");
            }
            // The file service's pool (see `FolderThrottle`): a GET holds a
            // place until its body is sent.
            let slot = if head.method == "GET" {
                match faults.folder.enter() {
                    Some(slot) => Some(slot),
                    None => {
                        return Response::text(503, "service unavailable: too many transfers")
                            .header("Retry-After", "1");
                    }
                }
            } else {
                None
            };
            faults.folder.setup();
            // A running VM holds its disks' writable files (the top of each
            // chain) with an exclusive VMFS lock: no one else can open them
            // until a snapshot makes them read-only and writes go to a new
            // delta (VMware KB 10051, "Investigating virtual machine file
            // locks on ESXi": a powered-on VM's disk files are locked by its
            // host; vSphere Storage guide, "Snapshot Files": the parent disk
            // is read-only while the snapshot exists). A reader must read
            // under a snapshot, as coffer does; the lab refuses the rest.
            let locks = !faults
                .no_file_locks
                .load(std::sync::atomic::Ordering::SeqCst);
            let writer = match locks {
                true => store.read(|st, _| Ok(writer_of(st, &ds, &rel))),
                false => Ok(None),
            };
            match writer {
                Ok(Some(vm)) => {
                    return Response::text(
                        500,
                        format!(
                            "cannot open {rel}: failed to lock the file (held for writing by the running VM {vm})"
                        ),
                    );
                }
                Ok(None) => {}
                Err(e) => return Response::text(500, format!("lab state: {}", e.message)),
            }
            let opened = store
                .with_shared_lock(|| File::open(&path).and_then(|f| f.metadata().map(|m| (f, m))));
            let (file, meta) = match opened {
                Ok(Ok((f, m))) if m.is_file() => (f, m),
                Ok(Ok(_)) => return Response::text(404, format!("{rel} is not a file")),
                Ok(Err(e)) | Err(e) => return Response::text(404, format!("{rel}: {e}")),
            };
            let len = meta.len();
            let (status, offset, count, range_header) = match parse_range(head.header("range"), len)
            {
                Ok(None) => (200, 0, len, None),
                Ok(Some((a, b))) => (206, a, b - a + 1, Some(format!("bytes {a}-{b}/{len}"))),
                Err(()) => {
                    return Response::text(416, "range not satisfiable")
                        .header("Content-Range", format!("bytes */{len}"));
                }
            };
            let stats = stats.clone();
            let counted = rel.clone();
            let drop_after = if head.method == "GET" {
                faults.take_drop_after()
            } else {
                None
            };
            let mut r = Response {
                status,
                headers: vec![
                    ("Content-Type".into(), "application/octet-stream".into()),
                    ("Accept-Ranges".into(), "bytes".into()),
                ],
                payload: Payload::File(FileBody {
                    file,
                    offset,
                    len: count,
                    on_sent: {
                        let faults = faults.clone();
                        Box::new(move |n| {
                            let _held = &slot;
                            faults.folder.pace(n);
                            stats.add_served(&counted, n);
                        })
                    },
                    drop_after,
                }),
            };
            if let Some(cr) = range_header {
                r = r.header("Content-Range", cr);
            }
            r
        }
        "PUT" => {
            let result = (|| -> std::io::Result<bool> {
                if let Some(parent) = path.parent() {
                    std::fs::create_dir_all(parent)?;
                }
                let existed = path.exists();
                let mut tmp_name = path.file_name().unwrap_or_default().to_os_string();
                tmp_name.push(".coffer-upload");
                let tmp = path.with_file_name(tmp_name);
                let mut f = Paced {
                    inner: File::create(&tmp)?,
                    throttle: &faults.folder,
                };
                body.copy_to(&mut f)?;
                f.inner.sync_all()?;
                std::fs::rename(&tmp, &path)?;
                Ok(existed)
            })();
            match result {
                Ok(true) => Response::text(200, ""),
                Ok(false) => Response::text(201, ""),
                Err(e) => Response::text(500, format!("cannot write {rel}: {e}")),
            }
        }
        _ => Response::text(405, "GET, HEAD or PUT").header("Allow", "GET, HEAD, PUT"),
    }
}

/// An upload's body crosses the same link as downloads: `folder-mibps`
/// paces it too (the throttle's bandwidth is the host's, shared by all
/// bodies in both directions).
struct Paced<'a> {
    inner: File,
    throttle: &'a super::faults::FolderThrottle,
}

impl std::io::Write for Paced<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.throttle.pace(n as u64);
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        assert_eq!(parse_range(None, 10), Ok(None));
        assert_eq!(parse_range(Some("bytes=0-3"), 10), Ok(Some((0, 3))));
        assert_eq!(parse_range(Some("bytes=5-"), 10), Ok(Some((5, 9))));
        assert_eq!(parse_range(Some("bytes=-4"), 10), Ok(Some((6, 9))));
        assert_eq!(parse_range(Some("bytes=8-100"), 10), Ok(Some((8, 9))));
        assert_eq!(parse_range(Some("bytes=10-"), 10), Err(()));
        assert_eq!(parse_range(Some("bytes=4-2"), 10), Err(()));
        assert_eq!(parse_range(Some("bytes=0-1,4-5"), 10), Err(()));
        assert_eq!(parse_range(Some("lines=1-2"), 10), Err(()));
    }

    #[test]
    fn decoding() {
        assert_eq!(
            percent_decode("lab%20vm/a%2Bb.vmdk", false),
            "lab vm/a+b.vmdk"
        );
        assert_eq!(percent_decode("ha-datacenter+x", true), "ha-datacenter x");
        assert_eq!(percent_decode("100%", false), "100%");
    }
}
