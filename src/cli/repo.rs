//! `coffer repo …` and `coffer backup-image`: the repository used directly,
//! by an administrator or a benchmark, without ESXi.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow};

use super::terminal::Terminal;
use super::{EXIT_OK, Output, PolicyArgs, print};
use crate::engine::image::{ImageBackup, backup_image as backup_image_into};
use crate::engine::repository;
use crate::engine::tiers::{RepoChoice, RepoSpec, Staged, init_tiers};
use crate::policy::model::SecretRef;
use crate::repo::Repository;
use crate::repo::ops::SampleError;
use crate::repo::restore::DiskFormat;
use crate::text;

/// Verification found damage.
pub const EXIT_DAMAGED: u8 = 4;

/// The repository to read `point` from (a staging copy read off tape for
/// a tape tier, said on stderr), and the tier's.
fn open_for_point(
    t: &RepoChoice,
    p: &PolicyArgs,
    point: &str,
) -> Result<(Repository, Option<Staged>)> {
    let (repo, staged) = t.spec()?.open_for_point(|| p.load(), point)?;
    if let Some(s) = &staged {
        eprintln!("{}", s.report.describe());
    }
    Ok((repo, staged))
}

#[derive(Debug, clap::Args)]
pub struct InitArgs {
    /// Initialise every tier of the policy directory (tiers that already
    /// hold a repository are left as they are).
    #[arg(long, conflicts_with_all = ["tier", "repo"])]
    pub all: bool,
    #[command(flatten)]
    pub target: RepoChoice,
    /// Store chunks in packs of this size (e.g. `16MiB`), or `off` for one
    /// object per chunk. Default: the tier's `pack_size`; for a `--repo`,
    /// 16MiB on s3:// and azure://, off on a directory.
    #[arg(long, conflicts_with = "all")]
    pub pack_size: Option<String>,
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
    /// Move a repository's chunk objects into packs (format version 2): a
    /// request per pack instead of per chunk on object storage. Runs alone;
    /// run it again to finish a migration that was interrupted.
    Migrate(MigrateArgs),
    /// Remove locks whose holders are gone (a killed backup or gc).
    Unlock(RepoChoice),
}

#[derive(Debug, clap::Args)]
pub struct LsArgs {
    #[command(flatten)]
    pub target: RepoChoice,
    #[command(flatten)]
    pub output: Output,
}

#[derive(Debug, clap::Args)]
pub struct VerifyArgs {
    #[command(flatten)]
    pub target: RepoChoice,
    #[command(flatten)]
    pub output: Output,
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
    pub target: RepoChoice,
    /// Unreferenced chunks younger than this are kept (a running backup may use them).
    #[arg(long, default_value = "1h", value_parser = crate::policy::units::parse_duration)]
    pub grace: Duration,
    /// Report what would be deleted.
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(Debug, clap::Args)]
pub struct CopyArgs {
    /// The point's id, as `repo ls` lists it.
    pub point: String,
    #[command(flatten)]
    pub target: RepoChoice,
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
    pub target: RepoChoice,
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

#[derive(Debug, clap::Args)]
pub struct MigrateArgs {
    #[command(flatten)]
    pub target: RepoChoice,
    /// The size packs are written at, e.g. `16MiB`.
    #[arg(long, default_value = "16MiB")]
    pub pack_size: String,
}

/// A thaw is still under way: run `repo thaw` again later.
pub const EXIT_THAWING: u8 = 5;

#[derive(Debug, clap::Args)]
pub struct PointArgs {
    /// The point's id, as `repo ls` lists it.
    pub point: String,
    #[command(flatten)]
    pub target: RepoChoice,
}

#[derive(Debug, clap::Args)]
pub struct BackupImageArgs {
    #[command(flatten)]
    pub image: ImageBackup,
    #[command(flatten)]
    pub target: RepoChoice,
    #[command(flatten)]
    pub output: Output,
}

pub fn run(command: Command, p: &PolicyArgs) -> Result<u8> {
    let load = || p.load();
    match command {
        Command::Init(InitArgs { all: true, .. }) => {
            print(text::tiers_initialised(&init_tiers(&load()?)?))?;
        }
        Command::Init(InitArgs {
            target, pack_size, ..
        }) => {
            let spec = target.spec()?;
            let pack_size = (pack_size
                .as_deref()
                .map(crate::policy::units::parse_pack_size))
            .transpose()
            .map_err(|e| anyhow!("--pack-size: {e}"))?;
            let (repo, encrypted) = spec.init(spec.policies(load)?.as_ref(), pack_size)?;
            print(text::repo_created(&repo, encrypted))?;
        }
        Command::Ls(a) => {
            let repo = a.target.spec()?.open_with(load)?;
            let listing = repository::list(&repo)?;
            let doc = || crate::json::RepoLs::new(repo.describe(), &listing);
            a.output.print(doc, || text::point_list(&doc()))?;
        }
        Command::Verify(a) => {
            let (repo, tape) = a.target.spec()?.open_tape_aware(load)?;
            let sample =
                (a.sample.as_deref().map(str::parse))
                    .transpose()
                    .map_err(|e| match e {
                        SampleError::Number(e) => anyhow!(e),
                        e => anyhow!("--sample {e}"),
                    })?;
            let (r, secs) = repository::verify(&repo, tape.as_ref(), a.point.as_deref(), sample)?;
            let doc = || crate::json::RepoVerify::new(&r, secs);
            a.output.print(doc, || text::verify_report(&r, secs))?;
            if !r.ok() {
                return Ok(EXIT_DAMAGED);
            }
        }
        Command::Gc(a) => {
            let (repo, tape, _maintenance) =
                (a.target.spec()?).open_for_maintenance(load, "coffer repo gc")?;
            let (r, freed) = repository::gc(&repo, tape.as_ref(), a.grace, a.dry_run)?;
            print(text::gc_report(&r, a.dry_run))?;
            if let Some(freed) = freed {
                print(text::media_freed(&freed))?;
            }
        }
        Command::Copy(a) => {
            let (tier_repo, staged) = open_for_point(&a.target, p, &a.point)?;
            let from = staged.as_ref().map_or(&tier_repo, |s| &s.repo);
            let secret = a.to_key_env.clone().map(SecretRef::Env);
            let (tier, repo) = (a.to_tier.as_deref(), a.to_repo.as_deref());
            let to = RepoSpec::chosen(tier, repo, a.to_endpoint.as_deref(), None, secret)
                .and_then(|spec| spec.open_with(load))
                .context("opening the destination")?;
            let copied = repository::copy(from, &to, &a.point)?;
            print(text::point_copied(&a.point, &copied))?;
        }
        Command::Restore(a) => {
            let (tier_repo, staged) = open_for_point(&a.target, p, &a.point)?;
            let repo = staged.as_ref().map_or(&tier_repo, |s| &s.repo);
            let r = repository::restore_disk(repo, &a.point, a.disk, &a.out, a.format, a.force)?;
            print(text::disk_restored(&a.point, &r.disk, &r.stats, r.seconds))?;
        }
        Command::Unlock(t) => {
            let (removed, live) = repository::unlock(&t.spec()?.open_with(load)?)?;
            print(text::unlocked(&removed, live))?;
        }
        Command::Thaw(a) => {
            let repo = a.point.target.spec()?.open_with(load)?;
            let r = repository::thaw(&repo, &a.point.point, a.days, a.speed)?;
            print(text::thaw_report(&a.point.point, &r))?;
            if !r.done() {
                return Ok(EXIT_THAWING);
            }
        }
        Command::Migrate(a) => {
            let size = crate::policy::units::parse_pack_size(&a.pack_size)
                .map_err(|e| anyhow!("--pack-size: {e}"))?
                .ok_or_else(|| anyhow!("--pack-size: a migration to packs needs a size"))?;
            let r = repository::migrate(&a.target.spec()?.open_with(load)?, size)?;
            print(text::migrated(&r))?;
        }
        Command::Prune(a) => {
            let what = format!("coffer repo prune of {}", a.point);
            let (repo, _, _maintenance) = (a.target.spec()?).open_for_maintenance(load, &what)?;
            repository::prune(&repo, &a.point)?;
            print(text::point_pruned(&a.point))?;
        }
    }
    Ok(EXIT_OK)
}

pub fn backup_image(a: BackupImageArgs, p: &PolicyArgs) -> Result<u8> {
    let repo = a.target.spec()?.open_with(|| p.load())?;
    let started = Instant::now();
    let (m, name) = backup_image_into(&repo, &a.image, &Terminal::human())?;
    let secs = started.elapsed().as_secs_f64();
    let doc = || crate::json::BackupImage::new(&m, secs);
    a.output
        .print(doc, || text::image_backed_up(&m, &name, secs))?;
    Ok(EXIT_OK)
}
