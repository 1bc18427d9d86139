//! Small files written whole or not at all: certificates and keys, and the
//! small files servers keep beside them (a meta replica's id, its snapshot
//! records, the cluster file).

use std::io::Write;
use std::path::Path;

/// Replaces `path` with `contents` atomically and durably: written to
/// `<path>.tmp`, synced, renamed over `path`, then the directory synced. A
/// crash, a full disk or a failing one leaves the old file or the new one,
/// never a part of it. `private`: readable by its owner only (mode 0600,
/// for keys). Errors: the file system's (`path` is then unchanged and the
/// temporary file removed when possible).
pub fn write_atomically(path: &Path, contents: &[u8], private: bool) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut tmp_name = path.file_name().unwrap_or_default().to_os_string();
    tmp_name.push(".tmp");
    let tmp = path.with_file_name(tmp_name);
    let mode = if private { 0o600 } else { 0o644 };
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)
        .and_then(|mut f| {
            f.write_all(contents)?;
            f.sync_all()
        })
        .and_then(|()| std::fs::rename(&tmp, path));
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    // The rename is durable once the directory is.
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    std::fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn replaces_the_whole_file_and_leaves_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("replica_id");
        write_atomically(&path, b"first, and longer\n", false).unwrap();
        write_atomically(&path, b"second\n", true).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"second\n");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("replica_id")]);
    }

    #[test]
    fn a_failed_write_leaves_the_old_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        write_atomically(&path, b"old", false).unwrap();
        // A directory where the temporary file would go: the write fails
        // before the rename.
        std::fs::create_dir(dir.path().join("f.tmp")).unwrap();
        assert!(write_atomically(&path, b"new", false).is_err());
        assert_eq!(std::fs::read(&path).unwrap(), b"old");
    }
}
