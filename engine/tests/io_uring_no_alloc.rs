//! The `uring` data path allocates nothing per operation: after open, submitting, kicking and
//! reaping pool-buffer reads, writes (plain and durable, both modes) and flushes, and giving the
//! buffers back, performs zero heap allocations on the calling thread. Checked with a counting
//! global allocator that only counts while armed on this thread.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};

use engine::device::{self, Backend, OpenOptions};
use engine::io::uring::DurableMode;
use engine::io::{Io, IoOp};

struct Counting;

static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);
thread_local! {
    static ARMED: Cell<bool> = const { Cell::new(false) };
}

// SAFETY: forwards to the system allocator; only adds a counter.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if ARMED.with(Cell::get) {
            ALLOCATIONS.fetch_add(1, Ordering::SeqCst);
        }
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn cycle(io: &mut dyn Io, round: u64, out: &mut Vec<engine::io::Completion>) {
    let offset = (round % 64) * 4096;
    let mut buf = io.pool().take().expect("pool slot");
    buf.set_len(4096);
    let op = match round % 4 {
        0 => IoOp::Write {
            tag: round,
            offset,
            buf,
            durable: false,
        },
        1 => IoOp::Write {
            tag: round,
            offset,
            buf,
            durable: true,
        },
        2 => IoOp::Read {
            tag: round,
            offset,
            buf,
        },
        _ => {
            io.pool().give(buf);
            IoOp::Flush { tag: round }
        }
    };
    io.submit(op).unwrap();
    io.kick().unwrap();
    while out.is_empty() {
        io.reap(out, 1).unwrap();
    }
    for c in out.drain(..) {
        c.result.unwrap();
        if let Some(buf) = c.buf {
            io.pool().give(buf);
        }
    }
}

#[test]
fn uring_data_path_does_not_allocate() {
    let dir = std::env::var_os("BASALT_TEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_TARGET_TMPDIR")));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("noalloc-{}.img", std::process::id()));
    for mode in [DurableMode::LinkedFsync, DurableMode::Dsync] {
        let opts = OpenOptions {
            backend: Backend::Uring,
            pool_slot_size_bytes: 4096,
            pool_slot_count: 8,
            create_size_bytes: Some(4 << 20),
            ..OpenOptions::default()
        };
        let opts = match device::open_with_mode(&path, &opts, mode) {
            Ok(_) => opts,
            Err(_) => OpenOptions {
                direct: false,
                ..opts
            }, // no O_DIRECT here (tmpfs)
        };
        let (mut io, _) = device::open_with_mode(&path, &opts, mode).unwrap();
        let mut out = Vec::with_capacity(16);
        for round in 0..8 {
            cycle(io.as_mut(), round, &mut out); // warm-up
        }
        ALLOCATIONS.store(0, Ordering::SeqCst);
        ARMED.with(|a| a.set(true));
        for round in 0..200 {
            cycle(io.as_mut(), round, &mut out);
        }
        ARMED.with(|a| a.set(false));
        assert_eq!(
            ALLOCATIONS.load(Ordering::SeqCst),
            0,
            "{mode:?}: allocations on the data path"
        );
    }
    std::fs::remove_file(&path).unwrap();
}
