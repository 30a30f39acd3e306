//! The repository commands on the tiers a policy directory declares: a
//! local tier and an S3 tier on a real S3 server (moto), with the keys
//! coming from environment variables as in production, and an immutable
//! tier whose objects the server refuses to delete.

mod common;

use std::path::Path;

use common::{azurite, s3, stderr, stdout};

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

fn run(dir: &Path, args: &[&str]) -> std::process::Output {
    common::command_in(dir)
        .args(args)
        .args(["-p", "."])
        .env("TEST_S3_KEY", "coffer-test")
        .env("TEST_S3_SECRET", "coffer-test-secret")
        .env("TEST_OFFSITE_KEY", "offsite passphrase")
        .output()
        .unwrap()
}

fn ok(o: &std::process::Output) -> String {
    assert!(
        o.status.success(),
        "exit {:?}\n{}\n{}",
        o.status.code(),
        stdout(o),
        stderr(o)
    );
    stdout(o)
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
