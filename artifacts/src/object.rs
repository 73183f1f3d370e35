//! What the store keeps: objects named by the blake3 hash of their content, and the
//! references to them that records hold.

use std::fs::File;
use std::io::Read;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{IoContext, Result};

/// A blake3 hex digest naming an object.
pub type ObjectId = String;

/// Whether an output is one file or a directory of files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OutputKind {
    /// A single file; the object is the file's content.
    File,
    /// A directory; the object is a tree manifest listing its files' objects.
    Dir,
}

/// A stage output kept in the store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutputRef {
    /// Object id (for a directory: the tree manifest's id).
    pub id: ObjectId,
    /// File or directory.
    pub kind: OutputKind,
    /// Total size in bytes.
    pub size: u64,
}

/// Hashes a file's content with blake3 (memory-mapped-free streaming, 1 MiB buffer).
pub fn hash_file(path: &Path) -> Result<(ObjectId, u64)> {
    let mut file = File::open(path).io("read", path)?;
    let mut hasher = blake3::Hasher::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut size = 0u64;
    loop {
        let n = file.read(&mut buf).io("read", path)?;
        if n == 0 {
            break;
        }
        size += n as u64;
        hasher.update(&buf[..n]);
    }
    Ok((hasher.finalize().to_hex().to_string(), size))
}
