//! Sentence vectors cached by a hash of their text: in memory with a model
//! ([`EmbeddingCache`]) and on disk, shared by every stage using the same encoder
//! ([`DiskCache`]).
//!
//! A model keeps its cache in segments: the segments of the cache it started from, byte for
//! byte, and one more with the vectors it embedded itself. A model trained or fine-tuned
//! from another so shares those files with it, and a content-addressed store keeps them
//! once; past [`MODEL_SEGMENTS`] they are written again as one.

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
    /// The segment files the vectors were loaded from, in order.
    segments: Vec<Segment>,
    /// Keys in no segment: the vectors a [`save`](Self::save) writes as a new one.
    fresh: Vec<[u8; 16]>,
}

/// One segment file of a saved cache and the keys it holds.
#[derive(Debug, Clone)]
struct Segment {
    path: std::path::PathBuf,
    keys: Vec<[u8; 16]>,
}

/// Most segments a model's saved cache has; one more and they are written as one file.
pub const MODEL_SEGMENTS: usize = 8;

/// The file of segment `i` of the cache saved as `base` (`cache-<fp>.bin`, then
/// `cache-<fp>.1.bin`, …).
fn segment_name(base: &str, i: usize) -> String {
    if i == 0 {
        return base.to_string();
    }
    match base.strip_suffix(".bin") {
        Some(stem) => format!("{stem}.{i}.bin"),
        None => format!("{base}.{i}"),
    }
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
                        self.fresh.push(k);
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
            if self.map.insert(k, row.to_vec()).is_none() {
                self.fresh.push(k);
                if self.disk.is_some() {
                    self.added.push(k);
                }
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

    /// Writes the cache into `dir` as segments named after `base` (each `[dim as u64]` and
    /// then `[16-byte key][dim f32]` records in key order): the segments it was loaded from,
    /// as they were, and the vectors in none of them as one more. Past [`MODEL_SEGMENTS`], or
    /// when a segment's file is gone, every vector is written into `base` alone.
    pub fn save(&self, dir: &Path, base: &str) -> Result<(), Error> {
        let fresh = usize::from(!self.fresh.is_empty());
        // A file already at `to` may be a hard link to another model's segment: it is
        // replaced, never written through.
        let keep = |from: &Path, to: &Path| {
            from == to || {
                let _ = std::fs::remove_file(to);
                std::fs::hard_link(from, to).is_ok() || std::fs::copy(from, to).is_ok()
            }
        };
        let kept = self.segments.len() <= MODEL_SEGMENTS - fresh
            && self
                .segments
                .iter()
                .enumerate()
                .all(|(i, seg)| keep(&seg.path, &dir.join(segment_name(base, i))));
        let written = if kept {
            if fresh == 1 {
                let to = dir.join(segment_name(base, self.segments.len()));
                self.write_segment(&to, self.fresh.iter().collect())?;
            }
            self.segments.len() + fresh
        } else {
            self.write_segment(&dir.join(base), self.map.keys().collect())?;
            1
        };
        // No segment of a cache saved here before may follow these.
        for i in written..=MODEL_SEGMENTS.max(self.segments.len()) {
            let _ = std::fs::remove_file(dir.join(segment_name(base, i)));
        }
        Ok(())
    }

    /// Writes the vectors of `keys` as one segment file.
    fn write_segment(&self, path: &Path, mut keys: Vec<&[u8; 16]>) -> Result<(), Error> {
        if path.symlink_metadata().is_ok() {
            std::fs::remove_file(path).map_err(|e| io(path, e))?;
        }
        keys.sort();
        keys.dedup();
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

    /// Reads a cache written by [`save`](Self::save) into `dir` as `base`; `None` if absent
    /// or of another width.
    pub fn load(dir: &Path, base: &str, dim: usize) -> Option<EmbeddingCache> {
        let mut cache = EmbeddingCache::new(dim);
        for i in 0.. {
            let path = dir.join(segment_name(base, i));
            let Ok(bytes) = std::fs::read(&path) else {
                break;
            };
            let d = u64::from_le_bytes(bytes.get(..8)?.try_into().ok()?) as usize;
            if d != dim {
                return None;
            }
            let mut keys = Vec::new();
            for r in bytes[8..].chunks_exact(16 + 4 * dim) {
                let k: [u8; 16] = r[..16].try_into().ok()?;
                let v = r[16..]
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes")))
                    .collect();
                cache.map.entry(k).or_insert(v);
                keys.push(k);
            }
            cache.segments.push(Segment { path, keys });
        }
        (!cache.segments.is_empty()).then_some(cache)
    }

    /// Merges another cache into this one: its segments follow this one's, its vectors in
    /// none of them are fresh here too.
    pub fn extend(&mut self, other: EmbeddingCache) {
        if other.dim == self.dim {
            for k in other.fresh {
                if !self.map.contains_key(&k) {
                    self.fresh.push(k);
                }
            }
            if !self.fresh.is_empty() {
                let held: std::collections::HashSet<&[u8; 16]> =
                    other.segments.iter().flat_map(|s| &s.keys).collect();
                self.fresh.retain(|k| !held.contains(k));
            }
            self.segments.extend(other.segments);
            for (k, v) in other.map {
                self.map.entry(k).or_insert(v);
            }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A cache of width 2 holding `texts`, each vector its position.
    fn with(cache: &mut EmbeddingCache, texts: &[&str]) {
        let texts: Vec<String> = texts.iter().map(|t| t.to_string()).collect();
        let v: Vec<f32> = (0..texts.len() * 2).map(|i| i as f32).collect();
        cache.insert(&texts, &v);
    }

    #[test]
    fn a_saved_cache_keeps_the_segments_it_started_from_as_they_were() {
        let d = tempfile::tempdir().unwrap();
        let dir = |name: &str| {
            let p = d.path().join(name);
            std::fs::create_dir_all(&p).unwrap();
            p
        };
        let base = "cache-x.bin";
        let mut first = EmbeddingCache::new(2);
        with(&mut first, &["nurse", "driver"]);
        first.save(&dir("a"), base).unwrap();
        assert!(!d.path().join("a/cache-x.1.bin").exists());

        // Nothing new: the same one file.
        let mut same = EmbeddingCache::new(2);
        same.extend(EmbeddingCache::load(&d.path().join("a"), base, 2).unwrap());
        same.save(&dir("b"), base).unwrap();
        let read = |p: &str| std::fs::read(d.path().join(p)).unwrap();
        assert_eq!(read("a/cache-x.bin"), read("b/cache-x.bin"));
        assert!(!d.path().join("b/cache-x.1.bin").exists());

        // New vectors go into a segment of their own; the first is kept byte for byte.
        with(&mut same, &["nurse", "baker"]);
        same.save(&dir("c"), base).unwrap();
        assert_eq!(read("a/cache-x.bin"), read("c/cache-x.bin"));
        let back = EmbeddingCache::load(&d.path().join("c"), base, 2).unwrap();
        assert_eq!(back.len(), 3);
        assert_eq!(
            read("c/cache-x.1.bin").len(),
            8 + (16 + 8),
            "only `baker` is new"
        );
        assert_eq!(back.map[&key("nurse")], vec![0.0, 1.0]);

        // Past the limit the segments are written as one file again.
        let mut grown = back;
        let mut last = d.path().join("c");
        for i in 2..=MODEL_SEGMENTS {
            with(&mut grown, &[&format!("job {i}")]);
            last = dir(&format!("g{i}"));
            grown.save(&last, base).unwrap();
            grown = EmbeddingCache::load(&last, base, 2).unwrap();
            if i < MODEL_SEGMENTS {
                assert_eq!(grown.segments.len(), i + 1);
            }
        }
        assert_eq!(grown.len(), 2 + MODEL_SEGMENTS);
        assert_eq!(grown.segments.len(), 1, "merged");
        assert!(!last.join("cache-x.1.bin").exists());

        // Saved over a cache of more segments, none of those is left to be read back.
        let mut two = EmbeddingCache::load(&d.path().join("c"), base, 2).unwrap();
        let over = dir(&format!("g{}", MODEL_SEGMENTS - 1));
        two.save(&over, base).unwrap();
        assert!(over.join("cache-x.1.bin").exists());
        assert!(!over.join("cache-x.2.bin").exists());
        two = EmbeddingCache::load(&over, base, 2).unwrap();
        assert_eq!(two.len(), 3);
        // A file in the way is replaced, not written through: the source keeps its bytes.
        let before = read("c/cache-x.bin");
        std::fs::hard_link(d.path().join("c/cache-x.bin"), dir("h").join("cache-x.bin")).unwrap();
        let mut one = EmbeddingCache::new(2);
        with(&mut one, &["cook"]);
        one.save(&d.path().join("h"), base).unwrap();
        assert_eq!(read("c/cache-x.bin"), before);
    }
}
