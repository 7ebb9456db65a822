//! A device the process may not open is `DeviceError::PermissionDenied` naming the path, never an
//! anonymous OS error or a panic. The file is mode 0600 and owned by root; when running as root the
//! test's own thread drops its effective uid to 65534 (a raw `setresuid`, which on Linux affects
//! only the calling thread) for the attempt and takes it back afterwards.

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;

use engine::device::{self, Backend, DeviceError, OpenOptions};

/// Set this thread's effective uid (the real and saved ids stay); false if the kernel refuses.
fn set_effective_uid(uid: libc::uid_t) -> bool {
    let unchanged = libc::uid_t::MAX;
    // SAFETY: a raw setresuid syscall with valid arguments; it changes this thread's ids only.
    unsafe { libc::syscall(libc::SYS_setresuid, unchanged, uid, unchanged) == 0 }
}

#[test]
fn unreadable_device_is_permission_denied() {
    let dir = std::env::var_os("BASALT_TEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_TARGET_TMPDIR")));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("private-{}.img", std::process::id()));
    std::fs::File::create(&path)
        .unwrap()
        .set_len(4 << 20)
        .unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o000)).unwrap();
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    if root && !set_effective_uid(65534) {
        println!("SKIPPED: cannot drop the effective uid here");
        std::fs::remove_file(&path).unwrap();
        return;
    }
    let opts = OpenOptions {
        backend: Backend::Sync,
        direct: false,
        ..OpenOptions::default()
    };
    let result = device::open(&path, &opts);
    if root {
        assert!(set_effective_uid(0), "could not take the uid back");
    }
    let err = result.err().expect("opening a mode-000 file must fail");
    assert!(
        matches!(err, DeviceError::PermissionDenied { .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("private-"), "{err}");
    std::fs::remove_file(&path).unwrap();
}
