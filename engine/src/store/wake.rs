//! [`LoopWake`]: how a store loop that is not on a thread of its own hears that an event is
//! waiting. The loop's inputs are channels (requests and messages, log completions, apply and
//! snapshot events); when the loop runs as a task of the node's network runtime (see
//! [`crate::store::StoreDriver`]), every sender calls [`LoopWake::wake`] after it sends, and the
//! runtime's task waits on what the hook signals instead of on the channels.
//!
//! On its own thread the loop blocks on the channels themselves, and no hook is ever set:
//! `wake` is then one atomic load.

use std::sync::{Arc, OnceLock};

/// The hook that wakes a store loop's task; unset for a loop on its own thread.
#[derive(Default)]
pub struct LoopWake {
    hook: OnceLock<Box<dyn Fn() + Send + Sync>>,
}

impl std::fmt::Debug for LoopWake {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoopWake")
            .field("set", &self.hook.get().is_some())
            .finish()
    }
}

impl LoopWake {
    /// A wake with no hook yet.
    pub fn new() -> Arc<LoopWake> {
        Arc::new(LoopWake::default())
    }

    /// Sets the hook; `false` if one was already set (the first stays).
    pub fn set(&self, hook: Box<dyn Fn() + Send + Sync>) -> bool {
        self.hook.set(hook).is_ok()
    }

    /// Runs the hook, if set. Call it after every send to the loop.
    pub fn wake(&self) {
        if let Some(h) = self.hook.get() {
            h();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn the_first_hook_is_kept_and_runs_on_every_wake() {
        let w = LoopWake::new();
        w.wake(); // no hook: nothing happens
        let count = Arc::new(AtomicUsize::new(0));
        let c = Arc::clone(&count);
        assert!(w.set(Box::new(move || {
            c.fetch_add(1, Ordering::SeqCst);
        })));
        assert!(!w.set(Box::new(|| panic!(
            "a second hook must not replace the first"
        ))));
        w.wake();
        w.wake();
        assert_eq!(count.load(Ordering::SeqCst), 2);
    }
}
