//! For tests of `basalt start` processes: loop devices over sparse files (root only; detached
//! on drop), and the contents of a stopped store's state store read straight from its device.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use bytes::Bytes;
use engine::device::{open_store, OpenOptions};
use engine::format::open_superblock;
use engine::state::{StateConfig, StateStore};
use nix::unistd::Uid;

/// Loop devices attached over sparse files, each formatted as store `i` (1-based) of one
/// cluster. Dropping detaches them (stop the nodes first).
pub struct LoopDevices {
    pub devices: Vec<String>,
}

impl Drop for LoopDevices {
    fn drop(&mut self) {
        for dev in &self.devices {
            detach(dev);
        }
    }
}

/// `losetup -d`, retried briefly while the device is still busy.
fn detach(dev: &str) {
    for _ in 0..20 {
        let ok = Command::new("losetup").arg("-d").arg(dev).status();
        if ok.is_ok_and(|s| s.success()) {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    eprintln!("could not detach {dev}");
}

impl LoopDevices {
    /// Attaches `n` loop devices over `bytes`-sized sparse files in `dir` and formats them with
    /// `basalt` as stores 1..=n of one new cluster. `None` (nothing attached) when not root,
    /// loop devices are missing, `losetup` fails, or `BASALT_TEST_FILE_DEVICES` is set.
    pub fn attach(basalt: &str, dir: &Path, n: usize, bytes: u64) -> Option<LoopDevices> {
        let forced_files = std::env::var_os("BASALT_TEST_FILE_DEVICES").is_some();
        if forced_files || !Uid::effective().is_root() || !Path::new("/dev/loop-control").exists() {
            return None;
        }
        let mut loops = LoopDevices {
            devices: Vec::new(),
        };
        for i in 1..=n {
            let img = dir.join(format!("loop{i}.img"));
            let f = std::fs::File::create(&img).expect("create image");
            f.set_len(bytes).expect("size image");
            let out = Command::new("losetup")
                .args(["-f", "--show"])
                .arg(&img)
                .output();
            match out {
                Ok(o) if o.status.success() => {
                    let dev = String::from_utf8_lossy(&o.stdout).trim().to_string();
                    loops.devices.push(dev);
                }
                other => {
                    println!("losetup failed ({other:?}); falling back to files");
                    return None;
                }
            }
        }
        loops.format(basalt);
        Some(loops)
    }

    fn format(&self, basalt: &str) {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let cluster_id = format!("{:x}", nanos | 1);
        for (i, dev) in self.devices.iter().enumerate() {
            let out = Command::new(basalt)
                .args(["format", dev, "--store-id", &(i + 1).to_string()])
                .args(["--cluster-id", &cluster_id])
                .output()
                .expect("spawn basalt format");
            assert!(
                out.status.success(),
                "basalt format {dev}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }

    pub fn paths(&self) -> Vec<PathBuf> {
        self.devices.iter().map(PathBuf::from).collect()
    }
}

/// What a stopped store holds: region id -> (applied index, every key and value).
pub type StoreContents = BTreeMap<u64, (u64, BTreeMap<Bytes, Bytes>)>;

/// Reads every region's keys from the state store on `device` (its node must be stopped; a
/// clean stop leaves a checkpoint holding everything applied).
pub fn read_store(device: &Path) -> StoreContents {
    let label = device.display().to_string();
    let mut handles = open_store(device, &OpenOptions::default()).expect("open store");
    let (_, sb) = open_superblock(handles.log.as_mut(), &label).expect("superblock");
    let store = StateStore::open(
        handles.state_write,
        handles.state_read,
        &sb,
        StateConfig::new(label),
    )
    .expect("open state store");
    let mut out = BTreeMap::new();
    for region in store.region_ids() {
        let applied = store.region_state(region).expect("region").applied_index;
        let pairs = store
            .scan(region, b"", None, usize::MAX)
            .expect("scan region");
        out.insert(region, (applied, pairs.into_iter().collect()));
    }
    out
}
