#!/usr/bin/env bash
# Benchmark of the repository: coffer against restic and borg on the same
# disk image, side by side in one run.
#
#   scripts/bench-repo.sh [IMAGE_MIB] [DATA_MIB]     (defaults 2048 and 1200)
#
# The image is an ext4 file system (mkfs.ext4 -d) filled with real files from
# /usr plus free space. Measured: full backup, incremental after scattered
# 64 KiB writes over 2% of the disk (coffer is given the changed ranges, as
# CBT gives them; restic and borg rescan the image), restore to a local file,
# repository size, peak RSS. All tools read the image from the page cache
# (it is read once before the first run), so the figures compare the tools,
# not the disk. Installs restic, borgbackup, e2fsprogs and GNU time from
# Debian's packages when missing.
set -euo pipefail
cd "$(dirname "$0")/.."
IMAGE_MIB=${1:-2048}
DATA_MIB=${2:-1200}
WORK=${BENCH_DIR:-/tmp/coffer-bench}

need=()
command -v restic >/dev/null || need+=(restic)
command -v borg >/dev/null || need+=(borgbackup)
command -v mkfs.ext4 >/dev/null || need+=(e2fsprogs)
[ -x /usr/bin/time ] || need+=(time)
if [ ${#need[@]} -gt 0 ]; then
  echo "installing ${need[*]}" >&2
  apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
cargo build --release --quiet
COFFER=$PWD/target/release/coffer

rm -rf "$WORK" && mkdir -p "$WORK"
cd "$WORK"

echo "== building a ${IMAGE_MIB} MiB ext4 image with ${DATA_MIB} MiB of files from /usr" >&2
mkdir src
(tar cf - /usr/lib /usr/share /usr/bin 2>/dev/null || true) | head -c "${DATA_MIB}M" | (tar xf - -C src 2>/dev/null || true)
truncate -s "${IMAGE_MIB}M" disk.img
mkfs.ext4 -q -F -d src disk.img
rm -rf src
cat disk.img > /dev/null   # warm the page cache for every tool alike

# run NAME CMD...: wall seconds and peak RSS (KiB) into $NAME.t
run() { local name=$1; shift; /usr/bin/time -f "%e %M" -o "$name.t" "$@" > "$name.out" 2> "$name.err" || { cat "$name.err" >&2; exit 1; }; }
secs() { cut -d' ' -f1 "$1.t"; }
rss() { cut -d' ' -f2 "$1.t"; }

export RESTIC_PASSWORD=bench BORG_PASSPHRASE=bench BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK=yes BORG_RELOCATED_REPO_ACCESS_IS_OK=yes
export COFFER_BENCH_KEY=bench

echo "== full backups" >&2
$COFFER repo init --repo coffer-plain >/dev/null
$COFFER repo init --repo coffer-enc --key-env COFFER_BENCH_KEY >/dev/null
restic init -q -r restic-repo >/dev/null
borg init -e none borg-repo
run coffer_full $COFFER backup-image disk.img --repo coffer-plain --vm bench --json
run coffer_enc_full $COFFER backup-image disk.img --repo coffer-enc --key-env COFFER_BENCH_KEY --vm bench --json
run restic_full restic -q -r restic-repo backup disk.img
run borg_full borg create --compression zstd,1 borg-repo::full disk.img

echo "== scattered 64 KiB writes over 2% of the disk" >&2
python3 - "$IMAGE_MIB" <<'PY'
import os, random, sys
size = int(sys.argv[1]) << 20
block = 64 << 10
count = size * 2 // 100 // block
rng = random.Random(42)
offsets = sorted(rng.sample(range(size // block), count))
with open("disk.img", "r+b") as f, open("changed.txt", "w") as out:
    for o in offsets:
        f.seek(o * block)
        f.write(os.urandom(block))
        out.write(f"{o * block} {block}\n")
print(count * block, file=open("changed.bytes", "w"))
PY
CHANGED=$(cat changed.bytes)

echo "== incremental backups" >&2
run coffer_incr $COFFER backup-image disk.img --repo coffer-plain --vm bench --changed changed.txt --json
run coffer_enc_incr $COFFER backup-image disk.img --repo coffer-enc --key-env COFFER_BENCH_KEY --vm bench --changed changed.txt --json
run restic_incr restic -q -r restic-repo backup disk.img
run borg_incr borg create --compression zstd,1 borg-repo::incr disk.img

echo "== restores" >&2
POINT=$($COFFER repo ls --repo coffer-plain | tail -1 | cut -d' ' -f1)
run coffer_restore $COFFER repo restore "$POINT" --repo coffer-plain -o restored-coffer.img
EPOINT=$($COFFER repo ls --repo coffer-enc --key-env COFFER_BENCH_KEY | tail -1 | cut -d' ' -f1)
run coffer_enc_restore $COFFER repo restore "$EPOINT" --repo coffer-enc --key-env COFFER_BENCH_KEY -o restored-coffer-enc.img
mkdir restic-out borg-out
run restic_restore restic -q -r restic-repo restore latest --target restic-out
run borg_restore bash -c 'cd borg-out && borg extract --sparse ../borg-repo::incr'
cmp disk.img restored-coffer.img && cmp disk.img restored-coffer-enc.img
cmp disk.img restic-out/disk.img && cmp disk.img borg-out/disk.img
INCR_READ=$(python3 -c 'import json;print(json.load(open("coffer_incr.out"))["bytes_read"])')

python3 - "$IMAGE_MIB" "$CHANGED" "$INCR_READ" <<'PY'
import subprocess, sys
mib = int(sys.argv[1]); changed = int(sys.argv[2]); read = int(sys.argv[3])
def t(n): return [float(x) for x in open(f"{n}.t").read().split()]
def size(d): return int(subprocess.check_output(["du", "-sb", d]).split()[0])
rows = []
tools = [("coffer", "coffer", "coffer-plain"), ("coffer+enc", "coffer_enc", "coffer-enc"),
         ("restic", "restic", "restic-repo"), ("borg", "borg", "borg-repo")]
print(f"image: {mib} MiB ext4, changed for the incremental: {changed} bytes (2%), coffer read {read} bytes from the source for it ({read/changed:.2f}x the changed bytes)\n")
print(f"{'tool':<11} {'full MiB/s':>10} {'full RSS':>9} {'incr s':>7} {'incr RSS':>9} {'restore MiB/s':>13} {'repo MiB':>9}")
res = {}
for name, key, repo in tools:
    fs, frss = t(f"{key}_full"); is_, irss = t(f"{key}_incr"); rs, _ = t(f"{key}_restore")
    res[name] = (mib / fs, is_, mib / rs, size(repo) / 2**20)
    print(f"{name:<11} {mib/fs:>10.0f} {frss/1024:>7.0f}Mi {is_:>7.2f} {irss/1024:>7.0f}Mi {mib/rs:>13.0f} {size(repo)/2**20:>9.0f}")
print()
for peer in ("restic", "borg"):
    for mine in ("coffer", "coffer+enc"):
        a, b = res[mine], res[peer]
        print(f"{mine} vs {peer}: full {a[0]/b[0]:.1f}x throughput, incremental {b[1]/a[1]:.1f}x faster, restore {a[2]/b[2]:.1f}x throughput, repository {a[3]/b[3]:.2f}x the size")
PY

echo
echo "== chunk size trade-off (coffer, same image and writes)"
printf "%-10s %14s %14s %12s\n" chunk "incr stored" "index bytes" "full MiB/s"
for cs in 64KiB 256KiB 1MiB 4MiB; do
  rm -rf cs-repo && $COFFER repo init --repo cs-repo >/dev/null
  run cs_full $COFFER backup-image disk.img --repo cs-repo --vm cs --chunk-size $cs --json
  # New data at the same scattered places, so the incremental stores something.
  python3 -c '
import os
with open("disk.img", "r+b") as f:
    for line in open("changed.txt"):
        o, n = map(int, line.split()); f.seek(o); f.write(os.urandom(n))'
  run cs_incr $COFFER backup-image disk.img --repo cs-repo --vm cs --chunk-size $cs --changed changed.txt --json
  python3 - "$cs" "$IMAGE_MIB" <<'PY'
import json, sys
units = {"KiB": 1 << 10, "MiB": 1 << 20}
cs = sys.argv[1]; b = int(cs[:-3]) * units[cs[-3:]]
mib = int(sys.argv[2])
incr = json.load(open("cs_incr.out"))
full_s = float(open("cs_full.t").read().split()[0])
print(f"{cs:<10} {incr['bytes_stored_new']:>14} {(mib << 20) // b * 32 + 60:>14} {mib/full_s:>12.0f}")
PY
done
