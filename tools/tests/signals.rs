//! SIGTERM handling in its own test process: after `ShutdownSignal::install`, a real SIGTERM
//! sent to this process does not kill it but triggers shutdown: `wait()` returns the signal, the
//! flag is set and every receiver is disconnected. `trigger()` does the same without a signal.

use signal_hook::consts::signal::SIGTERM;
use tools::signals::ShutdownSignal;

#[test]
fn sigterm_triggers_shutdown_instead_of_killing() {
    let shutdown = ShutdownSignal::install().expect("install");
    let rx = shutdown.receiver();
    assert!(!shutdown.is_triggered());
    assert!(
        rx.try_recv().is_err_and(|e| e.is_empty()),
        "closed before any signal"
    );

    signal_hook::low_level::raise(SIGTERM).expect("raise");
    assert_eq!(shutdown.wait(), SIGTERM);
    assert!(shutdown.is_triggered());
    assert!(rx.recv().is_err(), "receiver must be disconnected");
    assert!(shutdown
        .receiver()
        .try_recv()
        .is_err_and(|e| e.is_disconnected()));
    drop(shutdown);
}
