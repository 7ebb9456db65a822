//! The record of where a run happened: kernel (uname), CPU count, time, so that figures from
//! different machines or kernels are never compared by mistake.

use serde::Serialize;

/// The kernel and machine of a run.
#[derive(Debug, Clone, Serialize)]
pub struct HostRecord {
    /// `uname -s`.
    pub sysname: String,
    /// `uname -r`.
    pub release: String,
    /// `uname -v`.
    pub version: String,
    /// `uname -m`.
    pub machine: String,
    /// CPUs available to the process.
    pub cpu_count: usize,
    /// Start of the run, seconds since the Unix epoch.
    pub timestamp_s: u64,
}

impl HostRecord {
    /// Reads uname and the CPU count (fields stay empty where the kernel refuses).
    pub fn collect() -> HostRecord {
        let (sysname, release, version, machine) = match nix::sys::utsname::uname() {
            Ok(u) => (
                u.sysname().to_string_lossy().into_owned(),
                u.release().to_string_lossy().into_owned(),
                u.version().to_string_lossy().into_owned(),
                u.machine().to_string_lossy().into_owned(),
            ),
            Err(_) => Default::default(),
        };
        let cpu_count = std::thread::available_parallelism().map_or(0, |n| n.get());
        let timestamp_s = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        HostRecord {
            sysname,
            release,
            version,
            machine,
            cpu_count,
            timestamp_s,
        }
    }
}
