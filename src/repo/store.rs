//! The seam between the repository and where its objects live. A store is a
//! flat namespace of keys (`chunks/ab/cd/<hex>`, `points/<vm>/<point>/…`,
//! `config`) holding immutable objects. Implementations: a local directory
//! (`local`) and S3-compatible object storage.

use std::time::SystemTime;

/// One object as a listing reports it.
#[derive(Debug, Clone)]
pub struct ObjectMeta {
    pub key: String,
    pub size_bytes: u64,
    pub modified: SystemTime,
    /// What changes whenever the object is written again, besides its size
    /// and time: the ETag on object storage, the inode and change time
    /// (which no tool sets back) on a local disk. `None` where the store
    /// has none.
    pub tag: Option<String>,
}

impl ObjectMeta {
    /// The object as listed, in one string: equal only if the object was
    /// not written again in between (as far as the store can tell).
    pub fn fingerprint(&self) -> String {
        let at = (self.modified.duration_since(SystemTime::UNIX_EPOCH)).map_or(0, |d| d.as_nanos());
        format!(
            "{}:{at}:{}",
            self.size_bytes,
            self.tag.as_deref().unwrap_or("")
        )
    }
}

/// What a store operation can fail with; callers match on these.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("`{0}` does not exist")]
    NotFound(String),
    #[error("`{key}` is locked (immutable){} and cannot be deleted yet", until.as_deref().map(|u| format!(" until {u}")).unwrap_or_default())]
    Locked { key: String, until: Option<String> },
    #[error(
        "`{key}` is in archive storage ({class}) and cannot be read until it is thawed; run `coffer repo thaw` for its point and wait"
    )]
    Archived { key: String, class: String },
    #[error(
        "`{key}` is on tape medium {medium}; a restore, drill or copy from a tape tier stages the point from tape first"
    )]
    OnTape { key: String, medium: String },
    #[error(
        "tape medium {medium} is full; this copy was not recorded and goes to another medium when run again"
    )]
    MediumFull { medium: String },
    #[error("no space left on the device holding `{key}`")]
    NoSpace { key: String },
    #[error("permission denied for `{key}`")]
    PermissionDenied { key: String },
    #[error("{op} `{key}`: {source}")]
    Io {
        op: &'static str,
        key: String,
        #[source]
        source: std::io::Error,
    },
    #[error("refused key {key:?}: {reason}")]
    InvalidKey { key: String, reason: &'static str },
    #[error("{0}")]
    Backend(String),
}

/// Refuses a key that could name something outside the store's root: empty,
/// absolute, with a backslash, NUL or control character, or an empty, `.` or
/// `..` component. Every store checks every key it is given, so even a
/// caller that built a key from unchecked text cannot escape the root.
pub fn check_key(key: &str) -> Result<(), StoreError> {
    check_path(key, false)
}

/// As `check_key`, for a listing prefix: may be empty or end with `/`.
pub fn check_prefix(prefix: &str) -> Result<(), StoreError> {
    if prefix.is_empty() {
        return Ok(());
    }
    check_path(prefix.strip_suffix('/').unwrap_or(prefix), true)
}

fn check_path(key: &str, prefix: bool) -> Result<(), StoreError> {
    let refuse = |reason| {
        Err(StoreError::InvalidKey {
            key: key.to_string(),
            reason,
        })
    };
    if key.is_empty() && !prefix {
        return refuse("empty");
    }
    if key.starts_with('/') {
        return refuse("absolute");
    }
    if key
        .chars()
        .any(|c| c == '\\' || c == '\0' || c.is_control())
    {
        return refuse("backslash, NUL or control character");
    }
    for part in key.split('/') {
        match part {
            "" => return refuse("empty component"),
            "." | ".." => return refuse("`.` or `..` component"),
            _ => {}
        }
    }
    Ok(())
}

impl StoreError {
    /// Turns an I/O error into the case a caller can act on.
    pub fn from_io(op: &'static str, key: &str, e: std::io::Error) -> Self {
        match e.kind() {
            std::io::ErrorKind::NotFound => StoreError::NotFound(key.to_string()),
            std::io::ErrorKind::PermissionDenied | std::io::ErrorKind::ReadOnlyFilesystem => {
                StoreError::PermissionDenied {
                    key: key.to_string(),
                }
            }
            std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded => {
                StoreError::NoSpace {
                    key: key.to_string(),
                }
            }
            _ => StoreError::Io {
                op,
                key: key.to_string(),
                source: e,
            },
        }
    }
}

/// Where an object in archive storage stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Thaw {
    /// Readable now.
    Ready,
    /// A thaw was asked for by this call.
    Requested,
    /// A thaw asked for earlier is still under way.
    Pending,
}

/// How fast (and how dear) a thaw is: S3's retrieval tiers (GLACIER:
/// expedited 1-5 minutes, standard 3-5 hours, bulk 5-12 hours; DEEP_ARCHIVE:
/// standard within 12 hours, bulk within 48; "Understanding archive
/// retrieval options" in the Amazon S3 user guide).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "kebab-case")]
pub enum ThawSpeed {
    Expedited,
    Standard,
    Bulk,
}

impl ThawSpeed {
    pub fn name(self) -> &'static str {
        match self {
            ThawSpeed::Expedited => "Expedited",
            ThawSpeed::Standard => "Standard",
            ThawSpeed::Bulk => "Bulk",
        }
    }
}

/// A place to keep objects.
pub trait Store: Send + Sync {
    /// Stores `data` under `key` atomically: a reader sees no object or the
    /// whole object, never part of it, also after a crash. The object is
    /// durable once a later `flush` returns.
    fn put(&self, key: &str, data: &[u8]) -> Result<(), StoreError>;

    /// Reads a whole object. `NotFound` when it does not exist.
    fn get(&self, key: &str) -> Result<Vec<u8>, StoreError>;

    /// Reads bytes `range` of an object (one ranged request on object
    /// storage). Fails when the object is shorter than the range's end.
    fn get_range(&self, key: &str, range: std::ops::Range<u64>) -> Result<Vec<u8>, StoreError>;

    /// Lists every object whose key starts with `prefix`, in no set order.
    /// One listing, not a request per object.
    fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, StoreError>;

    /// Deletes an object; deleting a missing object succeeds. `Locked` when
    /// an immutability lock forbids it (never retried).
    fn delete(&self, key: &str) -> Result<(), StoreError>;

    /// Makes every `put` that returned before this call durable. The
    /// repository calls it before writing a commit point (a manifest), so a
    /// manifest never refers to data a power loss could take away.
    fn flush(&self) -> Result<(), StoreError>;

    /// Where the store is, for messages ("local:/srv/coffer").
    fn describe(&self) -> String;

    /// How long every object stays immutable after it was written (S3
    /// Object Lock, Azure version-level immutability); `None` when objects
    /// can be deleted at once. gc never rewrites an object still under it.
    fn immutable_for(&self) -> Option<std::time::Duration>;

    /// Makes an object in an archive storage class readable again (S3
    /// `RestoreObject` for `days`, at `speed`), or says how far that is.
    /// Objects in a class that reads at once, and stores without archive
    /// classes, are `Ready`. No default: a wrapper that forgot to pass it
    /// on would call archived chunks readable.
    fn thaw(&self, key: &str, days: u32, speed: ThawSpeed) -> Result<Thaw, StoreError>;

    /// Leftovers of interrupted writes (never visible through `list`), for gc
    /// to delete by key. Stores whose writes are single requests have none.
    fn incomplete(&self) -> Result<Vec<ObjectMeta>, StoreError> {
        Ok(Vec::new())
    }

    /// Removes empty directories under `prefix` (what killed writers leave)
    /// whose last change is older than `grace`, or that held one of the
    /// `emptied` keys the caller just deleted. Returns how many went. Stores
    /// without directories have none.
    fn remove_empty_dirs(
        &self,
        prefix: &str,
        grace: std::time::Duration,
        emptied: &[String],
    ) -> Result<usize, StoreError> {
        let _ = (prefix, grace, emptied);
        Ok(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_that_could_leave_the_store_root_are_refused() {
        for bad in [
            "",
            "/etc/passwd",
            "../victim",
            "points/../../victim",
            "points/./x",
            "points//x",
            "points/x/",
            "points\\x",
            "points/a\0b",
            "points/a\nb",
        ] {
            assert!(
                matches!(check_key(bad), Err(StoreError::InvalidKey { .. })),
                "{bad:?} accepted"
            );
        }
        for good in [
            "config",
            "chunks/ab/cd/abcd",
            "points/vm/p/manifest.json",
            "a..b",
        ] {
            check_key(good).unwrap();
        }
        for good in ["", "points/", "chunks/ab", "locks/"] {
            check_prefix(good).unwrap();
        }
        for bad in ["/", "../", "points/../", "//"] {
            assert!(check_prefix(bad).is_err(), "{bad:?} accepted");
        }
    }
}
