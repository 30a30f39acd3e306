#!/usr/bin/env bash
# The main job, on any machine: check the quickstart policy, then back up a
# disk image into its `local` tier (a full, then an incremental from the
# changed ranges, as CBT reports them), verify the repository and restore the
# newest point as a VMDK that qemu-img compares equal to the image.
#
# Until the built-in lab lands, the disk is a generated image (an ext4 file
# system with real files) instead of a lab VM's disk.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet
COFFER=$PWD/target/release/coffer
POLICY=examples/quickstart
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

echo "== coffer validate -p $POLICY"
$COFFER validate -p $POLICY

echo "== a 256 MiB disk image with real files"
truncate -s 256M "$WORK/web01.img"
if command -v mkfs.ext4 >/dev/null; then
  mkdir "$WORK/files"
  (tar cf - /usr/share/doc 2>/dev/null || true) | head -c 120M | (tar xf - -C "$WORK/files" 2>/dev/null || true)
  mkfs.ext4 -q -F -d "$WORK/files" "$WORK/web01.img"
else
  head -c 64M /dev/urandom | dd of="$WORK/web01.img" conv=notrunc status=none
fi

$COFFER repo ls --tier local -p $POLICY >/dev/null 2>&1 || $COFFER repo init --tier local -p $POLICY
echo "== full backup"
$COFFER backup-image "$WORK/web01.img" --vm web01 --tier local -p $POLICY

echo "== 40 scattered writes, then an incremental that reads only them"
python3 - "$WORK/web01.img" "$WORK/changed.txt" <<'PY'
import os, random, sys
rng = random.Random()
with open(sys.argv[1], "r+b") as f, open(sys.argv[2], "w") as out:
    for _ in range(40):
        o = rng.randrange(0, (256 << 20) - 65536) // 512 * 512
        f.seek(o); f.write(os.urandom(65536)); out.write(f"{o} 65536\n")
PY
$COFFER backup-image "$WORK/web01.img" --vm web01 --tier local -p $POLICY --changed "$WORK/changed.txt"

echo "== points, verification, restore"
$COFFER repo ls --tier local -p $POLICY
$COFFER repo verify --tier local -p $POLICY
POINT=$($COFFER repo ls --tier local -p $POLICY | tail -1 | cut -d' ' -f1)
$COFFER repo restore "$POINT" --tier local -p $POLICY --format vmdk -o "$WORK/web01-restored.vmdk"
qemu-img compare -q -f vmdk -F raw "$WORK/web01-restored.vmdk" "$WORK/web01.img"
echo "restored VMDK of point $POINT is identical to the disk (qemu-img compare)"
