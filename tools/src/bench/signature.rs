//! The refusal check: the benchmark writes over whatever the device holds, so a device or file
//! that carries a filesystem, volume or partition-table signature, or a Basalt store, is refused
//! unless `--force`. The signatures are the engine's own (`engine::format::foreign_signature`,
//! the superblock magic at `engine::layout::SUPERBLOCK_OFFSETS`), the ones `basalt format`
//! refuses. Reads only the first blocks, with plain buffered reads, before the device is opened.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

use engine::format::{foreign_signature, SIGNATURE_SCAN_BYTES};
use engine::layout::superblock::Superblock;
use engine::layout::SUPERBLOCK_OFFSETS;

use super::plan::Plan;
use super::BenchError;

/// Refuses `plan`'s device if it existed and holds a known signature, unless `--force`.
pub fn check_writable(plan: &Plan) -> Result<(), BenchError> {
    let read_only = !plan.rw.is_write() && plan.target() == super::args::Target::Device;
    if plan.args.force || !plan.existed || read_only {
        return Ok(());
    }
    match detect(plan.path())? {
        Some(what) => Err(BenchError::Refused {
            path: plan.path().to_path_buf(),
            what,
        }),
        None => Ok(()),
    }
}

/// What the device or file at `path` holds, if it carries a known signature.
pub fn detect(path: &Path) -> Result<Option<String>, BenchError> {
    let os = |source| BenchError::Os {
        what: "cannot read",
        path: path.to_path_buf(),
        source,
    };
    let file = File::open(path).map_err(os)?;
    for offset in SUPERBLOCK_OFFSETS {
        if Superblock::has_magic(&read_head(&file, offset, 8).map_err(os)?) {
            return Ok(Some("a Basalt store".to_string()));
        }
    }
    let head = read_head(&file, 0, SIGNATURE_SCAN_BYTES as usize).map_err(os)?;
    Ok(foreign_signature(&head)
        .map(|(what, offset)| format!("a foreign signature ({what} at byte {offset})")))
}

/// Up to `len` bytes at `offset` (fewer at the end of the file).
fn read_head(file: &File, offset: u64, len: usize) -> std::io::Result<Vec<u8>> {
    let mut head = vec![0u8; len];
    let mut filled = 0;
    while filled < len {
        match file.read_at(&mut head[filled..], offset + filled as u64) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    head.truncate(filled);
    Ok(head)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image_with(offset: usize, magic: &[u8]) -> tempfile::NamedTempFile {
        let mut image = vec![0u8; 1 << 20];
        image[offset..offset + magic.len()].copy_from_slice(magic);
        let file = tempfile::NamedTempFile::new().expect("temp file");
        std::fs::write(file.path(), &image).expect("write image");
        file
    }

    #[test]
    fn zeros_hold_nothing() {
        let file = image_with(0, &[]);
        assert_eq!(detect(file.path()).expect("detect"), None);
    }

    #[test]
    fn ext4_and_basalt_signatures_are_found() {
        let ext4 = image_with(1080, &[0x53, 0xEF]);
        let found = detect(ext4.path()).expect("detect").expect("ext4 found");
        assert!(found.contains("ext2/3/4"), "{found}");
        for offset in SUPERBLOCK_OFFSETS {
            let store = image_with(offset as usize, b"BASALTSB");
            let found = detect(store.path()).expect("detect");
            assert_eq!(found.as_deref(), Some("a Basalt store"));
        }
    }
}
