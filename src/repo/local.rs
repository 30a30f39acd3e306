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
use std::time::{Duration, SystemTime};

use super::store::{self, ObjectMeta, Store, StoreError};

/// Temporary files carry this marker; listings skip them and gc reaps them.
pub const TMP_MARKER: &str = ".tmp-";

#[derive(Debug)]
pub struct LocalStore {
    root: PathBuf,
}

impl LocalStore {
    /// Opens (and creates) a directory store.
    pub fn new(root: impl Into<PathBuf>) -> Result<Self, StoreError> {
        let root = root.into();
        fs::create_dir_all(&root)
            .map_err(|e| StoreError::from_io("create", &root.display().to_string(), e))?;
        Ok(LocalStore { root })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The file of a key; a key that could leave the root is refused: one
    /// with `..` or an absolute path, or one whose directories pass through
    /// a symbolic link planted inside the repository (the root itself may
    /// be a link: that is the administrator's choice).
    fn path(&self, key: &str) -> Result<PathBuf, StoreError> {
        store::check_key(key)?;
        let mut dir = self.root.clone();
        let parts: Vec<&str> = key.split('/').collect();
        for part in &parts[..parts.len() - 1] {
            dir.push(part);
            match fs::symlink_metadata(&dir) {
                Ok(m) if m.file_type().is_symlink() => {
                    return Err(StoreError::InvalidKey {
                        key: key.to_string(),
                        reason: "a directory on its path is a symbolic link",
                    });
                }
                Ok(_) => {}
                // Not there (yet): nothing below it can be a link.
                Err(_) => break,
            }
        }
        Ok(self.root.join(key))
    }

    fn prune_empty_dirs(
        &self,
        prefix: &str,
        grace: Duration,
        emptied: &[String],
    ) -> Result<usize, StoreError> {
        store::check_prefix(prefix)?;
        // Directories that held what the caller just deleted count as old
        // enough: deleting their last file made them look new.
        let mut cleared: std::collections::HashSet<PathBuf> = emptied
            .iter()
            .filter(|k| store::check_key(k).is_ok())
            .filter_map(|k| self.root.join(k).parent().map(Path::to_path_buf))
            .collect();
        let start = self.root.join(prefix.trim_end_matches('/'));
        if !start.is_dir() {
            return Ok(0);
        }
        let now = SystemTime::now();
        let mut removed = 0;
        // Children before parents, so a directory emptied here is seen empty.
        for entry in walkdir::WalkDir::new(&start)
            .follow_root_links(false)
            .min_depth(1)
            .contents_first(true)
            .into_iter()
            .flatten()
        {
            if !entry.file_type().is_dir() {
                continue;
            }
            let old = cleared.contains(entry.path())
                || entry
                    .metadata()
                    .ok()
                    .and_then(|m| m.modified().ok())
                    .is_some_and(|t| now.duration_since(t).is_ok_and(|age| age >= grace));
            // remove_dir refuses a directory that is not empty: a writer that
            // just put a file there keeps it.
            if old && fs::remove_dir(entry.path()).is_ok() {
                removed += 1;
                if let Some(parent) = entry.path().parent() {
                    cleared.insert(parent.to_path_buf());
                }
            }
        }
        Ok(removed)
    }
}

impl Store for LocalStore {
    fn put(&self, key: &str, data: &[u8]) -> Result<(), StoreError> {
        let path = self.path(key)?;
        let dir = path.parent().expect("keys have a parent");
        // Created exclusively under a random name: two writers of the same
        // object (two backups of identical disks, two processes, two store
        // instances) never share a temporary file. A dropped temp removes
        // itself; one left by a crash carries the marker gc reaps.
        let prefix = format!(
            "{}{TMP_MARKER}",
            path.file_name()
                .expect("keys name a file")
                .to_string_lossy()
        );
        let create = || tempfile::Builder::new().prefix(&prefix).tempfile_in(dir);
        let write = || -> std::io::Result<()> {
            let mut tmp = match create() {
                Ok(t) => t,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    fs::create_dir_all(dir)?;
                    create()?
                }
                Err(e) => return Err(e),
            };
            tmp.write_all(data)?;
            tmp.persist(&path).map_err(|e| e.error)?;
            Ok(())
        };
        write().map_err(|e| StoreError::from_io("write", key, e))
    }

    fn get(&self, key: &str) -> Result<Vec<u8>, StoreError> {
        fs::read(self.path(key)?).map_err(|e| StoreError::from_io("read", key, e))
    }

    fn get_range(&self, key: &str, range: std::ops::Range<u64>) -> Result<Vec<u8>, StoreError> {
        use std::os::unix::fs::FileExt;
        let file = File::open(self.path(key)?).map_err(|e| StoreError::from_io("read", key, e))?;
        let mut buf = vec![0u8; (range.end - range.start) as usize];
        file.read_exact_at(&mut buf, range.start)
            .map_err(|e| StoreError::from_io("read", key, e))?;
        Ok(buf)
    }

    fn immutable_for(&self) -> Option<std::time::Duration> {
        None
    }

    fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, StoreError> {
        store::check_prefix(prefix)?;
        // Walk only the directory the prefix names (or its parent).
        let start = match prefix.rfind('/') {
            Some(i) => self.root.join(&prefix[..i]),
            None => self.root.clone(),
        };
        let mut out = Vec::new();
        if !start.exists() {
            return Ok(out);
        }
        // A planted link is never followed, also when it is the directory
        // the prefix names.
        for entry in walkdir::WalkDir::new(&start).follow_root_links(start == self.root) {
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
                tag: Some(inode_tag(&meta)),
            });
        }
        Ok(out)
    }

    fn delete(&self, key: &str) -> Result<(), StoreError> {
        match fs::remove_file(self.path(key)?) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(StoreError::from_io("delete", key, e)),
        }
    }

    /// A disk has no archive classes: every file reads at once.
    fn thaw(
        &self,
        key: &str,
        _days: u32,
        _speed: store::ThawSpeed,
    ) -> Result<store::Thaw, StoreError> {
        store::check_key(key)?;
        Ok(store::Thaw::Ready)
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

    fn remove_empty_dirs(
        &self,
        prefix: &str,
        grace: Duration,
        emptied: &[String],
    ) -> Result<usize, StoreError> {
        self.prune_empty_dirs(prefix, grace, emptied)
    }
}

/// A file's inode and change time: a file written again through a rename
/// is a new inode, one written in place has a new change time, and no
/// tool sets a change time back.
fn inode_tag(meta: &std::fs::Metadata) -> String {
    use std::os::unix::fs::MetadataExt;
    format!("{}.{}.{}", meta.ino(), meta.ctime(), meta.ctime_nsec())
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
                    tag: Some(inode_tag(&meta)),
                })
            })
            .collect()
    }
}
