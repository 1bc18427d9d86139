//! Inode numbers for the paths the kernel knows about. FUSE names files by
//! number; the cluster by key. A number lives from the first lookup until
//! the kernel forgets it, and follows its file through renames. Files
//! created in this mount and not committed yet live only here (`pending`).

use std::collections::HashMap;
use std::sync::Arc;

use tokio::sync::Mutex as AsyncMutex;

use crate::file::OpenFile;

pub const ROOT: u64 = 1;

pub struct Inode {
    /// Relative to the mount's root: `a/b/c.txt`; the root is empty.
    pub path: String,
    pub dir: bool,
    lookups: u64,
    /// Shared by every handle open on the file.
    pub file: Option<Arc<AsyncMutex<OpenFile>>>,
    pub opens: u32,
    /// ETag and commit time of the content the kernel may have cached.
    pub version: Option<(String, u64)>,
    /// Removed or replaced while known: an open file is not committed.
    pub unlinked: bool,
    /// Created by this mount and not committed yet: meta has no object
    /// by this name, and only this mount sees the file until its first
    /// commit (close, fsync), which must find the name still free.
    pub pending: bool,
}

pub struct Inodes {
    next: u64,
    by_ino: HashMap<u64, Inode>,
    by_path: HashMap<String, u64>,
}

pub fn child(parent: &str, name: &str) -> String {
    if parent.is_empty() {
        name.to_string()
    } else {
        format!("{parent}/{name}")
    }
}

/// The directory holding `path`: `a/b` for `a/b/c`, empty at the top.
pub fn parent_of(path: &str) -> &str {
    path.rfind('/').map(|i| &path[..i]).unwrap_or("")
}

impl Default for Inodes {
    fn default() -> Self {
        let mut by_ino = HashMap::new();
        by_ino.insert(
            ROOT,
            Inode {
                path: String::new(),
                dir: true,
                lookups: 1,
                file: None,
                opens: 0,
                version: None,
                unlinked: false,
                pending: false,
            },
        );
        let by_path = HashMap::from([(String::new(), ROOT)]);
        Inodes {
            next: ROOT + 1,
            by_ino,
            by_path,
        }
    }
}

impl Inodes {
    pub fn get(&self, ino: u64) -> Option<&Inode> {
        self.by_ino.get(&ino)
    }

    pub fn get_mut(&mut self, ino: u64) -> Option<&mut Inode> {
        self.by_ino.get_mut(&ino)
    }

    pub fn by_path(&self, path: &str) -> Option<u64> {
        self.by_path.get(path).copied()
    }

    /// The number for `path`, counting one more kernel reference.
    pub fn remember(&mut self, path: &str, dir: bool) -> u64 {
        if let Some(&ino) = self.by_path.get(path)
            && let Some(node) = self.by_ino.get_mut(&ino)
        {
            node.lookups += 1;
            node.dir = dir;
            return ino;
        }
        let ino = self.next;
        self.next += 1;
        self.by_ino.insert(
            ino,
            Inode {
                path: path.to_string(),
                dir,
                lookups: 1,
                file: None,
                opens: 0,
                version: None,
                unlinked: false,
                pending: false,
            },
        );
        self.by_path.insert(path.to_string(), ino);
        ino
    }

    pub fn forget(&mut self, ino: u64, n: u64) {
        if ino == ROOT {
            return;
        }
        let Some(node) = self.by_ino.get_mut(&ino) else {
            return;
        };
        node.lookups = node.lookups.saturating_sub(n);
        if node.lookups == 0 && node.opens == 0 {
            self.drop_inode(ino);
        }
    }

    /// One open of `ino` ended: the last one drops the open state, and
    /// the inode too if the kernel no longer refers to it.
    pub fn closed(&mut self, ino: u64) {
        let Some(node) = self.by_ino.get_mut(&ino) else {
            return;
        };
        node.opens = node.opens.saturating_sub(1);
        if node.opens == 0 {
            node.file = None;
            // A pending file whose commit failed is gone with its last
            // open: there is nothing left to show under its name.
            node.pending = false;
            if ino != ROOT && node.lookups == 0 {
                self.drop_inode(ino);
            }
        }
    }

    fn drop_inode(&mut self, ino: u64) {
        if let Some(node) = self.by_ino.remove(&ino)
            && self.by_path.get(&node.path) == Some(&ino)
        {
            self.by_path.remove(&node.path);
        }
    }

    /// `path` is gone (unlinked, or replaced by a rename).
    pub fn removed(&mut self, path: &str) {
        if let Some(ino) = self.by_path.remove(path)
            && let Some(node) = self.by_ino.get_mut(&ino)
        {
            node.unlinked = true;
        }
    }

    /// `from` (and everything under it) is now `to`.
    pub fn renamed(&mut self, from: &str, to: &str) {
        self.removed(to);
        let under = format!("{from}/");
        let moved: Vec<(String, u64)> = self
            .by_path
            .iter()
            .filter(|(p, _)| p.as_str() == from || p.starts_with(&under))
            .map(|(p, i)| (p.clone(), *i))
            .collect();
        for (old, ino) in moved {
            self.by_path.remove(&old);
            let new = format!("{to}{}", &old[from.len()..]);
            if let Some(node) = self.by_ino.get_mut(&ino) {
                node.path = new.clone();
            }
            self.by_path.insert(new, ino);
        }
    }

    /// The number of `path` if it is a pending file.
    pub fn pending(&self, path: &str) -> Option<u64> {
        let ino = self.by_path(path)?;
        self.by_ino.get(&ino).filter(|n| n.pending).map(|_| ino)
    }

    /// Names of the pending files directly in directory `dir`.
    pub fn pending_in(&self, dir: &str) -> Vec<String> {
        self.by_path
            .iter()
            .filter(|(p, i)| {
                !p.is_empty()
                    && parent_of(p) == dir
                    && self.by_ino.get(i).is_some_and(|n| n.pending)
            })
            .map(|(p, _)| p.rsplit('/').next().unwrap_or(p).to_string())
            .collect()
    }

    /// Whether a pending file lies anywhere under directory `dir`.
    pub fn pending_under(&self, dir: &str) -> bool {
        let under = format!("{dir}/");
        self.by_path.iter().any(|(p, i)| {
            (dir.is_empty() || p.starts_with(&under))
                && self.by_ino.get(i).is_some_and(|n| n.pending)
        })
    }

    /// Open files, for a flush before unmounting.
    pub fn open_files(&self) -> Vec<(u64, Arc<AsyncMutex<OpenFile>>)> {
        self.by_ino
            .iter()
            .filter_map(|(i, n)| n.file.clone().map(|f| (*i, f)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_follow_renames_and_end_with_forget() {
        let mut t = Inodes::default();
        let d = t.remember("d", true);
        let f = t.remember("d/f", false);
        let g = t.remember("e", false);
        assert_eq!(t.remember("d", true), d);
        t.renamed("d", "e");
        assert_eq!(t.get(f).unwrap().path, "e/f");
        assert_eq!(t.by_path("e"), Some(d));
        assert!(t.get(g).unwrap().unlinked);
        t.forget(d, 2);
        assert!(t.get(d).is_none());
        assert_eq!(parent_of("a/b/c"), "a/b");
        assert_eq!(parent_of("c"), "");
        assert_eq!(child("", "x"), "x");
    }

    #[test]
    fn pending_files_are_found_by_directory_until_committed_or_closed() {
        let mut t = Inodes::default();
        let d = t.remember("d", true);
        let f = t.remember("d/f", false);
        let g = t.remember("g", false);
        for ino in [f, g] {
            let n = t.get_mut(ino).unwrap();
            n.pending = true;
            n.opens = 1;
        }
        assert_eq!(t.pending("d/f"), Some(f));
        assert_eq!(t.pending("d"), None);
        assert_eq!(t.pending_in("d"), vec!["f".to_string()]);
        assert_eq!(t.pending_in(""), vec!["g".to_string()]);
        assert!(t.pending_under("d"));
        assert!(!t.pending_under("e"));
        // A rename moves a pending file with its directory.
        t.renamed("d", "e");
        assert_eq!(t.pending("e/f"), Some(f));
        assert!(t.pending_under("e") && !t.pending_under("d"));
        // Removed: no longer found under its name.
        t.removed("g");
        assert_eq!(t.pending("g"), None);
        assert!(t.pending_in("").is_empty());
        // The last close ends it.
        t.closed(f);
        assert_eq!(t.pending("e/f"), None);
        assert!(t.get(d).is_some());
    }
}
