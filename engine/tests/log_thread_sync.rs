//! `LogWriterThread::append_sync` from several threads at once, on the sim device, with the power
//! cut at a random moment: every append that returned `Ok` must be in the log after recovery,
//! entry for entry; the appends that were cut off return an error instead of hanging. Four
//! appender threads make the writer thread gather their appends (see `log::thread`), so this
//! also runs that path against a device that loses what was not yet durable.
//!
//! `BASALT_SIM_RUNS` sets the number of seeds (default 40), `BASALT_SIM_SEED` runs one.

mod log_harness;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use engine::io::sim::SimIo;
use engine::log::{LogBatch, LogConfig, LogStore, LogWriterThread};
use log_harness::*;
use raftlog::Entry;

const THREADS: u64 = 4;
const PER_THREAD: u64 = 150;

fn entry(region: u64, index: u64) -> Entry {
    let len = 40 + (region * 31 + index * 7) as usize % 300;
    Entry::new(
        1,
        index,
        (0..len)
            .map(|k| (k as u64 ^ index ^ (region << 4)) as u8)
            .collect::<Vec<u8>>(),
    )
}

fn one_run(seed: u64) {
    let sim: Arc<Mutex<SimIo>> = sim_store(seed, 512, 256 * 1024, 16);
    let cut = Arc::new(AtomicBool::new(false));
    // Write, then flush: a write that completed but was not flushed is what a power cut loses.
    let config = LogConfig {
        device_label: "sim".into(),
        cache_bytes_max: 1 << 20,
        batch_bytes_max: 64 * 1024,
        durable_writes: false,
    };
    // Nothing the writer thread does after the cut may reach the disk the recovery reads.
    let io = SharedSim::new(Arc::clone(&sim)).cut_by(Arc::clone(&cut));
    let (store, _) = LogStore::open(Box::new(io), config).expect("open");
    let writer = LogWriterThread::spawn(store).expect("spawn");
    let mut rng = Rng(seed ^ 0x7c3);
    let cut_after = 20 + rng.below(THREADS * PER_THREAD - 40);
    let acked_total = AtomicU64::new(0);
    // Per region: the last index whose append_sync returned Ok.
    let acked: Vec<AtomicU64> = (0..=THREADS).map(|_| AtomicU64::new(0)).collect();
    let failed = AtomicU64::new(0);
    std::thread::scope(|s| {
        for region in 1..=THREADS {
            let (writer, acked, acked_total, failed) = (&writer, &acked, &acked_total, &failed);
            s.spawn(move || {
                for index in 1..=PER_THREAD {
                    let mut b = LogBatch::new();
                    b.add_entries(region, vec![entry(region, index)]);
                    match writer.append_sync(b) {
                        Ok(()) => {
                            acked[region as usize].store(index, Ordering::SeqCst);
                            acked_total.fetch_add(1, Ordering::SeqCst);
                        }
                        Err(_) => {
                            failed.fetch_add(1, Ordering::SeqCst);
                            return;
                        }
                    }
                }
            });
        }
        // The cut: under the device's lock, so no operation lands between the two steps.
        while acked_total.load(Ordering::SeqCst) < cut_after {
            std::thread::yield_now();
        }
        let mut device = sim.lock().unwrap();
        cut.store(true, Ordering::SeqCst);
        device.power_loss();
    });
    assert!(
        failed.load(Ordering::SeqCst) > 0
            || acked_total.load(Ordering::SeqCst) == THREADS * PER_THREAD,
        "appends after the cut must fail, not hang or succeed"
    );
    drop(writer.stop());

    let (store, report) = open(&sim, 1 << 20);
    assert!(report.corruptions.is_empty(), "seed {seed}: {report:?}");
    for region in 1..=THREADS {
        let acked = acked[region as usize].load(Ordering::SeqCst);
        let got = read_region(&store, region).expect("read");
        assert!(
            got.entries.len() as u64 >= acked,
            "seed {seed}: region {region} acknowledged up to {acked} but holds {} entries",
            got.entries.len()
        );
        for (k, e) in got.entries.iter().enumerate() {
            assert_eq!(
                *e,
                entry(region, k as u64 + 1),
                "seed {seed}: region {region}"
            );
        }
    }
}

#[test]
fn append_sync_from_many_threads_survives_a_power_cut() {
    let only: Option<u64> = std::env::var("BASALT_SIM_SEED")
        .ok()
        .and_then(|v| v.parse().ok());
    for seed in only.map_or(0..runs(40), |s| s..s + 1) {
        let result = std::panic::catch_unwind(|| one_run(seed));
        if let Err(e) = result {
            eprintln!("SEED={seed}");
            std::panic::resume_unwind(e);
        }
    }
}
