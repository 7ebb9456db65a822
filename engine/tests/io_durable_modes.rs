//! Measures (never asserts) synced 4 KiB writes at queue depth 1: `uring` with a write linked to
//! fdatasync, `uring` with RWF_DSYNC writes, and `sync` (pwrite + fdatasync), on a pre-written
//! file and on loop devices. The three alternate op by op on one open file description, so
//! background load hits them alike; each op is timed and the rate is ops / time spent in them.
//! Ignored by default; run with:
//! `cargo test --release -p engine --test io_durable_modes -- --ignored --nocapture`

use std::fs::File;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use engine::device;
use engine::io::sync::SyncIo;
use engine::io::uring::{DurableMode, UringIo};
use engine::io::{run_one, BufPool, Io, IoOp};

const REGION_BYTES: u64 = 16 << 20;

fn open_direct(path: &Path) -> File {
    let block = std::fs::metadata(path)
        .unwrap()
        .file_type()
        .is_block_device();
    let excl = if block { libc::O_EXCL } else { 0 };
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_DIRECT | excl)
        .open(path)
        .unwrap()
}

fn durable_write(io: &mut dyn Io, offset: u64, tag: u64) -> Duration {
    let mut buf = io.pool().take().unwrap();
    buf.as_mut_slice().fill(tag as u8);
    let start = Instant::now();
    let c = run_one(
        io,
        IoOp::Write {
            tag,
            offset,
            buf,
            durable: true,
        },
    )
    .unwrap();
    let took = start.elapsed();
    c.result.unwrap();
    took
}

fn measure(path: &Path, label: &str) {
    let ms = std::env::var("BASALT_MEASURE_MS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(6000);
    let info = device::probe(path).unwrap();
    let file = open_direct(path);
    let pool = || BufPool::new(4096, 4, 4096).unwrap();
    let sync_file = file.try_clone().unwrap();
    let mut uring = UringIo::new(file, info.geometry(), 8, pool(), DurableMode::Dsync).unwrap();
    let mut sync = SyncIo::new(sync_file, info.geometry(), 8, pool());
    let names = ["uring LinkedFsync", "uring Dsync", "sync pwrite+fdatasync"];
    let mut spent = [Duration::ZERO; 3];
    let mut count = [0u64; 3];
    let deadline = Instant::now() + Duration::from_millis(ms);
    let mut op = 0u64;
    while Instant::now() < deadline {
        let which = (op % 3) as usize;
        let offset = (op * 4096) % REGION_BYTES;
        let took = match which {
            0 => {
                uring.set_durable_mode(DurableMode::LinkedFsync);
                durable_write(&mut uring, offset, op)
            }
            1 => {
                uring.set_durable_mode(DurableMode::Dsync);
                durable_write(&mut uring, offset, op)
            }
            _ => durable_write(&mut sync, offset, op),
        };
        spent[which] += took;
        count[which] += 1;
        op += 1;
    }
    for i in 0..3 {
        let rate = count[i] as f64 / spent[i].as_secs_f64();
        let name = names[i];
        println!(
            "{label:<26} {name:<22} {rate:>7.0} ops/s ({} ops, 4 KiB, QD1)",
            count[i]
        );
    }
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::var_os("BASALT_TEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_TARGET_TMPDIR")));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

/// A file whose blocks are all allocated and written (no extent conversion while measuring).
fn prewritten_file(name: &str) -> PathBuf {
    let path = scratch(name);
    std::fs::write(&path, vec![0u8; REGION_BYTES as usize]).unwrap();
    File::open(&path).unwrap().sync_all().unwrap();
    path
}

#[test]
#[ignore = "measurement, not a test: run with --ignored --nocapture"]
fn durable_write_modes() {
    let file = prewritten_file("durable-modes.img");
    measure(&file, "file (ext4)");
    let _ = std::fs::remove_file(&file);
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        println!("SKIPPED loop device: needs root");
        return;
    }
    for (label, dio) in [
        ("loop (buffered backing)", "off"),
        ("loop (direct-io backing)", "on"),
    ] {
        let backing = prewritten_file(&format!("durable-modes-loop-{dio}.img"));
        let out = Command::new("losetup")
            .args(["-f", "--show", &format!("--direct-io={dio}")])
            .arg(&backing)
            .output()
            .unwrap();
        assert!(out.status.success(), "losetup: {out:?}");
        let dev = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        let result = std::panic::catch_unwind(|| measure(&dev, label));
        let _ = Command::new("losetup").arg("-d").arg(&dev).status();
        let _ = std::fs::remove_file(&backing);
        result.unwrap();
    }
}
