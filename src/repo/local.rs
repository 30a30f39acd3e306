//! A store in a local directory. Objects are files under the key's path;
//! `put` writes a temporary file in the target directory and renames it into
//! place, so a crash leaves either nothing or the whole object (plus, at
//! worst, a `.tmp-` file that gc removes). `flush` is one `syncfs` of the
//! file system instead of an fsync per chunk, which is what makes small
//! chunks affordable.

use std::fs::{self, File};
use std::io::Write;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use super::store::{ObjectMeta, Store, StoreError};

/// Temporary files carry this marker; listings skip them and gc reaps them.
pub const TMP_MARKER: &str = ".tmp-";

#[derive(Debug)]
pub struct LocalStore {
    root: PathBuf,
    counter: AtomicU64,
}

impl LocalStore {
    /// Opens (and creates) a directory store.
    pub fn new(root: impl Into<PathBuf>) -> Result<Self, StoreError> {
        let root = root.into();
        fs::create_dir_all(&root)
            .map_err(|e| StoreError::from_io("create", &root.display().to_string(), e))?;
        Ok(LocalStore {
            root,
            counter: AtomicU64::new(0),
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn path(&self, key: &str) -> PathBuf {
        self.root.join(key)
    }
}

impl Store for LocalStore {
    fn put(&self, key: &str, data: &[u8]) -> Result<(), StoreError> {
        let path = self.path(key);
        let dir = path.parent().expect("keys have a parent");
        let tmp = dir.join(format!(
            "{}{}{}-{}",
            path.file_name().unwrap().to_string_lossy(),
            TMP_MARKER,
            std::process::id(),
            self.counter.fetch_add(1, Ordering::Relaxed)
        ));
        let write = |tmp: &Path| -> std::io::Result<()> {
            let mut f = match File::create(tmp) {
                Ok(f) => f,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    fs::create_dir_all(dir)?;
                    File::create(tmp)?
                }
                Err(e) => return Err(e),
            };
            f.write_all(data)?;
            fs::rename(tmp, &path)
        };
        write(&tmp).map_err(|e| {
            let _ = fs::remove_file(&tmp);
            StoreError::from_io("write", key, e)
        })
    }

    fn get(&self, key: &str) -> Result<Vec<u8>, StoreError> {
        fs::read(self.path(key)).map_err(|e| StoreError::from_io("read", key, e))
    }

    fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, StoreError> {
        // Walk only the directory the prefix names (or its parent).
        let start = match prefix.rfind('/') {
            Some(i) => self.root.join(&prefix[..i]),
            None => self.root.clone(),
        };
        let mut out = Vec::new();
        if !start.exists() {
            return Ok(out);
        }
        for entry in walkdir::WalkDir::new(&start) {
            let entry = entry
                .map_err(|e| StoreError::Backend(format!("listing {}: {e}", start.display())))?;
            if !entry.file_type().is_file() {
                continue;
            }
            let rel = entry.path().strip_prefix(&self.root).expect("under root");
            let key = rel.to_string_lossy().replace('\\', "/");
            if !key.starts_with(prefix) || key.contains(TMP_MARKER) {
                continue;
            }
            let meta = entry
                .metadata()
                .map_err(|e| StoreError::Backend(e.to_string()))?;
            out.push(ObjectMeta {
                key,
                size_bytes: meta.len(),
                modified: meta.modified().unwrap_or(std::time::UNIX_EPOCH),
            });
        }
        Ok(out)
    }

    fn delete(&self, key: &str) -> Result<(), StoreError> {
        match fs::remove_file(self.path(key)) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(StoreError::from_io("delete", key, e)),
        }
    }

    fn flush(&self) -> Result<(), StoreError> {
        let dir = File::open(&self.root).map_err(|e| StoreError::from_io("open", ".", e))?;
        // SAFETY: syncfs takes a valid open descriptor, which `dir` holds.
        let rc = unsafe { libc::syncfs(dir.as_raw_fd()) };
        if rc != 0 {
            return Err(StoreError::from_io(
                "sync",
                ".",
                std::io::Error::last_os_error(),
            ));
        }
        Ok(())
    }

    fn describe(&self) -> String {
        format!("local:{}", self.root.display())
    }

    fn incomplete(&self) -> Result<Vec<ObjectMeta>, StoreError> {
        Ok(self.temporaries())
    }
}

impl LocalStore {
    fn temporaries(&self) -> Vec<ObjectMeta> {
        walkdir::WalkDir::new(&self.root)
            .into_iter()
            .flatten()
            .filter(|e| {
                e.file_type().is_file() && e.file_name().to_string_lossy().contains(TMP_MARKER)
            })
            .filter_map(|e| {
                let meta = e.metadata().ok()?;
                Some(ObjectMeta {
                    key: e
                        .path()
                        .strip_prefix(&self.root)
                        .ok()?
                        .to_string_lossy()
                        .into_owned(),
                    size_bytes: meta.len(),
                    modified: meta.modified().ok()?,
                })
            })
            .collect()
    }
}
