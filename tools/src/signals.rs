//! Clean shutdown on SIGTERM and SIGINT. [`ShutdownSignal::install`] takes over both signals
//! (their default action, killing the process, no longer applies) and watches them from a
//! thread. The first one triggers shutdown: a flag is set and a channel is closed, so any number
//! of loops can notice it by polling or in a `crossbeam_channel::select!`. A second signal means
//! the operator does not want to wait: the process exits at once with `128 + signal`, skipping
//! the final checkpoint (the store recovers from its log, as after a power cut).

use std::io;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use crossbeam_channel::{Receiver, Sender};
use signal_hook::consts::signal::{SIGINT, SIGTERM};
use signal_hook::iterator::{Handle, Signals};

/// State shared between the handle and the watcher thread.
#[derive(Debug)]
struct Shared {
    triggered: AtomicBool,
    /// The signal that triggered shutdown, 0 when none (or triggered by [`ShutdownSignal::trigger`]).
    signo: AtomicI32,
    /// Dropped (set to `None`) on shutdown, which disconnects every receiver.
    closer: Mutex<Option<Sender<()>>>,
}

impl Shared {
    fn fire(&self, signo: i32) {
        self.signo.store(signo, Ordering::SeqCst);
        self.triggered.store(true, Ordering::SeqCst);
        match self.closer.lock() {
            Ok(mut closer) => drop(closer.take()),
            Err(poisoned) => drop(poisoned.into_inner().take()),
        }
    }
}

/// SIGTERM/SIGINT watcher. Dropping it stops the watcher thread and unregisters its actions, but
/// signal-hook keeps its low-level handler installed: the default "terminate" action does not
/// come back, later SIGTERM/SIGINT are ignored. Keep it alive for the life of the process.
#[derive(Debug)]
pub struct ShutdownSignal {
    shared: Arc<Shared>,
    receiver: Receiver<()>,
    handle: Handle,
    thread: Option<JoinHandle<()>>,
}

impl ShutdownSignal {
    /// Installs the handlers and starts the watcher thread.
    pub fn install() -> io::Result<ShutdownSignal> {
        let mut signals = Signals::new([SIGTERM, SIGINT])?;
        let handle = signals.handle();
        let (closer, receiver) = crossbeam_channel::bounded(0);
        let shared = Arc::new(Shared {
            triggered: AtomicBool::new(false),
            signo: AtomicI32::new(0),
            closer: Mutex::new(Some(closer)),
        });
        let watcher = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("signals".into())
            .spawn(move || {
                for signo in signals.forever() {
                    if watcher.triggered.load(Ordering::SeqCst) {
                        tracing::warn!(signal = signo, "second signal: exiting without checkpoint");
                        std::process::exit(128 + signo);
                    }
                    tracing::info!(signal = signo, "shutdown requested");
                    watcher.fire(signo);
                }
            })?;
        Ok(ShutdownSignal {
            shared,
            receiver,
            handle,
            thread: Some(thread),
        })
    }

    /// Blocks until shutdown is triggered; returns the signal number (0 if by [`Self::trigger`]).
    pub fn wait(&self) -> i32 {
        // Nothing is ever sent: recv returns only when the sender is dropped.
        let _ = self.receiver.recv();
        self.shared.signo.load(Ordering::SeqCst)
    }

    /// Whether shutdown was triggered.
    pub fn is_triggered(&self) -> bool {
        self.shared.triggered.load(Ordering::SeqCst)
    }

    /// A receiver that never yields a message and is disconnected once shutdown is triggered:
    /// `recv()` returning `Err` (or a `select!` arm firing with `Err`) means "shut down".
    pub fn receiver(&self) -> Receiver<()> {
        self.receiver.clone()
    }

    /// Triggers shutdown as a signal would (for tests and for an admin command).
    pub fn trigger(&self) {
        self.shared.fire(0);
    }
}

impl Drop for ShutdownSignal {
    fn drop(&mut self) {
        self.handle.close();
        if let Some(thread) = self.thread.take() {
            if thread.join().is_err() {
                tracing::warn!("signal thread panicked");
            }
        }
    }
}
