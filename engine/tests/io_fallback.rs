//! `Backend::Auto` falls back to the `sync` backend, with exactly one warning, when the kernel
//! refuses io_uring; `Backend::Uring` then fails with `UringUnavailable`. The refusal is real: a
//! seccomp filter on the test's own thread makes `io_uring_setup` fail with EPERM, as container
//! runtimes do. Warnings are counted by a minimal tracing subscriber installed for the thread.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use engine::device::{self, Backend, DeviceError, OpenOptions};
use engine::io::{run_one, IoError, IoOp};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Level, Metadata, Subscriber};

/// Counts WARN events.
struct WarnCounter(Arc<AtomicUsize>);

impl Subscriber for WarnCounter {
    fn enabled(&self, _: &Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, _: &Attributes<'_>) -> Id {
        Id::from_u64(1)
    }
    fn record(&self, _: &Id, _: &Record<'_>) {}
    fn record_follows_from(&self, _: &Id, _: &Id) {}
    fn event(&self, event: &Event<'_>) {
        if *event.metadata().level() == Level::WARN {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }
    fn enter(&self, _: &Id) {}
    fn exit(&self, _: &Id) {}
}

/// Make io_uring_setup fail with EPERM for this thread (and only this thread).
fn refuse_io_uring_on_this_thread() {
    const LD_W_ABS: u16 = (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16;
    const JEQ_K: u16 = (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16;
    const RET_K: u16 = (libc::BPF_RET | libc::BPF_K) as u16;
    let stmt = |code, k| libc::sock_filter {
        code,
        jt: 0,
        jf: 0,
        k,
    };
    let mut filter = [
        stmt(LD_W_ABS, 0), // seccomp_data.nr
        libc::sock_filter {
            code: JEQ_K,
            jt: 0,
            jf: 1,
            k: libc::SYS_io_uring_setup as u32,
        },
        stmt(RET_K, libc::SECCOMP_RET_ERRNO | libc::EPERM as u32),
        stmt(RET_K, libc::SECCOMP_RET_ALLOW),
    ];
    let prog = libc::sock_fprog {
        len: filter.len() as u16,
        filter: filter.as_mut_ptr(),
    };
    // SAFETY: prctl with valid arguments; the filter program outlives the call (the kernel copies it).
    unsafe {
        assert_eq!(libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), 0);
        assert_eq!(
            libc::prctl(libc::PR_SET_SECCOMP, libc::SECCOMP_MODE_FILTER, &prog),
            0
        );
    }
}

#[test]
fn auto_falls_back_to_sync_with_one_warning() {
    let dir = std::env::var_os("BASALT_TEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_TARGET_TMPDIR")));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("fallback-{}.img", std::process::id()));
    let warnings = Arc::new(AtomicUsize::new(0));
    let subscriber = WarnCounter(Arc::clone(&warnings));
    tracing::subscriber::with_default(subscriber, || {
        refuse_io_uring_on_this_thread();
        let opts = OpenOptions {
            backend: Backend::Uring,
            direct: false,
            create_size_bytes: Some(4 << 20),
            ..OpenOptions::default()
        };
        let err = device::open(&path, &opts)
            .err()
            .expect("io_uring must be refused");
        assert!(
            matches!(
                err,
                DeviceError::Io {
                    source: IoError::UringUnavailable(_),
                    ..
                }
            ),
            "{err:?}"
        );
        assert_eq!(warnings.load(Ordering::SeqCst), 0);

        let auto = OpenOptions {
            backend: Backend::Auto,
            ..opts
        };
        let (mut io, _) = device::open(&path, &auto).unwrap();
        assert_eq!(io.backend_name(), "sync");
        assert_eq!(
            warnings.load(Ordering::SeqCst),
            1,
            "exactly one warning on fallback"
        );
        let c = run_one(io.as_mut(), IoOp::Flush { tag: 1 }).unwrap();
        assert!(c.result.is_ok());
    });
    std::fs::remove_file(&path).unwrap();
}
