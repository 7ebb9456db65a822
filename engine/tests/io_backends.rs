//! The same write/read/flush workload through every I/O backend (`uring`, `sync`, `sim`), on a
//! regular file and (when running as root) on a loop device: pipelined pool-buffer and standalone
//! writes, durable writes and flushes, then every byte read back and compared; misaligned and
//! out-of-range ops must come back as `IoError::Unaligned`/`OutOfRange`. Also: `device::open`
//! and `probe` error cases name the path, and a block device in use is refused as busy.

use std::path::{Path, PathBuf};
use std::process::Command;

use engine::device::{self, Backend, DeviceError, DeviceKind, OpenOptions};
use engine::io::sim::FaultConfig;
use engine::io::uring::DurableMode;
use engine::io::{run_one, AlignedBuf, Completion, Geometry, Io, IoError, IoKind, IoOp};

const SLOT_BYTES: usize = 64 * 1024;

/// A directory on a file system that accepts `O_DIRECT` (tmpfs does not), or None.
fn scratch_dir() -> PathBuf {
    let dir = std::env::var_os("BASALT_TEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_TARGET_TMPDIR")));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// True if `dir` supports O_DIRECT (else tests run buffered, saying so).
fn direct_ok(dir: &Path) -> bool {
    use std::os::unix::fs::OpenOptionsExt;
    let probe = dir.join(format!("odirect-probe-{}", std::process::id()));
    let ok = std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .custom_flags(libc::O_DIRECT)
        .open(&probe)
        .is_ok();
    let _ = std::fs::remove_file(&probe);
    if !ok {
        println!(
            "{}: O_DIRECT refused (tmpfs?); running buffered. Set BASALT_TEST_DIR.",
            dir.display()
        );
    }
    ok
}

fn options(backend: Backend, direct: bool, size: u64) -> OpenOptions {
    OpenOptions {
        backend,
        direct,
        queue_depth: 32,
        pool_slot_size_bytes: SLOT_BYTES,
        pool_slot_count: 16,
        create_size_bytes: Some(size),
        exclusive: true,
    }
}

fn pattern(offset: u64, len: usize, salt: u8) -> impl Iterator<Item = u8> {
    // Not periodic: every byte depends on its whole device offset, so data at a wrong offset
    // cannot pass for the right data.
    (offset..offset + len as u64).map(move |x| {
        let mixed = (x ^ (x >> 13) ^ (x >> 29)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        (mixed >> 56) as u8 ^ salt
    })
}

/// Submit `ops`, keeping at most the queue depth in flight, and return every completion.
fn run_all(io: &mut dyn Io, ops: Vec<IoOp>) -> Vec<Completion> {
    let total = ops.len();
    let mut done = Vec::new();
    for op in ops {
        while io.in_flight() >= io.queue_depth() {
            io.reap(&mut done, 1).unwrap();
        }
        io.submit(op).unwrap();
        io.kick().unwrap();
    }
    while done.len() < total {
        io.reap(&mut done, 1).unwrap();
    }
    assert_eq!(io.in_flight(), 0);
    done
}

/// The shared workload. `salt` makes each run's data distinct.
fn workload(io: &mut dyn Io, salt: u8) {
    let geometry = io.geometry();
    let block = geometry.block_size as usize;
    let base = geometry.capacity_bytes / 2 - (geometry.capacity_bytes / 2) % block as u64;
    // 1. Writes: 12 pool slots (odd ones durable) and 3 standalone buffers, then one flush.
    let mut ops = Vec::new();
    for i in 0..12u64 {
        let mut buf = io.pool().take().expect("pool slot");
        let offset = base + i * SLOT_BYTES as u64;
        buf.as_mut_slice()
            .iter_mut()
            .zip(pattern(offset, SLOT_BYTES, salt))
            .for_each(|(b, p)| *b = p);
        ops.push(IoOp::Write {
            tag: i,
            offset,
            buf,
            durable: i % 2 == 1,
        });
    }
    for i in 0..3u64 {
        let offset = i * 2 * block as u64;
        let data: Vec<u8> = pattern(offset, 2 * block, salt).collect();
        let buf = AlignedBuf::from_slice(&data, block);
        ops.push(IoOp::Write {
            tag: 100 + i,
            offset,
            buf,
            durable: false,
        });
    }
    let written = run_all(io, ops);
    for c in &written {
        assert_eq!(c.kind, IoKind::Write);
        assert_eq!(
            *c.result.as_ref().unwrap(),
            c.buf.as_ref().unwrap().len(),
            "tag {}",
            c.tag
        );
    }
    drop(written); // pool buffers go back
    let flush = run_one(io, IoOp::Flush { tag: 999 }).unwrap();
    assert_eq!((flush.kind, flush.result.unwrap()), (IoKind::Flush, 0));
    // 2. Read everything back, pool and standalone buffers, and compare byte for byte.
    let mut reads = Vec::new();
    for i in 0..12u64 {
        let buf = io.pool().take().expect("pool slot back after the writes");
        reads.push(IoOp::Read {
            tag: i,
            offset: base + i * SLOT_BYTES as u64,
            buf,
        });
    }
    for i in 0..3u64 {
        let buf = AlignedBuf::new(2 * block, block);
        reads.push(IoOp::Read {
            tag: 100 + i,
            offset: i * 2 * block as u64,
            buf,
        });
    }
    for c in run_all(io, reads) {
        let buf = c.buf.unwrap();
        assert_eq!(c.result.unwrap(), buf.len());
        let expected: Vec<u8> = pattern(c.offset, buf.len(), salt).collect();
        assert!(
            buf.as_slice() == &expected[..],
            "data mismatch at offset {} (tag {})",
            c.offset,
            c.tag
        );
    }
    check_alignment_errors(io);
    check_queue_full(io);
    check_polling_completes(io);
}

/// A caller that only ever polls (`reap` with 0, no other syscalls) still sees its completions.
fn check_polling_completes(io: &mut dyn Io) {
    let buf = io.pool().take().unwrap();
    let offset = io.geometry().capacity_bytes - buf.len() as u64;
    io.submit(IoOp::Write {
        tag: 5,
        offset,
        buf,
        durable: true,
    })
    .unwrap();
    io.kick().unwrap();
    let mut out = Vec::new();
    let mut polls = 0u64;
    while out.is_empty() && polls < 50_000_000 {
        io.reap(&mut out, 0).unwrap();
        polls += 1;
    }
    assert_eq!(
        out.len(),
        1,
        "no completion after {polls} non-blocking reaps"
    );
}

fn check_queue_full(io: &mut dyn Io) {
    for tag in 0..io.queue_depth() as u64 {
        io.submit(IoOp::Flush { tag }).unwrap();
    }
    assert!(matches!(
        io.submit(IoOp::Flush { tag: 0 }),
        Err(IoError::QueueFull)
    ));
    io.kick().unwrap();
    let mut out = Vec::new();
    while out.len() < io.queue_depth() {
        io.reap(&mut out, 1).unwrap();
    }
    assert!(out
        .iter()
        .all(|c| c.kind == IoKind::Flush && c.result.is_ok()));
    assert_eq!(io.in_flight(), 0);
}

fn check_alignment_errors(io: &mut dyn Io) {
    let geometry = io.geometry();
    let block = geometry.block_size as usize;
    let buf = AlignedBuf::new(block, block);
    let err = io.submit(IoOp::Write {
        tag: 1,
        offset: block as u64 / 2,
        buf,
        durable: false,
    });
    assert!(
        matches!(err, Err(IoError::Unaligned { what: "offset", .. })),
        "{err:?}"
    );
    let mut short = io.pool().take().unwrap();
    short.set_len(block / 2);
    let err = io.submit(IoOp::Read {
        tag: 2,
        offset: 0,
        buf: short,
    });
    assert!(
        matches!(err, Err(IoError::Unaligned { what: "length", .. })),
        "{err:?}"
    );
    let buf = AlignedBuf::new(block, block);
    let err = io.submit(IoOp::Read {
        tag: 3,
        offset: geometry.capacity_bytes,
        buf,
    });
    assert!(matches!(err, Err(IoError::OutOfRange { .. })), "{err:?}");
    assert_eq!(io.in_flight(), 0, "rejected ops are not in flight");
    // Still usable: rejected ops do not latch.
    let c = run_one(io, IoOp::Flush { tag: 4 }).unwrap();
    assert!(c.result.is_ok());
}

fn file_run(backend: Backend, mode: DurableMode, name: &str) -> &'static str {
    let dir = scratch_dir();
    let direct = direct_ok(&dir);
    let path = dir.join(format!("{name}-{}.img", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let (mut io, info) =
        device::open_with_mode(&path, &options(backend, direct, 8 << 20), mode).unwrap();
    assert_eq!(info.kind, DeviceKind::RegularFile);
    assert_eq!(info.size_bytes, 8 << 20);
    assert_eq!(io.geometry().block_size, info.logical_block_size);
    workload(io.as_mut(), 0x5a);
    let name = io.backend_name();
    drop(io);
    // Reopen: the data is still there (durable through the flush).
    let (mut io, _) = device::open(&path, &options(backend, direct, 8 << 20)).unwrap();
    let block = io.geometry().block_size as usize;
    let c = run_one(
        io.as_mut(),
        IoOp::Read {
            tag: 1,
            offset: 0,
            buf: AlignedBuf::new(block, block),
        },
    )
    .unwrap();
    let expected: Vec<u8> = pattern(0, block, 0x5a).collect();
    assert!(c.buf.unwrap().as_slice() == &expected[..]);
    drop(io);
    std::fs::remove_file(&path).unwrap();
    name
}

#[test]
fn uring_on_file_linked_fsync() {
    assert_eq!(
        file_run(Backend::Uring, DurableMode::LinkedFsync, "uring-linked"),
        "uring"
    );
}

#[test]
fn uring_on_file_dsync() {
    assert_eq!(
        file_run(Backend::Uring, DurableMode::Dsync, "uring-dsync"),
        "uring"
    );
}

#[test]
fn sync_on_file() {
    assert_eq!(
        file_run(Backend::Sync, DurableMode::default(), "sync"),
        "sync"
    );
}

#[test]
fn auto_on_file_prefers_uring() {
    // Where the kernel allows io_uring (as on CI), Auto must pick it; elsewhere it falls back.
    let name = file_run(Backend::Auto, DurableMode::default(), "auto");
    assert!(name == "uring" || name == "sync");
}

#[test]
fn sim_device() {
    let geometry = Geometry {
        block_size: 4096,
        capacity_bytes: 8 << 20,
    };
    let mut sim = device::sim(7, geometry, FaultConfig::none())
        .with_pool(SLOT_BYTES, 16)
        .with_queue_depth(32);
    workload(&mut sim, 0x33);
    let mut latency = FaultConfig::none();
    latency.latency_ops = (0, 5);
    let mut sim = device::sim(8, geometry, latency)
        .with_pool(SLOT_BYTES, 16)
        .with_queue_depth(32);
    workload(&mut sim, 0x34);
}

/// A loop device over a file, detached on drop (even when the test panics).
struct LoopDevice {
    dev: PathBuf,
    backing: PathBuf,
}

impl LoopDevice {
    fn attach(size: u64, sector_size: u32) -> Option<LoopDevice> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            println!("SKIPPED: loop device tests need root");
            return None;
        }
        // Tests run in parallel threads and some attach the same geometry: each attachment
        // gets a backing file of its own (a shared one showed one test's writes to the other).
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let name = format!("loop-{}-{n}-{size}-{sector_size}.img", std::process::id());
        let backing = scratch_dir().join(name);
        std::fs::File::create(&backing)
            .unwrap()
            .set_len(size)
            .unwrap();
        let out = Command::new("losetup")
            .args(["-f", "--show", "--sector-size", &sector_size.to_string()])
            .arg(&backing)
            .output();
        match out {
            Ok(out) if out.status.success() => {
                let dev = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
                Some(LoopDevice { dev, backing })
            }
            other => {
                println!("SKIPPED: losetup failed: {other:?}");
                let _ = std::fs::remove_file(&backing);
                None
            }
        }
    }
}

impl Drop for LoopDevice {
    fn drop(&mut self) {
        let _ = Command::new("losetup").arg("-d").arg(&self.dev).status();
        let _ = std::fs::remove_file(&self.backing);
    }
}

#[test]
fn loop_device_all_backends() {
    let Some(lo) = LoopDevice::attach(32 << 20, 512) else {
        return;
    };
    let info = device::probe(&lo.dev).unwrap();
    assert_eq!(info.kind, DeviceKind::BlockDevice);
    assert_eq!(info.size_bytes, 32 << 20);
    assert_eq!(info.logical_block_size, 512);
    for (salt, backend, mode) in [
        (1, Backend::Uring, DurableMode::LinkedFsync),
        (2, Backend::Uring, DurableMode::Dsync),
        (3, Backend::Sync, DurableMode::Dsync),
    ] {
        let opts = OpenOptions {
            create_size_bytes: None,
            ..options(backend, true, 0)
        };
        let (mut io, _) = device::open_with_mode(&lo.dev, &opts, mode).unwrap();
        workload(io.as_mut(), salt);
        // Opened O_EXCL: a second open of the same device is refused as busy.
        let second = device::open(&lo.dev, &opts);
        assert!(
            matches!(second, Err(DeviceError::Busy { .. })),
            "{:?}",
            second.err()
        );
    }
}

/// A store's three handles open on one block device (the first claims it with `O_EXCL`, the
/// state store's two do not), each sees the others' writes, and another store's exclusive open
/// is still refused.
#[test]
fn loop_device_store_handles_share_one_claim() {
    let Some(lo) = LoopDevice::attach(32 << 20, 512) else {
        return;
    };
    let opts = OpenOptions {
        create_size_bytes: None,
        ..options(Backend::Auto, true, 0)
    };
    let mut h = device::open_store(&lo.dev, &opts).unwrap();
    workload(h.log.as_mut(), 4);
    let mut buf = AlignedBuf::new(4096, 512);
    buf.as_mut_slice().fill(0x5a);
    run_one(
        h.state_write.as_mut(),
        IoOp::Write {
            tag: 1,
            offset: 8192,
            buf,
            durable: true,
        },
    )
    .unwrap()
    .result
    .unwrap();
    let c = run_one(
        h.state_read.as_mut(),
        IoOp::Read {
            tag: 2,
            offset: 8192,
            buf: AlignedBuf::new(4096, 512),
        },
    )
    .unwrap();
    c.result.unwrap();
    assert!(c.buf.unwrap().as_slice().iter().all(|&b| b == 0x5a));
    let other = device::open(&lo.dev, &opts);
    assert!(
        matches!(other, Err(DeviceError::Busy { .. })),
        "{:?}",
        other.err()
    );
}

#[test]
fn loop_device_geometry_from_ioctls() {
    let Some(lo) = LoopDevice::attach(8 << 20, 4096) else {
        return;
    };
    let info = device::probe(&lo.dev).unwrap();
    assert_eq!((info.logical_block_size, info.size_bytes), (4096, 8 << 20));
    let (mut io, _) = device::open(&lo.dev, &options(Backend::Auto, true, 0)).unwrap();
    let buf = AlignedBuf::new(4096, 4096);
    let err = io.submit(IoOp::Write {
        tag: 1,
        offset: 512,
        buf,
        durable: true,
    });
    assert!(
        matches!(err, Err(IoError::Unaligned { align: 4096, .. })),
        "{err:?}"
    );
    workload(io.as_mut(), 9);
    drop(io);
    let Some(tiny) = LoopDevice::attach(512 << 10, 512) else {
        return;
    };
    let err = device::probe(&tiny.dev).err().unwrap();
    assert!(
        matches!(err, DeviceError::TooSmall { size: 524288, .. }),
        "{err:?}"
    );
    assert!(
        err.to_string().contains(&*tiny.dev.to_string_lossy()),
        "{err}"
    );
}

#[test]
fn device_errors_name_the_path() {
    let dir = scratch_dir();
    let opts = OpenOptions {
        create_size_bytes: None,
        ..options(Backend::Sync, false, 0)
    };
    let missing = dir.join("does-not-exist.img");
    let err = device::open(&missing, &opts).err().unwrap();
    assert!(matches!(err, DeviceError::NotFound { .. }), "{err:?}");
    assert!(err.to_string().contains("does-not-exist.img"), "{err}");

    let err = device::probe(&dir).err().unwrap();
    assert!(matches!(err, DeviceError::NotBlockOrFile { .. }), "{err:?}");
    let err = device::probe(Path::new("/dev/null")).err().unwrap();
    assert!(matches!(err, DeviceError::NotBlockOrFile { .. }), "{err:?}");

    let small = dir.join(format!("small-{}.img", std::process::id()));
    std::fs::File::create(&small)
        .unwrap()
        .set_len(64 * 1024)
        .unwrap();
    let err = device::open(&small, &opts).err().unwrap();
    assert!(
        matches!(err, DeviceError::TooSmall { size: 65536, .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("small-"), "{err}");
    std::fs::remove_file(&small).unwrap();

    let parent_missing = dir.join("no-such-dir/x.img");
    let create = options(Backend::Sync, false, 4 << 20);
    let err = device::open(&parent_missing, &create).err().unwrap();
    assert!(matches!(err, DeviceError::NotFound { .. }), "{err:?}");

    let good = dir.join(format!("good-{}.img", std::process::id()));
    let bad_pool = OpenOptions {
        pool_slot_size_bytes: 1000,
        ..options(Backend::Sync, false, 4 << 20)
    };
    let err = device::open(&good, &bad_pool).err().unwrap();
    assert!(
        matches!(
            err,
            DeviceError::Io {
                source: IoError::Unaligned { .. },
                ..
            }
        ),
        "{err:?}"
    );
    std::fs::remove_file(&good).unwrap();
}

/// Random reads, writes (some durable) and flushes, up to 24 in flight, on disjoint 64 KiB
/// areas, checked against an in-memory model: slot bookkeeping under a deep queue.
fn random_mix(io: &mut dyn Io, seed: u64) {
    const AREAS: usize = 24;
    let block = io.geometry().block_size as usize;
    let mut model = vec![0u8; AREAS * SLOT_BYTES];
    let mut busy = [false; AREAS];
    let mut expected: Vec<Option<Vec<u8>>> = vec![None; AREAS];
    let mut rng = seed;
    let mut next = move || {
        rng = rng
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        rng >> 33
    };
    let mut out = Vec::new();
    for step in 0..600u64 {
        let area = (next() as usize) % AREAS;
        if busy[area] || io.in_flight() >= io.queue_depth() {
            io.reap(&mut out, 1).unwrap();
        } else {
            let blocks = 1 + (next() as usize) % (SLOT_BYTES / block);
            let offset = (area * SLOT_BYTES) as u64;
            let mut buf = io.pool().take().unwrap();
            buf.set_len(blocks * block);
            let range = area * SLOT_BYTES..area * SLOT_BYTES + blocks * block;
            let op = match next() % 5 {
                0 => IoOp::Flush {
                    tag: step << 8 | area as u64,
                },
                1 | 2 => {
                    expected[area] = Some(model[range].to_vec());
                    IoOp::Read {
                        tag: step << 8 | area as u64,
                        offset,
                        buf,
                    }
                }
                _ => {
                    buf.as_mut_slice()
                        .iter_mut()
                        .for_each(|b| *b = next() as u8);
                    model[range].copy_from_slice(buf.as_slice());
                    expected[area] = None;
                    IoOp::Write {
                        tag: step << 8 | area as u64,
                        offset,
                        buf,
                        durable: next() % 2 == 0,
                    }
                }
            };
            busy[area] = !matches!(op, IoOp::Flush { .. });
            io.submit(op).unwrap();
            io.kick().unwrap();
            io.reap(&mut out, 0).unwrap();
        }
        for c in out.drain(..) {
            let area = (c.tag & 0xff) as usize;
            c.result.as_ref().unwrap();
            if c.kind == IoKind::Flush {
                continue;
            }
            busy[area] = false;
            if let (IoKind::Read, Some(want)) = (c.kind, expected[area].take()) {
                assert!(
                    c.buf.unwrap().as_slice() == &want[..],
                    "seed {seed} step {step}: read mismatch"
                );
            }
        }
    }
    while io.in_flight() > 0 {
        io.reap(&mut out, 1).unwrap();
    }
}

#[test]
fn random_mix_on_every_backend() {
    let dir = scratch_dir();
    let direct = direct_ok(&dir);
    for (backend, mode) in [
        (Backend::Uring, DurableMode::LinkedFsync),
        (Backend::Uring, DurableMode::Dsync),
        (Backend::Sync, DurableMode::Dsync),
    ] {
        let path = dir.join(format!(
            "mix-{backend:?}-{mode:?}-{}.img",
            std::process::id()
        ));
        let opts = OpenOptions {
            pool_slot_count: 32,
            ..options(backend, direct, 4 << 20)
        };
        let (mut io, _) = device::open_with_mode(&path, &opts, mode).unwrap();
        random_mix(io.as_mut(), 11);
        drop(io);
        std::fs::remove_file(&path).unwrap();
    }
    let geometry = Geometry {
        block_size: 4096,
        capacity_bytes: 4 << 20,
    };
    let latency = FaultConfig {
        latency_ops: (0, 7),
        ..FaultConfig::none()
    };
    let mut sim = device::sim(12, geometry, latency)
        .with_pool(SLOT_BYTES, 32)
        .with_queue_depth(32);
    random_mix(&mut sim, 13);
}

/// Dropping a `uring` device whose last operation has completed in the kernel but was never
/// reaped must return: the drop drains that completion and must not then wait for another.
#[test]
fn uring_drop_with_unreaped_completion_returns() {
    let dir = scratch_dir();
    let direct = direct_ok(&dir);
    let path = dir.join(format!("uring-drop-{}", std::process::id()));
    let (mut io, _) = device::open(&path, &options(Backend::Uring, direct, 1 << 20)).unwrap();
    let mut buf = io.pool().take().unwrap();
    buf.set_len(4096);
    io.submit(IoOp::Write {
        tag: 1,
        offset: 0,
        buf,
        durable: true,
    })
    .unwrap();
    io.kick().unwrap();
    // Let the kernel finish the write; its completion stays in the ring, unreaped.
    std::thread::sleep(std::time::Duration::from_millis(200));
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        drop(io);
        let _ = done_tx.send(());
    });
    // A hang is the failure; a minute is far beyond any real drop time.
    let dropped = done_rx.recv_timeout(std::time::Duration::from_secs(60));
    let _ = std::fs::remove_file(&path);
    assert!(
        dropped.is_ok(),
        "dropping UringIo hung with a completed, unreaped write"
    );
}
