//! Measures (never asserts) synced 4 KiB write throughput at queue depth 1 for the two durable
//! modes of the `uring` backend (write linked to fdatasync, and RWF_DSYNC writes), next to
//! `sync` (pwrite + fdatasync) and write-then-flush, on a pre-written file and on a loop device.
//! Ignored by default; run with:
//! `cargo test --release -p engine --test io_durable_modes -- --ignored --nocapture`

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use engine::device::{self, Backend, OpenOptions};
use engine::io::uring::DurableMode;
use engine::io::{run_one, Io, IoOp};

const REGION_BYTES: u64 = 16 << 20;

#[derive(Clone, Copy, Debug)]
enum Pattern {
    DurableWrite,
    WriteThenFlush,
}

fn measure(io: &mut dyn Io, pattern: Pattern, duration: Duration) -> f64 {
    let start = Instant::now();
    let mut ops = 0u64;
    let mut offset = 0;
    while start.elapsed() < duration {
        let mut buf = io.pool().take().unwrap();
        buf.set_len(4096);
        buf.as_mut_slice().fill(ops as u8);
        let durable = matches!(pattern, Pattern::DurableWrite);
        let c = run_one(
            io,
            IoOp::Write {
                tag: ops,
                offset,
                buf,
                durable,
            },
        )
        .unwrap();
        c.result.unwrap();
        if !durable {
            run_one(io, IoOp::Flush { tag: ops })
                .unwrap()
                .result
                .unwrap();
        }
        ops += 1;
        offset = (offset + 4096) % REGION_BYTES;
    }
    ops as f64 / start.elapsed().as_secs_f64()
}

fn run_all(path: &Path, label: &str) {
    let env = |key: &str, default: u64| {
        std::env::var(key)
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(default)
    };
    let duration = Duration::from_millis(env("BASALT_MEASURE_MS", 1000));
    let rounds = env("BASALT_MEASURE_ROUNDS", 5) as usize;
    let cases = [
        (
            "uring LinkedFsync",
            Backend::Uring,
            DurableMode::LinkedFsync,
            Pattern::DurableWrite,
        ),
        (
            "uring Dsync",
            Backend::Uring,
            DurableMode::Dsync,
            Pattern::DurableWrite,
        ),
        (
            "uring write+flush",
            Backend::Uring,
            DurableMode::Dsync,
            Pattern::WriteThenFlush,
        ),
        (
            "sync pwrite+fdatasync",
            Backend::Sync,
            DurableMode::Dsync,
            Pattern::DurableWrite,
        ),
    ];
    // Rounds interleave the cases so that background load hits them alike; report the median.
    let mut rates = vec![Vec::new(); cases.len()];
    for _ in 0..rounds {
        for (i, (_, backend, mode, pattern)) in cases.iter().enumerate() {
            let opts = OpenOptions {
                backend: *backend,
                ..OpenOptions::default()
            };
            let (mut io, _) = device::open_with_mode(path, &opts, *mode).unwrap();
            rates[i].push(measure(io.as_mut(), *pattern, duration));
        }
    }
    for ((name, ..), mut r) in cases.iter().zip(rates) {
        r.sort_by(f64::total_cmp);
        let median = r[r.len() / 2];
        let all: Vec<String> = r.iter().map(|x| format!("{x:.0}")).collect();
        println!(
            "{label:<26} {name:<22} median {median:>7.0} ops/s  (4 KiB QD1; rounds {})",
            all.join(" ")
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
    std::fs::File::open(&path).unwrap().sync_all().unwrap();
    path
}

#[test]
#[ignore = "measurement, not a test: run with --ignored --nocapture"]
fn durable_write_modes() {
    let file = prewritten_file("durable-modes.img");
    run_all(&file, "file (ext4)");
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        println!("SKIPPED loop device: needs root");
        return;
    }
    for (label, extra) in [
        ("loop (buffered backing)", "off"),
        ("loop (direct-io backing)", "on"),
    ] {
        let backing = prewritten_file(&format!("durable-modes-loop-{extra}.img"));
        let out = Command::new("losetup")
            .args(["-f", "--show", &format!("--direct-io={extra}")])
            .arg(&backing)
            .output()
            .unwrap();
        assert!(out.status.success(), "losetup: {out:?}");
        let dev = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        let result = std::panic::catch_unwind(|| run_all(&dev, label));
        let _ = Command::new("losetup").arg("-d").arg(&dev).status();
        let _ = std::fs::remove_file(&backing);
        result.unwrap();
    }
    let _ = std::fs::remove_file(&file);
}
