//! The `uring` backend: io_uring on an `O_DIRECT` descriptor.
//!
//! The descriptor is registered with the ring (fixed file 0) and so is the backend's whole
//! [`BufPool`] mapping (fixed buffer 0): a buffer taken from this backend's pool goes out as
//! `ReadFixed`/`WriteFixed`, any other buffer as plain `Read`/`Write`. If the kernel refuses to
//! register the buffers (for example `RLIMIT_MEMLOCK`), the backend logs one warning and uses plain
//! reads and writes.
//!
//! Every in-flight op lives in a slot of a table sized `queue_depth` at open; the slot index is
//! the SQE's `user_data` (shifted left one bit; the low bit marks the linked fsync of a durable
//! write). Completions wait in a queue with capacity `queue_depth`, so `submit` and `reap`
//! allocate nothing. `submit` only fills SQEs; `kick` enters the kernel without waiting; only
//! `reap` with `min_complete > 0` waits.
//!
//! Short transfers are resubmitted for the remainder, `EAGAIN`/`EINTR` results are resubmitted,
//! and a transfer that makes no progress (0 bytes) is `IoError::Short`. The ring has room for two
//! SQEs per slot and twice as many CQEs, so the completion queue cannot overflow; should the
//! kernel still report dropped completions, the backend latches failed.
//!
//! # Durable writes
//! [`DurableMode::LinkedFsync`] submits the write linked (`IO_LINK`) to an `fsync(DATASYNC)`;
//! [`DurableMode::Dsync`] sets `RWF_DSYNC` on the write itself. Both are durable: the linked
//! write cannot complete before its fsync does, and `RWF_DSYNC` makes the kernel complete the
//! write only after a FUA write or a cache flush (the `fdatasync` guarantee for that range).
//!
//! Measured 2026-11-25 on the 2-core CI VM (kernel 6.18, virtio disk with a volatile write cache
//! and no FUA, ext4) with `tests/io_durable_modes.rs`: 4 KiB writes at queue depth 1, the three
//! methods alternating op by op on one open file so that background load hits them alike; ops/s
//! over the time spent in each. Run 1 was taken with other builds running (load average 5-8),
//! run 2 on a quieter machine (load average ~1.5):
//!
//! | ops/s (run 1 / run 2)           | LinkedFsync | Dsync       | sync pwrite+fdatasync |
//! |---------------------------------|-------------|-------------|-----------------------|
//! | file on ext4                    | 1637 / 5979 | 939 / 6436  | 1379 / 6729           |
//! | loop device, buffered backing   | 871 / 2528  | 1141 / 3168 | 1112 / 3322           |
//! | loop device, direct-io backing  | 302 / 2712  | 525 / 2874  | 526 / 2856            |
//!
//! The log's own synced writes (`basalt-bench --target=log --regions=1 --entry-size=256
//! --entries-per-write=64`, 20 KiB writes on a pre-written ext4 file, three 3 s runs each,
//! alternating) settle it: LinkedFsync 4227 / 4481 / 3570 writes/s, Dsync 5172 / 5758 / 4546.
//! A linked fsync always goes through an io_uring worker thread (`perf stat`: 1 queued async
//! work item and ~5.5 context switches per write); an `RWF_DSYNC` direct write does not (no
//! async work, ~1 context switch per write, half the CPU). **`Dsync` is therefore the default
//! for every kind of device** ([`DurableMode::for_kind`], used by `device::open`); run 1's ext4
//! figures, which favoured LinkedFsync, were taken under load. `LinkedFsync` stays available
//! for devices whose `RWF_DSYNC` path turns out slower. Re-measure on real NVMe before tuning
//! further.

use std::collections::VecDeque;
use std::fs::File;
use std::os::fd::AsRawFd;

use io_uring::{opcode, squeue, types, IoUring};

use super::{check_op, AlignedBuf, BufPool, Completion, Geometry, Io, IoError, IoKind, IoOp};

/// How a `Write { durable: true }` is made durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DurableMode {
    /// The write linked (`IO_LINK`) to an `fsync(DATASYNC)` of the device.
    LinkedFsync,
    /// The write carries `RWF_DSYNC` (the kernel flushes before completing it).
    #[default]
    Dsync,
}

impl DurableMode {
    /// The mode measured fastest for this kind of device (see the module docs): `Dsync` on
    /// block devices and on files alike.
    pub fn for_kind(kind: crate::device::DeviceKind) -> DurableMode {
        match kind {
            crate::device::DeviceKind::BlockDevice | crate::device::DeviceKind::RegularFile => {
                DurableMode::Dsync
            }
        }
    }
}

const FIXED_FILE: types::Fixed = types::Fixed(0);
const FSYNC_BIT: u64 = 1;
/// The `user_data` of the eventfd read a [`super::IoWaker`] completes (no slot has this index).
const WAKE_USER_DATA: u64 = u64::MAX;

/// One in-flight operation.
struct Slot {
    tag: u64,
    kind: IoKind,
    offset: u64,
    buf: Option<AlignedBuf>,
    durable: bool,
    /// Fixed at submit, so a resubmission never mixes modes.
    mode: DurableMode,
    // Invariant: done <= len; bytes [0, done) are transferred.
    done: usize,
    len: usize,
    /// CQEs still expected for the SQEs pushed last.
    outstanding: u8,
    /// Result of the last read/write CQE, and of the last fsync CQE.
    rw_res: Option<i32>,
    fsync_res: Option<i32>,
}

/// io_uring backend. See the module docs.
pub struct UringIo {
    ring: IoUring,
    _file: File,
    geometry: Geometry,
    pool: BufPool,
    /// Pool id whose buffers are registered as fixed buffer 0 (None: not registered).
    fixed_pool_id: Option<u64>,
    mode: DurableMode,
    slots: Vec<Option<Slot>>,
    free_slots: Vec<u32>,
    done: VecDeque<Completion>,
    cqe_scratch: Vec<(u64, i32)>,
    // Invariant: in_flight = slots in use + done.len() <= queue_depth.
    in_flight: usize,
    queue_depth: usize,
    latched: bool,
    /// Set once [`Io::waker`] was called.
    wake: Option<WakeRead>,
    /// Set once [`Io::completion_fd`] was called: the eventfd registered with the ring.
    completion_efd: Option<nix::sys::eventfd::EventFd>,
}

/// The eventfd of a waker and the ring's read on it.
struct WakeRead {
    fd: std::sync::Arc<nix::sys::eventfd::EventFd>,
    /// Where the pending read puts the counter; boxed so it never moves while the read is
    /// pending.
    buf: Box<u64>,
    /// A read is in the ring.
    armed: bool,
    /// The read completed since the last `reap` returned.
    woken: bool,
}

impl UringIo {
    /// Set up a ring of `queue_depth` slots on `file` (opened `O_DIRECT`), registering the file
    /// and `pool`'s mapping. `Err(UringUnavailable)` when the kernel refuses io_uring.
    pub fn new(
        file: File,
        geometry: Geometry,
        queue_depth: usize,
        pool: BufPool,
        mode: DurableMode,
    ) -> Result<UringIo, IoError> {
        let queue_depth = queue_depth.clamp(1, 1 << 14);
        let sq_entries = (2 * queue_depth).next_power_of_two() as u32;
        let ring = build_ring(sq_entries)?;
        ring.submitter()
            .register_files(&[file.as_raw_fd()])
            .map_err(|source| IoError::Os {
                op: "io_uring register file",
                offset: 0,
                source,
            })?;
        let fixed_pool_id = register_pool(&ring, &pool);
        let cqe_capacity = ring.params().cq_entries() as usize;
        Ok(UringIo {
            ring,
            _file: file,
            geometry,
            pool,
            fixed_pool_id,
            mode,
            slots: (0..queue_depth).map(|_| None).collect(),
            free_slots: (0..queue_depth as u32).rev().collect(),
            done: VecDeque::with_capacity(queue_depth),
            cqe_scratch: Vec::with_capacity(cqe_capacity),
            in_flight: 0,
            queue_depth,
            latched: false,
            wake: None,
            completion_efd: None,
        })
    }

    /// Puts a read of the waker's eventfd in the ring, unless one is there.
    fn arm_wake(&mut self) -> Result<(), IoError> {
        let Some(w) = self.wake.as_mut().filter(|w| !w.armed) else {
            return Ok(());
        };
        let ptr = std::ptr::from_mut::<u64>(&mut w.buf).cast::<u8>();
        let read = opcode::Read::new(types::Fd(w.fd.as_raw_fd()), ptr, 8)
            .build()
            .user_data(WAKE_USER_DATA);
        w.armed = true;
        self.push(&[read])
    }

    /// The durable-write mode in use.
    pub fn durable_mode(&self) -> DurableMode {
        self.mode
    }

    /// Change how later durable writes are made durable (ops already submitted keep theirs).
    pub fn set_durable_mode(&mut self, mode: DurableMode) {
        self.mode = mode;
    }

    /// True when the pool is registered as fixed buffers.
    pub fn has_fixed_buffers(&self) -> bool {
        self.fixed_pool_id.is_some()
    }

    /// True once a write or flush has failed.
    pub fn is_latched(&self) -> bool {
        self.latched
    }

    /// Push the SQEs for the remaining part of slot `idx`.
    fn push_sqes(&mut self, idx: u32) -> Result<(), IoError> {
        let fixed_pool_id = self.fixed_pool_id;
        let slot = self.slots[idx as usize]
            .as_mut()
            .expect("push_sqes on a live slot");
        let user_data = u64::from(idx) << 1;
        let fsync = opcode::Fsync::new(FIXED_FILE)
            .flags(types::FsyncFlags::DATASYNC)
            .build()
            .user_data(user_data | FSYNC_BIT);
        slot.rw_res = None;
        slot.fsync_res = None;
        let rw = match slot.kind {
            IoKind::Flush => None,
            IoKind::Write if slot.done == slot.len => None, // only the fsync is left
            kind => Some(rw_entry(slot, kind, fixed_pool_id).user_data(user_data)),
        };
        let with_fsync = match slot.kind {
            IoKind::Flush => true,
            IoKind::Write => slot.durable && slot.mode == DurableMode::LinkedFsync,
            IoKind::Read => false,
        };
        slot.outstanding = u8::from(rw.is_some()) + u8::from(with_fsync);
        match (rw, with_fsync) {
            (Some(rw), true) => self.push(&[rw.flags(squeue::Flags::IO_LINK), fsync]),
            (Some(rw), false) => self.push(&[rw]),
            (None, _) => self.push(&[fsync]),
        }
    }

    fn push(&mut self, entries: &[squeue::Entry]) -> Result<(), IoError> {
        for attempt in 0..2 {
            // SAFETY: every buffer named by these entries is owned by a live slot and stays there
            // (not moved, not freed) until its CQE is processed; the fd is registered.
            if unsafe { self.ring.submission().push_multiple(entries) }.is_ok() {
                return Ok(());
            }
            if attempt == 0 {
                self.enter(0)?; // make room by handing the queued SQEs to the kernel
            }
        }
        Err(IoError::QueueFull)
    }

    /// `io_uring_enter`: submit queued SQEs and wait for `want` CQEs. Interrupted or busy
    /// (completion backlog) calls return Ok; the caller drains and loops.
    fn enter(&mut self, want: usize) -> Result<(), IoError> {
        match self.ring.submitter().submit_and_wait(want) {
            Ok(_) => Ok(()),
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::EINTR | libc::EAGAIN | libc::EBUSY)
                ) =>
            {
                Ok(())
            }
            Err(source) => {
                self.latched = true;
                Err(IoError::Os {
                    op: "io_uring_enter",
                    offset: 0,
                    source,
                })
            }
        }
    }

    /// Process every CQE in the ring.
    fn drain_cq(&mut self) -> Result<(), IoError> {
        loop {
            let mut scratch = std::mem::take(&mut self.cqe_scratch);
            let overflowed = {
                let mut cq = self.ring.completion();
                cq.sync();
                scratch.extend((&mut cq).map(|cqe| (cqe.user_data(), cqe.result())));
                cq.overflow()
            };
            if overflowed > 0 {
                self.latched = true;
                let source = std::io::Error::other("io_uring dropped completions");
                return Err(IoError::Os {
                    op: "io_uring completion queue",
                    offset: 0,
                    source,
                });
            }
            let drained = scratch.len();
            for &(user_data, res) in &scratch {
                self.on_cqe(user_data, res)?;
            }
            scratch.clear();
            self.cqe_scratch = scratch;
            // CQEs the kernel kept back (NODROP backlog) are flushed into the ring by an enter.
            if drained == 0 && !self.ring.submission().cq_overflow() {
                return Ok(());
            }
            if self.ring.submission().cq_overflow() {
                self.enter(0)?;
            }
        }
    }

    fn on_cqe(&mut self, user_data: u64, res: i32) -> Result<(), IoError> {
        if user_data == WAKE_USER_DATA {
            if let Some(w) = self.wake.as_mut() {
                w.armed = false;
                w.woken = true;
            }
            return Ok(());
        }
        let idx = (user_data >> 1) as u32;
        let Some(slot) = self.slots.get_mut(idx as usize).and_then(Option::as_mut) else {
            tracing::error!(user_data, res, "io_uring completion for no live slot");
            return Ok(());
        };
        if user_data & FSYNC_BIT != 0 {
            slot.fsync_res = Some(res);
        } else {
            slot.rw_res = Some(res);
        }
        slot.outstanding = slot.outstanding.saturating_sub(1);
        if slot.outstanding == 0 {
            self.advance(idx)?;
        }
        Ok(())
    }

    /// All CQEs of slot `idx` are in: finish it or resubmit what is left.
    fn advance(&mut self, idx: u32) -> Result<(), IoError> {
        let slot = self.slots[idx as usize]
            .as_mut()
            .expect("advance on a live slot");
        let outcome = match slot.kind {
            IoKind::Flush => fsync_outcome(slot.fsync_res),
            IoKind::Read | IoKind::Write => match rw_outcome(slot) {
                Step::Done(Ok(_)) if slot.kind == IoKind::Write && slot.fsync_res.is_some() => {
                    fsync_outcome(slot.fsync_res)
                }
                other => other,
            },
        };
        match outcome {
            Step::Retry => self.push_sqes(idx),
            Step::Done(result) => {
                self.finish(idx, result);
                Ok(())
            }
        }
    }

    fn finish(&mut self, idx: u32, result: Result<usize, IoError>) {
        let Some(mut slot) = self.slots[idx as usize].take() else {
            return;
        };
        self.free_slots.push(idx);
        let result = result.map(|_| slot.len);
        if let Err(error) = &result {
            if slot.kind != IoKind::Read {
                self.latched = true;
            }
            tracing::error!(backend = "uring", tag = slot.tag, offset = slot.offset, %error, "I/O failed");
        }
        let buf = slot.buf.take();
        let completion = Completion {
            tag: slot.tag,
            kind: slot.kind,
            offset: slot.offset,
            buf,
            result,
        };
        self.done.push_back(completion);
    }
}

/// What to do with a slot whose CQEs are all in.
enum Step {
    Retry,
    Done(Result<usize, IoError>),
}

fn retriable(res: i32) -> bool {
    res == -libc::EAGAIN || res == -libc::EINTR
}

fn rw_outcome(slot: &mut Slot) -> Step {
    let (op, fully_done) = match slot.kind {
        IoKind::Read => ("read", false),
        _ => ("write", slot.done == slot.len),
    };
    if fully_done {
        // Only the fsync was resubmitted this round.
        return Step::Done(Ok(slot.len));
    }
    let offset = slot.offset + slot.done as u64;
    match slot.rw_res {
        Some(res) if retriable(res) => Step::Retry,
        Some(res) if res < 0 => {
            let source = std::io::Error::from_raw_os_error(-res);
            Step::Done(Err(IoError::Os { op, offset, source }))
        }
        Some(0) | None => Step::Done(Err(IoError::Short {
            op,
            offset: slot.offset,
            done: slot.done,
            len: slot.len,
        })),
        Some(res) => {
            slot.done = (slot.done + res as usize).min(slot.len);
            // Complete: `advance` then looks at a linked fsync's result, if there is one.
            if slot.done < slot.len {
                Step::Retry
            } else {
                Step::Done(Ok(slot.len))
            }
        }
    }
}

fn fsync_outcome(res: Option<i32>) -> Step {
    match res {
        Some(0) => Step::Done(Ok(0)),
        // Cancelled (its linked write was short or failed and has been dealt with) or interrupted.
        Some(res) if retriable(res) || res == -libc::ECANCELED => Step::Retry,
        Some(res) => {
            let source = std::io::Error::from_raw_os_error(-res);
            Step::Done(Err(IoError::Os {
                op: "fdatasync",
                offset: 0,
                source,
            }))
        }
        None => Step::Retry,
    }
}

/// The read or write SQE for the untransferred part of `slot`.
fn rw_entry(slot: &mut Slot, kind: IoKind, fixed_pool_id: Option<u64>) -> squeue::Entry {
    let buf = slot.buf.as_mut().expect("read/write slot holds its buffer");
    let fixed = fixed_pool_id.is_some() && buf.pool_id() == fixed_pool_id;
    let ptr = buf.as_mut_ptr().wrapping_add(slot.done);
    let len = (slot.len - slot.done) as u32;
    let offset = slot.offset + slot.done as u64;
    let rw_flags = if slot.durable && slot.mode == DurableMode::Dsync {
        libc::RWF_DSYNC
    } else {
        0
    };
    match (kind, fixed) {
        (IoKind::Read, true) => opcode::ReadFixed::new(FIXED_FILE, ptr, len, 0)
            .offset(offset)
            .build(),
        (IoKind::Read, false) => opcode::Read::new(FIXED_FILE, ptr, len)
            .offset(offset)
            .build(),
        (_, true) => opcode::WriteFixed::new(FIXED_FILE, ptr, len, 0)
            .offset(offset)
            .rw_flags(rw_flags)
            .build(),
        (_, false) => opcode::Write::new(FIXED_FILE, ptr, len)
            .offset(offset)
            .rw_flags(rw_flags)
            .build(),
    }
}

fn build_ring(sq_entries: u32) -> Result<IoUring, IoError> {
    // COOP_TASKRUN (5.19+) saves an interrupt per completion; completions then wait for the
    // next kernel entry, which `reap` makes whenever TASKRUN_FLAG says work is pending.
    // Retry without both on older kernels.
    match IoUring::builder()
        .setup_coop_taskrun()
        .setup_taskrun_flag()
        .build(sq_entries)
    {
        Ok(ring) => Ok(ring),
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => IoUring::builder()
            .build(sq_entries)
            .map_err(IoError::UringUnavailable),
        Err(e) => Err(IoError::UringUnavailable(e)),
    }
}

/// Register the pool's mapping as fixed buffer 0; on refusal warn once and go without.
fn register_pool(ring: &IoUring, pool: &BufPool) -> Option<u64> {
    let (base, len) = pool.region();
    if len == 0 {
        return None;
    }
    let iovec = libc::iovec {
        iov_base: base.cast(),
        iov_len: len,
    };
    // SAFETY: the region is a live anonymous mapping owned by `pool`, which the backend keeps
    // (and the mapping outlives the ring: fields drop in declaration order, ring first).
    match unsafe { ring.submitter().register_buffers(&[iovec]) } {
        Ok(()) => Some(pool.id()),
        Err(error) => {
            tracing::warn!(%error, pool_bytes = len, "io_uring refused fixed buffers; using plain reads/writes");
            None
        }
    }
}

impl Io for UringIo {
    fn geometry(&self) -> Geometry {
        self.geometry
    }

    fn submit(&mut self, op: IoOp) -> Result<(), IoError> {
        if self.latched {
            return Err(IoError::Latched);
        }
        if self.in_flight >= self.queue_depth {
            return Err(IoError::QueueFull);
        }
        let slot = match op {
            IoOp::Read { tag, offset, buf } => {
                check_op(self.geometry, offset, &buf)?;
                new_slot(tag, IoKind::Read, offset, Some(buf), false)
            }
            IoOp::Write {
                tag,
                offset,
                buf,
                durable,
            } => {
                check_op(self.geometry, offset, &buf)?;
                new_slot(tag, IoKind::Write, offset, Some(buf), durable)
            }
            IoOp::Flush { tag } => new_slot(tag, IoKind::Flush, 0, None, false),
        };
        let slot = Slot {
            mode: self.mode,
            ..slot
        };
        let idx = self.free_slots.pop().ok_or(IoError::QueueFull)?;
        self.slots[idx as usize] = Some(slot);
        self.in_flight += 1;
        if let Err(e) = self.push_sqes(idx) {
            self.slots[idx as usize] = None;
            self.free_slots.push(idx);
            self.in_flight -= 1;
            return Err(e);
        }
        Ok(())
    }

    fn kick(&mut self) -> Result<(), IoError> {
        if self.latched {
            return Err(IoError::Latched);
        }
        if self.ring.submission().is_empty() {
            return Ok(());
        }
        self.enter(0)
    }

    fn reap(&mut self, out: &mut Vec<Completion>, min_complete: usize) -> Result<usize, IoError> {
        let target = min_complete.min(self.in_flight);
        loop {
            if self.ring.submission().taskrun() {
                self.enter(0)?; // run pending completion work (COOP_TASKRUN)
            }
            self.drain_cq()?;
            if self.done.len() >= target || self.wake.as_ref().is_some_and(|w| w.woken) {
                break;
            }
            self.arm_wake()?;
            self.enter(1)?;
        }
        if let Some(w) = self.wake.as_mut() {
            w.woken = false;
        }
        if !self.ring.submission().is_empty() {
            self.enter(0)?; // resubmissions made while draining
        }
        let count = self.done.len();
        self.in_flight -= count;
        out.extend(self.done.drain(..));
        Ok(count)
    }

    fn in_flight(&self) -> usize {
        self.in_flight
    }

    fn queue_depth(&self) -> usize {
        self.queue_depth
    }

    fn pool(&mut self) -> &mut BufPool {
        &mut self.pool
    }

    fn backend_name(&self) -> &'static str {
        "uring"
    }

    fn waker(&mut self) -> Result<Option<super::IoWaker>, IoError> {
        if let Some(w) = &self.wake {
            return Ok(Some(super::IoWaker::new(std::sync::Arc::clone(&w.fd))));
        }
        use nix::sys::eventfd::{EfdFlags, EventFd};
        let fd = EventFd::from_value_and_flags(0, EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK)
            .map_err(|e| IoError::Os {
            op: "eventfd",
            offset: 0,
            source: e.into(),
        })?;
        let fd = std::sync::Arc::new(fd);
        self.wake = Some(WakeRead {
            fd: std::sync::Arc::clone(&fd),
            buf: Box::new(0),
            armed: false,
            woken: false,
        });
        Ok(Some(super::IoWaker::new(fd)))
    }

    fn completion_fd(&mut self) -> Result<Option<std::os::fd::OwnedFd>, IoError> {
        use nix::sys::eventfd::{EfdFlags, EventFd};
        use std::os::fd::AsFd;
        let os = |op: &'static str| {
            move |source: std::io::Error| IoError::Os {
                op,
                offset: 0,
                source,
            }
        };
        if self.completion_efd.is_none() {
            let fd =
                EventFd::from_value_and_flags(0, EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK)
                    .map_err(|e| os("eventfd")(e.into()))?;
            self.ring
                .submitter()
                .register_eventfd(fd.as_raw_fd())
                .map_err(os("io_uring register eventfd"))?;
            self.completion_efd = Some(fd);
        }
        match &self.completion_efd {
            Some(fd) => fd
                .as_fd()
                .try_clone_to_owned()
                .map(Some)
                .map_err(os("dup eventfd")),
            None => Ok(None),
        }
    }
}

fn new_slot(tag: u64, kind: IoKind, offset: u64, buf: Option<AlignedBuf>, durable: bool) -> Slot {
    let len = buf.as_ref().map_or(0, AlignedBuf::len);
    Slot {
        tag,
        kind,
        offset,
        buf,
        durable,
        mode: DurableMode::default(),
        done: 0,
        len,
        outstanding: 0,
        rw_res: None,
        fsync_res: None,
    }
}

impl Drop for UringIo {
    fn drop(&mut self) {
        // The kernel may still be writing into slot buffers: wait for every outstanding CQE
        // before the buffers (and the pool mapping) are freed.
        // Re-check after every drain: the drain may finish the last operation, and waiting for
        // one more completion then would block forever.
        // A pending read of the waker's eventfd writes into `wake.buf`: complete it too.
        if let Some(w) = self.wake.as_ref().filter(|w| w.armed) {
            let _ = w.fd.write(1);
        }
        for _ in 0..1_000_000 {
            if self.drain_cq().is_err() {
                break;
            }
            let wake_pending = self.wake.as_ref().is_some_and(|w| w.armed);
            if !wake_pending && !self.slots.iter().any(Option::is_some) {
                break;
            }
            if self.enter(1).is_err() {
                break;
            }
        }
        // Drop the ring's own reference to the file now: the ring's teardown releases it later,
        // from a kernel worker, and until then an O_EXCL block device would still look busy.
        let _ = self.ring.submitter().unregister_files();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_slot(rw_res: Option<i32>, fsync_res: Option<i32>) -> Slot {
        let mut slot = new_slot(
            7,
            IoKind::Write,
            4096,
            Some(AlignedBuf::new(8192, 4096)),
            true,
        );
        slot.rw_res = rw_res;
        slot.fsync_res = fsync_res;
        slot
    }

    fn is_retry(step: &Step) -> bool {
        matches!(step, Step::Retry)
    }

    #[test]
    fn cqe_results_decide_retry_or_finish() {
        let mut short = write_slot(Some(4096), Some(-libc::ECANCELED));
        assert!(is_retry(&rw_outcome(&mut short)));
        assert_eq!(
            short.done, 4096,
            "the remainder starts after the bytes written"
        );
        for res in [-libc::EAGAIN, -libc::EINTR] {
            let mut slot = write_slot(Some(res), None);
            assert!(is_retry(&rw_outcome(&mut slot)));
            assert_eq!(slot.done, 0);
        }
        let mut eio = write_slot(Some(-libc::EIO), None);
        assert!(matches!(
            rw_outcome(&mut eio),
            Step::Done(Err(IoError::Os { offset: 4096, .. }))
        ));
        let mut zero = write_slot(Some(0), None);
        assert!(matches!(
            rw_outcome(&mut zero),
            Step::Done(Err(IoError::Short { .. }))
        ));
        let mut full = write_slot(Some(8192), Some(0));
        assert!(matches!(rw_outcome(&mut full), Step::Done(Ok(8192))));
        assert!(matches!(fsync_outcome(Some(0)), Step::Done(Ok(0))));
        assert!(is_retry(&fsync_outcome(Some(-libc::ECANCELED))));
        assert!(is_retry(&fsync_outcome(Some(-libc::EINTR))));
        let eio = fsync_outcome(Some(-libc::EIO));
        assert!(matches!(
            eio,
            Step::Done(Err(IoError::Os {
                op: "fdatasync",
                ..
            }))
        ));
    }
}
