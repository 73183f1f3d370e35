//! Which objects were hashed and found intact, with the file metadata they had then, so a
//! later process can trust an object whose metadata has not changed instead of hashing it
//! again (as git's index and cargo's fingerprints trust file metadata).
//!
//! The stamp is the size, the modification time and the inode: writing to the object (through
//! any of its hard links), truncating it or replacing it changes at least one of them. (Not
//! the change time: making a hard link changes it, and every checkout makes one.) Someone who
//! can write to the store can also edit this file, so it guards against accidents, not
//! attacks; `verify` hashes everything. A miss only costs a hash.
//! Kept in `<store>/verified.json`, written when the store handle is dropped; `verify` never
//! reads it.

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Stamp {
    len: u64,
    mtime_ns: i128,
    ino: u64,
}

impl Stamp {
    pub(crate) fn of(path: &Path) -> Option<Stamp> {
        let m = fs::metadata(path).ok()?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::MetadataExt;
            Some(Stamp {
                len: m.len(),
                mtime_ns: i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec()),
                ino: m.ino(),
            })
        }
        #[cfg(not(unix))]
        {
            let mtime = m
                .modified()
                .ok()?
                .duration_since(std::time::UNIX_EPOCH)
                .ok()?
                .as_nanos() as i128;
            Some(Stamp {
                len: m.len(),
                mtime_ns: mtime,
                ino: 0,
            })
        }
    }
}

#[derive(Debug, Default)]
struct State {
    loaded: bool,
    dirty: bool,
    entries: HashMap<String, Stamp>,
}

/// The stamps of objects found intact.
#[derive(Debug)]
pub(crate) struct StatCache {
    path: PathBuf,
    state: Mutex<State>,
}

impl StatCache {
    pub(crate) fn new(path: PathBuf) -> StatCache {
        StatCache {
            path,
            state: Mutex::default(),
        }
    }

    fn with<T>(&self, f: impl FnOnce(&mut State) -> T) -> T {
        let mut s = self.state.lock().expect("stat cache");
        if !s.loaded {
            s.loaded = true;
            if let Ok(bytes) = fs::read(&self.path) {
                s.entries = serde_json::from_slice(&bytes).unwrap_or_default();
            }
        }
        f(&mut s)
    }

    /// Whether `id` was found intact with exactly this stamp.
    pub(crate) fn trusts(&self, id: &str, stamp: Stamp) -> bool {
        self.with(|s| s.entries.get(id) == Some(&stamp))
    }

    /// Records that `id` hashed right with this stamp.
    pub(crate) fn record(&self, id: &str, stamp: Stamp) {
        self.with(|s| {
            if s.entries.insert(id.to_string(), stamp) != Some(stamp) {
                s.dirty = true;
            }
        });
    }

    /// Forgets `id` (it was damaged, moved or removed).
    pub(crate) fn forget(&self, id: &str) {
        self.with(|s| {
            if s.entries.remove(id).is_some() {
                s.dirty = true;
            }
        });
    }
}

impl Drop for StatCache {
    fn drop(&mut self) {
        let s = self.state.get_mut().expect("stat cache");
        // Losing this file (or a write racing another process's) only costs hashing.
        if s.dirty
            && let Ok(bytes) = serde_json::to_vec(&s.entries)
        {
            let _ = crate::atomic::atomic_write(&self.path, &bytes);
        }
    }
}
