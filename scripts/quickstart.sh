#!/usr/bin/env bash
# The main job, on any machine: back up the built-in lab (an ESXi simulator
# coffer runs in-process on loopback, with VMs whose disks hold real data)
# with the quickstart policy.
#
#  1. validate the policy; create every tier's repository (`repo init --all`)
#  2. `coffer plan`, then `coffer apply`: snapshot, read, remove the
#     snapshot for every lab VM, a verify drill, a run report
#  3. write to a VM's disks (`coffer lab write`), then `coffer backup`:
#     an incremental that reads only the changed areas CBT reports
#  4. restore that point as a VMDK and compare it with the VM's disk
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet
COFFER=${CARGO_TARGET_DIR:-$PWD/target}/release/coffer
POLICY=examples/quickstart
LAB_STATE=$POLICY/.coffer/lab/lab
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

echo "== coffer validate -p $POLICY"
$COFFER validate -p $POLICY

$COFFER repo init --all -p $POLICY

echo "== coffer plan"
$COFFER plan -p $POLICY
echo "== coffer apply"
$COFFER apply -p $POLICY --no-mail

echo "== coffer lab write lab-vm-01 --percent 2"
$COFFER lab write lab-vm-01 --percent 2 --state $LAB_STATE
echo "== coffer backup lab-vm-01 (incremental: only what CBT says changed)"
$COFFER backup lab-vm-01 -p $POLICY

echo "== restore and compare"
$COFFER repo verify --tier local -p $POLICY
UUID=$($COFFER inventory -p $POLICY --json | python3 -c 'import json,sys; print([v["instance_uuid"] for v in json.load(sys.stdin)["vms"] if v["name"]=="lab-vm-01"][0])')
POINT=$($COFFER repo ls --tier local -p $POLICY | awk '$2 == "lab-vm-01" {p=$1} END {print p}')
$COFFER repo restore "$POINT" --tier local -p $POLICY --format vmdk -o "$WORK/lab-vm-01.vmdk"
FLAT=$(ls "$LAB_STATE"/datastore/lab-vm-01/lab-vm-01-flat.vmdk)
qemu-img compare -q -f vmdk -F raw "$WORK/lab-vm-01.vmdk" "$FLAT"
echo "point $POINT of lab-vm-01 ($UUID) restores to a VMDK identical to the VM's disk (qemu-img compare)"
