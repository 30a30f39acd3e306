//! Opening storage: the repository behind each tier of a policy (with its
//! bandwidth throttle, its encryption key and its chunk index under the
//! state directory), or a repository named directly (a directory or an
//! `s3://` bucket). Two tiers that turn out to be one repository are refused
//! together, before anything lists, prunes or writes either.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result, anyhow, bail};

use crate::policy::Config;
use crate::policy::model::{SecretRef, Tier, TierBackend};
use crate::repo::Repository;
use crate::repo::azure::{AzureLocation, AzureStore};
use crate::repo::local::LocalStore;
use crate::repo::s3::{LockMode, S3Location, S3Store};
use crate::repo::store::Store;
use crate::run::runlock::MaintenanceLock;

/// A repository as an operator names it: a tier of the policy directory,
/// or a location given directly.
#[derive(Debug, Clone)]
pub enum RepoSpec {
    Tier(String),
    Location {
        /// A directory, or `s3://BUCKET/PREFIX`.
        spec: String,
        /// An S3-compatible server's endpoint URL.
        endpoint: Option<String>,
        region: Option<String>,
        /// The encryption passphrase or key.
        secret: Option<SecretRef>,
    },
}

/// Which repository, as the options of `coffer repo …` and `backup-image`
/// name it: a tier of the policy directory, a directory, or a bucket.
#[derive(Debug, Clone, clap::Args)]
pub struct RepoChoice {
    /// A tier of the policy directory.
    #[arg(long, conflicts_with = "repo")]
    pub tier: Option<String>,
    /// A repository directory, `s3://BUCKET/PREFIX` or
    /// `azure://ACCOUNT/CONTAINER/PREFIX` (instead of --tier). S3
    /// credentials come from AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY,
    /// Azure's from AZURE_STORAGE_ACCOUNT_KEY or AZURE_STORAGE_SAS_KEY.
    #[arg(long)]
    pub repo: Option<String>,
    /// With an s3:// --repo: endpoint URL of an S3-compatible server; with
    /// an azure:// --repo: the account's blob endpoint (Azurite:
    /// `http://127.0.0.1:10000/devstoreaccount1`).
    #[arg(long, requires = "repo")]
    pub endpoint: Option<String>,
    /// With an s3:// --repo: region (default: AWS_REGION, else us-east-1).
    #[arg(long, requires = "repo")]
    pub region: Option<String>,
    /// With --repo: environment variable holding the encryption passphrase.
    #[arg(long, requires = "repo")]
    pub key_env: Option<String>,
    /// With --repo: file holding the encryption passphrase or key.
    #[arg(long, requires = "repo", conflicts_with = "key_env")]
    pub key_file: Option<PathBuf>,
}

impl RepoChoice {
    /// The repository chosen.
    pub fn spec(&self) -> Result<RepoSpec> {
        let secret = (self.key_env.clone().map(SecretRef::Env))
            .or_else(|| self.key_file.clone().map(SecretRef::File));
        let (tier, repo) = (self.tier.as_deref(), self.repo.as_deref());
        RepoSpec::chosen(
            tier,
            repo,
            self.endpoint.as_deref(),
            self.region.as_deref(),
            secret,
        )
    }
}

/// What `RepoSpec::resolve` finds: the store, its key, what it is called,
/// and where a policy tier keeps its chunk index.
struct Resolved {
    store: Arc<dyn Store>,
    secret: Option<SecretRef>,
    what: String,
    index_dir: Option<PathBuf>,
    /// How a repository created there stores chunks, and the tuning an
    /// open one gets (`pack_size`, `repack_waste`).
    packs: Option<u64>,
    repack_waste: Option<f64>,
}

impl RepoSpec {
    /// A location when one is given, with its server and key, else the
    /// tier named; with neither, how to name one.
    pub fn chosen(
        tier: Option<&str>,
        location: Option<&str>,
        endpoint: Option<&str>,
        region: Option<&str>,
        secret: Option<SecretRef>,
    ) -> Result<RepoSpec> {
        match (location, tier) {
            (Some(spec), _) => Ok(RepoSpec::Location {
                spec: spec.to_string(),
                endpoint: endpoint.map(str::to_string),
                region: region.map(str::to_string),
                secret,
            }),
            (None, Some(name)) => Ok(RepoSpec::Tier(name.to_string())),
            (None, None) => bail!(
                "name the repository with --tier NAME (from the policy directory) or --repo DIR|s3://BUCKET/PREFIX"
            ),
        }
    }

    /// The policies opening it needs: those `load` reads for a tier, none
    /// for a location.
    pub fn policies(&self, load: impl FnOnce() -> Result<Config>) -> Result<Option<Config>> {
        match self {
            RepoSpec::Tier(_) => load().map(Some),
            RepoSpec::Location { .. } => Ok(None),
        }
    }

    /// Opens it, with the policies `load` reads when it is a tier.
    pub fn open_with(&self, load: impl FnOnce() -> Result<Config>) -> Result<Repository> {
        self.open(self.policies(load)?.as_ref())
    }

    /// `config` is needed (and only read) for a tier.
    fn resolve(&self, config: Option<&Config>) -> Result<Resolved> {
        match self {
            RepoSpec::Location {
                spec,
                endpoint,
                region,
                secret,
            } => Ok(Resolved {
                store: location_store(spec, endpoint.as_deref(), region.as_deref())?,
                secret: secret.clone(),
                what: spec.clone(),
                index_dir: None,
                // Object storage packs by default, as a tier does.
                packs: (spec.starts_with("s3://") || spec.starts_with("azure://"))
                    .then_some(crate::repo::pack::DEFAULT_TARGET_BYTES),
                repack_waste: None,
            }),
            RepoSpec::Tier(name) => {
                let config = config.ok_or_else(|| anyhow!("tier `{name}` needs the policies"))?;
                let tier = tier_of(config, name)?;
                Ok(Resolved {
                    store: tier_store(tier, &config.settings.state_dir)?,
                    secret: tier.encryption_key.clone(),
                    what: format!("tier `{name}`"),
                    index_dir: Some(config.settings.state_dir.join("chunk-index")),
                    packs: tier.pack_size,
                    repack_waste: Some(tier.repack_waste),
                })
            }
        }
    }

    /// Opens the repository, and answers the policies and the tier's name
    /// when it is a tape tier (whose points are staged before they are
    /// read).
    pub fn open_tape_aware(
        &self,
        load: impl FnOnce() -> Result<Config>,
    ) -> Result<(Repository, Option<TapeTier>)> {
        self.tape_aware(self.policies(load)?)
    }

    /// Opens the repository for a gc or a prune (`what`), as
    /// [`RepoSpec::open_tape_aware`] does. A tier is opened under the
    /// catalog's maintenance lock, held exclusively until the lock
    /// returned is dropped: with a shared catalog, no worker on another
    /// machine writes a backup or a copy meanwhile, as for `apply`'s gc
    /// and prunes. A bare location has no catalog, hence no lock.
    pub fn open_for_maintenance(
        &self,
        load: impl FnOnce() -> Result<Config>,
        what: &str,
    ) -> Result<(Repository, Option<TapeTier>, Option<MaintenanceLock>)> {
        let config = self.policies(load)?;
        let lock = (config.as_ref())
            .map(|c| MaintenanceLock::take(&c.settings, true, what))
            .transpose()?;
        let (repo, tape) = self.tape_aware(config)?;
        Ok((repo, tape, lock))
    }

    fn tape_aware(&self, config: Option<Config>) -> Result<(Repository, Option<TapeTier>)> {
        let repo = self.open(config.as_ref())?;
        let tape = match (config, self) {
            (Some(config), RepoSpec::Tier(tier))
                if config.tiers.get(tier).is_some_and(|t| t.is_tape()) =>
            {
                Some(TapeTier {
                    config,
                    tier: tier.clone(),
                })
            }
            _ => None,
        };
        Ok((repo, tape))
    }

    /// Opens the repository to read `point` from: for a tape tier, with a
    /// staging copy of the point read off tape.
    pub fn open_for_point(
        &self,
        load: impl FnOnce() -> Result<Config>,
        point: &str,
    ) -> Result<(Repository, Option<Staged>)> {
        let (repo, tape) = self.open_tape_aware(load)?;
        let Some(t) = tape else {
            return Ok((repo, None));
        };
        let m = repo.read_manifest(&repo.find_point(point)?)?;
        let staged = stage_from_tape(&t.config, &t.tier, &repo, &m)?;
        Ok((repo, Some(staged)))
    }

    /// Opens the repository. A tier of the policy keeps its chunk index in
    /// the state dir; a bare location in the user's cache dir.
    pub fn open(&self, config: Option<&Config>) -> Result<Repository> {
        let r = self.resolve(config)?;
        let secret = read_secret(r.secret.as_ref())?;
        let repo = Repository::open(r.store, secret.as_deref().map(str::as_bytes))
            .with_context(|| format!("opening the repository of {}", r.what))?
            .with_pack_tuning(r.packs, r.repack_waste);
        Ok(match r.index_dir {
            Some(dir) => repo.with_chunk_index_dir(dir),
            None => repo,
        })
    }

    /// Creates an empty repository there; answers it and whether it is
    /// encrypted. `pack_size` overrides where the chunks go: packs of that
    /// size (`policy::units::parse_pack_size` checks it), or (`Some(None)`)
    /// one object each.
    pub fn init(
        &self,
        config: Option<&Config>,
        pack_size: Option<Option<u64>>,
    ) -> Result<(Repository, bool)> {
        let mut r = self.resolve(config)?;
        if let Some(p) = pack_size {
            r.packs = p;
        }
        let secret = read_secret(r.secret.as_ref())?;
        let repo = Repository::init_with(
            r.store,
            secret.as_deref().map(str::as_bytes),
            pack_config(r.packs),
        )
        .with_context(|| format!("creating the repository of {}", r.what))?;
        Ok((repo, secret.is_some()))
    }
}

fn tier_of<'c>(config: &'c Config, name: &str) -> Result<&'c Tier> {
    config.tiers.get(name).ok_or_else(|| {
        let names: Vec<&str> = config.tiers.keys().map(String::as_str).collect();
        anyhow!("{}", crate::policy::diag::no_such("tier", name, &names))
    })
}

/// A tape tier's settings, its catalog directory resolved; `None` for
/// other tiers.
fn tape_spec(t: &Tier, state_dir: &std::path::Path) -> Option<crate::tape::tier::TapeSpec> {
    let TierBackend::Tape {
        hardware,
        pool,
        catalog,
    } = &t.backend
    else {
        return None;
    };
    Some(crate::tape::tier::TapeSpec {
        tier: t.name.clone(),
        pool: pool.clone(),
        hardware: hardware.clone(),
        catalog: catalog
            .clone()
            .unwrap_or_else(|| crate::tape::tier::default_catalog(state_dir, &t.name)),
    })
}

/// The media catalog and drive of a tape tier; `None` for other tiers.
pub fn tape_store(config: &Config, tier: &str) -> Result<Option<crate::tape::tier::TapeStore>> {
    let Some(spec) = tape_spec(tier_of(config, tier)?, &config.settings.state_dir) else {
        return Ok(None);
    };
    let store = crate::tape::tier::TapeStore::new(spec)
        .with_context(|| format!("opening tape tier `{tier}`"))?;
    Ok(Some(store))
}

/// The media catalog and drive of tape tier `tier`; an error for other
/// tiers.
pub fn tape_tier(config: &Config, tier: &str) -> Result<crate::tape::tier::TapeStore> {
    tape_store(config, tier)?.ok_or_else(|| anyhow!("tier `{tier}` is not a tape tier"))
}

/// Frees the media of a tape tier none of whose objects a kept point
/// needs (after prunes and gc); `None` for other tiers.
pub fn free_tape_media(config: &Config, tier: &str) -> Result<Option<Vec<String>>> {
    let Some(tape) = tape_store(config, tier)? else {
        return Ok(None);
    };
    Ok(Some(tape.free_media()?))
}

/// The store behind a tier of the policy (a tape tier's catalog is in
/// `state_dir` unless the tier names one).
pub fn tier_store(tier: &Tier, state_dir: &std::path::Path) -> Result<Arc<dyn Store>> {
    let name = &tier.name;
    match &tier.backend {
        TierBackend::Tape { .. } => {
            let spec = tape_spec(tier, state_dir).expect("a tape tier");
            let store = crate::tape::tier::TapeStore::new(spec)
                .with_context(|| format!("opening tape tier `{name}`"))?;
            Ok(Arc::new(store))
        }
        TierBackend::Local { path } => {
            let store = LocalStore::new(path)
                .with_context(|| format!("opening tier `{name}` at {}", path.display()))?;
            Ok(Arc::new(store))
        }
        TierBackend::S3 {
            bucket,
            prefix,
            endpoint,
            region,
            access_key,
            secret_key,
            storage_class,
        } => {
            let mut loc = S3Location::new(bucket);
            loc.storage_class = storage_class.clone();
            loc.prefix = prefix.trim_matches('/').to_string();
            loc.endpoint = endpoint.clone();
            loc.region = region.clone();
            let read = |s: &Option<SecretRef>, what: &str| {
                s.as_ref()
                    .map(|s| s.read().map_err(|e| anyhow!("tier `{name}`: {what}: {e}")))
                    .transpose()
            };
            loc.access_key = read(access_key, "access_key")?;
            loc.secret_key = read(secret_key, "secret_key")?;
            loc.lock = tier.immutable_for.map(|d| (LockMode::Compliance, d));
            let store = S3Store::new(loc).with_context(|| format!("opening tier `{name}`"))?;
            Ok(Arc::new(store))
        }
        TierBackend::Azure {
            account,
            container,
            prefix,
            endpoint,
            access_key,
            sas,
            storage_class,
        } => {
            let mut loc = AzureLocation::new(account, container);
            loc.prefix = prefix.trim_matches('/').to_string();
            loc.endpoint = endpoint.clone();
            loc.access_tier = storage_class.clone();
            let read = |s: &Option<SecretRef>, what: &str| {
                s.as_ref()
                    .map(|s| s.read().map_err(|e| anyhow!("tier `{name}`: {what}: {e}")))
                    .transpose()
            };
            loc.access_key = read(access_key, "access_key")?;
            loc.sas = read(sas, "sas")?;
            loc.immutable_for = tier.immutable_for;
            let store = AzureStore::new(loc).with_context(|| format!("opening tier `{name}`"))?;
            Ok(Arc::new(store))
        }
    }
}

/// The store behind a location: a directory, `s3://BUCKET/PREFIX` or
/// `azure://ACCOUNT/CONTAINER/PREFIX` (the key or a SAS from the
/// environment: AZURE_STORAGE_ACCOUNT_KEY, AZURE_STORAGE_SAS_KEY).
pub fn location_store(
    spec: &str,
    endpoint: Option<&str>,
    region: Option<&str>,
) -> Result<Arc<dyn Store>> {
    if spec.starts_with("azure://") {
        let mut loc = AzureLocation::from_url(spec).ok_or_else(|| {
            anyhow!(
                "`{spec}`: expected azure://ACCOUNT/CONTAINER or azure://ACCOUNT/CONTAINER/PREFIX"
            )
        })?;
        if region.is_some() {
            bail!("--region applies to an s3:// repository, not to `{spec}`");
        }
        loc.endpoint = endpoint.map(str::to_string);
        let store = AzureStore::new(loc).with_context(|| format!("opening {spec}"))?;
        return Ok(Arc::new(store));
    }
    if spec.starts_with("s3://") {
        let mut loc = S3Location::from_url(spec)
            .ok_or_else(|| anyhow!("`{spec}`: expected s3://BUCKET or s3://BUCKET/PREFIX"))?;
        loc.endpoint = endpoint.map(str::to_string);
        if let Some(r) = region
            .map(str::to_string)
            .or_else(|| std::env::var("AWS_REGION").ok())
        {
            loc.region = r;
        }
        let store = S3Store::new(loc).with_context(|| format!("opening {spec}"))?;
        return Ok(Arc::new(store));
    }
    if endpoint.is_some() || region.is_some() {
        bail!(
            "--endpoint and --region apply to an s3:// repository, not to the directory `{spec}`"
        );
    }
    let store = LocalStore::new(spec).with_context(|| format!("opening {spec}"))?;
    Ok(Arc::new(store))
}

fn read_secret(s: Option<&SecretRef>) -> Result<Option<String>> {
    s.map(|s| {
        s.read()
            .map_err(|e| anyhow!("reading the encryption key: {e}"))
    })
    .transpose()
}

/// What `init_tiers` did with one tier.
#[derive(Debug)]
pub enum TierInit {
    Created { describe: String, encrypted: bool },
    AlreadyThere { what: String },
}

/// Creates a repository for every tier of the policy that has none yet
/// (the others are left as they are), in the tiers' order.
pub fn init_tiers(config: &Config) -> Result<Vec<(String, TierInit)>> {
    if config.tiers.is_empty() {
        bail!("the policy directory declares no tiers");
    }
    let mut out = Vec::new();
    for (name, tier) in &config.tiers {
        let store = tier_store(tier, &config.settings.state_dir)?;
        let secret =
            read_secret(tier.encryption_key.as_ref()).with_context(|| format!("tier `{name}`"))?;
        let done = match Repository::init_with(
            store,
            secret.as_deref().map(str::as_bytes),
            pack_config(tier.pack_size),
        ) {
            Ok(repo) => TierInit::Created {
                describe: repo.describe(),
                encrypted: secret.is_some(),
            },
            Err(crate::repo::RepoError::AlreadyExists(what)) => TierInit::AlreadyThere { what },
            Err(e) => {
                return Err(anyhow::Error::from(e))
                    .with_context(|| format!("creating the repository of tier `{name}`"));
            }
        };
        out.push((name.clone(), done));
    }
    Ok(out)
}

/// Opens the repository of a tier of the policy directory, throttled to
/// the tier's bandwidth limit.
pub fn open_tier(config: &Config, name: &str) -> Result<Repository> {
    let tier = tier_of(config, name)?;
    let mut store = tier_store(tier, &config.settings.state_dir)?;
    if let Some(throttle) = crate::run::throttle::tier_throttle(tier) {
        store = Arc::new(crate::run::throttle::ThrottledStore {
            inner: store,
            throttle,
        });
    }
    let secret = tier
        .encryption_key
        .as_ref()
        .map(|s| {
            s.read()
                .map_err(|e| anyhow!("tier `{name}`: encryption key: {e}"))
        })
        .transpose()?;
    Repository::open(store, secret.as_deref().map(str::as_bytes))
        .map(|r| {
            r.with_chunk_index_dir(config.settings.state_dir.join("chunk-index"))
                .with_pack_tuning(tier.pack_size, Some(tier.repack_waste))
        })
        .with_context(|| format!("opening the repository of tier `{name}`"))
}

fn pack_config(target: Option<u64>) -> Option<crate::repo::PackConfig> {
    target.map(|target_bytes| crate::repo::PackConfig { target_bytes })
}

/// Two tiers of a policy that open one repository (the same repository id),
/// which their paths did not show: a symlink made after validation, a bind
/// mount, two endpoints of one object store.
#[derive(Debug, thiserror::Error)]
#[error(
    "tiers `{first}` and `{second}` open the same repository ({id}, at {place}): one tier's \
     retention would prune the other's points; give each tier a repository of its own \
     (`coffer repo init --tier NAME` after changing its path)"
)]
pub struct SameRepository {
    pub first: String,
    pub second: String,
    pub id: String,
    pub place: String,
}

/// Opens every tier of the policy, each with the outcome of its opening,
/// and refuses them all when two tiers turn out to be one repository: no
/// tier is listed, pruned or written then.
pub fn open_tiers(config: &Config) -> Result<Vec<(String, Result<Repository>)>, SameRepository> {
    let opened: Vec<(String, Result<Repository>)> = config
        .tiers
        .keys()
        .map(|name| (name.clone(), open_tier(config, name)))
        .collect();
    let mut by_id: std::collections::BTreeMap<&str, &str> = Default::default();
    for (name, repo) in &opened {
        let Ok(repo) = repo else { continue };
        if let Some(first) = by_id.insert(repo.config.id.as_str(), name) {
            return Err(SameRepository {
                first: first.to_string(),
                second: name.clone(),
                id: repo.config.id.clone(),
                place: repo.describe(),
            });
        }
    }
    Ok(opened)
}

/// A tier without a repository would fail every backup to it one by one:
/// refuse the run up front and name the command that creates them all.
pub fn refuse_uninitialised_tiers(config: &Config) -> Result<()> {
    let missing: Vec<&str> = config
        .tiers
        .keys()
        .filter(|name| {
            open_tier(config, name).is_err_and(|e| {
                e.chain().any(|c| {
                    matches!(
                        c.downcast_ref::<crate::repo::RepoError>(),
                        Some(crate::repo::RepoError::NotARepository(_))
                    )
                })
            })
        })
        .map(String::as_str)
        .collect();
    if !missing.is_empty() {
        bail!(
            "{} no repository yet: {}; create them with `coffer repo init --all -p {}`, then run apply again",
            if missing.len() == 1 {
                "this tier has"
            } else {
                "these tiers have"
            },
            missing
                .iter()
                .map(|n| format!("`{n}`"))
                .collect::<Vec<_>>()
                .join(", "),
            config.dir.display()
        );
    }
    Ok(())
}

/// Reads every secret the sources and tiers refer to, so that a missing
/// `{ env = … }` or unreadable `{ file = … }` is one error naming it, not a
/// tier that seems empty ("no restore point yet") or a source that seems
/// down. The values are dropped at once.
pub fn check_secrets(config: &Config) -> Result<()> {
    let mut missing = Vec::new();
    let mut check = |owner: String, what: &str, s: Option<&SecretRef>| {
        if let Some(Err(e)) = s.map(|s| s.read()) {
            missing.push(format!("{owner}: {what}: {e}"));
        }
    };
    if let crate::policy::model::CatalogLocation::Postgres { password, .. } =
        &config.settings.catalog
    {
        check("settings".into(), "catalog password", password.as_ref());
    }
    for source in config.sources.values() {
        check(
            format!("source `{}`", source.name),
            "password",
            source.password.as_ref(),
        );
    }
    for tier in config.tiers.values() {
        let owner = || format!("tier `{}`", tier.name);
        check(owner(), "encryption key", tier.encryption_key.as_ref());
        match &tier.backend {
            TierBackend::S3 {
                access_key,
                secret_key,
                ..
            } => {
                check(owner(), "access key", access_key.as_ref());
                check(owner(), "secret key", secret_key.as_ref());
            }
            TierBackend::Azure {
                access_key, sas, ..
            } => {
                check(owner(), "access key", access_key.as_ref());
                check(owner(), "shared access signature", sas.as_ref());
            }
            TierBackend::Local { .. } | TierBackend::Tape { .. } => {}
        }
    }
    if missing.is_empty() {
        return Ok(());
    }
    bail!(
        "{}\nset the secrets the policy directory refers to, then run the command again",
        missing.join("\n")
    )
}

/// Before a drill, a copy or a restore reads point `m` from a tier in an
/// archive class: asks for (or checks) the thaw of every object the point
/// needs, at the tier's `thaw_speed`. `Some(why)` while the thaw is under
/// way: the caller waits (a run plans the action again later, a restore is
/// run again); `None` once everything reads, or when the tier needs none.
fn thaw_first(
    config: &Config,
    tier: &str,
    repo: &Repository,
    m: &crate::repo::manifest::Manifest,
    what: &str,
    then: &str,
) -> Result<Option<String>> {
    let Some(t) = config.tiers.get(tier) else {
        return Ok(None);
    };
    let Some(note) = t.thaw_note() else {
        return Ok(None);
    };
    let r = crate::repo::ops::thaw_point(repo, m, t.thaw_days, t.thaw_speed, super::threads())?;
    if r.done() {
        return Ok(None);
    }
    Ok(Some(format!(
        "waiting for a thaw, {what} not run yet: {} of {} objects read now, {} thaws asked for now, {} under way ({note}); {then}",
        r.ready, r.objects, r.requested, r.pending
    )))
}

/// How a drill, a copy or a restore reads a point of a tier.
pub enum Readable {
    /// From the tier's repository, at once.
    Here,
    /// From a staging copy of a tape tier's point, read off tape first.
    Staged(Box<Staged>),
    /// Not yet: a thaw is under way (why, for the log and the report).
    Waiting(String),
}

pub use crate::tape::tier::Staged;

/// A tape tier of the policies, named.
pub struct TapeTier {
    pub config: Config,
    pub tier: String,
}

impl Readable {
    /// The repository to read from: the staging copy, or the tier's.
    pub fn repo<'a>(&'a self, tier_repo: &'a Repository) -> &'a Repository {
        match self {
            Readable::Staged(s) => &s.repo,
            _ => tier_repo,
        }
    }
}

/// Before a drill, a copy or a restore reads point `m` of `tier`: stages
/// it from tape (a tape tier), or asks for and checks its thaw (a tier in
/// an archive class, `thaw_first`).
pub fn readable(
    config: &Config,
    tier: &str,
    repo: &Repository,
    m: &crate::repo::manifest::Manifest,
    what: &str,
    then: &str,
) -> Result<Readable> {
    if config.tiers.get(tier).is_some_and(|t| t.is_tape()) {
        return stage_from_tape(config, tier, repo, m).map(|s| Readable::Staged(Box::new(s)));
    }
    Ok(match thaw_first(config, tier, repo, m, what, then)? {
        Some(why) => Readable::Waiting(why),
        None => Readable::Here,
    })
}

/// Reads point `m` of tape tier `tier` into a staging repository under the
/// state directory: its config, manifest and indexes from the media
/// catalog, its chunks from the tape files that hold them, front to back.
pub fn stage_from_tape(
    config: &Config,
    tier: &str,
    repo: &Repository,
    m: &crate::repo::manifest::Manifest,
) -> Result<Staged> {
    let t = tier_of(config, tier)?;
    let Some(tape) = tape_store(config, tier)? else {
        bail!("tier `{tier}` is not a tape tier");
    };
    let secret = read_secret(t.encryption_key.as_ref())?;
    crate::tape::tier::stage_point(
        &tape,
        repo,
        m,
        &config.settings.state_dir.join("staging"),
        secret.as_deref().map(str::as_bytes),
    )
    .with_context(|| format!("staging point {} from tape tier `{tier}`", m.point_id))
}

#[cfg(test)]
mod tests {
    use super::RepoSpec;
    use crate::policy::model::SecretRef;

    #[test]
    fn a_location_wins_over_a_tier_and_neither_says_how_to_name_one() {
        let secret = Some(SecretRef::Env("KEY".into()));
        let spec = RepoSpec::chosen(Some("t"), Some("/r"), None, Some("eu"), secret).unwrap();
        assert!(matches!(
            &spec,
            RepoSpec::Location { spec, region: Some(r), secret: Some(_), .. } if spec == "/r" && r == "eu"
        ));
        let no_load = || -> anyhow::Result<_> { panic!("a location needs no policies") };
        assert!(spec.policies(no_load).unwrap().is_none());
        let tier = RepoSpec::chosen(Some("t"), None, None, None, None).unwrap();
        assert!(matches!(&tier, RepoSpec::Tier(t) if t == "t"));
        assert!(tier.policies(|| anyhow::bail!("loaded")).is_err());
        let e = RepoSpec::chosen(None, None, None, None, None).unwrap_err();
        assert!(e.to_string().contains("--tier NAME"), "{e}");
    }
}
