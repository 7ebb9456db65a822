#!/usr/bin/env bash
# Installs what the test suite needs on a fresh Debian machine. Idempotent; safe to run as non-root
# (root-only steps are skipped with a message, and so are the tests that need them).
set -euo pipefail
if [ "$(id -u)" -ne 0 ]; then
  echo "test-setup: not root; skipping package installs (root-only tests will skip themselves)"
  exit 0
fi
need=()
# losetup (Debian ships it in `mount`, from util-linux): loop devices for the multi-process test.
command -v losetup >/dev/null 2>&1 || need+=(mount)
command -v fio >/dev/null 2>&1 || need+=(fio)
if [ ${#need[@]} -gt 0 ]; then
  echo "test-setup: installing ${need[*]}"
  apt-get update -qq >/dev/null 2>&1 || true
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
# The loop driver, for tools/tests/cluster_processes.rs; without it that test uses plain files.
if [ ! -e /dev/loop-control ]; then
  modprobe loop >/dev/null 2>&1 || echo "test-setup: no loop devices (modprobe loop failed); tests use files"
fi
echo "test-setup: ready"
