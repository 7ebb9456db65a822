//! The `sync` backend: `pread`/`pwrite`/`fdatasync` (through `nix`) on an already opened file.
//!
//! For kernels or sandboxes that refuse io_uring. Each op runs to completion inside `submit`
//! (so "never blocks on submit" is the one part of the contract this backend cannot keep: the
//! caller's thread does the I/O) and its completion is queued for `reap`. Short transfers are
//! continued and `EINTR`/`EAGAIN` retried; a transfer that makes no progress is `IoError::Short`.
//! After a failed write or flush the backend is latched: `submit` and `kick` return
//! `IoError::Latched`.

use std::collections::VecDeque;
use std::fs::File;

use nix::errno::Errno;

use super::{
    check_op, run_inline, AlignedBuf, BufPool, Completion, Geometry, InlineOps, Io, IoError, IoOp,
};

/// Synchronous backend over a file descriptor (usually opened `O_DIRECT`).
pub struct SyncIo {
    file: File,
    geometry: Geometry,
    pool: BufPool,
    // Invariant: done.len() <= queue_depth (capacity reserved at construction).
    done: VecDeque<Completion>,
    queue_depth: usize,
    latched: bool,
}

impl SyncIo {
    /// Wrap an open file. `pool` supplies the buffers callers take from [`Io::pool`].
    pub fn new(file: File, geometry: Geometry, queue_depth: usize, pool: BufPool) -> SyncIo {
        let queue_depth = queue_depth.max(1);
        let done = VecDeque::with_capacity(queue_depth);
        SyncIo {
            file,
            geometry,
            pool,
            done,
            queue_depth,
            latched: false,
        }
    }

    /// True once a write or flush has failed.
    pub fn is_latched(&self) -> bool {
        self.latched
    }

    fn read(&self, offset: u64, buf: &mut AlignedBuf) -> Result<usize, IoError> {
        let len = buf.len();
        let mut done = 0;
        while done < len {
            let at = (offset + done as u64) as i64;
            match nix::sys::uio::pread(&self.file, &mut buf.as_mut_slice()[done..], at) {
                Ok(0) => {
                    return Err(IoError::Short {
                        op: "read",
                        offset,
                        done,
                        len,
                    })
                }
                Ok(n) => done += n,
                Err(Errno::EINTR | Errno::EAGAIN) => continue,
                Err(e) => return Err(os_error("read", at as u64, e)),
            }
        }
        Ok(done)
    }

    fn write(&self, offset: u64, buf: &AlignedBuf, durable: bool) -> Result<usize, IoError> {
        let len = buf.len();
        let mut done = 0;
        while done < len {
            let at = (offset + done as u64) as i64;
            match nix::sys::uio::pwrite(&self.file, &buf.as_slice()[done..], at) {
                Ok(0) => {
                    return Err(IoError::Short {
                        op: "write",
                        offset,
                        done,
                        len,
                    })
                }
                Ok(n) => done += n,
                Err(Errno::EINTR | Errno::EAGAIN) => continue,
                Err(e) => return Err(os_error("write", at as u64, e)),
            }
        }
        if durable {
            self.flush()?;
        }
        Ok(done)
    }

    fn flush(&self) -> Result<usize, IoError> {
        loop {
            match nix::unistd::fdatasync(&self.file) {
                Ok(()) => return Ok(0),
                Err(Errno::EINTR) => continue,
                Err(e) => return Err(os_error("fdatasync", 0, e)),
            }
        }
    }
}

fn os_error(op: &'static str, offset: u64, errno: Errno) -> IoError {
    IoError::Os {
        op,
        offset,
        source: std::io::Error::from_raw_os_error(errno as i32),
    }
}

impl InlineOps for SyncIo {
    fn read_at(&mut self, offset: u64, buf: &mut AlignedBuf) -> Result<usize, IoError> {
        self.read(offset, buf)
    }

    fn write_at(&mut self, offset: u64, buf: &AlignedBuf, durable: bool) -> Result<usize, IoError> {
        self.write(offset, buf, durable)
    }

    fn flush_all(&mut self) -> Result<usize, IoError> {
        self.flush()
    }
}

impl Io for SyncIo {
    fn geometry(&self) -> Geometry {
        self.geometry
    }

    fn submit(&mut self, op: IoOp) -> Result<(), IoError> {
        if self.latched {
            return Err(IoError::Latched);
        }
        if self.done.len() >= self.queue_depth {
            return Err(IoError::QueueFull);
        }
        if let IoOp::Read { offset, buf, .. } | IoOp::Write { offset, buf, .. } = &op {
            check_op(self.geometry, *offset, buf)?;
        }
        let completion = run_inline(self, op);
        self.latched |= completion.latches();
        if let Err(error) = &completion.result {
            tracing::error!(backend = "sync", tag = completion.tag, %error, "I/O failed");
        }
        self.done.push_back(completion);
        Ok(())
    }

    fn kick(&mut self) -> Result<(), IoError> {
        if self.latched {
            return Err(IoError::Latched);
        }
        Ok(())
    }

    fn reap(&mut self, out: &mut Vec<Completion>, _min_complete: usize) -> Result<usize, IoError> {
        // Every submitted op is already complete, so there is never anything to wait for.
        let count = self.done.len();
        out.extend(self.done.drain(..));
        Ok(count)
    }

    fn in_flight(&self) -> usize {
        self.done.len()
    }

    fn queue_depth(&self) -> usize {
        self.queue_depth
    }

    fn pool(&mut self) -> &mut BufPool {
        &mut self.pool
    }

    fn backend_name(&self) -> &'static str {
        "sync"
    }
}
