//! `basalt-bench` as a user runs it: bad options are rejected with an error naming the option
//! and before any I/O (the target file is never created); a tiny device run prints fio-style
//! JSON with Basalt's unit-suffixed keys; a file carrying an ext4 signature is refused, left
//! byte-for-byte unchanged, and written only with `--force`. Runs the built binary on temp files.

use std::path::Path;
use std::process::{Command, Output};

fn bench(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_basalt-bench"))
        .args(args)
        .output()
        .expect("run basalt-bench")
}

/// A scratch directory under the target dir: /tmp may be tmpfs, which refuses O_DIRECT.
fn scratch_dir() -> tempfile::TempDir {
    tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("tempdir")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn file_arg(path: &Path) -> String {
    format!("--filename={}", path.display())
}

/// Runs `extra` on a file that does not exist and checks the error names `option` and that the
/// file was not created.
fn rejects(option: &str, extra: &[&str]) {
    let dir = scratch_dir();
    let path = dir.path().join("bench.dat");
    let filename = file_arg(&path);
    let mut args = vec![filename.as_str()];
    args.extend_from_slice(extra);
    let out = bench(&args);
    assert!(!out.status.success(), "{args:?} was accepted");
    let err = stderr(&out);
    assert!(
        err.contains(option),
        "error for {args:?} does not name {option}: {err}"
    );
    assert!(!path.exists(), "{args:?} created the file before failing");
}

#[test]
fn bad_options_are_errors_naming_the_option_before_any_io() {
    rejects("--bs", &["--size=1m", "--rw=write", "--bs=3000"]);
    rejects("--bs", &["--size=1m", "--rw=write", "--bs=4x"]);
    rejects("--iodepth", &["--size=1m", "--rw=write", "--iodepth=0"]);
    rejects("--rw", &["--size=1m", "--rw=append"]);
    rejects("--direct", &["--size=1m", "--rw=write", "--direct=2"]);
    rejects("--time_based", &["--size=1m", "--rw=write", "--time_based"]);
    rejects("--runtime", &["--size=1m", "--rw=write", "--runtime=5y"]);
    rejects("--numjobs", &["--size=1m", "--rw=write", "--numjobs=2"]);
    rejects("--size", &["--rw=write"]);
    rejects("--size", &["--rw=write", "--size=1z"]);
    rejects(
        "--ioengine",
        &["--size=1m", "--rw=write", "--ioengine=libaio"],
    );
    rejects("--rw", &["--target=log", "--size=8m", "--rw=randread"]);
    rejects("--regions", &["--target=log", "--size=8m", "--regions=0"]);
    rejects(
        "--entry-size",
        &["--target=log", "--size=8m", "--entry-size=0"],
    );
    rejects(
        "--numjobs",
        &["--target=log", "--size=8m", "--regions=2", "--numjobs=4"],
    );
}

#[test]
fn a_tiny_device_run_prints_fio_style_json_with_units() {
    let dir = scratch_dir();
    let path = dir.path().join("bench.dat");
    let filename = file_arg(&path);
    let out = bench(&[
        &filename,
        "--target=device",
        "--rw=randwrite",
        "--bs=4k",
        "--size=1m",
        "--iodepth=4",
        "--fdatasync=16",
        "--ioengine=sync",
        "--name=tiny",
        "--output-format=json",
    ]);
    assert!(out.status.success(), "run failed: {}", stderr(&out));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("valid JSON");
    let job = &json["jobs"][0];
    assert_eq!(job["jobname"], "tiny");
    let write = &job["write"];
    assert_eq!(write["io_bytes"], 1 << 20);
    assert_eq!(write["total_ios"], 256);
    assert!(write["iops"].as_f64().is_some_and(|v| v > 0.0));
    assert!(write["bw"].as_u64().is_some_and(|v| v > 0), "bw in KiB/s");
    let p99 = &write["clat_ns"]["percentile"]["99.000000"];
    assert!(p99.as_u64().is_some_and(|v| v > 0), "p99 {p99}");
    assert!(write["clat_ns"]["max"].as_u64() >= p99.as_u64());
    assert_eq!(job["read"]["total_ios"], 0);
    assert_eq!(job["sync"]["total_ios"], 16, "a flush every 16 writes");
    let b = &job["basalt"];
    for key in [
        "latency_us_p50",
        "latency_us_p90",
        "latency_us_p99",
        "latency_us_p99_9",
        "latency_us_max",
        "bandwidth_mib_s",
        "iops",
        "cpu_user_s",
        "cpu_sys_s",
        "runtime_s",
    ] {
        assert!(b[key].is_number(), "basalt.{key} missing: {b}");
    }
    let record = &json["basalt"];
    assert_eq!(record["backend"], "sync");
    assert_eq!(record["device"]["size_bytes"], 1 << 20);
    assert_eq!(record["options"]["bs_bytes"], 4096);
    assert!(record["kernel"]["release"]
        .as_str()
        .is_some_and(|r| !r.is_empty()));
}

#[test]
fn a_file_with_an_ext4_signature_is_refused_without_force() {
    let dir = scratch_dir();
    let path = dir.path().join("ext4.img");
    let mut image = vec![0u8; 2 << 20];
    image[1080..1082].copy_from_slice(&[0x53, 0xEF]); // ext4 superblock magic, little-endian
    std::fs::write(&path, &image).expect("write image");
    let filename = file_arg(&path);
    let args = [
        filename.as_str(),
        "--rw=write",
        "--size=1m",
        "--ioengine=sync",
    ];
    let out = bench(&args);
    assert!(!out.status.success(), "an ext4 image was overwritten");
    let err = stderr(&out);
    assert!(err.contains("ext") && err.contains("--force"), "{err}");
    assert_eq!(
        std::fs::read(&path).expect("read image"),
        image,
        "the image was modified"
    );

    let mut forced = args.to_vec();
    forced.push("--force");
    let out = bench(&forced);
    assert!(out.status.success(), "--force refused: {}", stderr(&out));
    assert_ne!(
        std::fs::read(&path).expect("read image"),
        image,
        "--force wrote nothing"
    );
}

#[test]
fn a_short_log_run_reports_entries_group_commits_and_recovery() {
    let dir = scratch_dir();
    let path = dir.path().join("log.dat");
    let filename = file_arg(&path);
    let out = bench(&[
        &filename,
        "--target=log",
        "--size=32m",
        "--regions=4",
        "--entry-size=300",
        "--entries-per-write=8",
        "--numjobs=2",
        "--runtime=300ms",
        "--time_based",
        "--recover",
        "--ioengine=sync",
        "--output-format=json",
    ]);
    assert!(out.status.success(), "run failed: {}", stderr(&out));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("valid JSON");
    let b = &json["jobs"][0]["basalt"];
    let appends = b["ops_count"].as_u64().expect("ops_count");
    assert!(appends > 0, "{b}");
    assert_eq!(
        b["entries_count"].as_u64(),
        Some(appends * 8),
        "8 entries per append"
    );
    assert_eq!(
        json["jobs"][0]["write"]["io_bytes"].as_u64(),
        Some(appends * 8 * 300)
    );
    let writes = b["device_writes_per_s"]
        .as_f64()
        .expect("device_writes_per_s");
    assert!(writes > 0.0);
    let write_mean = b["device_write_bytes_mean"]
        .as_f64()
        .expect("device_write_bytes_mean");
    assert!(
        write_mean >= 4096.0,
        "at least one block per device write: {write_mean}"
    );
    assert!(
        b["recovery_scanned_bytes"]
            .as_u64()
            .is_some_and(|n| n >= 4096),
        "{b}"
    );
    assert!(b["recovery_gb_s"].as_f64().is_some_and(|r| r > 0.0), "{b}");
    assert!(b["cpu_us_per_entry"].is_number());
}

#[test]
fn a_basalt_store_is_refused_without_force() {
    let dir = scratch_dir();
    let path = dir.path().join("store.dat");
    let filename = file_arg(&path);
    let log = [
        &filename,
        "--target=log",
        "--size=32m",
        "--runtime=50ms",
        "--ioengine=sync",
    ];
    let out = bench(&log);
    assert!(
        out.status.success(),
        "first run on a new file: {}",
        stderr(&out)
    );
    let before = std::fs::read(&path).expect("read store");
    let out = bench(&[&filename, "--rw=write", "--ioengine=sync"]);
    assert!(!out.status.success(), "the store was overwritten");
    assert!(stderr(&out).contains("Basalt store"), "{}", stderr(&out));
    assert_eq!(
        std::fs::read(&path).expect("read store"),
        before,
        "the store was modified"
    );
}
