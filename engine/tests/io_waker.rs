//! Proves that an [`IoWaker`] ends a blocking `reap` of the `uring` backend early and that the
//! woken reap loses nothing: the "device" is the read end of a pipe, so a read on it stays in
//! flight until the test writes into the pipe. A wake from another thread makes the waiting
//! reap return with no completion; the read then completes once data arrives, with its bytes.

use std::fs::File;
use std::io::Write;

use engine::io::uring::{DurableMode, UringIo};
use engine::io::{BufPool, Geometry, Io, IoOp, IoWaker};

const BLOCK: usize = 512;
/// How long the test waits before calling a reap hung (not a performance bound).
const HANG_GUARD: std::time::Duration = std::time::Duration::from_secs(10);

fn pipe_device() -> (UringIo, File) {
    let (read_end, write_end) = nix::unistd::pipe().expect("pipe");
    let geometry = Geometry {
        block_size: BLOCK as u32,
        capacity_bytes: 1 << 20,
    };
    let pool = BufPool::new(BLOCK, 4, BLOCK).expect("pool");
    let io = UringIo::new(File::from(read_end), geometry, 4, pool, DurableMode::Dsync)
        .expect("io_uring on a pipe");
    (io, File::from(write_end))
}

/// A pipe-backed device with its waker and one read of `tag` submitted on it.
fn pending_read(tag: u64) -> (UringIo, File, IoWaker) {
    let (mut io, pipe_in) = pipe_device();
    let waker = io.waker().expect("waker").expect("uring has a waker");
    let buf = io.pool().take().expect("buffer");
    io.submit(IoOp::Read {
        tag,
        offset: 0,
        buf,
    })
    .expect("submit");
    (io, pipe_in, waker)
}

#[test]
fn a_wake_ends_a_blocking_reap_and_the_op_still_completes() {
    let (mut io, mut pipe_in, waker) = pending_read(7);
    // Handed to the kernel by this thread, which outlives the reaping one: io_uring cancels a
    // thread's pending requests when it exits.
    io.kick().expect("kick");
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    let reaper = std::thread::spawn(move || {
        let mut out = Vec::new();
        let n = io.reap(&mut out, 1).expect("reap");
        done_tx.send(()).expect("report");
        (io, n, out)
    });
    std::thread::sleep(HANG_GUARD / 100);
    waker.wake();
    // The read cannot complete (nothing is in the pipe): only the wake returns the reap.
    let woken = done_rx.recv_timeout(HANG_GUARD).is_ok();
    if !woken {
        pipe_in.write_all(&[0; BLOCK]).expect("unblock the reap");
    }
    let (mut io, n, mut out) = reaper.join().expect("reaping thread");
    assert!(woken, "the wake did not end the reap");
    assert_eq!((n, out.len(), io.in_flight()), (0, 0, 1));
    pipe_in.write_all(&[0xab; BLOCK]).expect("fill the pipe");
    while out.is_empty() {
        io.reap(&mut out, 1).expect("reap");
    }
    let c = out.pop().expect("completion");
    assert_eq!((c.tag, c.result.expect("read")), (7, BLOCK));
    assert!(c
        .buf
        .expect("buffer back")
        .as_slice()
        .iter()
        .all(|&b| b == 0xab));
    assert_eq!(io.in_flight(), 0);
}

#[test]
fn a_wake_before_the_reap_is_not_lost() {
    let (mut io, mut pipe_in, waker) = pending_read(1);
    waker.wake();
    let mut out = Vec::new();
    assert_eq!(io.reap(&mut out, 1).expect("reap"), 0);
    // Dropping the device with the read (and the waker's own read) pending must not hang.
    pipe_in.write_all(&[1; BLOCK]).expect("fill the pipe");
    drop(io);
}
