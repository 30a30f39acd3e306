//! A tape tier from the command line, as an administrator runs it: a
//! policy keeping points 14 days on local disk, a year in S3 GLACIER (a
//! real S3 server, moto) and a year on a tape pool whose media leave the
//! library (an emulated library: the drive spaces over filemarks only);
//! `apply` backs up and copies to both, a drill on the GLACIER copy thaws
//! and waits across runs before it restores, the media show what they
//! hold, a restore and a drill read the point back from tape, a lost tape
//! catalog is rebuilt from the tapes, and compliance counts tape as its own
//! medium and as the offline copy of 3-2-1-1-0.

mod common;

use std::path::Path;

use common::s3::coffer_with_keys as run;
use common::{ok, s3, stderr, stdout};

fn write_policy(dir: &Path, bucket: &str, endpoint: &str) {
    std::fs::write(
        dir.join("coffer.toml"),
        format!(
            r#"
[settings]
timezone = "UTC"

[sources.lab]
kind = "lab"
lab_vms = 1

[tiers.local]
backend = "local"
path = "repo"
site = "here"

[tiers.archive]
backend = "s3"
bucket = "{bucket}"
endpoint = "{endpoint}"
storage_class = "GLACIER"
access_key = {{ env = "TEST_S3_KEY" }}
secret_key = {{ env = "TEST_S3_SECRET" }}
site = "cloud"

[tiers.vault]
backend = "tape"
library = "library"
pool = "VAULT"
offline = true
site = "bunker"

[policies.all]
sources = ["lab"]
vms = ["*"]
schedule = "0 0 1 * * *"
consistency = "crash"
backup_to = "local"

[policies.all.retain.local]
daily = 14

[policies.all.retain.archive]
monthly = 12

[policies.all.retain.vault]
monthly = 12

[[policies.all.drills]]
name = "from-tape"
kind = "restore"
every = "30d"
tier = "vault"

[[policies.all.drills]]
name = "cold"
kind = "restore"
every = "30d"
tier = "archive"

[compliance]
copies = 4
media = 3
offsite = 2
immutable = 1
"#
        ),
    )
    .unwrap();
}

#[test]
fn apply_copies_to_glacier_and_tape_and_the_point_restores_from_tape() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path();
    // The archive tier through a proxy that can keep saying a thaw is
    // under way, as S3 does for hours.
    let proxy = s3::FaultyProxy::start();
    write_policy(dir, &s3::bucket(false), &proxy.endpoint());
    let made = common::command_in(dir)
        .args([
            "tape",
            "emulate",
            "library",
            "--slots",
            "4",
            "--cartridges",
            "2",
        ])
        .args(["--capacity", "256MiB"])
        .output()
        .unwrap();
    assert!(
        ok(&made).contains("CF0001L9, CF0002L9"),
        "{}",
        stdout(&made)
    );
    ok(&run(dir, &["repo", "init", "--all"]));

    // The plan copies the new point to both long-term tiers.
    let first = ok(&run(dir, &["apply", "--no-mail"]));
    assert!(
        first.contains("copy lab-vm-01") && first.contains("on medium CF0001L9 file 1"),
        "{first}"
    );
    assert_eq!(first.matches("copy lab-vm-01").count(), 2, "{first}");
    // The restore drill read the point from tape, and its RTO counts that.
    assert!(
        first.contains("drill from-tape") && first.contains("staged from tape in"),
        "{first}"
    );

    // The drill on the GLACIER copy asked for a thaw and waits, run after
    // run while S3 says it is under way; then it restores.
    assert!(
        first.contains("waiting for a thaw, drill not run yet"),
        "{first}"
    );
    let under_way = |on| {
        proxy
            .faults
            .thaw_under_way
            .store(on, std::sync::atomic::Ordering::SeqCst)
    };
    under_way(true);
    let second = ok(&run(dir, &["apply", "--no-mail"]));
    assert!(
        second.contains("waiting for a thaw, drill not run yet")
            && !second.contains("copy lab-vm-01"),
        "{second}"
    );
    under_way(false);
    let third = ok(&run(dir, &["apply", "--no-mail"]));
    assert!(
        third.contains("drill cold") && third.contains("RTO"),
        "{third}"
    );
    assert!(!third.contains("waiting for a thaw"), "{third}");

    // The media: one labelled cartridge, its file 1 holding the point.
    let media = ok(&run(dir, &["tape", "media", "--tier", "vault"]));
    assert!(
        media.contains("CF0001L9  pool VAULT  append (drive)") && media.contains("file   1"),
        "{media}"
    );
    assert!(
        !media.contains("CF0002L9"),
        "only what was written: {media}"
    );

    // A restore from tape stages first, and gives the local point's bytes.
    let out = ok(&run(
        dir,
        &[
            "restore",
            "lab-vm-01",
            "--tier",
            "vault",
            "--out",
            "from-tape",
        ],
    ));
    assert!(out.contains("staged from tape in"), "{out}");
    ok(&run(
        dir,
        &[
            "restore",
            "lab-vm-01",
            "--tier",
            "local",
            "--out",
            "from-disk",
        ],
    ));
    let files = |d: &str| {
        let mut v: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir.join(d))
            .unwrap()
            .map(|e| e.unwrap())
            // The descriptors carry a new random CID each restore.
            .filter(|e| {
                let n = e.file_name().to_string_lossy().into_owned();
                n.ends_with("-flat.vmdk") || n.ends_with(".vmx") || n.ends_with(".nvram")
            })
            .map(|e| {
                (
                    e.file_name().to_string_lossy().into_owned(),
                    std::fs::read(e.path()).unwrap(),
                )
            })
            .collect();
        v.sort();
        v
    };
    let (tape, disk) = (files("from-tape"), files("from-disk"));
    assert!(!tape.is_empty());
    assert!(
        tape == disk,
        "the tape's point restores to the disk's bytes"
    );
    // Nothing staged is left behind.
    let staging = dir.join(".coffer/staging");
    if staging.exists() {
        assert_eq!(std::fs::read_dir(&staging).unwrap().count(), 0);
    }

    // `repo verify` of the tape tier stages each point and proves it.
    let verified = ok(&run(dir, &["repo", "verify", "--tier", "vault"]));
    assert!(verified.contains("1 points"), "{verified}");

    // The tape tier's catalog is lost: a scan of the tapes brings the point
    // back, and it restores to the same bytes.
    std::fs::remove_dir_all(dir.join(".coffer/tape/vault")).unwrap();
    let scanned = ok(&run(dir, &["tape", "scan", "--tier", "vault"]));
    assert!(
        scanned.contains("read 1 media (CF0001L9), recorded 1 session files holding 1 points"),
        "{scanned}"
    );
    ok(&run(dir, &["catalog", "rebuild", "--tier", "vault"]));
    ok(&run(
        dir,
        &[
            "restore",
            "lab-vm-01",
            "--tier",
            "vault",
            "--out",
            "after-scan",
        ],
    ));
    assert!(
        files("after-scan") == disk,
        "restored from the rescanned tape"
    );

    // 3-2-1-1-0: disk, object and tape; the tape is the offline copy.
    let c: serde_json::Value =
        serde_json::from_str(&ok(&run(dir, &["compliance", "--json"]))).unwrap();
    let vm = &c["vms"][0];
    assert_eq!(vm["copies"], 4, "{vm}");
    assert_eq!(vm["media"], 3, "{vm}");
    assert_eq!(vm["immutable"], 1, "{vm}");
    assert_eq!(vm["standing"], "ok", "{vm}");

    // The point leaves the tape tier: gc frees its medium whole.
    let listing: serde_json::Value =
        serde_json::from_str(&ok(&run(dir, &["repo", "ls", "--tier", "vault", "--json"]))).unwrap();
    let point = listing["points"][0]["point"].as_str().unwrap().to_string();
    ok(&run(dir, &["repo", "prune", &point, "--tier", "vault"]));
    let gc = ok(&run(
        dir,
        &["repo", "gc", "--tier", "vault", "--grace", "0s"],
    ));
    assert!(
        gc.contains("tape media freed for reuse") && gc.contains("CF0001L9"),
        "{gc}"
    );
    let media = ok(&run(dir, &["tape", "media", "--tier", "vault"]));
    assert!(media.contains("CF0001L9  pool VAULT  scratch"), "{media}");
}

#[test]
fn tape_tiers_are_checked_before_anything_runs() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path();
    std::fs::write(
        dir.join("coffer.toml"),
        r#"
[sources.lab]
kind = "lab"

[tiers.tape]
backend = "tape"
device = "/dev/st0"
pack_size = "16MiB"
immutable_for = "30d"

[tiers.emulated]
backend = "tape"
library = "lib"
changer = "/dev/sg3"

[policies.all]
sources = ["lab"]
vms = ["*"]
schedule = "0 0 1 * * *"
backup_to = "tape"

[policies.all.retain.tape]
daily = 7
"#,
    )
    .unwrap();
    let out = run(dir, &["validate"]);
    assert_eq!(out.status.code(), Some(10), "{}", stderr(&out));
    let err = format!("{}{}", stdout(&out), stderr(&out));
    for said in [
        "`/dev/st0` is not a non-rewinding tape device",
        "`pack_size` does not apply to a tape tier",
        "`immutable_for` needs object storage",
        "an emulated `library` has its own changer",
        "`tape` is a tape tier: tape receives copies of points, never backups straight from hosts",
    ] {
        assert!(err.contains(said), "{said}: {err}");
    }
    // Each names its file, line and column.
    assert!(err.contains("coffer.toml:7:10"), "{err}");
}
