//! The repository: one per storage tier, a content-addressed store of
//! restore points modelled on Proxmox Backup Server's fixed index. This part
//! owns the on-disk format (`docs/repository-format.md`), writing points
//! (full and incremental), reading them back, and keeping the store sound
//! (verify, gc, copy, prune). It knows nothing of ESXi: its input is a
//! `DiskReader` and, for an incremental, the parent point and the changed
//! byte ranges. It never decides what to back up or delete; the planner does.
//!
//! Layout: `config`, `chunks/ab/cd/<hex>`, `points/<vm-uuid>/<point-id>/`
//! (`disk-<key>.index` files, then `manifest.json` written last).

pub mod azure;
pub mod backup;
pub mod chunk;
pub mod chunk_index;
pub mod ids;
pub mod index;
pub mod local;
pub mod lock;
pub mod manifest;
pub mod ops;
pub mod parallel;
mod rest;
pub mod restore;
pub mod s3;
pub mod store;
pub mod stream_vmdk;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use chunk::{ChunkDigest, ChunkError, Codec, Keys};
use ids::{IdError, PointId, VmUuid};
use index::{DiskIndex, IndexError};
use manifest::Manifest;
use store::{Store, StoreError};

/// Repository format version this build writes and reads.
pub const FORMAT_VERSION: u32 = 1;

/// Everything that can go wrong in the repository, by case.
#[derive(Debug, thiserror::Error)]
pub enum RepoError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{0} is not a coffer repository (no `config`); create one with `coffer repo init`")]
    NotARepository(String),
    #[error("{0} is already a coffer repository")]
    AlreadyExists(String),
    #[error(
        "repository format version {found} is newer than this coffer understands ({FORMAT_VERSION}); upgrade coffer"
    )]
    NewerFormat { found: u32 },
    #[error("repository config is damaged: {0}")]
    BadConfig(String),
    #[error("the repository is encrypted: give its key")]
    KeyRequired,
    #[error("the repository is not encrypted, but a key was given")]
    NotEncrypted,
    #[error("wrong encryption key for this repository")]
    WrongKey,
    #[error("chunk {digest}: {source}")]
    Chunk { digest: String, source: ChunkError },
    #[error("index `{key}`: {source}")]
    Index { key: String, source: IndexError },
    #[error("manifest `{key}`: {reason}")]
    BadManifest { key: String, reason: String },
    #[error("point `{0}` not found")]
    PointNotFound(String),
    #[error("reading the source disk at offset {offset}: {source}")]
    SourceRead { offset: u64, source: std::io::Error },
    #[error(
        "the repository is in use by {0}; try again when it is done (if that process is gone, `coffer repo unlock` removes its lock)"
    )]
    Busy(String),
    #[error(transparent)]
    BadId(#[from] IdError),
    #[error(transparent)]
    ChunkIndex(Box<chunk_index::ChunkIndexError>),
    #[error("{0}")]
    Invalid(String),
}

/// The repository `config` object.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RepoConfig {
    pub format: String,
    pub version: u32,
    pub id: String,
    pub created: String,
    /// "sha256" or "hmac-sha256".
    pub chunk_id: String,
    pub encryption: Option<EncryptionConfig>,
}

/// How the keys of an encrypted repository are derived from its secret.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EncryptionConfig {
    /// "xchacha20poly1305".
    pub cipher: String,
    /// "argon2id".
    pub kdf: String,
    pub kdf_memory_kib: u32,
    pub kdf_iterations: u32,
    pub kdf_parallelism: u32,
    pub salt: String,
    /// HMAC of a fixed text under the manifest key: tells a wrong key apart
    /// from damage before anything is written.
    pub key_check: String,
}

/// A point as listed: which VM, which id.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct PointRef {
    pub vm_uuid: String,
    pub point_id: String,
}

impl PointRef {
    /// The point's validated ids: what its keys are built from.
    pub fn ids(&self) -> Result<(VmUuid, PointId), IdError> {
        Ok((
            VmUuid::parse(&self.vm_uuid)?,
            PointId::parse(&self.point_id)?,
        ))
    }
}

/// An open repository.
#[derive(Clone)]
pub struct Repository {
    store: Arc<dyn Store>,
    pub config: RepoConfig,
    keys: Option<Keys>,
    /// Where the chunk index lives; `None`: the user's cache dir.
    chunk_index_dir: Option<std::path::PathBuf>,
}

impl std::fmt::Debug for Repository {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Repository({})", self.store.describe())
    }
}

const KEY_CHECK_TEXT: &[u8] = b"coffer key check v1";

fn derive_keys(secret: &[u8], enc: &EncryptionConfig) -> Result<Keys, RepoError> {
    let salt = hex::decode(&enc.salt).map_err(|e| RepoError::BadConfig(format!("salt: {e}")))?;
    let params = argon2::Params::new(
        enc.kdf_memory_kib,
        enc.kdf_iterations,
        enc.kdf_parallelism,
        Some(32),
    )
    .map_err(|e| RepoError::BadConfig(format!("kdf parameters: {e}")))?;
    let mut master = [0u8; 32];
    argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params)
        .hash_password_into(secret, &salt, &mut master)
        .map_err(|e| RepoError::BadConfig(format!("kdf: {e}")))?;
    Ok(Keys::new(
        Keys::mac(&master, b"coffer chunk id"),
        Keys::mac(&master, b"coffer chunk encryption"),
        Keys::mac(&master, b"coffer manifest"),
    ))
}

impl Repository {
    /// Creates a repository in an empty store. With `secret`, the tier is
    /// encrypted with keys derived from it (Argon2id).
    pub fn init(store: Arc<dyn Store>, secret: Option<&[u8]>) -> Result<Self, RepoError> {
        match store.get("config") {
            Ok(_) => return Err(RepoError::AlreadyExists(store.describe())),
            Err(StoreError::NotFound(_)) => {}
            Err(e) => return Err(e.into()),
        }
        let mut id = [0u8; 16];
        getrandom::fill(&mut id).expect("the OS random source works");
        let (encryption, keys) = match secret {
            None => (None, None),
            Some(secret) => {
                let mut salt = [0u8; 16];
                getrandom::fill(&mut salt).expect("the OS random source works");
                let mut enc = EncryptionConfig {
                    cipher: "xchacha20poly1305".into(),
                    kdf: "argon2id".into(),
                    kdf_memory_kib: 64 * 1024,
                    kdf_iterations: 3,
                    kdf_parallelism: 1,
                    salt: hex::encode(salt),
                    key_check: String::new(),
                };
                let keys = derive_keys(secret, &enc)?;
                enc.key_check = hex::encode(Keys::mac(&keys.manifest_key, KEY_CHECK_TEXT));
                (Some(enc), Some(keys))
            }
        };
        let config = RepoConfig {
            format: "coffer-repository".into(),
            version: FORMAT_VERSION,
            id: hex::encode(id),
            created: chrono::Utc::now().to_rfc3339(),
            chunk_id: if keys.is_some() {
                "hmac-sha256"
            } else {
                "sha256"
            }
            .into(),
            encryption,
        };
        store.put(
            "config",
            &serde_json::to_vec_pretty(&config).expect("config serializes"),
        )?;
        store.flush()?;
        Ok(Repository {
            store,
            config,
            keys,
            chunk_index_dir: None,
        })
    }

    /// Opens an existing repository, checking its version and the key.
    pub fn open(store: Arc<dyn Store>, secret: Option<&[u8]>) -> Result<Self, RepoError> {
        let bytes = match store.get("config") {
            Ok(b) => b,
            Err(StoreError::NotFound(_)) => {
                return Err(RepoError::NotARepository(store.describe()));
            }
            Err(e) => return Err(e.into()),
        };
        let config: RepoConfig =
            serde_json::from_slice(&bytes).map_err(|e| RepoError::BadConfig(e.to_string()))?;
        if config.format != "coffer-repository" {
            return Err(RepoError::BadConfig(format!("format `{}`", config.format)));
        }
        if config.version > FORMAT_VERSION {
            return Err(RepoError::NewerFormat {
                found: config.version,
            });
        }
        let keys = match (&config.encryption, secret) {
            (None, None) => None,
            (None, Some(_)) => return Err(RepoError::NotEncrypted),
            (Some(_), None) => return Err(RepoError::KeyRequired),
            (Some(enc), Some(secret)) => {
                let keys = derive_keys(secret, enc)?;
                if hex::encode(Keys::mac(&keys.manifest_key, KEY_CHECK_TEXT)) != enc.key_check {
                    return Err(RepoError::WrongKey);
                }
                Some(keys)
            }
        };
        Ok(Repository {
            store,
            config,
            keys,
            chunk_index_dir: None,
        })
    }

    pub fn store(&self) -> &dyn Store {
        self.store.as_ref()
    }

    pub fn store_arc(&self) -> Arc<dyn Store> {
        self.store.clone()
    }

    pub fn keys(&self) -> Option<&Keys> {
        self.keys.as_ref()
    }

    pub fn describe(&self) -> String {
        self.store.describe()
    }

    /// Every chunk in the store with its stored size and age.
    pub fn list_chunks(&self) -> Result<HashMap<ChunkDigest, (u64, SystemTime)>, RepoError> {
        Ok(self
            .store
            .list("chunks/")?
            .into_iter()
            // A blob shorter than its header is what a power loss leaves of a
            // chunk renamed into place before its data reached the disk:
            // never deduplicate against it (gc deletes it).
            .filter(|o| o.size_bytes >= chunk::MIN_BLOB_BYTES)
            .filter_map(|o| ChunkDigest::from_key(&o.key).map(|d| (d, (o.size_bytes, o.modified))))
            .collect())
    }

    /// Reads and decodes one chunk.
    pub fn read_chunk(
        &self,
        codec: &mut Codec,
        digest: &ChunkDigest,
    ) -> Result<Vec<u8>, RepoError> {
        let blob = self.store.get(&digest.key())?;
        codec
            .decode(&blob, digest, self.keys())
            .map_err(|source| RepoError::Chunk {
                digest: digest.to_hex(),
                source,
            })
    }

    /// A file kept with a point (its .vmx, say), by name.
    pub fn read_file(&self, m: &Manifest, name: &str) -> Result<Vec<u8>, RepoError> {
        let (_, id) = m.files.iter().find(|(n, _)| n == name).ok_or_else(|| {
            RepoError::Invalid(format!("point {} has no file {name}", m.point_id))
        })?;
        let d = ChunkDigest::from_hex(id)
            .ok_or_else(|| RepoError::Invalid(format!("point {}: bad file id {id}", m.point_id)))?;
        self.read_chunk(&mut Codec::new(1), &d)
    }

    /// Every committed point (those with a manifest), sorted. Manifests
    /// under names that are not valid ids are left out; `list_points_checked`
    /// tells which.
    pub fn list_points(&self) -> Result<Vec<PointRef>, RepoError> {
        Ok(self.list_points_checked()?.0)
    }

    /// Every committed point, and the keys of manifests found under names
    /// that are not valid ids (planted or damaged: never read, never used
    /// to build a key).
    pub fn list_points_checked(&self) -> Result<(Vec<PointRef>, Vec<String>), RepoError> {
        let mut out = Vec::new();
        let mut refused = Vec::new();
        for o in self.store.list("points/")? {
            if !o.key.ends_with("/manifest.json") {
                continue;
            }
            let parts: Vec<&str> = o.key.split('/').collect();
            match parts.as_slice() {
                ["points", vm, point, "manifest.json"]
                    if VmUuid::parse(vm).is_ok() && PointId::parse(point).is_ok() =>
                {
                    out.push(PointRef {
                        vm_uuid: vm.to_string(),
                        point_id: point.to_string(),
                    })
                }
                _ => refused.push(o.key),
            }
        }
        out.sort();
        refused.sort();
        Ok((out, refused))
    }

    /// Finds a point by id (unique across VMs).
    pub fn find_point(&self, point_id: &str) -> Result<PointRef, RepoError> {
        self.list_points()?
            .into_iter()
            .find(|p| p.point_id == point_id)
            .ok_or_else(|| RepoError::PointNotFound(point_id.to_string()))
    }

    fn manifest_mac(&self, m: &Manifest) -> Option<String> {
        let keys = self.keys.as_ref()?;
        let mut unsigned = m.clone();
        unsigned.mac = None;
        let bytes = serde_json::to_vec(&unsigned).expect("manifest serializes");
        Some(hex::encode(Keys::mac(&keys.manifest_key, &bytes)))
    }

    /// Reads a point's manifest and checks it names the point it was read
    /// from, and that each disk's `index_key` is the key derived from the
    /// point's ids (a manifest cannot point a reader, or a prune, elsewhere).
    pub fn read_manifest(&self, p: &PointRef) -> Result<Manifest, RepoError> {
        let (vm, point) = p.ids()?;
        let key = manifest::manifest_key(&vm, &point);
        let bytes = self.store.get(&key)?;
        let m: Manifest = serde_json::from_slice(&bytes).map_err(|e| RepoError::BadManifest {
            key: key.clone(),
            reason: e.to_string(),
        })?;
        if m.format > manifest::FORMAT {
            return Err(RepoError::BadManifest {
                key,
                reason: format!("format {} is newer than this coffer", m.format),
            });
        }
        if self.keys.is_some() && m.mac != self.manifest_mac(&m) {
            return Err(RepoError::BadManifest {
                key,
                reason: "authentication failed (tampered or foreign manifest)".into(),
            });
        }
        check_manifest_keys(&m).map_err(|reason| RepoError::BadManifest {
            key: key.clone(),
            reason,
        })?;
        if m.vm.uuid != p.vm_uuid || m.point_id != p.point_id {
            return Err(RepoError::BadManifest {
                key,
                reason: format!(
                    "it names point {} of VM {:?} but was found at point {} of VM {}",
                    m.point_id, m.vm.uuid, p.point_id, p.vm_uuid
                ),
            });
        }
        Ok(m)
    }

    /// Writes the commit point of a point: everything before it is made
    /// durable first.
    pub fn commit_manifest(&self, mut m: Manifest) -> Result<Manifest, RepoError> {
        let key = m.key()?;
        tracing::debug!(repository = %self.describe(), point = %m.point_id, vm = %m.vm.name, "committing a point");
        check_manifest_keys(&m).map_err(|reason| RepoError::BadManifest {
            key: key.clone(),
            reason,
        })?;
        m.mac = None;
        m.mac = self.manifest_mac(&m);
        self.store.flush()?;
        self.store.put(
            &key,
            &serde_json::to_vec_pretty(&m).expect("manifest serializes"),
        )?;
        self.store.flush()?;
        Ok(m)
    }

    /// Reads a disk's index (at the key derived from the point's ids) and
    /// checks it against the manifest.
    pub fn read_index(
        &self,
        m: &Manifest,
        disk: &manifest::DiskEntry,
    ) -> Result<DiskIndex, RepoError> {
        let key = m.index_key_of(disk)?;
        let bytes = self.store.get(&key)?;
        if hex::encode(Sha256::digest(&bytes)) != disk.index_sha256 {
            return Err(RepoError::Index {
                key,
                source: IndexError::BadDigest,
            });
        }
        DiskIndex::decode(&bytes).map_err(|source| RepoError::Index { key, source })
    }

    /// Stores an index, returning its SHA-256.
    pub fn write_index(&self, key: &str, index: &DiskIndex) -> Result<String, RepoError> {
        let bytes = index.encode();
        self.store.put(key, &bytes)?;
        Ok(hex::encode(Sha256::digest(&bytes)))
    }
}

/// What a manifest says about keys must match what its ids derive: valid
/// ids, one entry per device key, and each `index_key` equal to the derived
/// key (the field is kept for older readers, never trusted).
fn check_manifest_keys(m: &Manifest) -> Result<(), String> {
    let (vm, point) = m.ids().map_err(|e| e.to_string())?;
    let mut seen = std::collections::HashSet::new();
    for d in &m.disks {
        if !seen.insert(d.device_key) {
            return Err(format!("device key {} is listed twice", d.device_key));
        }
        let derived = manifest::index_key(&vm, &point, d.device_key);
        if d.index_key != derived {
            return Err(format!(
                "disk {} names its index {:?}, not {derived}",
                d.device_key, d.index_key
            ));
        }
    }
    Ok(())
}
