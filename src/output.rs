//! Output files written whole or not at all (native): the bytes go to a temporary name
//! beside the target and are renamed over it once complete and flushed, so a failure,
//! a full disk or Ctrl-C never leaves a half image and never replaces a good one with
//! one. The temporary name carries the process id, so two processes writing the same
//! target do not write into each other's files.

use std::io::Write;
use std::path::{Path, PathBuf};

/// The temporary name `path` is written under first.
pub fn part_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".part-{}", std::process::id()));
    path.with_file_name(name)
}

/// Writes `bytes` to `path` atomically (see the module).
pub fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let part = part_path(path);
    let result = (|| {
        let mut f = std::fs::File::create(&part)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&part, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&part);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_whole_files_and_leaves_nothing_on_failure() {
        let dir = std::env::temp_dir().join(format!("roentgen-output-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let target = dir.join("image.png");
        write_atomically(&target, b"first").unwrap();
        write_atomically(&target, b"second, longer").unwrap();
        assert_eq!(std::fs::read(&target).unwrap(), b"second, longer");
        assert!(!part_path(&target).exists(), "the temporary file stayed");
        // a target whose folder does not exist: an error, no file anywhere
        let missing = dir.join("no-such-folder").join("image.png");
        assert!(write_atomically(&missing, b"x").is_err());
        assert!(!missing.exists() && !part_path(&missing).exists());
        // a target that is a folder: the rename fails, the folder and no part remain
        let folder = dir.join("a-folder");
        std::fs::create_dir_all(folder.join("inside")).unwrap();
        assert!(write_atomically(&folder, b"x").is_err());
        assert!(folder.is_dir() && !part_path(&folder).exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
