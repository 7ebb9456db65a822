//! Short writes on the real backends: with `RLIMIT_FSIZE` set inside a write's range, the kernel
//! writes only the part below the limit; `uring` (plain, linked-fsync and RWF_DSYNC writes) and
//! `sync` must continue with the remainder at the right offset (which then fails with EFBIG),
//! report that error, keep the bytes that did land, and latch the device. This file is its own
//! test binary because the limit is per process.

use std::path::PathBuf;

use engine::device::{self, Backend, OpenOptions};
use engine::io::uring::DurableMode;
use engine::io::{run_one, AlignedBuf, IoError, IoOp};

const LIMIT_BYTES: u64 = (2 << 20) + 8192;

fn set_file_size_limit() {
    // SAFETY: ignoring SIGXFSZ (so EFBIG is returned instead of killing the process) and setting
    // a soft limit are plain syscalls with valid arguments.
    unsafe {
        libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
        let mut lim: libc::rlimit = std::mem::zeroed();
        assert_eq!(libc::getrlimit(libc::RLIMIT_FSIZE, &mut lim), 0);
        lim.rlim_cur = LIMIT_BYTES;
        assert_eq!(libc::setrlimit(libc::RLIMIT_FSIZE, &lim), 0);
    }
}

/// (backend, durable mode, durable write?) combinations to check.
const CASES: [(Backend, DurableMode, bool); 4] = [
    (Backend::Uring, DurableMode::LinkedFsync, false),
    (Backend::Uring, DurableMode::LinkedFsync, true),
    (Backend::Uring, DurableMode::Dsync, true),
    (Backend::Sync, DurableMode::Dsync, true),
];

#[test]
fn short_write_continues_with_the_remainder_then_latches() {
    let dir = std::env::var_os("BASALT_TEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_TARGET_TMPDIR")));
    std::fs::create_dir_all(&dir).unwrap();
    let mut paths = Vec::new();
    for case in 0..CASES.len() {
        let path = dir.join(format!("short-{case}-{}.img", std::process::id()));
        let _ = std::fs::remove_file(&path);
        std::fs::File::create(&path)
            .unwrap()
            .set_len(4 << 20)
            .unwrap();
        paths.push(path);
    }
    set_file_size_limit();
    for ((backend, mode, durable), path) in CASES.into_iter().zip(&paths) {
        let case = format!("{backend:?} {mode:?} durable={durable}");
        let direct = OpenOptions {
            backend,
            ..OpenOptions::default()
        };
        let opts = match device::open(path, &direct) {
            Ok(_) => direct,
            Err(_) => OpenOptions {
                direct: false,
                ..direct
            }, // no O_DIRECT here (tmpfs)
        };
        let (mut io, _) = device::open_with_mode(path, &opts, mode).unwrap();
        let mut buf = io.pool().take().unwrap();
        buf.set_len(16384);
        buf.as_mut_slice().fill(0xAB);
        let offset = LIMIT_BYTES - 8192;
        let write = IoOp::Write {
            tag: 1,
            offset,
            buf,
            durable,
        };
        let c = run_one(io.as_mut(), write).unwrap();
        match c.result {
            Err(IoError::Os {
                op: "write",
                offset: at,
                source,
            }) => {
                assert_eq!(
                    at, LIMIT_BYTES,
                    "{case}: remainder resubmitted at the wrong offset"
                );
                assert_eq!(source.raw_os_error(), Some(libc::EFBIG), "{case}");
            }
            other => panic!("{case}: expected EFBIG on the remainder, got {other:?}"),
        }
        let next = io.submit(IoOp::Flush { tag: 2 });
        assert!(matches!(next, Err(IoError::Latched)), "{case}: {next:?}");
        drop(io);
        // The part below the limit landed.
        let (mut io, _) = device::open(path, &opts).unwrap();
        let block = io.geometry().block_size as usize;
        let read = IoOp::Read {
            tag: 3,
            offset,
            buf: AlignedBuf::new(8192, block),
        };
        let c = run_one(io.as_mut(), read).unwrap();
        assert!(
            c.buf.unwrap().as_slice().iter().all(|&b| b == 0xAB),
            "{case}"
        );
        drop(io);
        std::fs::remove_file(path).unwrap();
    }
}
