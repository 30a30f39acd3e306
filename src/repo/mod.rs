//! The repository: one per storage tier, a content-addressed store of
//! restore points modelled on Proxmox Backup Server's fixed index. This part
//! owns the on-disk format (`docs/repository-format.md`), writing points
//! (full and incremental), reading them back, and keeping the store sound
//! (verify, gc, copy, prune). It knows nothing of ESXi: its input is a
//! `DiskReader` and, for an incremental, the parent point and the changed
//! byte ranges. It never decides what to back up or delete; the planner does.
//!
//! Layout: `config`, chunks either one object each (`chunks/ab/cd/<hex>`)
//! or many to a pack (`packs/ab/<hex>`, named by `pack-index/<hex>`: see
//! `pack`), `points/<vm-uuid>/<point-id>/` (`disk-<key>.index` files, then
//! `manifest.json` written last).

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
pub mod pack;
pub mod parallel;
mod rest;
pub mod restore;
pub mod s3;
pub mod store;
pub mod stream_vmdk;

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use chunk::{ChunkDigest, ChunkError, Codec, Keys};
use ids::{IdError, PointId, VmUuid};
use index::{DiskIndex, IndexError};
use manifest::Manifest;
use pack::PackMap;
use store::{Store, StoreError};

/// The newest repository format version this build reads. Version 2 is a
/// repository whose chunks are stored in packs; one without packs is still
/// written as version 1, which older builds read.
pub const FORMAT_VERSION: u32 = 2;

/// The version a repository with (or without) packs is written as.
fn version_for(packs: &Option<PackConfig>) -> u32 {
    if packs.is_some() { 2 } else { 1 }
}

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
    /// Chunks are stored in packs (version 2); absent: one object each.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub packs: Option<PackConfig>,
}

/// How a repository stores chunks in packs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PackConfig {
    /// The size a pack is uploaded at (the last pack of a run is smaller).
    pub target_bytes: u64,
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
    /// The pack writer and map, shared by clones; `None` without packs.
    packs: Option<Arc<Packs>>,
    /// The share of a pack's bytes that must be unreferenced before gc
    /// repacks it.
    repack_waste: f64,
}

/// gc repacks a pack once this share of its bytes is unreferenced, unless
/// the tier says otherwise.
pub const DEFAULT_REPACK_WASTE: f64 = 0.25;

/// A repository's packs: the writer, and the map of where chunks are
/// (read on first use).
struct Packs {
    packer: pack::Packer,
    map: RwLock<Option<PackMap>>,
}

impl Packs {
    fn new(cfg: &PackConfig) -> Arc<Packs> {
        Arc::new(Packs {
            packer: pack::Packer::new(cfg.target_bytes),
            map: RwLock::new(None),
        })
    }
}

impl std::fmt::Debug for Repository {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Repository({})", self.store.describe())
    }
}

const KEY_CHECK_TEXT: &[u8] = b"coffer key check v1";

/// How many unneeded bytes one ranged read of a pack may span to save a
/// request (a quarter of the largest chunk a backup writes by default).
const READ_GAP: u64 = 64 * 1024;

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
        Self::init_with(store, secret, None)
    }

    /// `init`, storing chunks in packs of `packs` (format version 2).
    pub fn init_with(
        store: Arc<dyn Store>,
        secret: Option<&[u8]>,
        packs: Option<PackConfig>,
    ) -> Result<Self, RepoError> {
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
            version: version_for(&packs),
            id: hex::encode(id),
            created: chrono::Utc::now().to_rfc3339(),
            chunk_id: if keys.is_some() {
                "hmac-sha256"
            } else {
                "sha256"
            }
            .into(),
            encryption,
            packs,
        };
        store.put(
            "config",
            &serde_json::to_vec_pretty(&config).expect("config serializes"),
        )?;
        store.flush()?;
        Ok(Repository {
            packs: config.packs.as_ref().map(Packs::new),
            store,
            config,
            keys,
            chunk_index_dir: None,
            repack_waste: DEFAULT_REPACK_WASTE,
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
        if (config.version >= 2) != config.packs.is_some() {
            return Err(RepoError::BadConfig(format!(
                "version {} {} packs",
                config.version,
                if config.packs.is_some() {
                    "with"
                } else {
                    "without"
                }
            )));
        }
        Ok(Repository {
            packs: config.packs.as_ref().map(Packs::new),
            store,
            config,
            keys,
            chunk_index_dir: None,
            repack_waste: DEFAULT_REPACK_WASTE,
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

    /// Whether chunks are stored in packs.
    pub fn has_packs(&self) -> bool {
        self.packs.is_some()
    }

    /// Runs `f` on the pack map, reading it first when this repository has
    /// not yet. `None` without packs.
    pub fn with_pack_map<T>(&self, f: impl FnOnce(&PackMap) -> T) -> Result<Option<T>, RepoError> {
        let Some(p) = &self.packs else {
            return Ok(None);
        };
        if let Some(map) = p.map.read().unwrap().as_ref() {
            return Ok(Some(f(map)));
        }
        let mut w = p.map.write().unwrap();
        if w.is_none() {
            *w = Some(PackMap::load(self.store.as_ref())?);
        }
        Ok(Some(f(w.as_ref().expect("just loaded"))))
    }

    /// Reads the pack map anew from the store (for gc, verify and anything
    /// that must see other writers' packs and removals).
    pub fn reload_pack_map(&self) -> Result<(), RepoError> {
        if let Some(p) = &self.packs {
            let map = PackMap::load(self.store.as_ref())?;
            *p.map.write().unwrap() = Some(map);
        }
        Ok(())
    }

    /// Learns of index objects written since the map was read (another
    /// writer's packs, a gc's repacks): one listing, then only new objects.
    fn refresh_pack_map(&self) -> Result<(), RepoError> {
        let Some(p) = &self.packs else {
            return Ok(());
        };
        let mut w = p.map.write().unwrap();
        match w.as_mut() {
            None => *w = Some(PackMap::load(self.store.as_ref())?),
            Some(map) => map.learn_new_indexes(self.store.as_ref())?,
        }
        Ok(())
    }

    /// Every chunk in the store with its stored size and age (a chunk in a
    /// pack: its blob's size, the pack's age).
    pub fn list_chunks(&self) -> Result<HashMap<ChunkDigest, (u64, SystemTime)>, RepoError> {
        let mut out: HashMap<ChunkDigest, (u64, SystemTime)> = self
            .store
            .list(chunk::CHUNKS_PREFIX)?
            .into_iter()
            // A blob shorter than its header is what a power loss leaves of a
            // chunk renamed into place before its data reached the disk:
            // never deduplicate against it (gc deletes it).
            .filter(|o| o.size_bytes >= chunk::MIN_BLOB_BYTES)
            .filter_map(|o| ChunkDigest::from_key(&o.key).map(|d| (d, (o.size_bytes, o.modified))))
            .collect();
        self.with_pack_map(|map| {
            for (_, info) in map.packs.iter() {
                for e in &info.entries {
                    out.insert(e.digest, (e.length as u64, info.modified));
                }
            }
        })?;
        Ok(out)
    }

    /// What the tier's objects take, from one listing of each prefix.
    pub fn stored_bytes(&self) -> Result<u64, RepoError> {
        let mut total = 0;
        for prefix in [
            chunk::CHUNKS_PREFIX,
            pack::PACKS_PREFIX,
            pack::PACK_INDEX_PREFIX,
            "points/",
        ] {
            total += self
                .store
                .list(prefix)?
                .iter()
                .map(|o| o.size_bytes)
                .sum::<u64>();
        }
        Ok(total)
    }

    /// Fetches the blob of `d` and passes it through `check`: from each
    /// place a pack map knows (the first that checks wins), then from its
    /// own object (a repository without packs, or chunks stored before a
    /// migration). A chunk the map does not know makes it learn of new
    /// index objects once before it gives up on packs.
    fn fetch_blob<T>(
        &self,
        d: &ChunkDigest,
        mut check: impl FnMut(&[u8]) -> Result<T, ChunkError>,
    ) -> Result<T, RepoError> {
        let chunk_err = |source| RepoError::Chunk {
            digest: d.to_hex(),
            source,
        };
        if self.packs.is_some() {
            for attempt in 0..2 {
                let locations = self.with_pack_map(|m| m.locate(d))?.unwrap_or_default();
                let mut failed: Option<RepoError> = None;
                for loc in &locations {
                    match loc.read(self.store.as_ref()) {
                        Ok(blob) => match check(&blob) {
                            Ok(v) => return Ok(v),
                            Err(e) => failed = Some(chunk_err(e)),
                        },
                        // Repacked or removed since the map was read.
                        Err(StoreError::NotFound(_)) => {}
                        Err(e) => failed = Some(e.into()),
                    }
                }
                if let Some(e) = failed {
                    return Err(e);
                }
                if attempt == 0 {
                    self.refresh_pack_map()?;
                }
            }
        }
        let blob = self.store.get(&d.key())?;
        check(&blob).map_err(chunk_err)
    }

    /// The stored blob of a chunk (as `Codec::encode` made it), its CRC
    /// checked but its content unproven: for moving a chunk whole (a copy,
    /// a tape). `Codec::decode` proves it.
    pub fn chunk_blob(&self, digest: &ChunkDigest) -> Result<Vec<u8>, RepoError> {
        self.fetch_blob(digest, |b| Codec::check_crc(b).map(|()| b.to_vec()))
    }

    /// Stores the blob of a chunk. It is readable and may be referenced
    /// once `finish_chunks` has returned (a manifest commit calls it).
    pub fn put_chunk_blob(&self, digest: &ChunkDigest, blob: &[u8]) -> Result<(), RepoError> {
        match &self.packs {
            Some(p) => Ok(p.packer.put(self.store.as_ref(), digest, blob)?),
            None => Ok(self.store.put(&digest.key(), blob)?),
        }
    }

    /// Makes every chunk stored so far readable: called before anything
    /// that references them (an index, a manifest) is committed. With
    /// packs: the open pack is uploaded and the packs are named by an index
    /// object.
    pub fn finish_chunks(&self) -> Result<(), RepoError> {
        self.finish_packs().map(drop)
    }

    /// `finish_chunks`, answering the packs it named (none without packs).
    pub fn finish_packs(&self) -> Result<Vec<pack::PackRecord>, RepoError> {
        let Some(p) = &self.packs else {
            return Ok(Vec::new());
        };
        let records = p.packer.finish(self.store.as_ref())?;
        if let Some(map) = p.map.write().unwrap().as_mut() {
            let now = SystemTime::now();
            for r in &records {
                map.add(r.id, r.size, now, r.entries.clone(), true);
            }
        }
        Ok(records)
    }

    /// Writes packs of `target_bytes` (a tier's `pack_size`) and repacks at
    /// `repack_waste` (a share, 0..1), where the tier sets them; the
    /// repository's own settings otherwise. Call before the first write.
    pub fn with_pack_tuning(
        mut self,
        target_bytes: Option<u64>,
        repack_waste: Option<f64>,
    ) -> Self {
        if let (Some(t), Some(_)) = (target_bytes, &self.packs) {
            self.packs = Some(Packs::new(&PackConfig { target_bytes: t }));
        }
        if let Some(w) = repack_waste {
            self.repack_waste = w;
        }
        self
    }

    /// This repository as one whose chunks go into packs of `cfg` (a
    /// migration's writer).
    fn packed(mut self, cfg: PackConfig) -> Self {
        self.packs = Some(Packs::new(&cfg));
        self.config.packs = Some(cfg);
        self
    }

    /// The share of a pack's bytes that must be unreferenced before gc
    /// repacks it.
    pub fn repack_waste(&self) -> f64 {
        self.repack_waste
    }

    /// Reads and decodes one chunk.
    pub fn read_chunk(
        &self,
        codec: &mut Codec,
        digest: &ChunkDigest,
    ) -> Result<Vec<u8>, RepoError> {
        self.fetch_blob(digest, |blob| codec.decode(blob, digest, self.keys()))
    }

    /// Reads and decodes several chunks, with one ranged read for blobs that
    /// lie close together in a pack (a restore's run of a disk). Any chunk
    /// that such a read cannot give is read on its own.
    pub fn read_chunks(
        &self,
        codec: &mut Codec,
        digests: &[ChunkDigest],
    ) -> Result<Vec<Vec<u8>>, RepoError> {
        let mut out: Vec<Option<Vec<u8>>> = vec![None; digests.len()];
        if self.packs.is_some() && digests.len() > 1 {
            let wanted: Vec<(usize, pack::Location)> = self
                .with_pack_map(|m| {
                    digests
                        .iter()
                        .enumerate()
                        .filter_map(|(i, d)| m.locate(d).first().map(|l| (i, *l)))
                        .collect()
                })?
                .unwrap_or_default();
            for read in pack::coalesce(&wanted, READ_GAP) {
                if read.members.len() < 2 {
                    continue;
                }
                let Ok(bytes) = self.store.get_range(&read.pack.key(), read.span) else {
                    continue;
                };
                for (i, r) in read.members {
                    if let Ok(plain) = codec.decode(&bytes[r], &digests[i], self.keys()) {
                        out[i] = Some(plain);
                    }
                }
            }
        }
        digests
            .iter()
            .zip(out)
            .map(|(d, got)| match got {
                Some(plain) => Ok(plain),
                None => self.read_chunk(codec, d),
            })
            .collect()
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
        self.points_under("points/")
    }

    /// The committed points of the VM `vm_uuid`, oldest first: one
    /// listing of its directory, not of the whole repository.
    pub fn points_of_vm(&self, vm_uuid: &str) -> Result<Vec<PointRef>, RepoError> {
        let vm = VmUuid::parse(vm_uuid)?;
        Ok(self.points_under(&format!("points/{vm}/"))?.0)
    }

    /// Every committed point, each with its manifest as the listing saw it
    /// ([`store::ObjectMeta::fingerprint`]): what a refresh compares to know
    /// which manifests were written since it last read them.
    pub fn list_points_seen(&self) -> Result<Vec<(PointRef, String)>, RepoError> {
        Ok(self
            .manifests_under("points/", store::ObjectMeta::fingerprint)?
            .0)
    }

    /// The points whose manifests are listed under `prefix`, and the keys
    /// of manifests there under names that are not valid ids, both sorted.
    fn points_under(&self, prefix: &str) -> Result<(Vec<PointRef>, Vec<String>), RepoError> {
        let (found, refused) = self.manifests_under(prefix, |_| ())?;
        Ok((found.into_iter().map(|(p, ())| p).collect(), refused))
    }

    /// [`Repository::points_under`], each point with what `with` takes
    /// from its manifest's listing.
    #[allow(clippy::type_complexity)]
    fn manifests_under<T>(
        &self,
        prefix: &str,
        with: impl Fn(&store::ObjectMeta) -> T,
    ) -> Result<(Vec<(PointRef, T)>, Vec<String>), RepoError> {
        let mut out = Vec::new();
        let mut refused = Vec::new();
        for o in self.store.list(prefix)? {
            if !o.key.ends_with("/manifest.json") {
                continue;
            }
            let parts: Vec<&str> = o.key.split('/').collect();
            match parts.as_slice() {
                ["points", vm, point, "manifest.json"]
                    if VmUuid::parse(vm).is_ok() && PointId::parse(point).is_ok() =>
                {
                    let p = PointRef {
                        vm_uuid: vm.to_string(),
                        point_id: point.to_string(),
                    };
                    out.push((p, with(&o)))
                }
                _ => refused.push(o.key),
            }
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
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
        self.finish_chunks()?;
        self.check_nothing_lost(&m)?;
        self.store.flush()?;
        self.store.put(
            &key,
            &serde_json::to_vec_pretty(&m).expect("manifest serializes"),
        )?;
        self.store.flush()?;
        Ok(m)
    }

    /// Refuses to commit a point that references a chunk whose pack failed
    /// to upload (the writer's error may have reached another operation
    /// sharing the pack). Costs nothing unless an upload has failed.
    fn check_nothing_lost(&self, m: &Manifest) -> Result<(), RepoError> {
        let Some(p) = &self.packs else {
            return Ok(());
        };
        if !p.packer.has_lost() {
            return Ok(());
        }
        let mut needed = m.file_digests();
        for d in &m.disks {
            needed.extend(self.read_index(m, d)?.chunks);
        }
        match p.packer.lost_among(&needed) {
            None => Ok(()),
            Some(d) => Err(RepoError::Invalid(format!(
                "point {} was not committed: chunk {} was in a pack whose upload failed",
                m.point_id,
                d.to_hex()
            ))),
        }
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
