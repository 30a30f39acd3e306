#!/usr/bin/env bash
# Benchmark of the datastore read path: a backup of a lab VM with a
# multi-GiB disk through the lab's throttled file service (/folder), with
# coffer's request pattern and with the pattern coffer used before it (one
# request per 256 KiB chunk or changed area, no gap merging, as many
# requests in flight as workers), side by side in one run.
#
#   scripts/bench-lab.sh [DISK_GIB] [FAULTS]
#
# DISK_GIB defaults to 4: a thin disk, about a third of it data. With
# e2fsprogs (mke2fs) the disk is a real ext4 file system in a partition at
# 1 MiB, filled (mke2fs -d) with BENCH_DATA_MIB (default a third of the
# disk) of files copied from /usr/lib and /usr/share, imported with
# `coffer lab add-vm --disk image=FILE` (sparsely: the file system's free
# space stays holes); without it, or with BENCH_DISK=synthetic, the lab's
# made-up disk (`--disk SIZE`). The output says which was used. FAULTS is
# the lab's throttling, default "folder-limit=2,folder-setup-ms=10,folder-mibps=400":
# at most two transfers at once (more are answered 503), 10 ms of setup per
# request, 400 MiB/s shared by all transfers.
#
# Printed per pattern: full MiB/s (disk data read ÷ wall time), requests
# per GiB read, 503 answers, the full's snapshot lifetime ÷ its read time
# (how much longer than the read the snapshot stays open), and for an
# incremental after scattered 64 KiB
# writes over 2% of the disk: source bytes read ÷ changed bytes and its wall
# time; then the ratios of coffer's pattern to the earlier one.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
DISK_GIB=${1:-4}
FAULTS=${2:-folder-limit=2,folder-setup-ms=10,folder-mibps=400}
WORK=${BENCH_DIR:-/tmp/coffer-bench-lab}
DATA_MIB=${BENCH_DATA_MIB:-$((DISK_GIB * 1024 / 3))}
DISK_KIND=${BENCH_DISK:-ext4}
MKE2FS=$(command -v mke2fs || command -v /sbin/mke2fs || true)
if [ "$DISK_KIND" = ext4 ] && [ -z "$MKE2FS" ]; then
  echo "mke2fs (e2fsprogs) not found: the lab's made-up disk is used" >&2
  DISK_KIND=synthetic
fi

cargo build --release --quiet
COFFER=${CARGO_TARGET_DIR:-$PWD/target}/release/coffer

rm -rf "$WORK" && mkdir -p "$WORK"
cd "$WORK"

# $1: the [sources.lab] read settings.
policy() {
  cat >coffer.toml <<EOF
[sources.lab]
kind = "lab"
lab_vms = 1
$1

[tiers.today]
backend = "local"
path = "repo-today"

[tiers.coffer]
backend = "local"
path = "repo-coffer"

[policies.bench]
sources = ["lab"]
vms = ["bench-01"]
schedule = "0 0 1 * * *"
consistency = "crash"
backup_to = "coffer"

[policies.bench.retain.coffer]
last = 5

[policies.bench.retain.today]
last = 5
EOF
}
TODAY='read_request = "256KiB"
read_gap = "0B"
max_requests = 64'
COFFER_PATTERN=''

policy "$COFFER_PATTERN"
"$COFFER" repo init --tier today -p . >/dev/null
"$COFFER" repo init --tier coffer -p . >/dev/null
"$COFFER" inventory -p . >/dev/null
LAB=$WORK/.coffer/lab/lab
if [ "$DISK_KIND" = ext4 ]; then
  echo "== making bench-01 from a ${DISK_GIB} GiB ext4 image with ${DATA_MIB} MiB of files from /usr" >&2
  "$ROOT/scripts/ext4-disk.sh" disk.img "$DISK_GIB" "$DATA_MIB"
  "$COFFER" lab add-vm bench-01 --disk "image=$WORK/disk.img" --state "$LAB" | tee add-vm.out >&2
  rm -f disk.img
  DISK_DESC="an ext4 file system (mke2fs -d, in a partition at 1 MiB) with ${DATA_MIB} MiB of files from /usr/lib and /usr/share, imported with --disk image="
else
  echo "== making bench-01 with a ${DISK_GIB} GiB disk of the lab's made-up data" >&2
  "$COFFER" lab add-vm bench-01 --disk "${DISK_GIB}GiB" --state "$LAB" | tee add-vm.out >&2
  DISK_DESC="the lab's made-up data (--disk ${DISK_GIB}GiB)"
fi

# $1 pattern name, $2 its settings, $3 kind (full|incr): one JSON line.
run() {
  policy "$2"
  local extra=()
  [ "$3" = full ] && extra=(--full)
  local t0 t1
  t0=$(date +%s.%N)
  COFFER_LAB_FAULTS="$FAULTS" "$COFFER" backup bench-01 --tier "$1" --json -p . "${extra[@]}" >"$1-$3.json" 2>"$1-$3.err" || {
    echo "$1 $3 backup failed:" >&2
    cat "$1-$3.err" >&2
    echo "{\"failed\": true, \"pattern\": \"$1\", \"kind\": \"$3\"}" >"$1-$3.json"
  }
  t1=$(date +%s.%N)
  echo "$t0 $t1" >"$1-$3.time"
}

echo "== full backups through the throttled lab ($FAULTS)" >&2
run today "$TODAY" full
run coffer "$COFFER_PATTERN" full
echo "== guest writes over 2% of the disk, then incrementals" >&2
"$COFFER" lab write bench-01 --percent 2 --state "$LAB" >/dev/null
run today "$TODAY" incr
run coffer "$COFFER_PATTERN" incr

python3 - "$DISK_GIB" "$FAULTS" "$DISK_DESC" <<'EOF'
import json, sys
from datetime import datetime
gib, faults, disk = sys.argv[1], sys.argv[2], sys.argv[3]
def snap_over_read(j):
    # How long the snapshot was open, for each second of reading (the
    # point's duration_ms: first read to commit).
    c, r = (datetime.fromisoformat(j[k]) for k in ("snapshot_created", "snapshot_removed"))
    return (r - c).total_seconds() / max(0.001, j["duration_ms"] / 1000)
def load(p, k):
    j = json.load(open(f"{p}-{k}.json"))
    t0, t1 = map(float, open(f"{p}-{k}.time").read().split())
    j["wall"] = t1 - t0
    return j
def disk_sum(j, key):
    return sum((d.get(key) or 0) for d in j.get("disks", []))
rows = {}
for p in ("today", "coffer"):
    f, i = load(p, "full"), load(p, "incr")
    if f.get("failed") or i.get("failed"):
        rows[p] = None
        continue
    read = disk_sum(f, "bytes_fetched")
    rows[p] = dict(
        full_mibs=read / f["wall"] / 2**20,
        req_per_gib=disk_sum(f, "requests") / (read / 2**30),
        busy=disk_sum(f, "busy_answers") + disk_sum(i, "busy_answers"),
        incr_ratio=disk_sum(i, "bytes_fetched") / max(1, disk_sum(i, "bytes_changed")),
        incr_s=i["wall"],
        full_s=f["wall"],
        snap=snap_over_read(f),
        read_mib=read / 2**20,
    )
print(f"lab VM bench-01: one {gib} GiB thin disk: {disk}")
print(f"lab throttling: {faults}")
print()
# snap/read: the full's snapshot lifetime ÷ its read time.
print(f"{'pattern':<8} {'full MiB/s':>10} {'full s':>7} {'req/GiB':>8} {'503s':>5} {'snap/read':>9} {'incr s':>7} {'read/changed':>13}")
for p, r in rows.items():
    if r is None:
        print(f"{p:<8} failed (see {p}-*.err)")
        continue
    print(f"{p:<8} {r['full_mibs']:>10.0f} {r['full_s']:>7.1f} {r['req_per_gib']:>8.0f} {r['busy']:>5} {r['snap']:>9.2f} {r['incr_s']:>7.2f} {r['incr_ratio']:>12.2f}x")
a, b = rows.get("coffer"), rows.get("today")
if a and b:
    print()
    print(f"coffer vs today's pattern: full {a['full_mibs'] / b['full_mibs']:.1f}x throughput, "
          f"{b['req_per_gib'] / a['req_per_gib']:.0f}x fewer requests per GiB, "
          f"incremental {b['incr_s'] / a['incr_s']:.1f}x faster")
print(f"(full: {rows['coffer']['read_mib'] if rows.get('coffer') else 0:.0f} MiB of disk data read; wall time of `coffer backup`, snapshot to snapshot removed)")
EOF
