//! Helpers shared by the integration tests: run the real binary.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub mod azurite;
pub mod catalog_site;
pub mod metrics;
pub mod postgres;
pub mod s3;
pub mod store;

/// Starts `cmd` (output discarded) for the rest of the test binary: the
/// server dies with the thread that started it (PR_SET_PDEATHSIG), and
/// that thread lives as long as the binary. The error says why it did not
/// start.
pub fn spawn_for_binary(mut cmd: std::process::Command) -> Result<(), String> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::os::unix::process::CommandExt;
        cmd.stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        // SAFETY: prctl is async-signal-safe and touches no memory of ours.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let _ = tx.send(cmd.spawn().map(drop).map_err(|e| e.to_string()));
        loop {
            std::thread::park();
        }
    });
    rx.recv().unwrap()
}

/// A new directory for this test binary's `server` (`coffer-SERVER-PID` in
/// the temporary directory). A server of the binary lives as long as the
/// binary, so nothing removes its directory when it ends; each start
/// removes the directories of binaries that are gone instead, so runs do
/// not pile up on the disk.
pub fn binary_workspace(server: &str) -> PathBuf {
    let root = std::env::temp_dir();
    let prefix = format!("coffer-{server}-");
    for e in std::fs::read_dir(&root).into_iter().flatten().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix(&prefix)
            .and_then(|p| p.parse::<i32>().ok())
        else {
            continue;
        };
        // SAFETY: signal 0 only asks whether the process exists.
        if unsafe { libc::kill(pid, 0) } != 0 {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
    let dir = root.join(format!("{prefix}{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir(&dir).unwrap();
    dir
}

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Runs `coffer ARGS` from the crate root, with no inherited policy dir.
pub fn coffer(args: &[&str]) -> Output {
    coffer_in(&root(), args)
}

pub fn coffer_in(dir: &Path, args: &[&str]) -> Output {
    command_in(dir)
        .args(args)
        .output()
        .expect("the coffer binary runs")
}

/// The coffer binary, to be given arguments, environment and stdio.
pub fn command_in(dir: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_coffer"));
    // Bare `--repo` commands keep their chunk index in the user's cache
    // directory: the tests' goes under the build directory, not $HOME.
    c.current_dir(dir).env_remove("COFFER_POLICIES").env(
        "XDG_CACHE_HOME",
        Path::new(env!("CARGO_TARGET_TMPDIR")).join("cache"),
    );
    c
}

/// Runs `coffer ARGS -p .` in the policy directory `dir`.
pub fn in_policy_dir(dir: &Path, args: &[&str]) -> Output {
    command_in(dir)
        .args(args)
        .args(["-p", "."])
        .output()
        .expect("the coffer binary runs")
}

/// What a command printed, stdout then stderr.
pub fn text(o: &Output) -> String {
    format!("{}{}", stdout(o), stderr(o))
}

/// Writes `coffer.toml` in `dir`: the built-in lab with one VM, one local
/// tier `local` (at `repo`) keeping the last 5 points, and the policy
/// `all` selecting every VM nightly, crash-consistent, with `policy_extra`
/// lines added to `[policies.all]`.
pub fn one_vm_lab_policy(dir: &Path, policy_extra: &str) {
    std::fs::write(
        dir.join("coffer.toml"),
        format!(
            r#"
[sources.lab]
kind = "lab"
lab_vms = 1

[tiers.local]
backend = "local"
path = "repo"

[policies.all]
sources = ["lab"]
vms = ["*"]
schedule = "0 0 1 * * *"
consistency = "crash"
backup_to = "local"
{policy_extra}

[policies.all.retain.local]
last = 5
"#
        ),
    )
    .expect("the policy directory is writable");
}

/// A policy directory in `dir` with the one-VM lab (`lab-vm-01`: disk 2000
/// of 64 MiB, disk 2001 of 32 MiB) and its tier made, the lab started
/// once; answers the lab's state directory.
pub fn one_vm_lab(dir: &Path) -> PathBuf {
    one_vm_lab_policy(dir, "");
    assert!(
        in_policy_dir(dir, &["repo", "init", "--all"])
            .status
            .success()
    );
    assert!(in_policy_dir(dir, &["inventory"]).status.success());
    coffer::run::connect::lab_state_dir(&dir.join(".coffer"), "lab")
}

/// The repository of the local tier at `dir/repo` and its points, oldest
/// first.
pub fn local_points(
    dir: &Path,
) -> (
    coffer::repo::Repository,
    Vec<coffer::repo::manifest::Manifest>,
) {
    points_at(&dir.join("repo"))
}

/// The unencrypted repository in directory `path` and its points, oldest
/// first.
pub fn points_at(
    path: &Path,
) -> (
    coffer::repo::Repository,
    Vec<coffer::repo::manifest::Manifest>,
) {
    let repo = coffer::repo::Repository::open(
        std::sync::Arc::new(coffer::repo::local::LocalStore::new(path).unwrap()),
        None,
    )
    .unwrap();
    let mut ms: Vec<_> = repo
        .list_points()
        .unwrap()
        .iter()
        .map(|p| repo.read_manifest(p).unwrap())
        .collect();
    ms.sort_by(|a, b| a.point_id.cmp(&b.point_id));
    (repo, ms)
}

/// Snapshots on every VM of the policy directory `dir`'s sources, as
/// `coffer inventory --json` lists them.
pub fn snapshot_count(dir: &Path) -> usize {
    let out = in_policy_dir(dir, &["inventory", "--json"]);
    let inv: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("inventory --json prints JSON ({e}): {}", text(&out)));
    inv["vms"]
        .as_array()
        .expect("a list of VMs")
        .iter()
        .map(|v| v["snapshots"].as_array().expect("a VM's snapshots").len())
        .sum()
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// A benchmark's size: the number in the environment variable `name`,
/// else `default`.
pub fn bench_size<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Fills `buf` with incompressible bytes, the same for the same seed
/// (xorshift64).
pub fn noise(buf: &mut [u8], seed: u64) {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    for c in buf.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        c.copy_from_slice(&x.to_le_bytes()[..c.len()]);
    }
}

/// A file of `bytes` incompressible bytes (`noise`).
pub fn noise_file(path: &Path, bytes: u64, seed: u64) {
    let mut buf = vec![0u8; bytes as usize];
    noise(&mut buf, seed);
    std::fs::write(path, buf).unwrap();
}

/// Stdout of a command that must have succeeded (else its exit code and
/// both streams are the failure).
pub fn ok(o: &Output) -> String {
    assert!(
        o.status.success(),
        "exit {:?}\n{}\n{}",
        o.status.code(),
        stdout(o),
        stderr(o)
    );
    stdout(o)
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Every directory at or below `dir` that directly holds a `*.toml` file.
pub fn toml_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in walk(dir) {
        if e.extension().is_some_and(|x| x == "toml") {
            out.push(e);
        }
    }
    out.sort();
    out
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with('.'))
            {
                continue;
            }
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}

pub mod smtp;

/// Backs up disk 2000 of an image file as one point: a full, or with
/// `parent` an incremental over `ranges`.
pub fn backup_image(
    repo: &coffer::repo::Repository,
    vm: coffer::repo::manifest::VmIdentity,
    image: &Path,
    parent: Option<&coffer::repo::manifest::Manifest>,
    ranges: Option<Vec<std::ops::Range<u64>>>,
    chunk_size_bytes: u32,
) -> coffer::repo::manifest::Manifest {
    use coffer::repo::backup::{self, BackupRequest, DiskSource, FileDisk};
    let disk = FileDisk::open(image).unwrap();
    backup::backup(
        repo,
        BackupRequest {
            vm,
            consistency: "crash".into(),
            chunk_size_bytes,
            parent,
            disks: vec![DiskSource {
                from_parent: parent.is_some(),
                ranges,
                ..DiskSource::whole(2000, "Hard disk 1", &disk)
            }],
            files: vec![],
            skipped_disks: vec![],
            threads: 2,
        },
    )
    .unwrap()
}

/// The bytes of the first disk of `m`, restored raw to `out`.
pub fn restore_bytes(
    repo: &coffer::repo::Repository,
    m: &coffer::repo::manifest::Manifest,
    out: &Path,
) -> Vec<u8> {
    restore_disk_bytes(repo, m, 0, out)
}

/// The bytes of disk `disk` (by position) of `m`, restored raw to `out`.
pub fn restore_disk_bytes(
    repo: &coffer::repo::Repository,
    m: &coffer::repo::manifest::Manifest,
    disk: usize,
    out: &Path,
) -> Vec<u8> {
    use coffer::repo::restore::{self, DiskFormat};
    let index = repo.read_index(m, &m.disks[disk]).unwrap();
    restore::restore_disk(repo, &index, out, DiskFormat::Raw, true, 2).unwrap();
    std::fs::read(out).unwrap()
}

/// Every disk of point `m` restores (raw, into `out_dir`) to the bytes of
/// the lab's flat file of that disk under `datastore` (the lab's datastore
/// folder: `<vm>/<vm>-flat.vmdk`, `<vm>/<vm>_<i>-flat.vmdk`), or of its
/// mapping file when the disk is a virtual-mode raw device mapping
/// (`<vm>/<vm>_<i>-rdm.vmdk`, which reads as the mapped LUN).
pub fn assert_point_restores_to_lab(
    repo: &coffer::repo::Repository,
    m: &coffer::repo::manifest::Manifest,
    datastore: &Path,
    out_dir: &Path,
) {
    let vm = &m.vm.name;
    for i in 0..m.disks.len() {
        let stem = match i {
            0 => vm.to_string(),
            i => format!("{vm}_{i}"),
        };
        let flat = [format!("{stem}-flat.vmdk"), format!("{stem}-rdm.vmdk")]
            .into_iter()
            .find(|f| datastore.join(vm).join(f).exists())
            .unwrap_or_else(|| panic!("the lab has no flat or mapping file for disk {i} of {vm}"));
        let out = out_dir.join(format!("{vm}-{i}.raw"));
        assert!(
            restore_disk_bytes(repo, m, i, &out)
                == std::fs::read(datastore.join(vm).join(&flat)).unwrap(),
            "disk {i} of {vm} restores to the lab's bytes"
        );
    }
}
