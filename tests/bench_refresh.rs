//! Benchmark (ignored in the test run; `scripts/bench-refresh.sh` runs it in
//! release): what refreshing the catalog from a tier costs as the tier
//! grows. A refresh lists the tier and reads every manifest on it, before
//! every plan. A tier of N real points (backups of a small image) is
//! refreshed on a local directory and on moto behind a proxy that delays
//! each request by the round trip to a remote region; the refresh
//! (`Catalog::refresh_tier`, manifests read side by side) is timed against
//! reading the same manifests one after another, as refresh did before.

mod common;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use coffer::catalog::Catalog;
use coffer::repo::Repository;
use coffer::repo::local::LocalStore;
use coffer::repo::s3::S3Store;
use coffer::repo::store::Store;
use common::s3::{self, FaultyProxy};

/// Fills `repo` with `n` points of one small VM.
fn fill(repo: &Repository, n: usize, image: &std::path::Path) {
    let vm = coffer::repo::manifest::VmIdentity::new(
        "bench-refresh",
        "4210dddd-0000-0000-0000-000000000001",
    );
    for _ in 0..n {
        common::backup_image(repo, vm.clone(), image, None, None, 64 << 10);
    }
}

/// Seconds to read every manifest of `repo` one after another.
fn one_by_one(repo: &Repository) -> f64 {
    let started = Instant::now();
    for p in repo.list_points().unwrap() {
        repo.read_manifest(&p).unwrap();
    }
    started.elapsed().as_secs_f64()
}

/// Seconds of a first refresh (every point new to the catalog) and of a
/// second (nothing changed), and the requests (`requests` counts them) the
/// second made.
fn refreshes(
    repo: &Repository,
    t: &std::path::Path,
    name: &str,
    requests: impl Fn() -> u64,
) -> (f64, f64, u64) {
    let mut catalog = Catalog::open(&t.join(format!("{name}.db"))).unwrap();
    let started = Instant::now();
    let drift = catalog.refresh_tier(name, repo).unwrap();
    let first = started.elapsed().as_secs_f64();
    assert!(drift.corrupt().is_empty());
    let (r0, started) = (requests(), Instant::now());
    let drift = catalog.refresh_tier(name, repo).unwrap();
    let again = started.elapsed().as_secs_f64();
    assert!(drift.items.is_empty(), "{:?}", drift.items.first());
    (first, again, requests() - r0)
}

#[test]
#[ignore = "benchmark: scripts/bench-refresh.sh"]
fn refreshing_a_tier_reads_its_manifests_side_by_side() {
    let n: usize = common::bench_size("COFFER_BENCH_POINTS", 1000);
    let rtt_ms: u64 = common::bench_size("COFFER_BENCH_RTT_MS", 20);
    let t = tempfile::tempdir().unwrap();
    let image = t.path().join("small.raw");
    let mut data = vec![0u8; 256 << 10];
    common::noise(&mut data, 7);
    std::fs::write(&image, &data).unwrap();

    let local: Arc<dyn Store> = Arc::new(LocalStore::new(t.path().join("local")).unwrap());
    let repo = Repository::init_with(local, None, None).unwrap();
    fill(&repo, n, &image);
    let local_seq = one_by_one(&repo);
    let (local_first, local_again, _) = refreshes(&repo, t.path(), "local", || 0);

    // Written straight to moto, read through the delaying proxy.
    let bucket = s3::bucket(false);
    let direct = s3::location(&bucket, &s3::moto().endpoint());
    let repo = Repository::init_with(Arc::new(S3Store::new(direct).unwrap()), None, None).unwrap();
    fill(&repo, n, &image);
    let proxy = FaultyProxy::start();
    proxy.faults.delay_ms.store(rtt_ms, Ordering::SeqCst);
    let far = s3::location(&bucket, &proxy.endpoint());
    let repo = Repository::open(Arc::new(S3Store::new(far).unwrap()), None).unwrap();
    let s3_seq = one_by_one(&repo);
    let gets = proxy.faults.gets.load(Ordering::SeqCst);
    let seen = || proxy.faults.seen.load(Ordering::SeqCst);
    let (s3_first, s3_again, again_requests) = refreshes(&repo, t.path(), "s3", seen);

    println!(
        "\nrefresh of a tier of {n} points (release build; S3: moto, {rtt_ms} ms added per request)"
    );
    println!(
        "| tier | reading the manifests one by one (before) | refresh, all new | refresh, nothing changed | one by one / refresh |"
    );
    println!("|---|---|---|---|---|");
    for (name, seq, first, again) in [
        ("local directory", local_seq, local_first, local_again),
        ("S3", s3_seq, s3_first, s3_again),
    ] {
        println!(
            "| {name} | {seq:.2} s | {first:.2} s | {again:.2} s | {:.1}× |",
            seq / again
        );
    }
    println!(
        "S3 requests: {gets} GETs to read the manifests one by one; {again_requests} for a refresh when nothing changed"
    );
}
