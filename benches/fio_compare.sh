#!/usr/bin/env bash
# fio and basalt-bench side by side, same pattern, same file (or loop device), in one run; prints
# the measured figures and their ratios against the targets of issue 3. Never fails on a missed
# target: it reports. Installs fio (and jq) from Debian's packages when missing.
#
#   bash benches/fio_compare.sh [--loop]      # --loop: use a loop device (root only) on the file
#
# Environment: BENCH_RUNTIME_S (seconds per run, default 5), BENCH_REPEAT (runs of each case,
# fio and basalt-bench alternating; the best of each is kept, as interference from other work on
# the machine only ever slows a run down; default 1), BENCH_SIZE (file size, default 2g),
# BENCH_DIR (scratch directory; not tmpfs, O_DIRECT; default <repo>/target/fio-compare).
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)
runtime_s=${BENCH_RUNTIME_S:-5}
repeat=${BENCH_REPEAT:-1}
size=${BENCH_SIZE:-2g}
dir=${BENCH_DIR:-$repo/target/fio-compare}
use_loop=0
for arg in "$@"; do
  case $arg in
    --loop) use_loop=1 ;;
    *) echo "usage: $0 [--loop]" >&2; exit 2 ;;
  esac
done

# ---- tools ------------------------------------------------------------------------------------
need=()
command -v fio >/dev/null 2>&1 || need+=(fio)
command -v jq >/dev/null 2>&1 || need+=(jq)
if [ ${#need[@]} -gt 0 ]; then
  echo "fio_compare: installing ${need[*]} from Debian's packages" >&2
  apt-get update -qq >/dev/null 2>&1 || true
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
cargo build --release -q -p tools --bin basalt-bench
bench="${CARGO_TARGET_DIR:-$repo/target}/release/basalt-bench"

# ---- the scratch file (or loop device) --------------------------------------------------------
mkdir -p "$dir"
if [ "$(stat -f -c %T "$dir")" = tmpfs ]; then
  echo "fio_compare: $dir is on tmpfs, which has no O_DIRECT; set BENCH_DIR" >&2
  exit 1
fi
file="$dir/scratch.dat"
errlog="$dir/stderr.log" # warnings of the runs (e.g. the log discarding a stale tail after format)
: >"$errlog"
trap 'echo "fio_compare: a run failed; its messages are in $errlog" >&2' ERR
size_mib=$(( $(numfmt --from=iec "${size^^}") / 1048576 ))
# Written once in full, so neither tool measures the file system allocating blocks.
rm -f "$file"
dd if=/dev/zero of="$file" bs=1M count="$size_mib" oflag=direct status=none
target=$file
if [ "$use_loop" = 1 ]; then
  if [ "$(id -u)" -ne 0 ]; then echo "fio_compare: --loop needs root" >&2; exit 1; fi
  target=$(losetup --direct-io=on --show -f "$file")
  trap 'losetup -d "$target"' EXIT
fi

# ---- runners ----------------------------------------------------------------------------------
# fio_run RW BS IODEPTH ENGINE FDATASYNC -> write (or read) IOPS
fio_run() {
  local rw=$1 bs=$2 depth=$3 engine=$4 fsync=$5 dir_key=write
  case $rw in *read) dir_key=read ;; esac
  fio --name=fio --filename="$target" --size="$size" --rw="$rw" --bs="$bs" --iodepth="$depth" \
      --ioengine="$engine" --direct=1 --fdatasync="$fsync" --runtime="$runtime_s" --time_based \
      --randrepeat=0 --output-format=json 2>>"$errlog" | jq ".jobs[0].$dir_key.iops"
}

# bb_device RW BS IODEPTH ENGINE FDATASYNC -> IOPS
bb_device() {
  "$bench" --target=device --name=bb --filename="$target" --size="$size" --rw="$1" --bs="$2" \
    --iodepth="$3" --ioengine="$4" --fdatasync="$5" --direct=1 --runtime="$runtime_s" \
    --time_based --force --output-format=json 2>>"$errlog" | jq '.jobs[0].basalt.iops'
}

# bb_log REGIONS ENTRY_SIZE ENTRIES_PER_WRITE NUMJOBS [EXTRA...] -> JSON basalt block of the job
bb_log() {
  "$bench" --target=log --name=bb-log --filename="$target" --size="$size" --regions="$1" \
    --entry-size="$2" --entries-per-write="$3" --numjobs="$4" --runtime="$runtime_s" \
    --time_based --force --output-format=json "${@:5}" 2>>"$errlog" | jq -c '.jobs[0].basalt'
}

max() { awk -v a="$1" -v b="$2" 'BEGIN { print (b + 0 > a + 0) ? b : a }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }'; }
verdict() { awk -v r="$1" -v t="$2" 'BEGIN { if (r == "n/a") print "?"; else if (r + 0 >= t + 0) print "ok"; else print "MISS" }'; }
row() { printf '%-52s %14s %14s %7s %7s %5s\n' "$@"; }

echo "fio_compare: $(uname -sr), $(nproc) CPUs, target $target ($size), ${runtime_s}s per run, best of $repeat"
echo "fio: $(fio --version)"
echo
row "case" "basalt" "reference" "ratio" "target" ""
row "----" "------" "---------" "-----" "------" ""

# ---- (a) device target vs fio -----------------------------------------------------------------
for spec in "randwrite 4k 32 0" "write 4k 1 1"; do
  read -r rw bs depth fsync <<<"$spec"
  f=0 b=0
  for ((i = 0; i < repeat; i++)); do
    f=$(max "$f" "$(fio_run "$rw" "$bs" "$depth" io_uring "$fsync")")
    b=$(max "$b" "$(bb_device "$rw" "$bs" "$depth" uring "$fsync")")
  done
  r=$(ratio "$b" "$f")
  row "(a) device $rw $bs qd$depth fdatasync=$fsync IOPS" "$(printf %.0f "$b")" "$(printf %.0f "$f")" "$r" 0.95 "$(verdict "$r" 0.95)"
done

# ---- (b) log synced appends vs the raw synced write limit at the same write size ---------------
# Each case alternates basalt-bench and fio (synced sequential writes of the log's mean write size,
# rounded up to whole 4 KiB blocks, as measured by the first log run), best of $repeat each.
write_size() { jq '.device_write_bytes_mean // 0' <<<"$1" | awk '{ n = int(($1 + 4095) / 4096); if (n < 1) n = 1; print n * 4096 }'; }
declare -A entries_s=()
for regions in 1 100; do
  for entry in 256 4096; do
    for mode in "1 1" "64 1" "1 8"; do
      read -r epw jobs <<<"$mode"
      [ "$jobs" -gt "$regions" ] && continue
      json=$(bb_log "$regions" "$entry" "$epw" "$jobs")
      bs=$(write_size "$json")
      f=$(fio_run write "$bs" 1 io_uring 1)
      for ((i = 1; i < repeat; i++)); do
        run=$(bb_log "$regions" "$entry" "$epw" "$jobs")
        json=$(jq -c -s 'max_by(.entries_per_s // 0)' <<<"$json $run")
        f=$(max "$f" "$(fio_run write "$bs" 1 io_uring 1)")
      done
      eps=$(jq '.entries_per_s // 0' <<<"$json")
      wps=$(jq '.device_writes_per_s // 0' <<<"$json")
      cpu=$(jq '.cpu_us_per_entry // 0' <<<"$json")
      p99=$(jq '.latency_us_p99 // 0' <<<"$json")
      entries_s["$regions/$entry/$epw/$jobs"]=$eps
      r=$(ratio "$wps" "$f")
      label="(b) log r=$regions e=${entry}B epw=$epw jobs=$jobs writes/s @${bs}B"
      row "$label" "$(printf %.0f "$wps")" "$(printf %.0f "$f")" "$r" 0.85 "$(verdict "$r" 0.85)"
      row "      entries/s (cpu $(printf %.1f "$cpu") us/entry, p99 $(printf %.0f "$p99") us)" "$(printf %.0f "$eps")" "" "" "" ""
    done
  done
done

# ---- (c) group commit vs one entry per flush (100 regions) -------------------------------------
for entry in 256 4096; do
  single=${entries_s["100/$entry/1/1"]}
  for mode in "64 1" "1 8"; do
    read -r epw jobs <<<"$mode"
    grouped=${entries_s["100/$entry/$epw/$jobs"]}
    r=$(ratio "$grouped" "$single")
    if [ "$jobs" -gt 1 ]; then # N writers of one entry each group at most N entries per flush
      row "(c) r=100 e=${entry}B epw=$epw jobs=$jobs vs epw=1 entries/s" "$(printf %.0f "$grouped")" "$(printf %.0f "$single")" "$r" "n/a" ""
    else
      row "(c) r=100 e=${entry}B epw=$epw jobs=$jobs vs epw=1 entries/s" "$(printf %.0f "$grouped")" "$(printf %.0f "$single")" "$r" 20 "$(verdict "$r" 20)"
    fi
  done
done

# ---- (d) against raft-engine's figures on this machine (issue 3) --------------------------------
one=${entries_s["1/256/1/1"]}
r=$(ratio "$one" 9000)
row "(d) r=1 e=256B one entry per flush vs raft-engine" "$(printf %.0f "$one")" 9000 "$r" 1 "$(verdict "$r" 1)"
eight=${entries_s["100/256/1/8"]}
r=$(ratio "$eight" 29000)
row "(d) r=100 e=256B numjobs=8 vs raft-engine" "$(printf %.0f "$eight")" 29000 "$r" 2 "$(verdict "$r" 2)"

# ---- (e) recovery scan rate (issue 3 asks for it in the benchmark; no target) -------------------
json=$(bb_log 100 4096 64 1 --recover)
gb_s=$(jq '.recovery_gb_s // 0' <<<"$json")
scanned=$(jq '.recovery_scanned_bytes // 0' <<<"$json")
row "(e) recovery scan after r=100 e=4KiB epw=64, GB/s" "$(printf %.2f "$gb_s")" "$((scanned / 1048576)) MiB" "" "" ""
echo
echo "warnings and errors of the runs: $errlog ($(wc -l <"$errlog") lines)"
