//! What the store keeps: objects named by the blake3 hash of their content, and the
//! references to them that records hold.

use std::fs::File;
use std::io::Read;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{IoContext, Result};

/// Defines a newtype over a `String` id: compared, hashed, ordered, shown and serialised as
/// the string, borrowed as `&str` (maps keyed by it are looked up with a `&str`).
macro_rules! string_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            /// The id as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl std::ops::Deref for $name {
            type Target = str;
            fn deref(&self) -> &str {
                &self.0
            }
        }

        impl std::borrow::Borrow<str> for $name {
            fn borrow(&self) -> &str {
                &self.0
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl AsRef<std::path::Path> for $name {
            fn as_ref(&self) -> &std::path::Path {
                std::path::Path::new(&self.0)
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.pad(&self.0)
            }
        }

        impl From<String> for $name {
            fn from(s: String) -> Self {
                $name(s)
            }
        }

        impl From<&str> for $name {
            fn from(s: &str) -> Self {
                $name(s.to_string())
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0
            }
        }

        impl PartialEq<str> for $name {
            fn eq(&self, other: &str) -> bool {
                self.0 == other
            }
        }

        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                self.0 == *other
            }
        }

        impl PartialEq<String> for $name {
            fn eq(&self, other: &String) -> bool {
                &self.0 == other
            }
        }
    };
}

string_id!(
    /// A blake3 hex digest naming an object in the store.
    ObjectId
);
string_id!(
    /// A stage's key: the blake3 hash of its fingerprint (kind, version, params, input hashes).
    StageKey
);
string_id!(
    /// A stage's id in a pipeline (`train`, `evaluate-finetune`).
    StageId
);

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
    Ok((ObjectId(hasher.finalize().to_hex().to_string()), size))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_line_up_in_columns() {
        let id = StageId::from("clean".to_string());
        assert_eq!(format!("[{id:<8}]"), "[clean   ]");
        assert_eq!(format!("[{id:>8}]"), "[   clean]");
    }
}
