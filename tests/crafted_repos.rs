//! Repositories whose contents lie: planted manifests that name an index
//! outside the repository (`index_key = "../victim.txt"`), a VM uuid or a
//! point id that climbs out (`"../../x"`), point directories under names no
//! point can have. Every command that reads a repository (ls, verify, prune,
//! gc, copy, restore; catalog refresh, plan and apply with retention prune)
//! runs against them, on a local directory and on a bucket of a real S3
//! server (moto), and afterwards every file and object outside the
//! repository and the state directory is exactly as it was: nothing read
//! from a repository ever becomes a path.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::Arc;

use coffer::repo::backup::{self, BackupRequest, DiskSource, FileDisk};
use coffer::repo::manifest::{Manifest, VmIdentity};
use coffer::repo::s3::S3Store;
use coffer::repo::store::Store;
use coffer::repo::{Repository, local::LocalStore};
use common::s3;
use sha2::{Digest, Sha256};

const MIB: u64 = 1 << 20;
const VM_UUID: &str = "4210cccc-0000-0000-0000-000000000001";
/// Planted point ids: valid names, older than any real point.
const CLIMBING_INDEX: &str = "20200101T000000000Z-aaaaa1";
const CLIMBING_INDEX_2: &str = "20200101T000000000Z-aaaaa2";
const CLIMBING_VM: &str = "20200101T000000000Z-aaaaa3";
const MISPLACED_ID: &str = "20200101T000000000Z-aaaaa4";
/// A VM whose directory in the local tier is a planted symbolic link.
const LINKED_VM: &str = "4210cccc-0000-0000-0000-000000000002";
const VICTIM: &[u8] = b"a file coffer must never touch\n";

fn fill(buf: &mut [u8], seed: u64) {
    let mut x = seed.wrapping_mul(0x9E3779B97F4A7C15) | 1;
    for c in buf.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        c.copy_from_slice(&x.to_le_bytes()[..c.len()]);
    }
}

/// Every file under `dir` (but those under `skip`) with the SHA-256 of its
/// bytes: what "nothing outside was written or deleted" is checked against.
fn files_outside(dir: &Path, skip: &[PathBuf]) -> BTreeMap<PathBuf, String> {
    walkdir::WalkDir::new(dir)
        .into_iter()
        .filter_entry(|e| !skip.iter().any(|s| e.path().starts_with(s)))
        .flatten()
        .filter(|e| !e.file_type().is_dir())
        .map(|e| {
            let bytes = std::fs::read(e.path()).unwrap_or_default();
            (e.path().to_path_buf(), hex::encode(Sha256::digest(&bytes)))
        })
        .collect()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[derive(Clone, Copy, Debug)]
enum Backend {
    Local,
    S3,
}

/// A crafted repository and the world around it.
struct World {
    backend: Backend,
    /// The sandbox: the repository (local) lives in `sandbox/tier`, with the
    /// victims next to it and one level up.
    sandbox: tempfile::TempDir,
    /// The store of the tier.
    store: Arc<dyn Store>,
    /// The whole bucket (S3): objects outside the tier's prefix.
    bucket_root: Option<Arc<dyn Store>>,
    bucket: String,
    repo_args: Vec<String>,
    env: Vec<(String, String)>,
    image: PathBuf,
    good: Manifest,
}

impl World {
    fn new(backend: Backend) -> World {
        let sandbox = tempfile::tempdir().unwrap();
        let t = sandbox.path();
        std::fs::write(t.join("victim.txt"), VICTIM).unwrap();
        std::fs::create_dir_all(t.join("area")).unwrap();
        std::fs::write(t.join("area/victim.txt"), VICTIM).unwrap();
        std::fs::create_dir_all(t.join("out")).unwrap();
        let (store, bucket_root, bucket, repo_args, env): (Arc<dyn Store>, _, _, _, _) =
            match backend {
                Backend::Local => {
                    let dir = t.join("area/tier");
                    (
                        Arc::new(LocalStore::new(&dir).unwrap()),
                        None,
                        String::new(),
                        vec!["--repo".to_string(), dir.display().to_string()],
                        vec![],
                    )
                }
                Backend::S3 => {
                    let bucket = s3::bucket(false);
                    let endpoint = s3::moto().endpoint();
                    let root: Arc<dyn Store> =
                        Arc::new(S3Store::new(s3::location(&bucket, &endpoint)).unwrap());
                    root.put("victim.txt", VICTIM).unwrap();
                    root.put("area/victim.txt", VICTIM).unwrap();
                    let mut loc = s3::location(&bucket, &endpoint);
                    loc.prefix = "area/tier".into();
                    (
                        Arc::new(S3Store::new(loc).unwrap()),
                        Some(root),
                        bucket.clone(),
                        vec![
                            "--repo".to_string(),
                            format!("s3://{bucket}/area/tier"),
                            "--endpoint".to_string(),
                            endpoint,
                        ],
                        vec![
                            ("AWS_ACCESS_KEY_ID".to_string(), "coffer-test".to_string()),
                            (
                                "AWS_SECRET_ACCESS_KEY".to_string(),
                                "coffer-test-secret".to_string(),
                            ),
                        ],
                    )
                }
            };
        let repo = Repository::init(store.clone(), None).unwrap();
        let image = t.join("area/disk.img");
        let mut data = vec![0u8; (3 * MIB) as usize];
        fill(&mut data, 7);
        std::fs::write(&image, &data).unwrap();
        let disk = FileDisk::open(&image).unwrap();
        let good = backup::backup(
            &repo,
            BackupRequest {
                vm: VmIdentity::new("db01", VM_UUID),
                consistency: "crash".into(),
                chunk_size_bytes: 256 << 10,
                parent: None,
                disks: vec![DiskSource::whole(2000, "Hard disk 1", &disk)],
                files: vec![],
                skipped_disks: vec![],
                threads: 2,
            },
        )
        .unwrap();
        let w = World {
            backend,
            sandbox,
            store,
            bucket_root,
            bucket,
            repo_args,
            env,
            image,
            good,
        };
        w.plant();
        w
    }

    /// Writes the lying manifests, each a copy of the good one with one
    /// field changed, under valid point directories.
    fn plant(&self) {
        let good = serde_json::to_value(&self.good).unwrap();
        let planted = |dir_point: &str, edit: &dyn Fn(&mut serde_json::Value)| {
            let mut m = good.clone();
            m["point_id"] = dir_point.into();
            edit(&mut m);
            self.store
                .put(
                    &format!("points/{VM_UUID}/{dir_point}/manifest.json"),
                    &serde_json::to_vec_pretty(&m).unwrap(),
                )
                .unwrap();
        };
        // The index of the good point, under the planted point, so a reader
        // that followed the manifest would find a valid index.
        let good_index = self.store.get(&self.good.disks[0].index_key).unwrap();
        for p in [CLIMBING_INDEX, CLIMBING_INDEX_2, CLIMBING_VM, MISPLACED_ID] {
            self.store
                .put(
                    &format!("points/{VM_UUID}/{p}/disk-2000.index"),
                    &good_index,
                )
                .unwrap();
        }
        planted(CLIMBING_INDEX, &|m| {
            m["disks"][0]["index_key"] = "../victim.txt".into();
        });
        planted(CLIMBING_INDEX_2, &|m| {
            m["disks"][0]["index_key"] = "points/../../../victim.txt".into();
        });
        // Its index key is right, so a copy that trusted `vm.uuid` would get
        // as far as writing the manifest under it.
        planted(CLIMBING_VM, &|m| {
            m["vm"]["uuid"] = "../../x".into();
            m["disks"][0]["index_key"] =
                format!("points/{VM_UUID}/{CLIMBING_VM}/disk-2000.index").into();
        });
        planted(MISPLACED_ID, &|m| {
            m["point_id"] = "../../y".into();
        });
        // Point directories under names no point can have.
        let odd = serde_json::to_vec(&good).unwrap();
        match self.backend {
            Backend::Local => {
                let root = self.sandbox.path().join("area/tier/points");
                for name in [format!("{VM_UUID}/back\\slash"), "new\nline/p1".to_string()] {
                    let d = root.join(name);
                    std::fs::create_dir_all(&d).unwrap();
                    std::fs::write(d.join("manifest.json"), &odd).unwrap();
                }
                // A VM directory that is a link to a directory outside.
                let linked = self.sandbox.path().join("linked");
                std::fs::create_dir_all(linked.join(CLIMBING_VM)).unwrap();
                std::fs::write(linked.join(CLIMBING_VM).join("manifest.json"), &odd).unwrap();
                std::os::unix::fs::symlink(&linked, root.join(LINKED_VM)).unwrap();
            }
            Backend::S3 => {
                // A key coffer would never write, put by another client.
                self.raw_put(
                    &format!("area/tier/points/{VM_UUID}/back%5Cslash/manifest.json"),
                    &odd,
                );
            }
        }
    }

    /// Puts an object by a plain HTTP request, as any client could.
    fn raw_put(&self, key: &str, body: &[u8]) {
        let (status, answer) = s3::raw_request(
            s3::moto().addr,
            "PUT",
            &format!("/{}/{key}", self.bucket),
            &[],
            body,
        )
        .unwrap();
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&answer));
    }

    fn coffer(&self, args: &[&str]) -> Output {
        common::command_in(self.sandbox.path())
            .args(args)
            .args(&self.repo_args)
            .envs(self.env.clone())
            .output()
            .unwrap()
    }

    /// Everything outside the tier: local files (but the tier directory
    /// and `allowed`), and on S3 every object outside the tier's prefix.
    fn outside(&self, allowed: &[&str]) -> BTreeMap<String, String> {
        let t = self.sandbox.path();
        let mut skip: Vec<PathBuf> = allowed.iter().map(|a| t.join(a)).collect();
        skip.push(t.join("area/tier"));
        let mut out: BTreeMap<String, String> = files_outside(t, &skip)
            .into_iter()
            .map(|(p, h)| (p.display().to_string(), h))
            .collect();
        if let Some(root) = &self.bucket_root {
            for o in root.list("").unwrap() {
                if o.key.starts_with("area/tier/") || allowed.iter().any(|a| o.key.starts_with(a)) {
                    continue;
                }
                let h = hex::encode(Sha256::digest(root.get(&o.key).unwrap()));
                out.insert(format!("s3:{}", o.key), h);
            }
        }
        out
    }

    fn victims_intact(&self, after: &str) {
        let t = self.sandbox.path();
        for v in ["victim.txt", "area/victim.txt"] {
            assert_eq!(
                std::fs::read(t.join(v)).ok().as_deref(),
                Some(VICTIM),
                "{v} changed or went after {after} ({:?})",
                self.backend
            );
            if let Some(root) = &self.bucket_root {
                assert_eq!(
                    root.get(v).ok().as_deref(),
                    Some(VICTIM),
                    "s3:{v} changed or went after {after}"
                );
            }
        }
    }
}

fn every_repo_command_stays_inside_a_crafted_repository(backend: Backend) {
    let w = World::new(backend);
    // Where commands may write: a restore's output directory, a copy's
    // target tier (local: a directory; S3: a prefix of the same bucket).
    let allowed = ["out", "copy", "area/copy"];
    let before = w.outside(&allowed);
    let check = |after: &str| {
        w.victims_intact(after);
        assert_eq!(
            w.outside(&allowed),
            before,
            "{after} wrote or deleted outside the repository ({backend:?})"
        );
    };

    let ls = w.coffer(&["repo", "ls"]);
    assert!(ls.status.success(), "{}", text(&ls));
    let out = text(&ls);
    assert!(out.contains(&w.good.point_id), "{out}");
    assert!(
        out.contains("not a valid point name"),
        "odd names are reported: {out}"
    );
    check("repo ls");

    let verify = w.coffer(&["repo", "verify"]);
    assert!(!verify.status.success(), "{}", text(&verify));
    let out = text(&verify);
    for p in [CLIMBING_INDEX, CLIMBING_INDEX_2, CLIMBING_VM, MISPLACED_ID] {
        assert!(
            out.contains(&format!("DAMAGED point {p}")),
            "{p} is reported: {out}"
        );
    }
    check("repo verify");

    for p in [CLIMBING_INDEX, CLIMBING_INDEX_2, CLIMBING_VM, MISPLACED_ID] {
        let prune = w.coffer(&["repo", "prune", p]);
        assert!(!prune.status.success(), "prune {p}: {}", text(&prune));
        check(&format!("repo prune {p}"));

        let restore = w.coffer(&["repo", "restore", p, "-o", "out/r.raw", "--force"]);
        assert!(!restore.status.success(), "restore {p}: {}", text(&restore));
        assert!(
            !w.sandbox.path().join("out/r.raw").exists(),
            "a refused restore leaves no file"
        );
        check(&format!("repo restore {p}"));
    }

    let copy_target = || -> Vec<String> {
        match backend {
            Backend::Local => vec![
                "--to-repo".into(),
                w.sandbox.path().join("copy").display().to_string(),
            ],
            Backend::S3 => vec![
                "--to-repo".into(),
                format!("s3://{}/area/copy", w.bucket),
                "--to-endpoint".into(),
                s3::moto().endpoint(),
            ],
        }
    };
    // The copy target must be a repository.
    let init = common::command_in(w.sandbox.path())
        .args(["repo", "init", "--repo"])
        .arg(&copy_target()[1])
        .args(match backend {
            Backend::Local => vec![],
            Backend::S3 => vec!["--endpoint".to_string(), s3::moto().endpoint()],
        })
        .envs(w.env.clone())
        .output()
        .unwrap();
    assert!(init.status.success(), "{}", text(&init));
    for p in [CLIMBING_INDEX, CLIMBING_INDEX_2, CLIMBING_VM, MISPLACED_ID] {
        let mut args = vec!["repo".to_string(), "copy".into(), p.into()];
        args.extend(copy_target());
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let copy = w.coffer(&args);
        assert!(!copy.status.success(), "copy {p}: {}", text(&copy));
        check(&format!("repo copy {p}"));
    }
    assert!(
        !w.sandbox.path().join("x").exists() && !w.sandbox.path().join("area/x").exists(),
        "nothing was written under a uuid that climbs out"
    );

    // gc refuses to sweep beside unreadable points; either way it stays inside.
    let _ = w.coffer(&["repo", "gc", "--grace", "0s"]);
    check("repo gc");

    // The good point still copies and restores, byte for byte.
    let mut args = vec!["repo".to_string(), "copy".into(), w.good.point_id.clone()];
    args.extend(copy_target());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let copy = w.coffer(&args);
    assert!(copy.status.success(), "{}", text(&copy));
    let restore = w.coffer(&["repo", "restore", &w.good.point_id, "-o", "out/good.raw"]);
    assert!(restore.status.success(), "{}", text(&restore));
    assert!(
        std::fs::read(w.sandbox.path().join("out/good.raw")).unwrap()
            == std::fs::read(&w.image).unwrap(),
        "the good point restores byte-identical"
    );
    check("restoring the good point");

    // A backup of the VM whose directory is a planted link is refused
    // rather than written through the link.
    if let Backend::Local = backend {
        let repo = Repository::open(w.store.clone(), None).unwrap();
        let disk = FileDisk::open(&w.image).unwrap();
        let r = backup::backup(
            &repo,
            BackupRequest {
                vm: VmIdentity::new("linked", LINKED_VM),
                consistency: "crash".into(),
                chunk_size_bytes: 256 << 10,
                parent: None,
                disks: vec![DiskSource::whole(2000, "Hard disk 1", &disk)],
                files: vec![],
                skipped_disks: vec![],
                threads: 2,
            },
        );
        assert!(
            r.as_ref()
                .is_err_and(|e| e.to_string().contains("symbolic link")),
            "{r:?}"
        );
        check("a backup through a planted link");
    }

    // Pruning the good point removes exactly its own objects.
    let prune = w.coffer(&["repo", "prune", &w.good.point_id]);
    assert!(prune.status.success(), "{}", text(&prune));
    check("repo prune of the good point");
}

/// On S3 another client can store a key with a `..` segment; the S3 client
/// refuses the whole listing page holding it. coffer then refuses to work
/// on the tier, naming the cause, rather than act on a listing with points
/// missing; and nothing is read, written or deleted outside.
#[test]
fn an_s3_key_with_dot_dot_stops_the_tier_with_a_clear_error_and_touches_nothing() {
    let w = World::new(Backend::S3);
    let before = w.outside(&[]);
    let manifest = serde_json::to_vec(&w.good).unwrap();
    w.raw_put(
        "area/tier/points/..%2F..%2Fvictim.txt/p1/manifest.json",
        &manifest,
    );
    for args in [
        &["repo", "ls"][..],
        &["repo", "verify"],
        &["repo", "gc", "--grace", "0s"],
    ] {
        let o = w.coffer(args);
        assert!(!o.status.success(), "{args:?}: {}", text(&o));
        assert!(
            text(&o).contains("coffer never writes such a key"),
            "{args:?}: {}",
            text(&o)
        );
        w.victims_intact(&args.join(" "));
    }
    // The planted object itself lies under the tier's prefix, so what is
    // outside is compared as it was.
    let root = w.bucket_root.as_ref().unwrap();
    for (k, h) in &before {
        if let Some(key) = k.strip_prefix("s3:") {
            assert_eq!(
                &hex::encode(Sha256::digest(root.get(key).unwrap())),
                h,
                "{key} changed"
            );
        }
    }
}

/// The same lies on a tier of a policy directory: catalog refresh, plan,
/// apply with retention prune, `repo prune --tier` and `restore` run against
/// them, and `restore --name` is given names that climb out. Nothing outside
/// the tier and the state directory changes.
#[test]
fn retention_catalog_and_restore_on_a_crafted_tier_stay_inside_it() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("p");
    std::fs::create_dir_all(dir.join("out")).unwrap();
    std::fs::write(t.path().join("victim.txt"), VICTIM).unwrap();
    std::fs::write(dir.join("victim.txt"), VICTIM).unwrap();
    std::fs::write(
        dir.join("coffer.toml"),
        r#"
[sources.lab]
kind = "lab"
lab_vms = 1

[tiers.local]
backend = "local"
path = "repo"
site = "here"

[policies.all]
sources = ["lab"]
vms = ["*"]
schedule = "0 0 1 * * *"
consistency = "crash"
backup_to = "local"

[policies.all.retain.local]
last = 1
"#,
    )
    .unwrap();
    let run = |args: &[&str]| -> Output {
        common::command_in(&dir)
            .args(args)
            .args(["-p", "."])
            .output()
            .unwrap()
    };
    let init = run(&["repo", "init", "--tier", "local"]);
    assert!(init.status.success(), "{}", text(&init));
    let apply = run(&["apply", "--no-mail"]);
    assert!(apply.status.success(), "{}", text(&apply));

    // Plant lying points next to the real one, older, so retention would
    // pick them first.
    let store = LocalStore::new(dir.join("repo")).unwrap();
    let repo =
        Repository::open(Arc::new(LocalStore::new(dir.join("repo")).unwrap()), None).unwrap();
    let real = repo.list_points().unwrap();
    assert_eq!(real.len(), 1);
    let good = repo.read_manifest(&real[0]).unwrap();
    let uuid = good.vm.uuid.clone();
    let good_json = serde_json::to_value(&good).unwrap();
    let index = store.get(&good.disks[0].index_key).unwrap();
    for (point, index_key, vm_uuid) in [
        (CLIMBING_INDEX, "../victim.txt".to_string(), uuid.clone()),
        (
            CLIMBING_INDEX_2,
            "points/../../../victim.txt".to_string(),
            uuid.clone(),
        ),
        (
            CLIMBING_VM,
            format!("points/{uuid}/{CLIMBING_VM}/disk-2000.index"),
            "../../x".to_string(),
        ),
    ] {
        let mut m = good_json.clone();
        m["point_id"] = point.into();
        m["vm"]["uuid"] = vm_uuid.into();
        m["created"] = "2020-01-01T00:00:00Z".into();
        for d in m["disks"].as_array_mut().unwrap() {
            d["index_key"] = index_key.clone().into();
        }
        let prefix = format!("points/{uuid}/{point}");
        store
            .put(
                &format!("{prefix}/disk-{}.index", good.disks[0].device_key),
                &index,
            )
            .unwrap();
        store
            .put(
                &format!("{prefix}/manifest.json"),
                &serde_json::to_vec_pretty(&m).unwrap(),
            )
            .unwrap();
    }

    let skip = [dir.join("repo"), dir.join(".coffer"), dir.join("out")];
    let before = files_outside(t.path(), &skip);
    let check = |after: &str| {
        for v in [t.path().join("victim.txt"), dir.join("victim.txt")] {
            assert_eq!(
                std::fs::read(&v).ok().as_deref(),
                Some(VICTIM),
                "{} changed or went after {after}",
                v.display()
            );
        }
        assert_eq!(
            files_outside(t.path(), &skip),
            before,
            "{after} wrote or deleted outside the tier and the state directory"
        );
    };

    for args in [
        &["catalog", "refresh"][..],
        &["plan"],
        &["backup", "lab-vm-01", "--full"],
        &["apply", "--no-mail"],
        &["repo", "prune", CLIMBING_INDEX, "--tier", "local"],
        &["repo", "prune", CLIMBING_INDEX_2, "--tier", "local"],
        &["repo", "prune", CLIMBING_VM, "--tier", "local"],
        &["repo", "gc", "--tier", "local", "--grace", "0s"],
    ] {
        let _ = run(args);
        check(&args.join(" "));
    }

    for name in ["../../x", "../victim", "a/b", "/tmp/x", ".."] {
        let o = run(&["restore", "lab-vm-01", "-o", "out", "--name", name]);
        assert!(!o.status.success(), "--name {name}: {}", text(&o));
        assert!(
            text(&o).contains("choose another --name"),
            "--name {name}: {}",
            text(&o)
        );
        check(&format!("restore --name {name}"));
    }
    assert!(!t.path().join("x.vmdk").exists() && !t.path().join("x.vmx").exists());
    let o = run(&["restore", "lab-vm-01", "-o", "out", "--name", "db-restored"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(dir.join("out/db-restored.vmdk").exists());
    check("a good restore");
}

macro_rules! on_every_backend {
    ($($name:ident),* $(,)?) => {
        mod local {
            $(#[test] fn $name() { super::$name(super::Backend::Local) })*
        }
        mod on_s3 {
            $(#[test] fn $name() { super::$name(super::Backend::S3) })*
        }
    };
}

on_every_backend!(every_repo_command_stays_inside_a_crafted_repository);
