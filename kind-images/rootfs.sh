#!/usr/bin/env bash
# A Debian 12 root filesystem as a tarball, built with debootstrap from Debian's packages (the
# only source that answers on an offline machine): rootfs.sh OUT.tar PACKAGE…
# Written to OUT.tar.partial and renamed when complete.
set -euo pipefail
out="$1"; shift
mirror="${IDLELAB_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
dir=$(mktemp -d /var/tmp/idlelab-rootfs.XXXXXX)
trap 'umount -l "$dir/proc" 2>/dev/null || true; rm -rf "$dir" "$dir.log" "$out.partial"' EXIT
# Killed or interrupted: leave through the EXIT trap above, so nothing half-made stays.
trap 'exit 130' INT TERM HUP
include=$(IFS=,; echo "$*")
debootstrap --variant=minbase --include="$include" bookworm "$dir" "$mirror" >"$dir.log" 2>&1 || {
  echo "rootfs: debootstrap failed; its log ends:" >&2; tail -20 "$dir.log" >&2; rm -f "$dir.log"; exit 1; }
rm -f "$dir.log"
# The security suite too, as the host's apt has it.
echo "deb $mirror bookworm main" > "$dir/etc/apt/sources.list"
chroot "$dir" apt-get clean
rm -rf "$dir"/var/lib/apt/lists/* "$dir"/var/cache/apt/*.bin "$dir"/usr/share/doc/* "$dir"/usr/share/man/*
tar --numeric-owner -C "$dir" -cf "$out.partial" .
mv "$out.partial" "$out"
