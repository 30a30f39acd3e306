//! An NFS v3 client (`nfs3_client`), synchronous: the lab host mounts NAS
//! datastores with it, as ESXi's NFS client does when
//! `HostDatastoreSystem.CreateNasDatastore` mounts an export, and
//! `instant-recover migrate` reads a session's files with it, as the host
//! sees them. It speaks the protocol to the server named: the portmapper on port 111 for the MOUNT and
//! NFS ports (RFC 1833 §3, GETPORT), MOUNT v3's MNT for the root handle
//! (RFC 1813 Appendix I), then LOOKUP, GETATTR, READ, WRITE, CREATE,
//! REMOVE and READDIR (RFC 1813 §3.3).
//!
//! Each `Nas` owns a small runtime of its own, so callers need none.

use std::io;

use nfs3_client::nfs3_types::nfs3::{
    CREATE3args, GETATTR3args, LOOKUP3args, Nfs3Option, Nfs3Result, READ3args, READDIR3args,
    REMOVE3args, RMDIR3args, SETATTR3args, WRITE3args, cookieverf3, createhow3, diropargs3, fattr3,
    filename3, nfs_fh3, sattr3, stable_how,
};
use nfs3_client::nfs3_types::xdr_codec::Opaque;
use nfs3_client::tokio::{TokioConnector, TokioIo};
use nfs3_client::{Nfs3Connection, Nfs3ConnectionBuilder};

/// The portmapper's port, which a datastore spec cannot change.
pub const PORTMAP_PORT: u16 = 111;
/// The most one READ or WRITE carries.
const IO_BYTES: u64 = 1 << 20;

/// A mounted NFS export.
pub struct Nas {
    rt: tokio::runtime::Runtime,
    conn: Nfs3Connection<TokioIo<tokio::net::TcpStream>>,
    root: nfs_fh3,
    host: String,
    path: String,
}

fn rpc(e: impl std::fmt::Display) -> io::Error {
    io::Error::other(format!("NFS: {e}"))
}

fn status<T, E: std::fmt::Debug>(r: Nfs3Result<T, E>, what: &str) -> io::Result<T> {
    match r {
        Nfs3Result::Ok(v) => Ok(v),
        Nfs3Result::Err((code, _)) => {
            let kind = match code as u32 {
                2 => io::ErrorKind::NotFound,
                13 | 1 => io::ErrorKind::PermissionDenied,
                17 => io::ErrorKind::AlreadyExists,
                _ => io::ErrorKind::Other,
            };
            Err(io::Error::new(kind, format!("NFS {what}: {code:?}")))
        }
    }
}

impl Nas {
    /// Mounts `path` of the NFS server at `host`, finding its ports through
    /// the portmapper.
    pub fn mount(host: &str, path: &str) -> io::Result<Nas> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let conn = rt
            .block_on(
                Nfs3ConnectionBuilder::new(TokioConnector, host, path)
                    .portmapper_port(PORTMAP_PORT)
                    .connect_from_privileged_port(false)
                    .mount(),
            )
            .map_err(|e| rpc(format!("mounting {host}:{path}: {e}")))?;
        let root = conn.root_nfs_fh3();
        Ok(Nas {
            rt,
            conn,
            root,
            host: host.to_string(),
            path: path.to_string(),
        })
    }

    /// `host:path`, as ESXi names a NAS datastore's remote.
    pub fn remote(&self) -> String {
        format!("{}:{}", self.host, self.path)
    }

    /// The handle and attributes of `path` (relative to the export, `/`
    /// separated).
    pub fn resolve(&mut self, path: &str) -> io::Result<(nfs_fh3, fattr3)> {
        let mut fh = self.root.clone();
        for part in path.split('/').filter(|p| !p.is_empty()) {
            let args = LOOKUP3args {
                what: diropargs3 {
                    dir: fh.clone(),
                    name: filename3(Opaque::owned(part.as_bytes().to_vec())),
                },
            };
            let r = self.rt.block_on(self.conn.lookup(&args)).map_err(rpc)?;
            fh = status(r, &format!("LOOKUP {path}"))?.object;
        }
        let r = self
            .rt
            .block_on(self.conn.getattr(&GETATTR3args { object: fh.clone() }))
            .map_err(rpc)?;
        let attr = status(r, &format!("GETATTR {path}"))?.obj_attributes;
        Ok((fh, attr))
    }

    pub fn size(&mut self, path: &str) -> io::Result<u64> {
        Ok(self.resolve(path)?.1.size)
    }

    /// Reads `path` from start to end in 8 MiB requests, as a sequential
    /// reader would, keeping nothing; answers the bytes read.
    pub fn read_through(&mut self, path: &str) -> io::Result<u64> {
        let size = self.size(path)?;
        let mut bytes = 0;
        while bytes < size {
            let got = self.read_at(path, bytes, 8 << 20)?.len() as u64;
            if got == 0 {
                break;
            }
            bytes += got;
        }
        Ok(bytes)
    }

    /// `len` bytes of `path` at `at` (fewer at its end).
    pub fn read_at(&mut self, path: &str, at: u64, len: u64) -> io::Result<Vec<u8>> {
        let (fh, _) = self.resolve(path)?;
        let mut out = Vec::with_capacity(len as usize);
        while (out.len() as u64) < len {
            let args = READ3args {
                file: fh.clone(),
                offset: at + out.len() as u64,
                count: (len - out.len() as u64).min(IO_BYTES) as u32,
            };
            let r = self.rt.block_on(self.conn.read(&args)).map_err(rpc)?;
            let ok = status(r, &format!("READ {path}"))?;
            out.extend_from_slice(&ok.data);
            if ok.eof || ok.data.is_empty() {
                break;
            }
        }
        Ok(out)
    }

    /// Copies `path` into the local file `out` (created, or replaced),
    /// sparsely: blocks of zeros stay holes. Answers the file's size.
    pub fn copy_sparse(&mut self, path: &str, out: &std::path::Path) -> io::Result<u64> {
        use std::os::unix::fs::FileExt;
        let size = self.size(path)?;
        let f = std::fs::File::create(out)?;
        f.set_len(size)?;
        let mut at = 0;
        while at < size {
            let block = self.read_at(path, at, IO_BYTES.min(size - at))?;
            if block.is_empty() {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("NFS READ {path}: ends at {at}, not at {size}"),
                ));
            }
            if block.iter().any(|b| *b != 0) {
                f.write_all_at(&block, at)?;
            }
            at += block.len() as u64;
        }
        f.sync_all()?;
        Ok(size)
    }

    pub fn read_all(&mut self, path: &str) -> io::Result<Vec<u8>> {
        let size = self.size(path)?;
        self.read_at(path, 0, size)
    }

    /// Writes `data` at `at` of `path`, stable on the server's storage
    /// when answered (FILE_SYNC).
    pub fn write_at(&mut self, path: &str, at: u64, data: &[u8]) -> io::Result<()> {
        let (fh, _) = self.resolve(path)?;
        self.write_fh(&fh, path, at, data)
    }

    fn write_fh(&mut self, fh: &nfs_fh3, path: &str, at: u64, data: &[u8]) -> io::Result<()> {
        let mut done = 0usize;
        while done < data.len() {
            let n = (data.len() - done).min(IO_BYTES as usize);
            let args = WRITE3args {
                file: fh.clone(),
                offset: at + done as u64,
                count: n as u32,
                stable: stable_how::FILE_SYNC,
                data: Opaque::borrowed(&data[done..done + n]),
            };
            let r = self.rt.block_on(self.conn.write(&args)).map_err(rpc)?;
            let ok = status(r, &format!("WRITE {path}"))?;
            if ok.count == 0 {
                return Err(io::Error::other(format!(
                    "NFS WRITE {path}: nothing written"
                )));
            }
            done += ok.count as usize;
        }
        Ok(())
    }

    /// Replaces `path`'s content with `data`, creating it if needed.
    pub fn write_file(&mut self, path: &str, data: &[u8]) -> io::Result<()> {
        let fh = match self.resolve(path) {
            Ok((fh, _)) => {
                let args = SETATTR3args {
                    object: fh.clone(),
                    new_attributes: sattr3 {
                        size: Nfs3Option::Some(0),
                        ..sattr3::default()
                    },
                    guard: Nfs3Option::None,
                };
                let r = self.rt.block_on(self.conn.setattr(&args)).map_err(rpc)?;
                status(r, &format!("SETATTR {path}"))?;
                fh
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => self.create(path)?,
            Err(e) => return Err(e),
        };
        self.write_fh(&fh, path, 0, data)
    }

    /// Creates the empty file `path` (its folder must exist).
    pub fn create(&mut self, path: &str) -> io::Result<nfs_fh3> {
        let (dir, name) = path.rsplit_once('/').unwrap_or(("", path));
        let (dir_fh, _) = self.resolve(dir)?;
        let args = CREATE3args {
            where_: diropargs3 {
                dir: dir_fh,
                name: filename3(Opaque::owned(name.as_bytes().to_vec())),
            },
            how: createhow3::GUARDED(sattr3::default()),
        };
        let r = self.rt.block_on(self.conn.create(&args)).map_err(rpc)?;
        let ok = status(r, &format!("CREATE {path}"))?;
        match ok.obj {
            Nfs3Option::Some(fh) => Ok(fh),
            Nfs3Option::None => Ok(self.resolve(path)?.0),
        }
    }

    pub fn remove(&mut self, path: &str) -> io::Result<()> {
        let (dir, name) = path.rsplit_once('/').unwrap_or(("", path));
        let (dir_fh, _) = self.resolve(dir)?;
        let args = REMOVE3args {
            object: diropargs3 {
                dir: dir_fh,
                name: filename3(Opaque::owned(name.as_bytes().to_vec())),
            },
        };
        let r = self.rt.block_on(self.conn.remove(&args)).map_err(rpc)?;
        status(r, &format!("REMOVE {path}")).map(|_| ())
    }

    /// Removes the empty folder `path` (RMDIR, RFC 1813 §3.3.13).
    pub fn remove_dir(&mut self, path: &str) -> io::Result<()> {
        let (dir, name) = path.rsplit_once('/').unwrap_or(("", path));
        let (dir_fh, _) = self.resolve(dir)?;
        let args = RMDIR3args {
            object: diropargs3 {
                dir: dir_fh,
                name: filename3(Opaque::owned(name.as_bytes().to_vec())),
            },
        };
        let r = self.rt.block_on(self.conn.rmdir(&args)).map_err(rpc)?;
        status(r, &format!("RMDIR {path}")).map(|_| ())
    }

    /// The names in folder `dir` ("" for the export's root), without `.`
    /// and `..`.
    pub fn list(&mut self, dir: &str) -> io::Result<Vec<String>> {
        let (fh, _) = self.resolve(dir)?;
        let mut names = Vec::new();
        let (mut cookie, mut verf) = (0, cookieverf3::default());
        loop {
            let args = READDIR3args {
                dir: fh.clone(),
                cookie,
                cookieverf: verf,
                count: 64 * 1024,
            };
            let r = self.rt.block_on(self.conn.readdir(&args)).map_err(rpc)?;
            let ok = status(r, &format!("READDIR {dir}"))?;
            verf = ok.cookieverf;
            let entries = ok.reply.entries.into_inner();
            for e in &entries {
                let name = String::from_utf8_lossy(&e.name.0).into_owned();
                if name != "." && name != ".." {
                    names.push(name);
                }
                cookie = e.cookie;
            }
            if ok.reply.eof || entries.is_empty() {
                break;
            }
        }
        Ok(names)
    }

    /// Unmounts (MOUNT's UMNT); dropping a `Nas` only closes its
    /// connections.
    pub fn unmount(self) -> io::Result<()> {
        let Nas { rt, conn, .. } = self;
        match rt.block_on(conn.unmount()) {
            Ok(()) => Ok(()),
            // UMNT's reply is void (RFC 1813 Appendix I, MOUNTPROC3_UMNT);
            // nfsserve 0.11 appends a mountstat3 after it, which a strict
            // decoder reports as bytes left over. The unmount was done.
            Err(nfs3_client::RpcError::NotFullyParsed { .. }) => Ok(()),
            Err(e) => Err(rpc(e)),
        }
    }
}
