#!/usr/bin/env bash
# Makes a raw disk image for the benchmarks: an MBR with one partition at
# 1 MiB holding an ext4 file system (mke2fs -d) filled with DATA_MIB of
# files copied from /usr/lib and /usr/share, the rest free space (holes).
#
#   scripts/ext4-disk.sh IMAGE DISK_GIB DATA_MIB
#
# No root or loop device is needed. Exits 2 without mke2fs (e2fsprogs).
set -euo pipefail
IMAGE=$1
DISK_GIB=$2
DATA_MIB=$3
MKE2FS=$(command -v mke2fs || command -v /sbin/mke2fs || true)
[ -n "$MKE2FS" ] || { echo "mke2fs (e2fsprogs) not found" >&2; exit 2; }
SRC=$(mktemp -d)
trap 'rm -rf "$SRC"' EXIT
(tar cf - /usr/lib /usr/share 2>/dev/null || true) | head -c "${DATA_MIB}M" | (tar xf - -C "$SRC" 2>/dev/null || true)
rm -f "$IMAGE"
truncate -s "${DISK_GIB}G" "$IMAGE"
# The file system starts at 1 MiB, where partitioning tools put the first
# partition; an MBR names it.
"$MKE2FS" -q -F -t ext4 -E offset=1048576 -d "$SRC" "$IMAGE" "$((DISK_GIB * 1024 - 1))M"
python3 - "$DISK_GIB" "$IMAGE" <<'PY'
import struct, sys
size = int(sys.argv[1]) << 30
mbr = bytearray(512)
mbr[446:462] = struct.pack("<B3sB3sII", 0, b"\xfe\xff\xff", 0x83, b"\xfe\xff\xff", 2048, size // 512 - 2048)
mbr[510:512] = b"\x55\xaa"
with open(sys.argv[2], "r+b") as f:
    f.write(mbr)
PY
