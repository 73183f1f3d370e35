use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;

use crate::error::{Error, IoContext, Result};

/// An exclusive lock on a store, held for the life of this value.
///
/// The lock is an advisory `flock` on `<store>/lock`. The operating system releases it when the
/// holder exits for any reason (including `kill -9`), so a lock left by a killed process never
/// blocks anyone; the stale holder line left in the file is reported as recovered.
#[derive(Debug)]
pub struct StoreLock {
    file: File,
    /// Holder line of a previous process that died without unlocking, if any.
    pub recovered_from: Option<String>,
}

impl StoreLock {
    pub(crate) fn acquire(store_root: &Path, wait: bool, on_wait: &dyn Fn(&str)) -> Result<Self> {
        let path = store_root.join("lock");
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .io("open the lock file", &path)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let holder = read_holder(&mut file);
                if !wait {
                    return Err(Error::Locked {
                        path: store_root.to_path_buf(),
                        holder,
                    });
                }
                on_wait(&holder);
                file.lock().io("wait for the lock on", &path)?;
            }
            Err(TryLockError::Error(e)) => return Err(e).io("lock", &path),
        }
        // We hold the lock. A non-empty holder line means its writer died while holding it.
        let previous = read_holder(&mut file);
        let recovered_from = (!previous.is_empty()).then_some(previous);
        file.set_len(0).io("truncate", &path)?;
        file.seek(SeekFrom::Start(0)).io("seek", &path)?;
        let me = format!("pid {} since {}", std::process::id(), crate::timestamp());
        file.write_all(me.as_bytes()).io("write", &path)?;
        file.sync_data().io("sync", &path)?;
        Ok(StoreLock {
            file,
            recovered_from,
        })
    }
}

fn read_holder(file: &mut File) -> String {
    let mut s = String::new();
    let _ = file.seek(SeekFrom::Start(0));
    let _ = file.read_to_string(&mut s);
    s.trim().to_string()
}

impl Drop for StoreLock {
    fn drop(&mut self) {
        // Clear the holder line first so the next holder does not report a crash.
        let _ = self.file.set_len(0);
        let _ = self.file.sync_data();
        let _ = self.file.unlock();
    }
}
