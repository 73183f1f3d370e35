//! Sentence vectors cached by a hash of their text: in memory with a model
//! ([`EmbeddingCache`]) and on disk, shared by every stage using the same encoder
//! ([`DiskCache`]).

use std::collections::HashMap;
use std::path::Path;

use crate::encoder::Encoder;
use crate::error::Error;

/// Cached sentence vectors keyed by a hash of the text (and the encoder).
#[derive(Debug, Clone, Default)]
pub struct EmbeddingCache {
    /// Width of the vectors.
    pub dim: usize,
    pub(crate) map: HashMap<[u8; 16], Vec<f32>>,
    /// A shared on-disk cache consulted before embedding (see [`DiskCache`]).
    disk: Option<std::sync::Arc<DiskCache>>,
    /// Keys embedded here since the last [`flush`](Self::flush), for the disk cache.
    added: Vec<[u8; 16]>,
}

pub(crate) fn key(text: &str) -> [u8; 16] {
    let h = blake3::hash(text.as_bytes());
    h.as_bytes()[..16].try_into().expect("16 bytes")
}

impl EmbeddingCache {
    /// An empty cache.
    pub fn new(dim: usize) -> Self {
        EmbeddingCache {
            dim,
            ..Default::default()
        }
    }

    /// Consults (and, on [`flush`](Self::flush), feeds) a shared on-disk cache.
    pub fn attach(&mut self, disk: std::sync::Arc<DiskCache>) {
        if disk.dim == self.dim {
            self.disk = Some(disk);
        }
    }

    /// Writes the vectors embedded since the last flush to the attached disk cache, so other
    /// stages (and later runs) with the same encoder find them. Returns how many.
    pub fn flush(&mut self) -> Result<usize, Error> {
        let Some(disk) = &self.disk else {
            return Ok(0);
        };
        let added = std::mem::take(&mut self.added);
        let rows: Vec<(&[u8; 16], &[f32])> = added
            .iter()
            .filter_map(|k| self.map.get(k).map(|v| (k, v.as_slice())))
            .collect();
        disk.write(&rows)?;
        Ok(rows.len())
    }

    /// Number of cached vectors.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether it is empty.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Vectors `[texts, dim]` for texts, embedding (once per distinct text) only those not
    /// cached. Returns the vectors and how many texts were embedded.
    pub fn embed(
        &mut self,
        enc: &Encoder,
        texts: &[String],
        progress: &dyn Fn(usize, usize),
    ) -> Result<(Vec<f32>, usize), Error> {
        let missing = self.missing(texts);
        let n = missing.len();
        if n > 0 {
            let refs: Vec<&str> = missing.iter().map(String::as_str).collect();
            let v = enc.embed(&refs, 32, true, &|done| progress(done, n))?;
            self.insert(&missing, &v);
        }
        Ok((self.gather(texts), n))
    }

    /// The distinct texts with no vector here or in the attached disk cache (vectors found
    /// on disk are taken into memory).
    pub fn missing(&mut self, texts: &[String]) -> Vec<String> {
        let mut missing = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for t in texts {
            let k = key(t);
            if !self.map.contains_key(&k) && seen.insert(k) {
                match self.disk.as_ref().and_then(|d| d.get(&k)) {
                    Some(v) => {
                        self.map.insert(k, v);
                    }
                    None => missing.push(t.clone()),
                }
            }
        }
        missing
    }

    /// Adds the vectors `[texts, dim]` of texts (embedded by this cache's encoder).
    pub fn insert(&mut self, texts: &[String], vectors: &[f32]) {
        for (t, row) in texts.iter().zip(vectors.chunks(self.dim)) {
            let k = key(t);
            if self.map.insert(k, row.to_vec()).is_none() && self.disk.is_some() {
                self.added.push(k);
            }
        }
    }

    /// The vectors of texts that are all cached.
    fn gather(&self, texts: &[String]) -> Vec<f32> {
        let mut out = Vec::with_capacity(texts.len() * self.dim);
        for t in texts {
            out.extend_from_slice(&self.map[&key(t)]);
        }
        out
    }

    /// Writes the cache (`[16-byte key][dim f32]` records).
    pub fn save(&self, path: &Path) -> Result<(), Error> {
        let mut keys: Vec<&[u8; 16]> = self.map.keys().collect();
        keys.sort();
        let mut bytes = Vec::with_capacity(8 + keys.len() * (16 + 4 * self.dim));
        bytes.extend_from_slice(&(self.dim as u64).to_le_bytes());
        for k in keys {
            bytes.extend_from_slice(k);
            for x in &self.map[k] {
                bytes.extend_from_slice(&x.to_le_bytes());
            }
        }
        std::fs::write(path, bytes).map_err(|e| io(path, e))
    }

    /// Reads a cache written by [`save`](Self::save); `None` if absent or of another width.
    pub fn load(path: &Path, dim: usize) -> Option<EmbeddingCache> {
        let bytes = std::fs::read(path).ok()?;
        let d = u64::from_le_bytes(bytes.get(..8)?.try_into().ok()?) as usize;
        if d != dim {
            return None;
        }
        let rec = 16 + 4 * dim;
        let mut map = HashMap::new();
        for r in bytes[8..].chunks_exact(rec) {
            let k: [u8; 16] = r[..16].try_into().ok()?;
            let v = r[16..]
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes")))
                .collect();
            map.insert(k, v);
        }
        Some(EmbeddingCache {
            dim,
            map,
            ..Default::default()
        })
    }

    /// Merges another cache into this one.
    pub fn extend(&mut self, other: EmbeddingCache) {
        if other.dim == self.dim {
            self.map.extend(other.map);
        }
    }
}

/// Sentence vectors shared on disk by every stage that uses the same encoder (one directory
/// per encoder fingerprint, e.g. `<store>/shared/embeddings/<fingerprint>/`): `evaluate`,
/// `promote` and `predict` of an ensemble embed a test or input row once, not once per stage
/// and model. Entries are keyed by a hash of the text, so results are the same with or without
/// the cache, and no stage key depends on it; deleting the directory only costs time.
///
/// The directory holds immutable segments (`<hash>.seg`: dim, count, the keys, then the
/// vectors), written atomically; opening reads only the keys, and vectors are read on demand.
/// Past [`MAX_SEGMENTS`] the segments are merged into one (open readers keep their file
/// handles, so a merge under them is safe).
#[derive(Debug)]
pub struct DiskCache {
    dir: std::path::PathBuf,
    dim: usize,
    files: Vec<std::fs::File>,
    /// key -> (segment, byte offset of its vector).
    index: HashMap<[u8; 16], (usize, u64)>,
}

/// Segments kept before they are merged.
pub const MAX_SEGMENTS: usize = 16;

impl DiskCache {
    /// Opens (creating) a cache directory for vectors of width `dim`. Unreadable or foreign
    /// segments are skipped.
    pub fn open(dir: &Path, dim: usize) -> Result<DiskCache, Error> {
        std::fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
        let mut cache = DiskCache {
            dir: dir.to_path_buf(),
            dim,
            files: Vec::new(),
            index: HashMap::new(),
        };
        let mut paths: Vec<_> = std::fs::read_dir(dir)
            .map_err(|e| io(dir, e))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "seg"))
            .collect();
        paths.sort();
        for p in &paths {
            cache.add_segment(p);
        }
        if paths.len() > MAX_SEGMENTS {
            cache.compact(&paths)?;
        }
        Ok(cache)
    }

    /// Number of vectors on disk.
    pub fn len(&self) -> usize {
        self.index.len()
    }

    /// Whether it is empty.
    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    fn add_segment(&mut self, path: &Path) -> Option<()> {
        use std::io::Read;
        let mut f = std::fs::File::open(path).ok()?;
        let mut head = [0u8; 16];
        f.read_exact(&mut head).ok()?;
        let dim = u64::from_le_bytes(head[..8].try_into().ok()?) as usize;
        let n = u64::from_le_bytes(head[8..].try_into().ok()?) as usize;
        if dim != self.dim {
            return None;
        }
        let mut keys = vec![0u8; n * 16];
        f.read_exact(&mut keys).ok()?;
        let seg = self.files.len();
        let base = 16 + 16 * n as u64;
        for (i, k) in keys.chunks_exact(16).enumerate() {
            let k: [u8; 16] = k.try_into().ok()?;
            self.index.insert(k, (seg, base + (i * dim * 4) as u64));
        }
        self.files.push(f);
        Some(())
    }

    /// The vector of a key, if on disk.
    pub fn get(&self, k: &[u8; 16]) -> Option<Vec<f32>> {
        use std::os::unix::fs::FileExt;
        let &(seg, off) = self.index.get(k)?;
        let mut buf = vec![0u8; self.dim * 4];
        self.files[seg].read_exact_at(&mut buf, off).ok()?;
        Some(
            buf.chunks_exact(4)
                .map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes")))
                .collect(),
        )
    }

    /// Writes one segment with these vectors (atomically: a temporary file, then a rename)
    /// and returns its path (`None` when there is nothing to write).
    pub fn write(&self, rows: &[(&[u8; 16], &[f32])]) -> Result<Option<std::path::PathBuf>, Error> {
        if rows.is_empty() {
            return Ok(None);
        }
        let mut bytes = Vec::with_capacity(16 + rows.len() * (16 + 4 * self.dim));
        bytes.extend_from_slice(&(self.dim as u64).to_le_bytes());
        bytes.extend_from_slice(&(rows.len() as u64).to_le_bytes());
        for (k, _) in rows {
            bytes.extend_from_slice(&k[..]);
        }
        for (_, v) in rows {
            for x in *v {
                bytes.extend_from_slice(&x.to_le_bytes());
            }
        }
        let name = blake3::hash(&bytes).to_hex();
        let path = self.dir.join(format!("{}.seg", &name[..32]));
        let tmp = self
            .dir
            .join(format!(".{}.{}.tmp", &name[..32], std::process::id()));
        std::fs::write(&tmp, &bytes).map_err(|e| io(&tmp, e))?;
        std::fs::rename(&tmp, &path).map_err(|e| io(&path, e))?;
        Ok(Some(path))
    }

    /// Merges every segment into one and removes the old ones.
    fn compact(&self, paths: &[std::path::PathBuf]) -> Result<(), Error> {
        let mut keys: Vec<&[u8; 16]> = self.index.keys().collect();
        keys.sort();
        let vectors: Vec<Vec<f32>> = keys.iter().filter_map(|k| self.get(k)).collect();
        if vectors.len() != keys.len() {
            return Ok(()); // a segment could not be read back; leave things as they are
        }
        let rows: Vec<(&[u8; 16], &[f32])> = keys
            .into_iter()
            .zip(&vectors)
            .map(|(k, v)| (k, v.as_slice()))
            .collect();
        let merged = self.write(&rows)?;
        for p in paths.iter().filter(|p| Some(*p) != merged.as_ref()) {
            let _ = std::fs::remove_file(p);
        }
        Ok(())
    }
}

pub(crate) fn io(path: &Path, e: std::io::Error) -> Error {
    Error::File {
        path: path.to_path_buf(),
        message: e.to_string(),
    }
}
