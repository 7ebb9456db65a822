//! Damage on the sim device is detected, never accepted: a bit flipped in a random block of a
//! random batch, or writes misdirected or silently torn. A damaged batch before the tail is
//! reported and its regions refused; a damaged last batch is discarded as a torn tail; every region
//! still served holds exactly the acknowledged data (minus only trailing batches whose damage no
//! later write exposes). Failures print `SEED=...`.

mod log_harness;

use std::sync::{Arc, Mutex};

use engine::io::sim::{FaultConfig, SimIo};
use engine::log::{LogStore, RecoveryReport};
use log_harness::*;
use raftlog::Storage;

struct Written {
    models: Vec<Model>,
    /// `(start offset, end offset, regions)` of each batch.
    spans: Vec<(u64, u64, Vec<u64>)>,
    regions: u64,
}

fn write_batches(sim: &Arc<Mutex<SimIo>>, rng: &mut Rng, count: u64) -> Written {
    let (mut store, _) = open(sim, 4096);
    let regions = 1 + rng.below(4);
    let mut model = Model::default();
    let mut w = Written {
        models: vec![model.clone()],
        spans: vec![],
        regions,
    };
    let seg = store.superblock().segment_size_bytes;
    let data_start = store.superblock().data_start_offset;
    for step in 0..count {
        let (seg_before, end_before, _) = store.head_position();
        let batch = random_batch(rng, &model, regions, step);
        let recs = batch.records().to_vec();
        store.write_sync(batch).expect("write");
        model.apply(&recs);
        let (seg_after, end_after, _) = store.head_position();
        let start = if seg_after == seg_before {
            end_before
        } else {
            data_start + seg_after as u64 * seg
        };
        let mut ids: Vec<u64> = recs.iter().map(|r| r.region_id()).collect();
        ids.dedup();
        w.spans.push((start, end_after, ids));
        w.models.push(model.clone());
    }
    w
}

/// Every served region equals the fully written model, or (up to `may_vanish` trailing batches
/// damaged without a later write to expose it) an earlier one.
fn check_served(store: &LogStore, report: &RecoveryReport, w: &Written, may_vanish: usize) {
    let full = &w.models[w.models.len() - 1];
    let allowed = &w.models[w.models.len().saturating_sub(1 + may_vanish)..];
    for r in 1..=w.regions {
        if report.all_regions_refused || report.refused_regions.contains(&r) {
            let log = store.region_log(r);
            assert!(
                log.entries(1, 2, None).is_err() && log.initial_state().is_err(),
                "refused region {r} served"
            );
            continue;
        }
        let got = read_region(store, r).unwrap_or_else(|e| panic!("region {r}: {e}"));
        let ok = allowed.iter().any(|m| got == m.region(r));
        assert!(
            ok,
            "region {r} served wrong data ({report:?}):\n{}",
            diff(&normalized(full), &read_all(store, [r]))
        );
    }
}

fn rot_run(seed: u64) {
    let mut rng = Rng(seed);
    let block_size = if rng.chance(0.5) { 512 } else { 4096 };
    let sim = sim_store(seed, block_size, block_size as u64 * 32, 24);
    let n = 3 + rng.below(30);
    let w = write_batches(&sim, &mut rng, n);
    let k = rng.below(n) as usize;
    let (start, end, ref regions) = w.spans[k];
    let offset = start + rng.below((end - start) / 512) * 512;
    let before = sim.lock().unwrap().read_durable(offset, 512);
    sim.lock().unwrap().rot(offset);
    let after = sim.lock().unwrap().read_durable(offset, 512);
    let byte = before
        .iter()
        .zip(&after)
        .position(|(a, b)| a != b)
        .expect("rot flipped a bit");
    // Offset of the flipped byte inside its store block: bytes 4..16 are the block's magic and
    // sequence number, without which a damaged last block is indistinguishable from never written.
    let in_block = (offset + byte as u64 - 1048576) % block_size as u64;
    let header_hit = (4..16).contains(&in_block);
    sim.lock().unwrap().restart();
    let (store, report) = open(&sim, 4096);
    if k + 1 == n as usize {
        assert!(
            report.corruptions.is_empty(),
            "rot in the last batch: {report:?}"
        );
        assert!(
            report.torn_tail.is_some() || header_hit,
            "rot in the last batch unreported: {report:?}"
        );
        check_served(&store, &report, &w, 1);
    } else {
        assert_eq!(
            report.corruptions.len(),
            1,
            "rot in batch {k} of {n} not reported: {report:?}"
        );
        for r in regions {
            assert!(
                report.refused_regions.contains(r),
                "region {r} of the damaged batch not refused: {report:?}"
            );
        }
        check_served(&store, &report, &w, 0);
    }
}

fn misdirect_or_tear_run(seed: u64) {
    let mut rng = Rng(seed);
    let block_size = if rng.chance(0.5) { 512 } else { 4096 };
    let sim = sim_store(seed, block_size, block_size as u64 * 32, 24);
    let faults = if rng.chance(0.5) {
        FaultConfig {
            misdirect_prob: 0.1,
            ..FaultConfig::none()
        }
    } else {
        FaultConfig {
            torn_write_prob: 0.1,
            torn_write_reports_error: false,
            ..FaultConfig::none()
        }
    };
    sim.lock().unwrap().set_faults(faults);
    let n = 3 + rng.below(30);
    let w = write_batches(&sim, &mut rng, n);
    sim.lock().unwrap().set_faults(FaultConfig::none());
    let stats = sim.lock().unwrap().stats().clone();
    // A damaged write with no later write to expose it is indistinguishable from an unwritten one.
    let may_vanish = (stats.misdirected_writes + stats.torn_writes) as usize;
    sim.lock().unwrap().restart();
    let config = engine::log::LogConfig {
        device_label: "sim".into(),
        ..Default::default()
    };
    match LogStore::open(Box::new(SharedSim::new(Arc::clone(&sim))), config) {
        Ok((store, report)) => check_served(&store, &report, &w, may_vanish),
        // Both superblock copies overwritten by misdirected writes: detected, not trusted.
        Err(engine::error::EngineError::NotFormatted { .. }) => {}
        Err(e) => panic!("open: {e}"),
    }
}

fn seeded(runs_default: u64, f: fn(u64)) {
    for seed in 0..runs(runs_default) {
        if let Err(e) = std::panic::catch_unwind(|| f(seed)) {
            eprintln!("SEED={seed}");
            std::panic::resume_unwind(e);
        }
    }
}

#[test]
fn bit_rot_anywhere_in_the_log_is_detected() {
    seeded(1000, rot_run);
}

#[test]
fn misdirected_and_silently_torn_writes_are_detected() {
    seeded(1000, misdirect_or_tear_run);
}

#[test]
fn a_failed_write_latches_the_log_until_reopened() {
    let sim = sim_store(11, 512, 512 * 32, 8);
    let (mut store, _) = open(&sim, 1 << 20);
    let mut rng = Rng(11);
    let mut model = Model::default();
    for step in 0..5 {
        let b = random_batch(&mut rng, &model, 2, step);
        model.apply(b.records());
        store.write_sync(b).unwrap();
    }
    sim.lock().unwrap().set_faults(FaultConfig {
        write_error_prob: 1.0,
        ..FaultConfig::none()
    });
    let b = random_batch(&mut rng, &model, 2, 5);
    assert!(matches!(
        store.write_sync(b),
        Err(engine::error::EngineError::Io { .. })
    ));
    let b = random_batch(&mut rng, &model, 2, 6);
    assert!(matches!(
        store.append(b),
        Err(engine::error::EngineError::Latched)
    ));
    drop(store);
    sim.lock().unwrap().set_faults(FaultConfig::none());
    sim.lock().unwrap().restart();
    let (store, report) = open(&sim, 1 << 20);
    assert!(report.corruptions.is_empty(), "{report:?}");
    assert!(read_all(&store, 1..=2) == normalized(&model));
}
