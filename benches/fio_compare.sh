#!/usr/bin/env bash
# fio and basalt-bench side by side, same pattern, same file (or loop device), in one run; prints
# the measured figures and their ratios against the targets of issue 3. Never fails on a missed
# target: it reports. Installs fio (and jq) from Debian's packages when missing. Row (d) measures
# TiKV's raft-engine (benches/raft-engine-ref, built here from crates.io) in the same run, on the
# same file system, alternating with basalt-bench; when it cannot be built, it falls back to the
# fixed figures quoted in issue 3 and says so.
#
#   bash benches/fio_compare.sh [--loop]      # --loop: use a loop device (root only) on the file
#
# Environment: BENCH_RUNTIME_S (seconds per run, default 5), BENCH_REPEAT (runs of each case,
# fio and basalt-bench alternating; the best of each is kept, as interference from other work on
# the machine only ever slows a run down; default 1), BENCH_SIZE (file size, default 2g),
# BENCH_DIR (scratch directory; not tmpfs, O_DIRECT; default <repo>/target/fio-compare),
# BENCH_ROWS (which rows to run, letters of a-e, default abcde; (c) needs (b)),
# BENCH_REF (1: build and run the raft-engine reference for (d); 0: use issue 3's fixed figures),
# BENCH_REF_FILES (recycled: raft-engine appends over a recycled, prefilled log file, its steady
# state, as basalt-bench writes a file written in full beforehand; fresh: a new log file, default
# recycled), BENCH_REF_TARGET_DIR (its cargo target dir, default <BENCH_DIR>/raft-engine-ref-target).
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)
runtime_s=${BENCH_RUNTIME_S:-5}
repeat=${BENCH_REPEAT:-1}
size=${BENCH_SIZE:-2g}
dir=${BENCH_DIR:-$repo/target/fio-compare}
rows=${BENCH_ROWS:-abcde}
use_ref=${BENCH_REF:-1}
ref_files=${BENCH_REF_FILES:-recycled}
ref_target=${BENCH_REF_TARGET_DIR:-$dir/raft-engine-ref-target}
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
cargo build --release -q -p benches --bin gather_bound
bench="${CARGO_TARGET_DIR:-$repo/target}/release/basalt-bench"
gather_bound="${CARGO_TARGET_DIR:-$repo/target}/release/gather_bound"

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

# The reference: its own Cargo project (not a workspace member), built once into its own target
# dir; a build failure (no network, no toolchain for it) is no error: (d) then uses issue 3's
# fixed figures.
ref_bin=""
if [ "$use_ref" = 1 ] && [[ $rows == *d* ]]; then
  echo "fio_compare: building the raft-engine reference (benches/raft-engine-ref)" >&2
  if cargo build --release -q --manifest-path "$repo/benches/raft-engine-ref/Cargo.toml" \
      --target-dir "$ref_target" 2>>"$errlog"; then
    ref_bin="$ref_target/release/raft-engine-ref"
  else
    echo "fio_compare: the raft-engine reference did not build (see $errlog); (d) uses issue 3's figures" >&2
  fi
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

# ref_log REGIONS ENTRY_SIZE ENTRIES_PER_WRITE NUMJOBS -> raft-engine's JSON line, in a fresh
# directory beside the scratch file (same file system); the tool removes it afterwards.
ref_log() {
  local files=()
  [ "$ref_files" = fresh ] && files=(--fresh-files)
  rm -rf "$dir/raft-engine"
  "$ref_bin" --dir="$dir/raft-engine" --regions="$1" --entry-size="$2" --entries-per-write="$3" \
    --numjobs="$4" --runtime="$runtime_s" "${files[@]}" 2>>"$errlog"
}

# gather_bound NUMJOBS -> JSON line: the ceiling of NUMJOBS closed-loop threads of one 256 B
# entry each, gathered into one durable write in flight with nothing else done (see
# benches/src/bin/gather_bound.rs), on the same file or device.
gather_run() {
  "$gather_bound" --filename="$target" --numjobs="$1" --entry-size=256 --runtime="$runtime_s" \
    2>>"$errlog"
}

# fio_jobs BS NUMJOBS -> total synced write IOPS of NUMJOBS fio jobs, each at queue depth 1 with
# fdatasync after every write, each in its own slice of the file: independent synced writers
# sharing the device, with nobody grouping their writes.
fio_jobs() {
  local bytes slice
  bytes=$(numfmt --from=iec "${size^^}")
  slice=$((bytes / $2 / 4096 * 4096))
  fio --name=fio --filename="$target" --size="$slice" --offset_increment="$slice" \
      --numjobs="$2" --group_reporting --rw=write --bs="$1" --iodepth=1 --ioengine=io_uring \
      --direct=1 --fdatasync=1 --runtime="$runtime_s" --time_based --output-format=json \
      2>>"$errlog" | jq '.jobs[0].write.iops'
}

max() { awk -v a="$1" -v b="$2" 'BEGIN { print (b + 0 > a + 0) ? b : a }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }'; }
verdict() { awk -v r="$1" -v t="$2" 'BEGIN { if (r == "n/a") print "?"; else if (r + 0 >= t + 0) print "ok"; else print "MISS" }'; }
verdict_max() { awk -v r="$1" -v t="$2" 'BEGIN { if (r == "n/a") print "?"; else if (r + 0 <= t + 0) print "ok"; else print "MISS" }'; }
p99_of() { jq -r 'if .latency_us_p99 then .latency_us_p99 | round | tostring else "n/a" end' <<<"$1"; }
row() { printf '%-52s %14s %14s %7s %7s %5s\n' "$@"; }

echo "fio_compare: $(uname -sr), $(nproc) CPUs, target $target ($size), ${runtime_s}s per run, best of $repeat"
echo "fio: $(fio --version)"
if [[ $rows == *d* ]]; then
  if [ -n "$ref_bin" ]; then
    echo "reference (d): raft-engine 0.4.2, default config, sync on every write, $ref_files log files, in $dir"
  else
    echo "reference (d): issue 3's fixed raft-engine figures (marked *): the reference was not built"
  fi
fi
echo
row "case" "basalt" "reference" "ratio" "target" ""
row "----" "------" "---------" "-----" "------" ""

# ---- (a) device target vs fio -----------------------------------------------------------------
[[ $rows == *a* ]] && for spec in "randwrite 4k 32 0" "write 4k 1 1"; do
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
# Each case alternates basalt-bench and fio, best of $repeat each. One writer: the log's device
# writes/s against fio's synced sequential writes of the log's mean write size (rounded up to
# whole 4 KiB blocks, as measured by the first log run). N writers of one entry each: they wait
# for their own entry, so the log's write rate follows them, not the device (it gathers their
# entries into fewer, larger writes); the raw limit with the same writers is N fio jobs, each
# making one entry's write (the size the one-writer case wrote) synced at a time, and the
# figure compared is the entries/s the log acknowledges against fio's synced writes/s.
write_size() { jq '.device_write_bytes_mean // 0' <<<"$1" | awk '{ n = int(($1 + 4095) / 4096); if (n < 1) n = 1; print n * 4096 }'; }
declare -A entries_s=() one_entry_bs=()
[[ $rows == *b* ]] && for regions in 1 100; do
  for entry in 256 4096; do
    for mode in "1 1" "64 1" "1 8"; do
      read -r epw jobs <<<"$mode"
      [ "$jobs" -gt "$regions" ] && continue
      json=$(bb_log "$regions" "$entry" "$epw" "$jobs")
      if [ "$jobs" -gt 1 ]; then
        bs=${one_entry_bs["$regions/$entry"]:-4096}
        raw() { fio_jobs "$bs" "$jobs"; }
      else
        bs=$(write_size "$json")
        raw() { fio_run write "$bs" 1 io_uring 1; }
      fi
      [ "$epw" = 1 ] && [ "$jobs" = 1 ] && one_entry_bs["$regions/$entry"]=$bs
      f=$(raw)
      for ((i = 1; i < repeat; i++)); do
        run=$(bb_log "$regions" "$entry" "$epw" "$jobs")
        json=$(jq -c -s 'max_by(.entries_per_s // 0)' <<<"$json $run")
        f=$(max "$f" "$(raw)")
      done
      eps=$(jq '.entries_per_s // 0' <<<"$json")
      wps=$(jq '.device_writes_per_s // 0' <<<"$json")
      cpu=$(jq '.cpu_us_per_entry // 0' <<<"$json")
      p99=$(jq '.latency_us_p99 // 0' <<<"$json")
      entries_s["$regions/$entry/$epw/$jobs"]=$eps
      if [ "$jobs" -gt 1 ]; then
        r=$(ratio "$eps" "$f")
        label="(b) log r=$regions e=${entry}B jobs=$jobs entries/s @${bs}B"
        row "$label" "$(printf %.0f "$eps")" "$(printf %.0f "$f")" "$r" 0.85 "$(verdict "$r" 0.85)"
        row "      device writes/s (cpu $(printf %.1f "$cpu") us/entry, p99 $(printf %.0f "$p99") us)" "$(printf %.0f "$wps")" "" "" "" ""
      else
        r=$(ratio "$wps" "$f")
        label="(b) log r=$regions e=${entry}B epw=$epw jobs=$jobs writes/s @${bs}B"
        row "$label" "$(printf %.0f "$wps")" "$(printf %.0f "$f")" "$r" 0.85 "$(verdict "$r" 0.85)"
        row "      entries/s (cpu $(printf %.1f "$cpu") us/entry, p99 $(printf %.0f "$p99") us)" "$(printf %.0f "$eps")" "" "" "" ""
      fi
    done
  done
done

# ---- (c) group commit vs one entry per flush (100 regions) -------------------------------------
[[ $rows == *b* && $rows == *c* ]] && for entry in 256 4096; do
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

# ---- (d) against TiKV's raft-engine, measured in this run ------------------------------------
# Two cases, 256 B entries, one entry per write: 1 region and 1 writer; 100 regions and 8. Each case alternates basalt-bench and raft-engine-ref, best of $repeat each by entries/s (the CPU
# per entry is that of the best run). Targets (issue 3): entries/s >= 1x raft-engine at one entry
# per write, >= 2x with 100 regions and 8 writers; CPU per entry lower than raft-engine's.
if [[ $rows == *d* ]]; then
  for spec in "1 1 9000" "100 8 29000"; do
    read -r regions jobs fixed <<<"$spec"
    goal=1 # ($target is the scratch file)
    [ "$jobs" -gt 1 ] && goal=2
    bb_json='{}' ref_json='{}' gb_json='{}'
    for ((i = 0; i < repeat; i++)); do
      run=$(bb_log "$regions" 256 1 "$jobs")
      bb_json=$(jq -c -s 'max_by(.entries_per_s // 0)' <<<"$bb_json $run")
      if [ -n "$ref_bin" ]; then
        run=$(ref_log "$regions" 256 1 "$jobs")
        ref_json=$(jq -c -s 'max_by(.entries_per_s // 0)' <<<"$ref_json $run")
      fi
      if [ "$jobs" -gt 1 ]; then
        run=$(gather_run "$jobs")
        gb_json=$(jq -c -s 'max_by(.entries_per_s // 0)' <<<"$gb_json $run")
      fi
    done
    eps=$(jq '.entries_per_s // 0' <<<"$bb_json")
    cpu=$(jq '.cpu_us_per_entry // 0' <<<"$bb_json")
    if [ -n "$ref_bin" ]; then
      ref_eps=$(jq '.entries_per_s // 0' <<<"$ref_json")
      ref_cpu=$(jq '.cpu_us_per_entry // 0' <<<"$ref_json")
      ref_shown=$(printf %.0f "$ref_eps")
      ref_cpu_shown=$(printf %.1f "$ref_cpu")
    else
      ref_eps=$fixed ref_cpu=0 ref_shown="$fixed*" ref_cpu_shown="n/a"
    fi
    r=$(ratio "$eps" "$ref_eps")
    row "(d) r=$regions e=256B jobs=$jobs entries/s vs raft-engine" "$(printf %.0f "$eps")" "$ref_shown" "$r" "$goal" "$(verdict "$r" "$goal")"
    p99=$(p99_of "$bb_json") ref_p99=$(p99_of "$ref_json")
    r=$(ratio "$cpu" "$ref_cpu")
    row "      cpu us/entry (p99 latency $p99 vs $ref_p99 us)" "$(printf %.1f "$cpu")" "$ref_cpu_shown" "$r" "<=1" "$(verdict_max "$r" 1)"
    if [ "$jobs" -gt 1 ]; then
      # What the device allows this case. Each of the $jobs writers has one entry in flight, so
      # entries/s = $jobs / (time from an entry's append to its acknowledgement): at best, every
      # entry durable one lone synced write after it is made ($jobs x fio's 1-job rate), which
      # nothing beats; and $jobs fio jobs writing on their own show what the device does with
      # $jobs synced writes in flight and no grouping.
      one=0 many=0
      for ((i = 0; i < repeat; i++)); do
        one=$(max "$one" "$(fio_jobs 4k 1)")
        many=$(max "$many" "$(fio_jobs 4k "$jobs")")
      done
      bound=$(awk -v a="$one" -v j="$jobs" 'BEGIN { printf "%.0f", a * j }')
      row "      vs fio, $jobs synced 4KiB writers on their own" "$(printf %.0f "$eps")" "$(printf %.0f "$many")" "$(ratio "$eps" "$many")" "" ""
      row "      bound: $jobs x fio 1 writer ($(printf %.0f "$one")/s)" "$(printf %.0f "$eps")" "$bound" "$(ratio "$eps" "$bound")" "" ""
      row "      ${goal}x raft-engine as a share of that bound" "$(awk -v e="$ref_eps" -v g="$goal" 'BEGIN { printf "%.0f", e * g }')" "$bound" "$(ratio "$(awk -v e="$ref_eps" -v g="$goal" 'BEGIN { print e * g }')" "$bound")" "" ""
      # The ceiling with threads: $jobs writer threads gathered into one write in flight with
      # no log at all (gather_bound); the scheduler's wake-ups, not the device, set it.
      gb=$(jq '.entries_per_s // 0' <<<"$gb_json")
      gb_cpu=$(jq '.cpu_us_per_entry // 0' <<<"$gb_json")
      row "      bound: $jobs threads gathered, no log (gather_bound)" "$(printf %.0f "$eps")" "$(printf %.0f "$gb")" "$(ratio "$eps" "$gb")" "" ""
      row "      that bound vs raft-engine (cpu $(printf %.1f "$gb_cpu") us/entry)" "$(printf %.0f "$gb")" "$(printf %.0f "$ref_eps")" "$(ratio "$gb" "$ref_eps")" "$goal" "$(verdict "$(ratio "$gb" "$ref_eps")" "$goal")"
    fi
  done
  if [ -z "$ref_bin" ]; then
    echo "  * issue 3's fixed figure for raft-engine on this machine (the reference was not built, or BENCH_REF=0)"
  fi
fi

# ---- (e) recovery scan rate (issue 3 asks for it in the benchmark; no target) -------------------
if [[ $rows == *e* ]]; then
  json=$(bb_log 100 4096 64 1 --recover)
  gb_s=$(jq '.recovery_gb_s // 0' <<<"$json")
  scanned=$(jq '.recovery_scanned_bytes // 0' <<<"$json")
  row "(e) recovery scan after r=100 e=4KiB epw=64, GB/s" "$(printf %.2f "$gb_s")" "$((scanned / 1048576)) MiB" "" "" ""
fi
echo
echo "warnings and errors of the runs: $errlog ($(wc -l <"$errlog") lines)"
