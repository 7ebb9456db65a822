//! Damage on the sim device is detected, never accepted: a bit flipped in a random block of a
//! random batch, or writes misdirected or silently torn. A damaged batch before the tail is
//! reported and its regions refused; a damaged last batch is discarded as a torn tail; every region
//! still served holds exactly the acknowledged data (minus only trailing batches whose damage no
//! later write exposes). Failures print `SEED=...`; `BASALT_SIM_RUNS=N` runs more,
//! `BASALT_SIM_SEED=S` replays one.

mod log_harness;

use std::sync::{Arc, Mutex};

use engine::io::sim::{FaultConfig, SimIo, SimStats};
use engine::log::{LogStore, RecoveryReport};
use log_harness::*;
use raftlog::Storage;

struct Written {
    models: Vec<Model>,
    /// `(start offset, end offset, regions)` of each batch.
    spans: Vec<(u64, u64, Vec<u64>)>,
    /// Sequence number of each batch.
    sequences: Vec<u64>,
    regions: u64,
    block_size: u64,
    nonce: u64,
}

fn write_batches(sim: &Arc<Mutex<SimIo>>, rng: &mut Rng, count: u64) -> Written {
    let (mut store, _) = open(sim, 4096);
    let regions = 1 + rng.below(4);
    let mut model = Model::default();
    let mut w = Written {
        models: vec![model.clone()],
        spans: vec![],
        sequences: vec![],
        regions,
        block_size: u64::from(store.superblock().block_size),
        nonce: store.superblock().format_nonce,
    };
    let seg = store.superblock().segment_size_bytes;
    let data_start = store.superblock().data_start_offset;
    for step in 0..count {
        let (seg_before, end_before, sequence) = store.head_position();
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
        w.sequences.push(sequence);
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

/// Whether batch `k` still lies on the device as written: every block of its span verifies at its
/// own offset and belongs to it.
fn batch_intact(sim: &Arc<Mutex<SimIo>>, w: &Written, k: usize) -> bool {
    let (start, end, _) = w.spans[k];
    let count = (end - start) / w.block_size;
    (0..count).all(|i| {
        let at = start + i * w.block_size;
        let raw = sim.lock().unwrap().read_visible(at, w.block_size as usize);
        engine::layout::block::verify(&raw, at, w.nonce).is_ok_and(|h| {
            h.sequence == w.sequences[k]
                && u64::from(h.block_index) == i
                && u64::from(h.block_count) == count
        })
    })
}

/// How many of the last batches are damaged on the device (the trailing run no later intact
/// write exposes). A misdirected write damages two places: its own batch (never lands there)
/// and whatever it lands on, which may be the acknowledged batch before it, so one fault can
/// hide more than one trailing batch.
fn trailing_damaged(sim: &Arc<Mutex<SimIo>>, w: &Written) -> usize {
    (0..w.spans.len())
        .rev()
        .take_while(|&k| !batch_intact(sim, w, k))
        .count()
}

/// Every damaged batch is explained by an injected fault (so the allowance of
/// [`trailing_damaged`] never covers a batch the engine itself wrote wrong): a torn write damages
/// its own batch only; a misdirected write of `b` blocks damages its own batch and at most the
/// `b + 1` store blocks it straddles where it lands.
fn check_damage_explained(sim: &Arc<Mutex<SimIo>>, w: &Written, faults: &SimStats) {
    let damaged = (0..w.spans.len())
        .filter(|&k| !batch_intact(sim, w, k))
        .count() as u64;
    let blocks_max = w
        .spans
        .iter()
        .map(|(start, end, _)| (end - start) / w.block_size)
        .max()
        .unwrap_or(0);
    let explained = faults.torn_writes + faults.misdirected_writes * (blocks_max + 2);
    assert!(
        damaged <= explained,
        "{damaged} batches damaged on the device, faults explain {explained}: {faults:?}"
    );
}

fn misdirect_or_tear_run(seed: u64) {
    misdirect_or_tear_checked(seed);
}

/// One seeded run; returns the faults injected and how many trailing batches they damaged.
fn misdirect_or_tear_checked(seed: u64) -> (SimStats, usize) {
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
    // Damaged batches with no later intact write to expose them are indistinguishable from
    // unwritten ones (docs/FORMAT.md, "Recovery", limits): exactly those may vanish.
    check_damage_explained(&sim, &w, &stats);
    let may_vanish = trailing_damaged(&sim, &w);
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
    (stats, may_vanish)
}

fn seeded(runs_default: u64, f: fn(u64)) {
    for seed in seeds(runs_default) {
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

/// Seed 14440 (4096-byte blocks, 16 batches of one block each, test batches 0..=15): batch 13's
/// write is misdirected far away, batch 14 lands, then batch 15's write is misdirected 1.5 KiB
/// before batch 14's block, overwriting its first three sectors. Batches 13..=15 are all gone
/// from their places with nothing after them, so recovery ends the log before batch 13: three
/// batches lost to two faults, which a model allowing one lost batch per fault called a bug.
#[test]
fn a_misdirected_write_can_hide_the_batch_it_lands_on() {
    let (faults, trailing) = misdirect_or_tear_checked(14440);
    assert_eq!(faults.misdirected_writes, 2, "{faults:?}");
    assert_eq!(trailing, 3, "seed 14440 no longer reproduces the case");
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
