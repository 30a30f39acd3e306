//! The repository commands on the tiers a policy directory declares: a
//! local tier and an S3 tier on a real S3 server (moto), with the keys
//! coming from environment variables as in production, and an immutable
//! tier whose objects the server refuses to delete.

mod common;

use std::path::Path;

use common::s3::coffer_with_keys as run;
use common::{azurite, ok, s3, stderr, stdout};

fn write_policies(dir: &Path, bucket: &str, locked_bucket: &str) {
    let endpoint = s3::moto().endpoint();
    std::fs::write(
        dir.join("coffer.toml"),
        format!(
            r#"
[settings]
timezone = "UTC"

[sources.lab]
kind = "lab"

[tiers.local]
backend = "local"
path = "repo"
site = "here"

[tiers.offsite]
backend = "s3"
bucket = "{bucket}"
prefix = "dc1"
endpoint = "{endpoint}"
access_key = {{ env = "TEST_S3_KEY" }}
secret_key = {{ env = "TEST_S3_SECRET" }}
site = "there"
encryption_key = {{ env = "TEST_OFFSITE_KEY" }}

[tiers.vault]
backend = "s3"
bucket = "{locked_bucket}"
endpoint = "{endpoint}"
access_key = {{ env = "TEST_S3_KEY" }}
secret_key = {{ env = "TEST_S3_SECRET" }}
site = "vault"
immutable_for = "30d"

[policies.all]
sources = ["lab"]
vms = ["*"]
schedule = "0 0 1 * * *"
backup_to = "local"

[policies.all.retain.local]
last = 3

[policies.all.retain.offsite]
daily = 7

[policies.all.retain.vault]
monthly = 12
"#
        ),
    )
    .unwrap();
}

#[test]
fn a_point_copied_to_the_s3_tiers_restores_and_the_immutable_one_refuses_a_prune() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path();
    write_policies(dir, &s3::bucket(false), &s3::bucket(true));
    let image = dir.join("disk.img");
    let data: Vec<u8> = (0..6u32 << 20)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(&image, &data).unwrap();

    for tier in ["local", "offsite", "vault"] {
        let out = ok(&run(dir, &["repo", "init", "--tier", tier]));
        assert!(out.contains("created repository"), "{out}");
    }
    let out = ok(&run(
        dir,
        &["backup-image", "disk.img", "--tier", "local", "--json"],
    ));
    let result: serde_json::Value = serde_json::from_str(&out).unwrap();
    let point = result["point"].as_str().unwrap().to_string();

    for tier in ["offsite", "vault"] {
        let out = ok(&run(
            dir,
            &["repo", "copy", &point, "--tier", "local", "--to-tier", tier],
        ));
        assert!(out.contains("chunks sent"), "{out}");
        let out = ok(&run(dir, &["repo", "ls", "--tier", tier]));
        assert!(out.contains(&point), "{out}");
        let restored = format!("{tier}.raw");
        ok(&run(
            dir,
            &["repo", "restore", &point, "--tier", tier, "-o", &restored],
        ));
        assert!(
            std::fs::read(dir.join(&restored)).unwrap() == data,
            "bytes restored from {tier} equal the source"
        );
        ok(&run(dir, &["repo", "verify", "--tier", tier]));
    }

    // The offsite tier is encrypted: a wrong key is refused before anything.
    let wrong = common::command_in(dir)
        .args(["repo", "ls", "--tier", "offsite", "-p", "."])
        .env("TEST_S3_KEY", "coffer-test")
        .env("TEST_S3_SECRET", "coffer-test-secret")
        .env("TEST_OFFSITE_KEY", "not the passphrase")
        .output()
        .unwrap();
    assert_eq!(wrong.status.code(), Some(1));
    assert!(
        stderr(&wrong).contains("wrong encryption key"),
        "{}",
        stderr(&wrong)
    );

    // The vault refuses the prune, says until when, and keeps the point.
    let prune = run(dir, &["repo", "prune", &point, "--tier", "vault"]);
    assert_eq!(prune.status.code(), Some(1));
    let err = stderr(&prune);
    assert!(err.contains("locked") && err.contains("until"), "{err}");
    let out = ok(&run(dir, &["repo", "ls", "--tier", "vault"]));
    assert!(out.contains(&point), "{out}");
    // The offsite tier is not immutable: the prune goes through.
    ok(&run(dir, &["repo", "prune", &point, "--tier", "offsite"]));
    let out = ok(&run(dir, &["repo", "ls", "--tier", "offsite"]));
    assert!(!out.contains(&point), "{out}");
}

#[test]
fn a_missing_s3_secret_is_named() {
    let t = tempfile::tempdir().unwrap();
    write_policies(t.path(), "some-bucket", "other-bucket");
    let out = common::command_in(t.path())
        .args(["repo", "ls", "--tier", "offsite", "-p", "."])
        .env_remove("TEST_S3_KEY")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("offsite") && err.contains("TEST_S3_KEY"),
        "{err}"
    );
}

/// An Azure Blob tier of the policy on a real Azure endpoint (Azurite),
/// with the account key from the environment: a point copied there
/// restores byte-identical, verifies and is pruned. An immutable Azure
/// tier on a container without version-level immutability support is
/// refused when opened, before anything is written, naming what is
/// missing (Azurite has no immutability, so coffer must not pretend the
/// blobs are locked). Keys of other backends are refused with their place.
#[test]
fn an_azure_tier_takes_copies_and_an_immutable_one_needs_immutability_support() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path();
    let (plain, vault) = (azurite::container(), azurite::container());
    let endpoint = azurite::azurite().endpoint();
    let tiers = format!(
        r#"
[settings]
timezone = "UTC"

[sources.lab]
kind = "lab"

[tiers.local]
backend = "local"
path = "repo"
site = "here"

[tiers.blob]
backend = "azure"
account = "{account}"
container = "{plain}"
prefix = "dc1"
endpoint = "{endpoint}"
access_key = {{ env = "TEST_AZURE_KEY" }}
site = "there"
encryption_key = {{ env = "TEST_OFFSITE_KEY" }}

[tiers.vault]
backend = "azure"
account = "{account}"
container = "{vault}"
endpoint = "{endpoint}"
access_key = {{ env = "TEST_AZURE_KEY" }}
site = "vault"
immutable_for = "30d"

[policies.all]
sources = ["lab"]
vms = ["*"]
schedule = "0 0 1 * * *"
backup_to = "local"

[policies.all.retain.local]
last = 3

[policies.all.retain.blob]
daily = 7

[policies.all.retain.vault]
monthly = 12
"#,
        account = azurite::ACCOUNT,
    );
    std::fs::write(dir.join("coffer.toml"), &tiers).unwrap();
    let run = |args: &[&str]| {
        common::command_in(dir)
            .args(args)
            .args(["-p", "."])
            .env("TEST_AZURE_KEY", azurite::KEY)
            .env("TEST_OFFSITE_KEY", "offsite passphrase")
            .output()
            .unwrap()
    };
    let data: Vec<u8> = (0..5u32 << 20)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 11) as u8)
        .collect();
    std::fs::write(dir.join("disk.img"), &data).unwrap();
    for tier in ["local", "blob"] {
        let out = ok(&run(&["repo", "init", "--tier", tier]));
        assert!(out.contains("created repository"), "{out}");
    }
    let out = ok(&run(&[
        "backup-image",
        "disk.img",
        "--tier",
        "local",
        "--json",
    ]));
    let result: serde_json::Value = serde_json::from_str(&out).unwrap();
    let point = result["point"].as_str().unwrap().to_string();
    let out = ok(&run(&[
        "repo",
        "copy",
        &point,
        "--tier",
        "local",
        "--to-tier",
        "blob",
    ]));
    assert!(out.contains("chunks sent"), "{out}");
    ok(&run(&[
        "repo", "restore", &point, "--tier", "blob", "-o", "blob.raw",
    ]));
    assert!(
        std::fs::read(dir.join("blob.raw")).unwrap() == data,
        "bytes restored from the Azure tier equal the source"
    );
    ok(&run(&["repo", "verify", "--tier", "blob"]));
    ok(&run(&["repo", "prune", &point, "--tier", "blob"]));
    let out = ok(&run(&["repo", "ls", "--tier", "blob"]));
    assert!(!out.contains(&point), "{out}");

    let refused = run(&["repo", "init", "--tier", "vault"]);
    assert_eq!(refused.status.code(), Some(1));
    let err = stderr(&refused);
    assert!(
        err.contains(&format!(
            "container `{vault}` of account `devstoreaccount1` has no version-level immutability support"
        )),
        "{err}"
    );
    let store = coffer::repo::azure::AzureStore::new(azurite::location(&vault, &endpoint)).unwrap();
    use coffer::repo::store::Store;
    assert!(store.list("").unwrap().is_empty(), "nothing was written");

    // A key of S3 on an azure tier is refused with its place.
    std::fs::write(
        dir.join("coffer.toml"),
        tiers.replacen(
            "prefix = \"dc1\"",
            "prefix = \"dc1\"\nregion = \"eu-west-1\"",
            1,
        ),
    )
    .unwrap();
    let v = run(&["validate"]);
    assert_eq!(v.status.code(), Some(10), "{}", stdout(&v));
    let said = format!("{}{}", stdout(&v), stderr(&v));
    assert!(
        said.contains("coffer.toml:18:10")
            && said.contains("`region` does not apply to an azure tier"),
        "{said}"
    );
}

/// An S3 tier whose chunks go to GLACIER (moto refuses to read them until
/// they are restored, as S3 does): the point lists (manifests stay in the
/// default class), a restore and a verify fail saying to thaw and mark
/// nothing damaged; `repo thaw` asks for every chunk (exit 5 while a thaw
/// is under way), and once they read, the restore is byte-identical.
#[test]
fn a_glacier_tier_needs_a_thaw_before_a_restore_and_marks_nothing_damaged() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path();
    let bucket = s3::bucket(false);
    let endpoint = s3::moto().endpoint();
    std::fs::write(
        dir.join("coffer.toml"),
        format!(
            r#"
[sources.lab]
kind = "lab"

[tiers.local]
backend = "local"
path = "repo"

[tiers.archive]
backend = "s3"
bucket = "{bucket}"
endpoint = "{endpoint}"
storage_class = "GLACIER"
access_key = {{ env = "TEST_S3_KEY" }}
secret_key = {{ env = "TEST_S3_SECRET" }}
site = "there"

[policies.all]
sources = ["lab"]
vms = ["*"]
schedule = "0 0 1 * * *"
backup_to = "local"

[policies.all.retain.local]
last = 3

[policies.all.retain.archive]
monthly = 12
"#
        ),
    )
    .unwrap();
    let data: Vec<u8> = (0..3u32 << 20)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 9) as u8)
        .collect();
    std::fs::write(dir.join("disk.img"), &data).unwrap();
    for tier in ["local", "archive"] {
        ok(&run(dir, &["repo", "init", "--tier", tier]));
    }
    let out = ok(&run(
        dir,
        &["backup-image", "disk.img", "--tier", "local", "--json"],
    ));
    let point = serde_json::from_str::<serde_json::Value>(&out).unwrap()["point"]
        .as_str()
        .unwrap()
        .to_string();
    ok(&run(
        dir,
        &[
            "repo",
            "copy",
            &point,
            "--tier",
            "local",
            "--to-tier",
            "archive",
        ],
    ));
    assert!(ok(&run(dir, &["repo", "ls", "--tier", "archive"])).contains(&point));

    let frozen = run(
        dir,
        &[
            "repo", "restore", &point, "--tier", "archive", "-o", "a.raw",
        ],
    );
    assert_eq!(frozen.status.code(), Some(1));
    assert!(
        stderr(&frozen).contains("is in archive storage (GLACIER)")
            && stderr(&frozen).contains("coffer repo thaw"),
        "{}",
        stderr(&frozen)
    );
    let verify = run(dir, &["repo", "verify", "--tier", "archive"]);
    assert_eq!(
        verify.status.code(),
        Some(1),
        "an error, not damage (exit 4)"
    );
    assert!(
        stderr(&verify).contains("are in archive storage and were not read"),
        "{}",
        stderr(&verify)
    );

    let first = run(
        dir,
        &[
            "repo", "thaw", &point, "--tier", "archive", "--speed", "bulk",
        ],
    );
    assert_eq!(first.status.code(), Some(5), "{}", stdout(&first));
    assert!(
        stdout(&first).contains("thaws asked for now"),
        "{}",
        stdout(&first)
    );
    let again = ok(&run(dir, &["repo", "thaw", &point, "--tier", "archive"]));
    assert!(again.contains("objects read now"), "{again}");
    ok(&run(
        dir,
        &[
            "repo", "restore", &point, "--tier", "archive", "-o", "a.raw",
        ],
    ));
    assert!(std::fs::read(dir.join("a.raw")).unwrap() == data);
    ok(&run(dir, &["repo", "verify", "--tier", "archive"]));
}

/// The policies of the cold-tier drill tests: one lab VM backed up to a
/// local tier and kept monthly on `archive_tier` (the `[tiers.archive]`
/// table), with a restore drill that reads from the archive.
fn write_cold_drill_policy(dir: &Path, archive_tier: &str) {
    let toml = format!(
        r#"{head}{archive_tier}{tail}"#,
        head = COLD_HEAD,
        tail = COLD_TAIL
    );
    std::fs::write(dir.join("coffer.toml"), toml).unwrap();
}

const COLD_HEAD: &str = r#"
[settings]
timezone = "UTC"

[sources.lab]
kind = "lab"
lab_vms = 1

[tiers.local]
backend = "local"
path = "repo"
site = "here"
"#;

const COLD_TAIL: &str = r#"
[policies.all]
sources = ["lab"]
vms = ["*"]
schedule = "0 0 1 * * *"
consistency = "crash"
backup_to = "local"

[policies.all.retain.local]
last = 3

[policies.all.retain.archive]
monthly = 12

[[policies.all.drills]]
name = "cold"
kind = "restore"
every = "7d"
tier = "archive"
"#;

/// The point on tier `archive` restores to the same bytes as on tier
/// `local`; `run` runs coffer in `dir` with the test's credentials.
fn assert_archive_copy_is_the_local_one(dir: &Path, run: &dyn Fn(&[&str]) -> std::process::Output) {
    let listing: serde_json::Value =
        serde_json::from_str(&ok(&run(&["repo", "ls", "--tier", "archive", "--json"]))).unwrap();
    let point = listing["points"][0]["point"].as_str().unwrap().to_string();
    for tier in ["archive", "local"] {
        let out = format!("{tier}.raw");
        ok(&run(&[
            "repo", "restore", &point, "--tier", tier, "-o", &out,
        ]));
    }
    assert!(
        std::fs::read(dir.join("archive.raw")).unwrap()
            == std::fs::read(dir.join("local.raw")).unwrap()
    );
}

/// A restore drill on a point whose only copy the drill may read is in
/// GLACIER: the plan says a thaw comes first and how long it takes; `apply`
/// asks for it and waits (nothing recorded, nothing failed) while S3 says
/// it is under way, run after run; once the objects read, the next run
/// carries the drill out, and the point restores byte-identical from the
/// archive tier.
#[test]
fn a_drill_on_a_glacier_point_thaws_waits_across_runs_then_restores() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path();
    let bucket = s3::bucket(false);
    let proxy = s3::FaultyProxy::start();
    let archive = format!(
        r#"
[tiers.archive]
backend = "s3"
bucket = "{bucket}"
endpoint = "{}"
storage_class = "GLACIER"
thaw_speed = "bulk"
access_key = {{ env = "TEST_S3_KEY" }}
secret_key = {{ env = "TEST_S3_SECRET" }}
site = "there"
"#,
        proxy.endpoint()
    );
    write_cold_drill_policy(dir, &archive);
    for tier in ["local", "archive"] {
        ok(&run(dir, &["repo", "init", "--tier", tier]));
    }
    // The first run backs up, copies to the archive, and the drill it then
    // plans asks for the thaw (the objects are in GLACIER) and waits.
    let first = ok(&run(dir, &["apply", "--no-mail"]));
    assert!(
        first.contains("copy lab-vm-01")
            && first.contains("waiting for a thaw, drill not run yet")
            && first.contains("thaws asked for now"),
        "{first}"
    );
    let plan = ok(&run(dir, &["plan"]));
    assert!(
        plan.contains("drill cold")
            && plan.contains("in GLACIER: a thaw (bulk retrieval, typically 5-12 hours)"),
        "the plan shows the thaw and its wait: {plan}"
    );
    // S3 takes hours: run after run, the drill waits.
    proxy
        .faults
        .thaw_under_way
        .store(true, std::sync::atomic::Ordering::SeqCst);
    for round in 0..2 {
        let out = run(dir, &["apply", "--no-mail"]);
        let said = format!("{}{}", stdout(&out), stderr(&out));
        assert_eq!(out.status.code(), Some(0), "round {round}: {said}");
        assert!(
            said.contains("waiting for a thaw, drill not run yet"),
            "round {round}: {said}"
        );
        assert!(ok(&run(dir, &["plan"])).contains("drill cold"), "still due");
    }
    // A restore of the VM from the archive waits too, with exit 5.
    let early = run(
        dir,
        &[
            "restore",
            "lab-vm-01",
            "--tier",
            "archive",
            "--out",
            "early",
        ],
    );
    assert_eq!(early.status.code(), Some(5), "{}", stderr(&early));
    assert!(
        stdout(&early).contains("waiting for a thaw, restore not run yet"),
        "{}",
        stdout(&early)
    );
    assert!(!dir.join("early").exists(), "nothing restored yet");
    // Thawed: the next run carries the drill out, and it is not due again.
    proxy
        .faults
        .thaw_under_way
        .store(false, std::sync::atomic::Ordering::SeqCst);
    let done = ok(&run(dir, &["apply", "--no-mail"]));
    assert!(
        done.contains("drill cold") && done.contains("RTO"),
        "{done}"
    );
    assert!(!ok(&run(dir, &["plan"])).contains("drill cold"));
    ok(&run(
        dir,
        &[
            "restore",
            "lab-vm-01",
            "--tier",
            "archive",
            "--out",
            "later",
        ],
    ));
    // And the archive's copy is the local one, byte for byte.
    assert_archive_copy_is_the_local_one(dir, &|args| run(dir, args));
}

/// An azure tier whose chunks go to the Archive access tier: a restore
/// drill finds the point's packs archived, rehydrates them first (Set Blob
/// Tier) and waits, and once they read the next run carries the drill out;
/// the point restores byte-identical.
#[test]
fn an_azure_archive_tier_rehydrates_before_a_drill_reads_it() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path();
    let container = azurite::container();
    let archive = format!(
        r#"
[tiers.archive]
backend = "azure"
account = "{account}"
container = "{container}"
endpoint = "{endpoint}"
storage_class = "Archive"
access_key = {{ env = "TEST_AZURE_KEY" }}
site = "there"
"#,
        account = azurite::ACCOUNT,
        endpoint = azurite::azurite().endpoint(),
    );
    write_cold_drill_policy(dir, &archive);
    let run = |args: &[&str]| {
        common::command_in(dir)
            .args(args)
            .args(["-p", "."])
            .env("TEST_AZURE_KEY", azurite::KEY)
            .output()
            .unwrap()
    };
    for tier in ["local", "archive"] {
        ok(&run(&["repo", "init", "--tier", tier]));
    }
    // The first run backs up, copies to the archive, and the drill it then
    // plans finds the packs archived (the service says so): it asks for
    // their rehydration and waits.
    let first = ok(&run(&["apply", "--no-mail"]));
    assert!(
        first.contains("copy lab-vm-01")
            && first.contains("waiting for a thaw, drill not run yet")
            && first.contains("thaws asked for now"),
        "{first}"
    );
    let plan = ok(&run(&["plan"]));
    assert!(
        plan.contains("drill cold")
            && plan.contains("in Archive: a thaw (standard retrieval, typically up to 15 hours)"),
        "{plan}"
    );
    // Azurite rehydrates at once; Azure takes hours, and the drill waits
    // for as many runs as it takes (the S3 test shows that).
    let done = ok(&run(&["apply", "--no-mail"]));
    assert!(
        done.contains("drill cold") && done.contains("RTO"),
        "{done}"
    );
    assert_archive_copy_is_the_local_one(dir, &run);
}

/// What an Azure store does with the Archive tier, against Azurite: a blob
/// holding chunk data is written archived (other blobs are not), reading it
/// is refused as archived storage (409 `BlobArchived`), a thaw asks for
/// its rehydration, and then it reads.
#[test]
fn an_archived_blob_refuses_reads_until_it_is_rehydrated() {
    use coffer::repo::store::{Store, StoreError, Thaw, ThawSpeed};
    let container = azurite::container();
    let mut loc = azurite::location(&container, &azurite::azurite().endpoint());
    loc.access_tier = Some("Archive".into());
    let store = coffer::repo::azure::AzureStore::new(loc).unwrap();
    let pack = format!("packs/ab/{}", "ab".repeat(32));
    store.put(&pack, b"chunk data").unwrap();
    store.put("points/x/manifest.json", b"{}").unwrap();
    assert_eq!(store.get("points/x/manifest.json").unwrap(), b"{}");
    for read in [store.get(&pack), store.get_range(&pack, 0..5)] {
        assert!(
            matches!(&read, Err(StoreError::Archived { class, .. }) if class == "Archive"),
            "{read:?}"
        );
    }
    assert_eq!(
        store
            .thaw("points/x/manifest.json", 1, ThawSpeed::Standard)
            .unwrap(),
        Thaw::Ready
    );
    assert_eq!(
        store.thaw(&pack, 1, ThawSpeed::Standard).unwrap(),
        Thaw::Requested
    );
    assert_eq!(store.get(&pack).unwrap(), b"chunk data");
    assert_eq!(
        store.thaw(&pack, 1, ThawSpeed::Standard).unwrap(),
        Thaw::Ready
    );
}
