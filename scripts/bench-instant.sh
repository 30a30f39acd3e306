#!/usr/bin/env bash
# Instant recovery against a full restore, on the lab: a VM with a disk of
# real data (an ext4 file system filled with files from /usr, as in
# bench-lab.sh) is backed up, then recovered
#   (a) by a full restore onto the lab host through its OVF import,
#       powered on (`coffer restore --to-source lab --power-on`),
#   (a') the same through `/folder` uploads (the lab plays a host without
#       an OVF manager: `no-ovf-manager`), and
#   (b) by instant recovery (`coffer instant-recover`), booted from the
#       repository over NFS v3,
# and the times to the guest's VMware Tools heartbeat are printed with
# their ratios, and the bytes each full restore sent. Then the instant VM's disk is read sequentially through the
# lab host's NFS client (coffer's NFS server fetching the repository's
# chunks), against a local restore of the same disk to files.
#
#   scripts/bench-instant.sh [DISK_GIB]      (default 2; needs root for
#                                             ports 111 and 2049)
#
# BENCH_LINK_MIBPS=R paces the lab host's transfers (both restores'
# uploads) at R MiB/s, e.g. 110 for a 1 GbE link; unset, loopback is free.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
DISK_GIB=${1:-2}
WORK=${BENCH_DIR:-/tmp/coffer-bench-instant}
DATA_MIB=${BENCH_DATA_MIB:-$((DISK_GIB * 1024 / 3))}
ADDRESS=${BENCH_ADDRESS:-127.0.0.77}
LINK=${BENCH_LINK_MIBPS:+folder-mibps=$BENCH_LINK_MIBPS}

cargo build --release --quiet
COFFER=${CARGO_TARGET_DIR:-$PWD/target}/release/coffer
rm -rf "$WORK" && mkdir -p "$WORK"
cd "$WORK"
cat >coffer.toml <<EOF
[sources.lab]
kind = "lab"
lab_vms = 1

[tiers.local]
backend = "local"
path = "repo"

[policies.bench]
sources = ["lab"]
vms = ["bench-01"]
schedule = "0 0 1 * * *"
consistency = "crash"
backup_to = "local"

[policies.bench.retain.local]
last = 5
EOF
"$COFFER" repo init --tier local -p . >/dev/null
"$COFFER" inventory -p . >/dev/null
LAB=$WORK/.coffer/lab/lab
echo "== bench-01: a ${DISK_GIB} GiB ext4 disk with ${DATA_MIB} MiB of files from /usr" >&2
"$ROOT/scripts/ext4-disk.sh" disk.img "$DISK_GIB" "$DATA_MIB"
"$COFFER" lab add-vm bench-01 --disk "image=$WORK/disk.img" --state "$LAB" >/dev/null
rm -f disk.img
"$COFFER" backup bench-01 -p . >/dev/null

now() { date +%s.%N; }
echo "== (a) full restore onto the lab host through its OVF import, powered on" >&2
t0=$(now)
COFFER_LAB_FAULTS=$LINK "$COFFER" restore bench-01 --to-source lab --name bench-full --power-on \
    -p . >restore.out
t1=$(now)
echo "== (a') full restore onto the lab host through /folder, powered on" >&2
COFFER_LAB_FAULTS=no-ovf-manager${LINK:+,$LINK} "$COFFER" restore bench-01 --to-source lab --name bench-folder \
    --power-on -p . >restore-folder.out
echo "== (b) instant recovery" >&2
"$COFFER" instant-recover bench-01 --listen "$ADDRESS" -p . >instant.out
cat instant.out >&2
echo "== sequential read of the instant VM's disk through NFS" >&2
"$COFFER" lab nfs-read "$ADDRESS" /coffer-bench-01-instant bench-01-instant/bench-01-instant-flat.vmdk >nfs.json
echo "== local restore of the same disk to files" >&2
t2=$(now)
"$COFFER" restore bench-01 -o local-restore -p . >/dev/null
t3=$(now)
"$COFFER" instant-recover stop bench-01-instant -p . >/dev/null

python3 - "$t0" "$t1" "$t2" "$t3" "$DISK_GIB" <<'PY'
import json, os, re, sys
t0, t1, t2, t3, gib = map(float, sys.argv[1:6])
def restored(path):
    text = open(path).read()
    beat = float(re.search(r"first heartbeat after ([0-9.]+)s", text).group(1))
    sent = re.search(r"uploaded ([0-9.]+ [KMGT]?i?B) for", text).group(1)
    return beat, sent
full, sent = restored("restore.out")
folder, folder_sent = restored("restore-folder.out")
m = re.search(r"heartbeat after ([0-9.]+) s", open("instant.out").read())
instant = float(m.group(1))
nfs = json.load(open("nfs.json"))
local = (gib * 1024) / (t3 - t2)
link = os.environ.get("BENCH_LINK_MIBPS")
print(f"disk: {gib:g} GiB (ext4 with real files); host link: {link + ' MiB/s' if link else 'loopback, unpaced'}")
print(f"{'':34} {'seconds':>9}")
print(f"{'full restore (import) to heartbeat':34} {full:9.2f}   sent {sent}")
print(f"{'full restore (/folder) to heartbeat':34} {folder:9.2f}   sent {folder_sent}")
print(f"{'instant recovery to heartbeat':34} {instant:9.2f}")
print(f"{'ratio full (import) / instant':34} {full / instant:9.1f}x")
print(f"{'ratio /folder / import':34} {folder / full:9.2f}x")
print(f"{'':34} {'MiB/s':>9}")
print(f"{'instant VM sequential read (NFS)':34} {nfs['mib_per_s']:9.1f}")
print(f"{'local restore to files':34} {local:9.1f}")
print(f"{'ratio NFS / local restore':34} {nfs['mib_per_s'] / local:9.2f}")
PY
