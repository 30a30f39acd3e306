//! `coffer repo …` and `coffer backup-image`: the repository used directly,
//! by an administrator or a benchmark, without ESXi.

use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result, anyhow, bail};

use super::terminal::Terminal;
use super::{EXIT_OK, PolicyArgs, load_or_report};
use crate::engine::image::{ImageBackup, backup_image as backup_image_into};
use crate::engine::threads;
use crate::engine::tiers::{RepoSpec, init_tiers};
use crate::policy::Config;
use crate::policy::model::SecretRef;
use crate::policy::units;
use crate::repo::Repository;
use crate::repo::ops::{self, Sample};
use crate::repo::restore::{self, DiskFormat};
use crate::text;

/// Verification found damage.
pub const EXIT_DAMAGED: u8 = 4;

/// Which repository: a tier of the policy directory, a directory, or a
/// bucket.
#[derive(Debug, clap::Args)]
pub struct Target {
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
    #[command(flatten)]
    pub policy: PolicyArgs,
}

impl Target {
    /// The repository as the engine names it.
    fn spec(&self) -> Result<RepoSpec> {
        if let Some(spec) = &self.repo {
            let secret = match (&self.key_env, &self.key_file) {
                (Some(v), _) => Some(SecretRef::Env(v.clone())),
                (_, Some(f)) => Some(SecretRef::File(f.clone())),
                _ => None,
            };
            return Ok(RepoSpec::Location {
                spec: spec.clone(),
                endpoint: self.endpoint.clone(),
                region: self.region.clone(),
                secret,
            });
        }
        match &self.tier {
            Some(name) => Ok(RepoSpec::Tier(name.clone())),
            None => bail!(
                "name the repository with --tier NAME (from the policy directory) or --repo DIR|s3://BUCKET/PREFIX"
            ),
        }
    }

    /// The policies, when the repository is a tier of them.
    fn config(&self, spec: &RepoSpec) -> Result<Option<Config>> {
        match spec {
            RepoSpec::Tier(_) => load_or_report(&self.policy)
                .map(Some)
                .map_err(|_| crate::cli::InvalidPolicyDir.into()),
            RepoSpec::Location { .. } => Ok(None),
        }
    }

    pub fn open(&self) -> Result<Repository> {
        let spec = self.spec()?;
        spec.open(self.config(&spec)?.as_ref())
    }

    fn init(&self) -> Result<(Repository, bool)> {
        let spec = self.spec()?;
        spec.init(self.config(&spec)?.as_ref())
    }
}

#[derive(Debug, clap::Args)]
pub struct InitArgs {
    /// Initialise every tier of the policy directory (tiers that already
    /// hold a repository are left as they are).
    #[arg(long, conflicts_with_all = ["tier", "repo"])]
    pub all: bool,
    #[command(flatten)]
    pub target: Target,
}

/// `repo init --all`: one line per tier, created or already there.
fn init_all(policy: &PolicyArgs, out: &mut impl Write) -> Result<()> {
    let config = load_or_report(policy).map_err(|_| crate::cli::InvalidPolicyDir)?;
    write!(out, "{}", text::tiers_initialised(&init_tiers(&config)?))?;
    Ok(())
}

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Create an empty repository.
    Init(InitArgs),
    /// List restore points.
    Ls(LsArgs),
    /// Re-read chunks and prove them; exit 4 when anything is damaged.
    Verify(VerifyArgs),
    /// Delete chunks no point references (older than the grace period).
    Gc(GcArgs),
    /// Copy a point to another repository, sending only missing chunks.
    Copy(CopyArgs),
    /// Restore a disk of a point to a raw image or a VMDK.
    Restore(RestoreArgs),
    /// Remove a point (its chunks are left to gc).
    Prune(PointArgs),
    /// Make a point in archive storage (S3 GLACIER, DEEP_ARCHIVE) readable:
    /// ask for every chunk it needs to be restored; run again to see how
    /// far that is. Exit 0 once everything reads, 5 while a thaw is under way.
    Thaw(ThawArgs),
    /// Remove locks whose holders are gone (a killed backup or gc).
    Unlock(Target),
}

#[derive(Debug, clap::Args)]
pub struct LsArgs {
    #[command(flatten)]
    pub target: Target,
    /// Print the points as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, clap::Args)]
pub struct VerifyArgs {
    #[command(flatten)]
    pub target: Target,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
    /// Only this point.
    #[arg(long)]
    pub point: Option<String>,
    /// Check one slice of a rolling cycle, e.g. `3/7`: seven runs check every chunk once.
    #[arg(long)]
    pub sample: Option<String>,
}

#[derive(Debug, clap::Args)]
pub struct GcArgs {
    #[command(flatten)]
    pub target: Target,
    /// Unreferenced chunks younger than this are kept (a running backup may use them).
    #[arg(long, default_value = "1h")]
    pub grace: String,
    /// Report what would be deleted.
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(Debug, clap::Args)]
pub struct CopyArgs {
    /// The point's id, as `repo ls` lists it.
    pub point: String,
    #[command(flatten)]
    pub target: Target,
    /// Destination tier of the policy directory.
    #[arg(long, required_unless_present = "to_repo", conflicts_with = "to_repo")]
    pub to_tier: Option<String>,
    /// Destination repository: a directory, s3://BUCKET/PREFIX or
    /// azure://ACCOUNT/CONTAINER/PREFIX.
    #[arg(long)]
    pub to_repo: Option<String>,
    /// With --to-repo: endpoint URL of an S3-compatible server or Azure
    /// blob endpoint.
    #[arg(long, requires = "to_repo")]
    pub to_endpoint: Option<String>,
    /// With --to-repo: environment variable with the destination's passphrase.
    #[arg(long, requires = "to_repo")]
    pub to_key_env: Option<String>,
}

#[derive(Debug, clap::Args)]
pub struct RestoreArgs {
    /// The point's id, as `repo ls` lists it.
    pub point: String,
    #[command(flatten)]
    pub target: Target,
    /// Output file (for vmdk: the descriptor; the extent goes beside it).
    #[arg(long, short)]
    pub out: PathBuf,
    /// What to write: a raw image, or a VMDK (descriptor and flat extent).
    #[arg(long, value_enum, default_value = "raw")]
    pub format: DiskFormat,
    /// Device key of the disk (default: the first disk).
    #[arg(long)]
    pub disk: Option<i32>,
    /// Overwrite existing files.
    #[arg(long)]
    pub force: bool,
}

#[derive(Debug, clap::Args)]
pub struct ThawArgs {
    #[command(flatten)]
    pub point: PointArgs,
    /// How long the thawed copies stay readable.
    #[arg(long, default_value_t = 7)]
    pub days: u32,
    /// Retrieval speed: expedited (minutes, dearest), standard (hours) or
    /// bulk (the cheapest, up to 12 hours; 48 for DEEP_ARCHIVE).
    #[arg(long, value_enum, default_value = "standard")]
    pub speed: crate::repo::store::ThawSpeed,
}

/// A thaw is still under way: run `repo thaw` again later.
pub const EXIT_THAWING: u8 = 5;

#[derive(Debug, clap::Args)]
pub struct PointArgs {
    /// The point's id, as `repo ls` lists it.
    pub point: String,
    #[command(flatten)]
    pub target: Target,
}

#[derive(Debug, clap::Args)]
pub struct BackupImageArgs {
    /// The disk image file to back up.
    pub file: PathBuf,
    /// Name to record the image under (default: the file name).
    #[arg(long)]
    pub vm: Option<String>,
    #[command(flatten)]
    pub target: Target,
    /// File of changed ranges (`OFFSET LENGTH` per line, bytes) since --base
    /// (default: the newest point of this VM): an incremental.
    #[arg(long)]
    pub changed: Option<PathBuf>,
    /// The point the changed ranges are relative to.
    #[arg(long, requires = "changed")]
    pub base: Option<String>,
    /// Chunk size, a power of two from 64KiB to 4MiB (default chosen by
    /// measurement, see docs/benchmarks.md).
    #[arg(long, default_value = "256KiB")]
    pub chunk_size: String,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

pub fn run(command: Command) -> Result<u8> {
    let mut out = std::io::stdout().lock();
    match command {
        Command::Init(InitArgs { all: true, target }) => init_all(&target.policy, &mut out)?,
        Command::Init(InitArgs { target: t, .. }) => {
            let (repo, encrypted) = t.init()?;
            write!(out, "{}", text::repo_created(&repo, encrypted))?;
        }
        Command::Ls(a) => list(&a.target.open()?, a.json, &mut out)?,
        Command::Verify(a) => {
            let repo = a.target.open()?;
            let only = a
                .point
                .as_ref()
                .map(|p| repo.find_point(p))
                .transpose()?
                .map(|p| vec![p]);
            let sample = a.sample.as_deref().map(parse_sample).transpose()?;
            let started = Instant::now();
            let r = ops::verify(&repo, only.as_deref(), sample, threads())?;
            let seconds = started.elapsed().as_secs_f64();
            if a.json {
                let doc = crate::json::RepoVerify::new(&r, seconds);
                writeln!(out, "{}", crate::json::render(&doc))?;
            } else {
                write!(out, "{}", text::verify_report(&r, seconds))?;
            }
            if !r.ok() {
                return Ok(EXIT_DAMAGED);
            }
        }
        Command::Gc(a) => {
            let repo = a.target.open()?;
            let grace = units::parse_duration(&a.grace).map_err(|e| anyhow!("--grace: {e}"))?;
            let r = ops::gc(&repo, grace, a.dry_run)?;
            write!(out, "{}", text::gc_report(&r, a.dry_run))?;
        }
        Command::Copy(a) => {
            let from = a.target.open()?;
            let to = Target {
                tier: a.to_tier.clone(),
                repo: a.to_repo.clone(),
                endpoint: a.to_endpoint.clone(),
                region: None,
                key_env: a.to_key_env.clone(),
                key_file: None,
                policy: a.target.policy.clone(),
            }
            .open()
            .context("opening the destination")?;
            let p = from.find_point(&a.point)?;
            let (_, r) = ops::copy_point(&from, &to, &p, threads())?;
            write!(out, "{}", text::point_copied(&a.point, &r))?;
        }
        Command::Restore(a) => {
            let repo = a.target.open()?;
            let p = repo.find_point(&a.point)?;
            let m = repo.read_manifest(&p)?;
            let disk = match a.disk {
                Some(k) => m
                    .disks
                    .iter()
                    .find(|d| d.device_key == k)
                    .ok_or_else(|| anyhow!("point {} has no disk {k}", a.point))?,
                None => m
                    .disks
                    .first()
                    .ok_or_else(|| anyhow!("point {} has no disks", a.point))?,
            };
            let started = Instant::now();
            let index = repo.read_index(&m, disk)?;
            let stats = restore::restore_disk(&repo, &index, &a.out, a.format, a.force, threads())?;
            let secs = started.elapsed().as_secs_f64();
            write!(out, "{}", text::disk_restored(&a.point, disk, &stats, secs))?;
        }
        Command::Unlock(t) => {
            let repo = t.open()?;
            let removed = repo.remove_stale_locks()?;
            let live = crate::repo::lock::list_locks(repo.store())?.len();
            write!(out, "{}", text::unlocked(&removed, live))?;
        }
        Command::Thaw(a) => {
            let repo = a.point.target.open()?;
            let p = repo.find_point(&a.point.point)?;
            let m = repo.read_manifest(&p)?;
            let r = ops::thaw_point(&repo, &m, a.days, a.speed, threads())?;
            write!(out, "{}", text::thaw_report(&a.point.point, &r))?;
            if !r.done() {
                return Ok(EXIT_THAWING);
            }
        }
        Command::Prune(a) => {
            let repo = a.target.open()?;
            let p = repo.find_point(&a.point)?;
            ops::prune_point(&repo, &p)?;
            write!(out, "{}", text::point_pruned(&a.point))?;
        }
    }
    Ok(EXIT_OK)
}

/// `repo ls`: a table, or the points as JSON.
fn list(repo: &Repository, json: bool, out: &mut impl Write) -> Result<()> {
    let (points, refused) = repo.list_points_checked()?;
    let mut doc = crate::json::RepoLs {
        repository: repo.describe(),
        points: Vec::new(),
        unreadable: Vec::new(),
        refused,
    };
    for p in &points {
        match repo.read_manifest(p) {
            Ok(m) => doc.points.push((&m).into()),
            Err(e) => doc.unreadable.push(crate::json::RepoUnreadable {
                point: p.point_id.clone(),
                detail: format!("{e:#}"),
            }),
        }
    }
    if json {
        writeln!(out, "{}", crate::json::render(&doc))?;
        return Ok(());
    }
    write!(out, "{}", text::point_list(&doc))?;
    Ok(())
}

fn parse_sample(s: &str) -> Result<Sample> {
    let (a, b) = s
        .split_once('/')
        .ok_or_else(|| anyhow!("--sample takes PART/OF, e.g. 3/7"))?;
    let (part, of): (u16, u16) = (a.parse()?, b.parse()?);
    if of == 0 || part >= of {
        bail!("--sample {s}: PART must be below OF (0/7 … 6/7)");
    }
    Ok(Sample { part, of })
}

pub fn backup_image(a: BackupImageArgs) -> Result<u8> {
    let repo = a.target.open()?;
    let chunk = units::parse_size(&a.chunk_size).map_err(|e| anyhow!("--chunk-size: {e}"))?;
    let image = ImageBackup {
        file: a.file.clone(),
        vm: a.vm.clone(),
        changed: a.changed.clone(),
        base: a.base.clone(),
        chunk_size_bytes: u32::try_from(chunk.0).map_err(|_| anyhow!("--chunk-size too large"))?,
    };
    let started = Instant::now();
    let (m, name) = backup_image_into(&repo, &image, &Terminal::human())?;
    let secs = started.elapsed().as_secs_f64();
    let mut out = std::io::stdout().lock();
    if a.json {
        let doc = crate::json::BackupImage::new(&m, secs);
        writeln!(out, "{}", crate::json::render(&doc))?;
    } else {
        write!(out, "{}", text::image_backed_up(&m, &name, secs))?;
    }
    Ok(EXIT_OK)
}
