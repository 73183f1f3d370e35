use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::atomic::{atomic_write, tmp_name};
use crate::error::{Error, IoContext, Result};
use crate::lock::StoreLock;
pub use crate::object::{ObjectId, OutputKind, OutputRef, StageId, StageKey, hash_file};
use crate::records::{CacheEntry, RefRecord, RunRecord, RunStatus, StageRecord};
use crate::statcache::{Stamp, StatCache};

#[derive(Debug, Clone, Serialize, Deserialize)]
struct TreeEntry {
    id: ObjectId,
    size: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Tree {
    entries: BTreeMap<String, TreeEntry>,
}

/// What `verify` found (and, with `repair`, what it did about it).
#[derive(Debug, Default, Clone, Serialize)]
pub struct VerifyReport {
    /// Objects re-hashed.
    pub checked: usize,
    /// Objects whose content no longer matches their name.
    pub corrupt: Vec<ObjectId>,
    /// Objects referenced by a record but absent.
    pub missing: Vec<String>,
    /// Records (runs, stages, run-cache entries, refs) that cannot be read.
    pub bad_records: Vec<PathBuf>,
    /// Checkouts whose files differ from the objects they were made from.
    pub bad_checkouts: Vec<PathBuf>,
    /// What a repair did, one line per action (empty without `repair`).
    pub repaired: Vec<String>,
}

impl VerifyReport {
    /// Whether anything is damaged.
    pub fn damaged(&self) -> bool {
        !(self.corrupt.is_empty()
            && self.missing.is_empty()
            && self.bad_records.is_empty()
            && self.bad_checkouts.is_empty())
    }
}

/// Whether [`Store::gc`] removes what nothing needs, or only reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GcMode {
    /// Remove it.
    Remove,
    /// Remove nothing; count what would be removed.
    DryRun,
}

/// An upstream output a stage execution read: the stage that wrote it, the output's name and
/// its object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamRead {
    /// The upstream stage's id.
    pub stage: String,
    /// The output's name.
    pub output: String,
    /// The object it read.
    pub object: ObjectId,
}

/// Names the upstream outputs a stage execution read, from its fingerprint.
pub type ReadsOf<'a> = &'a dyn Fn(&CacheEntry) -> Vec<UpstreamRead>;

/// What [`Store::gc`] removed (or, in a dry run, would remove).
#[derive(Debug, Default, Clone, Serialize)]
pub struct GcReport {
    /// Run records removed.
    pub runs_removed: usize,
    /// Run-cache entries removed.
    pub cache_entries_removed: usize,
    /// Objects removed.
    pub objects_removed: usize,
    /// Bytes freed.
    pub bytes_freed: u64,
}

/// The artifact store rooted at a directory.
///
/// An object is used only after its content was hashed and found to match its name (once per
/// object and process, see [`Store::object_ok`]); a damaged one is moved to `quarantine/` with
/// a warning and treated as absent, so the stage that made it runs again and writes it anew.
#[derive(Debug, Clone)]
pub struct Store {
    root: PathBuf,
    verified: std::sync::Arc<std::sync::Mutex<BTreeSet<ObjectId>>>,
    stamps: std::sync::Arc<StatCache>,
}

/// Copies `src` to `dest` atomically (temp file beside `dest`, fsync, rename). The copy is a
/// new file, so its mode comes from the umask like any file the user creates (objects are
/// read-only; `fs::copy` would carry that over, and making it writable by hand would ignore
/// the umask).
fn atomic_copy(src: &Path, dest: &Path) -> Result<()> {
    let parent = dest.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(parent).io("create directory", parent)?;
    let name = dest.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    let tmp = parent.join(tmp_name(name));
    let result = (|| {
        let mut from = File::open(src).io("read", src)?;
        let mut to = File::create(&tmp).io("create", &tmp)?;
        io::copy(&mut from, &mut to).io("copy to", &tmp)?;
        to.sync_all().io("sync", &tmp)?;
        fs::rename(&tmp, dest).io("rename into place", dest)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Puts `src` (a store object) at `dest` atomically as a hard link, so a checkout or a
/// workspace copy costs no space; where the file system cannot link (another device, no
/// hard links) it falls back to [`atomic_copy`]. A link shares the object's read-only mode:
/// editing it in place would edit the object, which the next hash check would catch and
/// quarantine.
fn atomic_link_or_copy(src: &Path, dest: &Path) -> Result<()> {
    let parent = dest.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(parent).io("create directory", parent)?;
    let name = dest.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    let tmp = parent.join(tmp_name(name));
    if fs::hard_link(src, &tmp).is_ok() {
        if let Err(e) = fs::rename(&tmp, dest) {
            let _ = fs::remove_file(&tmp);
            return Err(e).io("rename into place", dest);
        }
        return Ok(());
    }
    atomic_copy(src, dest)
}

/// Whether two paths are the same file (hard links of one inode).
fn same_file(a: &Path, b: &Path) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        match (fs::metadata(a), fs::metadata(b)) {
            (Ok(x), Ok(y)) => x.ino() == y.ino() && x.dev() == y.dev(),
            _ => false,
        }
    }
    #[cfg(not(unix))]
    {
        let _ = (a, b);
        false
    }
}

/// Copies a file, or a folder with everything under it, to `dest`.
fn copy_all(src: &Path, dest: &Path) -> Result<()> {
    if src.is_dir() {
        fs::create_dir_all(dest).io("create directory", dest)?;
        for e in fs::read_dir(src).io("list", src)? {
            let e = e.io("list", src)?;
            copy_all(&e.path(), &dest.join(e.file_name()))?;
        }
        Ok(())
    } else {
        fs::copy(src, dest).io("copy", src).map(|_| ())
    }
}

/// The file that marks a checkout complete. It is the store's bookkeeping, not content: a
/// stage that copies a checkout it reads into its output copies the marker too, and the
/// output must hash (and verify) as though it were not there.
const CHECKOUT_MARKER: &str = ".complete";

/// The files under `dir`, relative to `base`, sorted; a checkout marker at the top is left out.
fn walk_files(dir: &Path, base: &Path, out: &mut Vec<(String, PathBuf)>) -> Result<()> {
    let mut entries: Vec<_> = fs::read_dir(dir)
        .io("list", dir)?
        .collect::<io::Result<Vec<_>>>()
        .io("list", dir)?;
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let p = e.path();
        let ft = e.file_type().io("stat", &p)?;
        if ft.is_dir() {
            walk_files(&p, base, out)?;
        } else if ft.is_file() && !(dir == base && e.file_name() == CHECKOUT_MARKER) {
            let rel = p
                .strip_prefix(base)
                .expect("walked path is under its base")
                .to_string_lossy()
                .replace('\\', "/");
            out.push((rel, p));
        }
    }
    Ok(())
}

impl Store {
    /// Opens (creating if needed) the store at `root`.
    pub fn open(root: impl Into<PathBuf>) -> Result<Store> {
        let root = root.into();
        for sub in [
            "objects",
            "stages",
            "cache",
            "runs",
            "refs",
            "tmp",
            "checkouts",
        ] {
            let d = root.join(sub);
            fs::create_dir_all(&d).io("create directory", &d)?;
        }
        Ok(Store {
            stamps: std::sync::Arc::new(StatCache::new(root.join("verified.json"))),
            root,
            verified: Default::default(),
        })
    }

    /// Whether the object exists and its content hashes to its name. Checked once per process
    /// and object; a damaged object is moved to `quarantine/` (with a warning) so that nothing
    /// uses it and the next write of the same content puts a good copy in its place.
    pub fn object_ok(&self, id: &str) -> bool {
        if id.len() <= 2 {
            return false;
        }
        if self.verified.lock().expect("verified set").contains(id) {
            return self.object_path(id).is_file();
        }
        let p = self.object_path(id);
        let Some(stamp) = Stamp::of(&p) else {
            return false;
        };
        if self.stamps.trusts(id, stamp) {
            self.verified
                .lock()
                .expect("verified set")
                .insert(id.to_string().into());
            return true;
        }
        match hash_file(&p) {
            Ok((h, _)) if h == id => {
                self.verified
                    .lock()
                    .expect("verified set")
                    .insert(id.to_string().into());
                self.stamps.record(id, stamp);
                true
            }
            _ => {
                self.stamps.forget(id);
                // A named checkout of the object is a hard link to the damaged content.
                let _ = fs::remove_dir_all(self.root.join("checkouts").join(id));
                match self.quarantine(&p, id) {
                    Ok(q) => tracing::warn!(
                        object = id,
                        moved_to = %q.display(),
                        "a store object's content does not match its hash; it was quarantined and will be recomputed"
                    ),
                    Err(e) => {
                        tracing::warn!(object = id, error = %e, "a store object is damaged and could not be quarantined")
                    }
                }
                false
            }
        }
    }

    /// Records that the object at `path` (just written) holds `id`'s content.
    fn mark_good(&self, id: &str, path: &Path) {
        self.verified
            .lock()
            .expect("verified set")
            .insert(id.to_string().into());
        if let Some(stamp) = Stamp::of(path) {
            self.stamps.record(id, stamp);
        }
    }

    /// Moves a damaged file of the store to `quarantine/<name>-<time>` and returns where.
    fn quarantine(&self, path: &Path, name: &str) -> Result<PathBuf> {
        let dir = self.root.join("quarantine");
        fs::create_dir_all(&dir).io("create directory", &dir)?;
        let dest = dir.join(format!(
            "{name}-{}",
            chrono::Utc::now().format("%Y%m%dT%H%M%S%9fZ")
        ));
        fs::rename(path, &dest).io("move to quarantine", path)?;
        Ok(dest)
    }

    /// The store's root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `shared/<name>/`: caches shared by stages and runs that hold only values derived from
    /// their own keys (e.g. sentence vectors by text hash). Nothing refers to them, `gc`
    /// leaves them alone, and deleting them only costs time.
    pub fn shared_dir(&self, name: &str) -> PathBuf {
        self.root.join("shared").join(name)
    }

    /// Takes the exclusive store lock. With `wait`, blocks until it is free (calling `on_wait`
    /// once with the holder's description); otherwise fails with [`Error::Locked`].
    pub fn lock(&self, wait: bool, on_wait: &dyn Fn(&str)) -> Result<StoreLock> {
        StoreLock::acquire(&self.root, wait, on_wait)
    }

    /// Path of an object's file.
    pub fn object_path(&self, id: &str) -> PathBuf {
        self.root.join("objects").join(&id[..2]).join(&id[2..])
    }

    /// Whether the object exists.
    pub fn has(&self, id: &str) -> bool {
        id.len() > 2 && self.object_path(id).is_file()
    }

    /// Stores a file's content, returning its id. The source is left in place.
    pub fn put_file(&self, src: &Path) -> Result<(ObjectId, u64)> {
        let (id, size) = hash_file(src)?;
        let dest = self.object_path(&id);
        if !self.object_ok(&id) {
            let parent = dest.parent().expect("object path has a parent");
            fs::create_dir_all(parent).io("create directory", parent)?;
            let tmp = self.root.join("tmp").join(tmp_name("object"));
            let result = (|| {
                fs::copy(src, &tmp).io("copy to", &tmp)?;
                File::open(&tmp)
                    .and_then(|f| f.sync_all())
                    .io("sync", &tmp)?;
                let mut perm = fs::metadata(&tmp).io("stat", &tmp)?.permissions();
                perm.set_readonly(true);
                fs::set_permissions(&tmp, perm).io("set permissions on", &tmp)?;
                fs::rename(&tmp, &dest).io("rename into place", &dest)
            })();
            if result.is_err() {
                let _ = fs::remove_file(&tmp);
            }
            result?;
            self.mark_good(&id, &dest);
        }
        Ok((id, size))
    }

    /// A fresh temp file path in the store's `tmp/` (same file system as `objects/`, so a
    /// finished file can be renamed into place).
    pub fn temp_path(&self, hint: &str) -> PathBuf {
        self.root.join("tmp").join(tmp_name(hint))
    }

    /// Moves a file whose content the caller has just hashed to `id` into `objects/`
    /// (read-only, synced, renamed into place), as [`Store::put_file`] would, without
    /// hashing it again. Used for objects downloaded from a remote and checked on the way.
    pub fn adopt_hashed(&self, tmp: &Path, id: &str) -> Result<()> {
        let dest = self.object_path(id);
        if self.object_ok(id) {
            let _ = fs::remove_file(tmp);
            return Ok(());
        }
        let parent = dest.parent().expect("object path has a parent");
        fs::create_dir_all(parent).io("create directory", parent)?;
        let result = (|| {
            File::open(tmp).and_then(|f| f.sync_all()).io("sync", tmp)?;
            let mut perm = fs::metadata(tmp).io("stat", tmp)?.permissions();
            perm.set_readonly(true);
            fs::set_permissions(tmp, perm).io("set permissions on", tmp)?;
            fs::rename(tmp, &dest).io("rename into place", &dest)
        })();
        if result.is_err() {
            let _ = fs::remove_file(tmp);
        }
        result?;
        self.mark_good(id, &dest);
        Ok(())
    }

    /// Every object an output consists of, with its size: the object itself and, for a
    /// directory, each file object its tree lists (the tree must be in the store).
    pub fn output_objects(&self, out: &OutputRef) -> Result<Vec<(ObjectId, u64)>> {
        match out.kind {
            OutputKind::File => Ok(vec![(out.id.clone(), out.size)]),
            OutputKind::Dir => {
                let tree = self.read_tree(&out.id)?;
                let p = self.object_path(&out.id);
                let tree_size = fs::metadata(&p).io("stat", &p)?.len();
                let mut ids = vec![(out.id.clone(), tree_size)];
                ids.extend(tree.entries.into_values().map(|e| (e.id, e.size)));
                Ok(ids)
            }
        }
    }

    /// Stores bytes as an object.
    pub fn put_bytes(&self, bytes: &[u8]) -> Result<ObjectId> {
        let id = blake3::hash(bytes).to_hex().to_string();
        let dest = self.object_path(&id);
        if !self.object_ok(&id) {
            atomic_write(&dest, bytes)?;
            let mut perm = fs::metadata(&dest).io("stat", &dest)?.permissions();
            perm.set_readonly(true);
            fs::set_permissions(&dest, perm).io("set permissions on", &dest)?;
            self.mark_good(&id, &dest);
        }
        Ok(id.into())
    }

    /// Stores a file or a directory (as a tree of file objects); the sources are left in
    /// place.
    pub fn put_output(&self, path: &Path) -> Result<OutputRef> {
        self.store_output(path, false)
    }

    /// Stores what a stage wrote in its staging directory ([`Store::staging_dir`]), as
    /// [`Store::put_output`] does, moving each file into `objects/` where it can instead of
    /// copying it: a large model then needs no second copy's room on the disk, nor its time.
    /// A file with another name elsewhere (a hard link) or a symbolic link is copied. The
    /// staging directory is to be removed afterwards.
    pub fn put_staged_output(&self, path: &Path) -> Result<OutputRef> {
        self.store_output(path, true)
    }

    fn store_output(&self, path: &Path, move_files: bool) -> Result<OutputRef> {
        let put = |p: &Path| {
            if move_files && sole_name_of_regular_file(p) {
                let (id, size) = hash_file(p)?;
                self.adopt_hashed(p, &id)?;
                Ok((id, size))
            } else {
                self.put_file(p)
            }
        };
        let meta = fs::metadata(path).io("stat", path)?;
        if meta.is_dir() {
            let mut files = Vec::new();
            walk_files(path, path, &mut files)?;
            let mut tree = Tree {
                entries: BTreeMap::new(),
            };
            let mut total = 0;
            for (rel, p) in files {
                let (id, size) = put(&p)?;
                total += size;
                tree.entries.insert(rel, TreeEntry { id, size });
            }
            let bytes = serde_json::to_vec(&tree).expect("tree serialises");
            let id = self.put_bytes(&bytes)?;
            Ok(OutputRef {
                id,
                kind: OutputKind::Dir,
                size: total,
            })
        } else {
            let (id, size) = put(path)?;
            Ok(OutputRef {
                id,
                kind: OutputKind::File,
                size,
            })
        }
    }

    /// A tree manifest read where it lies, for a check that changes nothing: an error when it
    /// is missing or its content does not hash to its name, but never moved to quarantine
    /// (as [`Store::read_tree`] does).
    fn read_tree_in_place(&self, id: &str) -> Result<Tree> {
        let p = self.object_path(id);
        let bytes = fs::read(&p).map_err(|_| self.missing(id))?;
        if blake3::hash(&bytes).to_hex().as_str() != id {
            return Err(self.missing(id));
        }
        serde_json::from_slice(&bytes).map_err(|source| Error::BadRecord { path: p, source })
    }

    fn read_tree(&self, id: &str) -> Result<Tree> {
        if !self.object_ok(id) {
            return Err(self.missing(id));
        }
        let p = self.object_path(id);
        let bytes = fs::read(&p).io("read", &p)?;
        serde_json::from_slice(&bytes).map_err(|source| Error::BadRecord { path: p, source })
    }

    /// Integrity check used for freshness and restores: the object (and, for a tree, every
    /// file it lists) exists and hashes to its name ([`Store::object_ok`]), so a damaged
    /// output makes its stage run again instead of being used.
    pub fn output_intact(&self, out: &OutputRef) -> bool {
        match out.kind {
            OutputKind::File => self.object_ok(&out.id),
            OutputKind::Dir => match self.read_tree(&out.id) {
                Ok(tree) => tree.entries.values().all(|e| self.object_ok(&e.id)),
                Err(_) => false,
            },
        }
    }

    /// The object's path after checking its content; an error naming it otherwise.
    fn good_object(&self, id: &str) -> Result<PathBuf> {
        if self.object_ok(id) {
            Ok(self.object_path(id))
        } else {
            Err(self.missing(id))
        }
    }

    /// Like [`Store::checkout`], but a file output appears under its declared file name
    /// (`checkouts/<id>/<file_name>`, a hard link to the object), so readers that look at
    /// the extension, and error messages, see `corrections_holdout.parquet` rather than a
    /// bare hash. Directories are checked out as by [`Store::checkout`].
    pub fn checkout_named(&self, out: &OutputRef, file_name: &str) -> Result<PathBuf> {
        if out.kind == OutputKind::Dir {
            return self.checkout(out);
        }
        let obj = self.checkout(out)?;
        let dir = self.root.join("checkouts").join(&out.id);
        let dest = dir.join(file_name);
        if dest.is_file() {
            // Usually the same inode as the object; if not (the object was rewritten after
            // damage, or the link was edited), make it again.
            if hash_file(&dest).is_ok_and(|(h, _)| h == out.id) {
                return Ok(dest);
            }
            fs::remove_file(&dest).io("remove", &dest)?;
        }
        fs::create_dir_all(&dir).io("create directory", &dir)?;
        let tmp = self.root.join("tmp").join(tmp_name("link"));
        if fs::hard_link(&obj, &tmp).is_err() {
            fs::copy(&obj, &tmp).io("copy to", &tmp)?;
        }
        fs::rename(&tmp, &dest).io("rename into place", &dest)?;
        Ok(dest)
    }

    /// A read-only path to the output's content: the object itself for a file, a checkout
    /// directory (materialised once) for a tree.
    pub fn checkout(&self, out: &OutputRef) -> Result<PathBuf> {
        match out.kind {
            OutputKind::File => self.good_object(&out.id),
            OutputKind::Dir => {
                let dir = self.root.join("checkouts").join(&out.id);
                let complete = dir.join(CHECKOUT_MARKER).is_file();
                if complete && self.checkout_matches(&out.id, &dir) {
                    return Ok(dir);
                }
                if complete {
                    // Complete, but not what its tree says: damaged.
                    tracing::warn!(
                        checkout = %dir.display(),
                        "a checkout differs from the objects it was made from; it is made again"
                    );
                    self.remake_checkout(&out.id, &dir)?;
                    return Ok(dir);
                }
                let tmp = self.root.join("tmp").join(tmp_name("checkout"));
                self.materialise_tree(&out.id, &tmp)?;
                atomic_write(&tmp.join(CHECKOUT_MARKER), b"")?;
                if fs::rename(&tmp, &dir).is_err() {
                    // Another process finished the same checkout first.
                    let _ = fs::remove_dir_all(&tmp);
                }
                Ok(dir)
            }
        }
    }

    /// Makes the checkout `dir` of tree `id` again beside the damaged one and swaps it in,
    /// rather than removing the old one first: a stage reading the old checkout keeps the
    /// files it has open, and the path names a complete checkout but for the instant between
    /// two renames.
    fn remake_checkout(&self, id: &str, dir: &Path) -> Result<()> {
        let tmp = self.root.join("tmp").join(tmp_name("checkout"));
        if let Err(e) = self
            .materialise_tree(id, &tmp)
            .and_then(|()| atomic_write(&tmp.join(CHECKOUT_MARKER), b""))
        {
            let _ = fs::remove_dir_all(&tmp);
            return Err(e);
        }
        let aside = self.root.join("tmp").join(tmp_name("damaged"));
        fs::rename(dir, &aside).io("move aside", dir)?;
        let swapped = fs::rename(&tmp, dir);
        let _ = fs::remove_dir_all(&aside);
        if swapped.is_err() {
            let _ = fs::remove_dir_all(&tmp);
        }
        Ok(())
    }

    fn materialise_tree(&self, id: &str, dest: &Path) -> Result<()> {
        let tree = self.read_tree(id)?;
        fs::create_dir_all(dest).io("create directory", dest)?;
        for (rel, e) in &tree.entries {
            let src = self.good_object(&e.id)?;
            atomic_link_or_copy(&src, &dest.join(rel))?;
        }
        Ok(())
    }

    /// Whether a directory holds exactly the files of a tree, each with the right content.
    /// Checked once per process and checkout (hashing a model of a few hundred MB costs well
    /// under a second).
    fn checkout_matches(&self, tree_id: &str, dir: &Path) -> bool {
        let key = format!("checkout:{tree_id}");
        if self
            .verified
            .lock()
            .expect("verified set")
            .contains(key.as_str())
        {
            return true;
        }
        let ok = self
            .read_tree(tree_id)
            .is_ok_and(|tree| checkout_holds(&tree, dir));
        if ok {
            self.verified
                .lock()
                .expect("verified set")
                .insert(key.into());
        }
        ok
    }

    /// Puts an output at a workspace path: hard links to the store's objects where the file
    /// system allows (read-only, no extra space), copies otherwise.
    pub fn materialise(&self, out: &OutputRef, dest: &Path) -> Result<()> {
        match out.kind {
            OutputKind::File => {
                let src = self.good_object(&out.id)?;
                atomic_link_or_copy(&src, dest)
            }
            OutputKind::Dir => {
                let parent = dest.parent().unwrap_or(Path::new("."));
                fs::create_dir_all(parent).io("create directory", parent)?;
                let tmp = parent.join(tmp_name("dir"));
                self.materialise_tree(&out.id, &tmp)?;
                if dest.exists() {
                    fs::remove_dir_all(dest).io("replace", dest)?;
                }
                fs::rename(&tmp, dest).io("rename into place", dest)
            }
        }
    }

    /// Whether the workspace copy at `dest` already holds exactly this output (size check
    /// then hash, so an edited copy is replaced).
    pub fn workspace_matches(&self, out: &OutputRef, dest: &Path) -> bool {
        match out.kind {
            OutputKind::File => match fs::metadata(dest) {
                Ok(m) if m.is_file() && m.len() == out.size => self.file_holds(dest, &out.id),
                _ => false,
            },
            OutputKind::Dir => {
                let Ok(tree) = self.read_tree(&out.id) else {
                    return false;
                };
                tree.entries.iter().all(|(rel, e)| {
                    let p = dest.join(rel);
                    fs::metadata(&p).is_ok_and(|m| m.is_file() && self.file_holds(&p, &e.id))
                })
            }
        }
    }

    /// Whether the file at `path` holds object `id`'s content. A hard link to the object
    /// whose stamp (size, modification time, inode) the stat cache trusts holds it without
    /// being read, so an unchanged workspace is checked without hashing its large files; an
    /// edit through the link changes the stamp, and the file is hashed.
    fn file_holds(&self, path: &Path, id: &str) -> bool {
        let object = self.object_path(id);
        if same_file(path, &object) && Stamp::of(&object).is_some_and(|s| self.stamps.trusts(id, s))
        {
            return true;
        }
        hash_file(path).map(|(h, _)| h == id).unwrap_or(false)
    }

    /// Makes a workspace copy that already holds `out` (checked by the caller) a hard link to
    /// its objects again where it is a separate copy: after the store was rebuilt, or when a
    /// copy was restored by hand. It then takes no space of its own and is checked by its
    /// inode rather than by hashing it. Where the file system cannot link, it stays a copy.
    pub fn relink(&self, out: &OutputRef, dest: &Path) -> Result<()> {
        let pairs: Vec<(PathBuf, String)> = match out.kind {
            OutputKind::File => vec![(dest.to_path_buf(), out.id.to_string())],
            OutputKind::Dir => self
                .read_tree(&out.id)?
                .entries
                .iter()
                .map(|(rel, e)| (dest.join(rel), e.id.to_string()))
                .collect(),
        };
        for (path, id) in pairs {
            let object = self.object_path(&id);
            if same_file(&path, &object) || !self.object_ok(&id) {
                continue;
            }
            let parent = path.parent().unwrap_or(Path::new("."));
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
            let tmp = parent.join(tmp_name(name));
            if fs::hard_link(&object, &tmp).is_ok()
                && let Err(e) = fs::rename(&tmp, &path)
            {
                let _ = fs::remove_file(&tmp);
                return Err(e).io("rename into place", &path);
            }
        }
        Ok(())
    }

    /// Whether everything at `path` (a file, or every file under a folder) is the content
    /// of an object this store holds, so replacing it loses nothing. A path that does not
    /// exist holds nothing to lose.
    pub fn holds_content_of(&self, path: &Path) -> Result<bool> {
        let Ok(meta) = fs::symlink_metadata(path) else {
            return Ok(true);
        };
        let files = if meta.is_dir() {
            let mut files = Vec::new();
            walk_files(path, path, &mut files)?;
            files.into_iter().map(|(_, p)| p).collect()
        } else {
            vec![path.to_path_buf()]
        };
        for f in files {
            if !self.has(&hash_file(&f)?.0) {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Moves a workspace copy that holds content of its own (someone edited or replaced
    /// it) out of the way before a stage's output takes its place: to
    /// `quarantine/workspace-<time>/<rel>`, where nothing reads or removes it. Returns
    /// where it went.
    pub fn set_aside(&self, path: &Path, rel: &str) -> Result<PathBuf> {
        // Only the path's names: a root, `.` or `..` (an output outside the project) must
        // not lead out of the quarantine folder.
        let names: PathBuf = Path::new(rel)
            .components()
            .filter_map(|c| match c {
                std::path::Component::Normal(n) => Some(n),
                _ => None,
            })
            .collect();
        let dest = self
            .root
            .join("quarantine")
            .join(format!(
                "workspace-{}",
                chrono::Utc::now().format("%Y%m%dT%H%M%S%9fZ")
            ))
            .join(names);
        let parent = dest.parent().unwrap_or(&self.root);
        fs::create_dir_all(parent).io("create directory", parent)?;
        if fs::rename(path, &dest).is_err() {
            // Another file system (the store elsewhere): copy, then remove the original.
            copy_all(path, &dest)?;
            if path.is_dir() {
                fs::remove_dir_all(path).io("remove", path)?;
            } else {
                fs::remove_file(path).io("remove", path)?;
            }
        }
        Ok(dest)
    }

    fn missing(&self, id: &str) -> Error {
        Error::MissingObject {
            id: id.to_string(),
            store: self.root.clone(),
        }
    }

    /// A fresh, empty staging directory under `tmp/`.
    pub fn staging_dir(&self, hint: &str) -> Result<PathBuf> {
        let d = self.root.join("tmp").join(tmp_name(hint));
        fs::create_dir_all(&d).io("create directory", &d)?;
        Ok(d)
    }

    // ---- JSON records -------------------------------------------------------------------

    fn read_json<T: DeserializeOwned>(&self, path: &Path) -> Result<Option<T>> {
        match fs::read(path) {
            Ok(bytes) => {
                serde_json::from_slice(&bytes)
                    .map(Some)
                    .map_err(|source| Error::BadRecord {
                        path: path.to_path_buf(),
                        source,
                    })
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).io("read", path),
        }
    }

    fn write_json<T: Serialize>(&self, path: &Path, value: &T) -> Result<()> {
        let bytes = serde_json::to_vec_pretty(value).expect("records serialise");
        atomic_write(path, &bytes)
    }

    fn json_files(&self, sub: &str) -> Result<Vec<PathBuf>> {
        let dir = self.root.join(sub);
        let mut names: Vec<PathBuf> = fs::read_dir(&dir)
            .io("list", &dir)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .collect();
        names.sort();
        Ok(names)
    }

    /// Every readable record of a folder. One that cannot be parsed is left out with a
    /// warning (one damaged record must not hide the others); `verify` lists it and
    /// `verify --repair` moves it to `quarantine/`.
    fn list_json<T: DeserializeOwned>(&self, sub: &str) -> Result<Vec<T>> {
        let mut out = Vec::new();
        for p in self.json_files(sub)? {
            match self.read_json(&p) {
                Ok(Some(v)) => out.push(v),
                Ok(None) => {}
                Err(e @ Error::BadRecord { .. }) => {
                    tracing::warn!(error = %e, "skipping an unreadable store record");
                }
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }

    /// The last successful execution of a stage.
    /// An unreadable record counts as none (with a warning): the stage runs again.
    pub fn stage_record(&self, stage: &str) -> Result<Option<StageRecord>> {
        self.read_json_or_warn(&self.root.join("stages").join(format!("{stage}.json")))
    }

    fn read_json_or_warn<T: DeserializeOwned>(&self, path: &Path) -> Result<Option<T>> {
        match self.read_json(path) {
            Err(e @ Error::BadRecord { .. }) => {
                tracing::warn!(error = %e, "ignoring an unreadable store record");
                Ok(None)
            }
            other => other,
        }
    }

    /// Records a successful execution (call only after the outputs are stored).
    pub fn write_stage_record(&self, rec: &StageRecord) -> Result<()> {
        self.write_json(
            &self.root.join("stages").join(format!("{}.json", rec.stage)),
            rec,
        )
    }

    /// Forgets a stage's record (done before re-running it).
    pub fn invalidate_stage(&self, stage: &str) -> Result<()> {
        let p = self.root.join("stages").join(format!("{stage}.json"));
        match fs::remove_file(&p) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e).io("remove", &p),
            _ => Ok(()),
        }
    }

    /// All stage records.
    pub fn stage_records(&self) -> Result<Vec<StageRecord>> {
        self.list_json("stages")
    }

    /// Looks a key up in the run-cache.
    pub fn cache_entry(&self, key: &str) -> Result<Option<CacheEntry>> {
        self.read_json_or_warn(&self.root.join("cache").join(format!("{key}.json")))
    }

    /// Adds a run-cache entry.
    pub fn write_cache_entry(&self, e: &CacheEntry) -> Result<()> {
        self.write_json(&self.root.join("cache").join(format!("{}.json", e.key)), e)
    }

    /// Every run-cache entry.
    pub fn cache_entries(&self) -> Result<Vec<CacheEntry>> {
        self.list_json("cache")
    }

    /// Writes (or rewrites) a run record.
    pub fn write_run(&self, run: &RunRecord) -> Result<()> {
        self.write_json(
            &self.root.join("runs").join(format!("{}.json", run.id)),
            run,
        )
    }

    /// All run records, oldest first. A record still `running` while nobody holds the store
    /// lock belongs to a process that died without a word (`kill -9`, power loss): it is
    /// reported as `abandoned`.
    pub fn runs(&self) -> Result<Vec<RunRecord>> {
        let mut runs: Vec<RunRecord> = self.list_json("runs")?;
        if runs.iter().any(|r| r.status == RunStatus::Running) && self.lock_is_free() {
            for r in runs.iter_mut().filter(|r| r.status == RunStatus::Running) {
                r.status = RunStatus::Abandoned;
            }
        }
        Ok(runs)
    }

    /// Whether no process holds the store lock (checked with a shared lock that is let go
    /// at once, so it never disturbs a holder).
    pub fn lock_is_free(&self) -> bool {
        match File::open(self.root.join("lock")) {
            Ok(f) => match f.try_lock_shared() {
                Ok(()) => {
                    let _ = f.unlock();
                    true
                }
                Err(_) => false,
            },
            Err(_) => true,
        }
    }

    /// Records that the run `id` was interrupted (Ctrl-C, SIGTERM): its status becomes
    /// `interrupted`, with the stages it finished. Returns the updated record.
    pub fn mark_interrupted(&self, id: &str) -> Result<RunRecord> {
        let path = self.root.join("runs").join(format!("{id}.json"));
        let mut rec: RunRecord = self
            .read_json(&path)?
            .ok_or_else(|| Error::UnknownRun(id.to_string()))?;
        rec.status = RunStatus::Interrupted;
        rec.finished_at = crate::timestamp();
        self.write_run(&rec)?;
        // The process ends without dropping its lock guard; clear the holder line it would
        // have cleared, so the next run does not report a crash.
        if let Ok(f) = fs::OpenOptions::new()
            .write(true)
            .open(self.root.join("lock"))
        {
            let _ = f.set_len(0);
        }
        Ok(rec)
    }

    /// A run by id, unique id prefix, `last`, or `last~N`.
    pub fn run(&self, id: &str) -> Result<RunRecord> {
        let runs = self.runs()?;
        let found = if id == "last" {
            runs.last().cloned()
        } else if let Some(n) = id.strip_prefix("last~") {
            n.parse::<usize>()
                .ok()
                .and_then(|n| runs.len().checked_sub(n + 1))
                .map(|i| runs[i].clone())
        } else {
            let matches: Vec<_> = runs.iter().filter(|r| r.id.starts_with(id)).collect();
            if let [first, second, ..] = matches[..] {
                return Err(Error::AmbiguousRun {
                    prefix: id.to_string(),
                    count: matches.len(),
                    first: first.id.clone(),
                    second: second.id.clone(),
                });
            }
            matches.first().map(|r| (*r).clone())
        };
        found.ok_or_else(|| Error::UnknownRun(id.to_string()))
    }

    /// Reads a named ref.
    pub fn get_ref(&self, name: &str) -> Result<Option<RefRecord>> {
        self.read_json(&self.root.join("refs").join(format!("{name}.json")))
    }

    /// Reads a named ref that must exist.
    pub fn require_ref(&self, name: &str) -> Result<RefRecord> {
        self.get_ref(name)?
            .ok_or_else(|| Error::UnknownRef(name.to_string()))
    }

    /// Points a named ref at an artifact, keeping the previous target in its history.
    pub fn set_ref(&self, mut rec: RefRecord) -> Result<()> {
        if let Some(old) = self.get_ref(&rec.name)? {
            if old.target != rec.target {
                rec.history.push(old.target);
            }
            rec.history.extend(old.history);
            rec.history.truncate(20);
        }
        self.write_json(
            &self.root.join("refs").join(format!("{}.json", rec.name)),
            &rec,
        )
    }

    /// All refs.
    pub fn refs(&self) -> Result<Vec<RefRecord>> {
        self.list_json("refs")
    }

    // ---- maintenance --------------------------------------------------------------------

    fn all_objects(&self) -> Result<Vec<ObjectId>> {
        let dir = self.root.join("objects");
        let mut ids = Vec::new();
        for shard in fs::read_dir(&dir).io("list", &dir)? {
            let shard = shard.io("list", &dir)?.path();
            if !shard.is_dir() {
                continue;
            }
            let prefix = shard.file_name().unwrap().to_string_lossy().to_string();
            for f in fs::read_dir(&shard).io("list", &shard)? {
                let f = f.io("list", &shard)?;
                ids.push(format!("{prefix}{}", f.file_name().to_string_lossy()).into());
            }
        }
        ids.sort();
        Ok(ids)
    }

    fn expand(&self, out: &OutputRef, live: &mut BTreeSet<ObjectId>) {
        live.insert(out.id.clone());
        if out.kind == OutputKind::Dir
            && let Ok(tree) = self.read_tree(&out.id)
        {
            live.extend(tree.entries.into_values().map(|e| e.id));
        }
    }

    /// Re-hashes every object, parses every record (runs, stage records, run-cache entries,
    /// refs), checks that every record points at existing objects and that every checkout
    /// still matches its objects. With `repair`, damaged objects and unreadable records go
    /// to `quarantine/`, damaged checkouts are made again from their objects and swapped in
    /// (or, when their objects are damaged too, removed), and stage records and run-cache entries that point at damaged or missing objects are
    /// dropped, so the next `run` recomputes those stages.
    pub fn verify(&self, repair: bool) -> Result<VerifyReport> {
        let mut report = VerifyReport::default();
        // Without `repair` nothing is moved, so trees are read where they lie (a damaged one
        // is already reported by the re-hash below).
        let objects_of = |out: &OutputRef| {
            let mut ids = BTreeSet::from([out.id.clone()]);
            if out.kind == OutputKind::Dir
                && let Ok(tree) = self.read_tree_in_place(&out.id)
            {
                ids.extend(tree.entries.into_values().map(|e| e.id));
            }
            ids
        };
        for id in self.all_objects()? {
            report.checked += 1;
            let p = self.object_path(&id);
            match hash_file(&p) {
                Ok((h, _)) if h == id => {}
                _ => {
                    if repair {
                        self.stamps.forget(&id);
                        let q = self.quarantine(&p, &id)?;
                        report
                            .repaired
                            .push(format!("moved damaged object {id} to {}", q.display()));
                    }
                    report.corrupt.push(id)
                }
            }
        }
        for sub in ["runs", "stages", "cache", "refs"] {
            for p in self.json_files(sub)? {
                let ok = fs::read(&p)
                    .ok()
                    .is_some_and(|b| serde_json::from_slice::<serde_json::Value>(&b).is_ok());
                let typed_ok = ok
                    && match sub {
                        "runs" => self.read_json::<RunRecord>(&p).is_ok(),
                        "stages" => self.read_json::<StageRecord>(&p).is_ok(),
                        "cache" => self.read_json::<CacheEntry>(&p).is_ok(),
                        _ => self.read_json::<RefRecord>(&p).is_ok(),
                    };
                if !typed_ok {
                    if repair {
                        let name = format!(
                            "{sub}-{}",
                            p.file_name().unwrap_or_default().to_string_lossy()
                        );
                        let q = self.quarantine(&p, &name)?;
                        report.repaired.push(format!(
                            "moved unreadable record {} to {}",
                            p.display(),
                            q.display()
                        ));
                    }
                    report.bad_records.push(p);
                }
            }
        }
        let broken = |what: String, out: &OutputRef, report: &mut VerifyReport| -> bool {
            let mut bad = false;
            for id in objects_of(out) {
                if !self.has(&id) {
                    report.missing.push(format!("{what}: object {id}"));
                    bad = true;
                }
            }
            bad
        };
        for rec in self.stage_records()? {
            let mut bad = false;
            for (name, out) in &rec.outputs {
                bad |= broken(
                    format!("stage {} output {name}", rec.stage),
                    out,
                    &mut report,
                );
            }
            if bad && repair {
                self.invalidate_stage(&rec.stage)?;
                report.repaired.push(format!(
                    "dropped the record of stage {} (it runs again next time)",
                    rec.stage
                ));
            }
        }
        for e in self.cache_entries()? {
            let missing = e
                .outputs
                .values()
                .any(|o| objects_of(o).iter().any(|id| !self.has(id)));
            if missing && repair {
                let p = self.root.join("cache").join(format!("{}.json", e.key));
                fs::remove_file(&p).io("remove", &p)?;
                report.repaired.push(format!(
                    "dropped run-cache entry {} of stage {}",
                    e.key, e.stage
                ));
            }
        }
        for r in self.refs()? {
            broken(format!("ref {}", r.name), &r.target, &mut report);
        }
        let checkouts = self.root.join("checkouts");
        for e in fs::read_dir(&checkouts).io("list", &checkouts)? {
            let dir = e.io("list", &checkouts)?.path();
            let id = dir
                .file_name()
                .map(|n| n.to_string_lossy().to_string())
                .unwrap_or_default();
            let ok = if dir.join(CHECKOUT_MARKER).is_file() {
                self.read_tree_in_place(&id)
                    .is_ok_and(|tree| checkout_holds(&tree, &dir))
            } else {
                // A named checkout of a file object: every file in it is that object.
                let mut files = Vec::new();
                walk_files(&dir, &dir, &mut files).is_ok()
                    && files
                        .iter()
                        .all(|(_, p)| hash_file(p).is_ok_and(|(h, _)| h == id))
            };
            if !ok {
                if repair {
                    // A tree's checkout is made again and swapped in, as `checkout` does, so a
                    // stage reading it meanwhile never finds the path gone; one that cannot
                    // be made again (its objects are damaged too), or a file object's named
                    // checkout, is removed and made when next needed.
                    let remade = dir.join(CHECKOUT_MARKER).is_file()
                        && self.remake_checkout(&id, &dir).is_ok();
                    if remade {
                        report
                            .repaired
                            .push(format!("made damaged checkout {} again", dir.display()));
                    } else {
                        fs::remove_dir_all(&dir).io("remove", &dir)?;
                        report
                            .repaired
                            .push(format!("removed damaged checkout {}", dir.display()));
                    }
                }
                report.bad_checkouts.push(dir);
            }
        }
        Ok(report)
    }

    /// Keeps the newest `keep_runs` run records and everything they, the current stage
    /// records and the refs reach; removes the rest, stale checkouts and what ended processes
    /// left in `tmp/` ([`Store::clear_abandoned_temp`]). With
    /// [`GcMode::DryRun`] nothing is removed and the report says what would be.
    ///
    /// A kept artifact keeps its lineage: the executions that wrote what a ref points at
    /// (now or in its history) are kept, and so, transitively, is every execution that wrote
    /// what a kept execution read (`reads` names those inputs; the store does not know the
    /// fingerprint's layout). Otherwise a promoted model that later runs did not beat would
    /// outlive the run records of its training, and `lineage` could name only a later
    /// promotion step that merely kept it.
    pub fn gc(&self, keep_runs: usize, mode: GcMode, reads: ReadsOf<'_>) -> Result<GcReport> {
        let remove = mode == GcMode::Remove;
        let mut report = GcReport::default();
        let runs = self.runs()?;
        let cut = runs.len().saturating_sub(keep_runs);
        for r in &runs[..cut] {
            let p = self.root.join("runs").join(format!("{}.json", r.id));
            if remove {
                fs::remove_file(&p).io("remove", &p)?;
            }
            report.runs_removed += 1;
        }
        let mut live_keys: BTreeSet<StageKey> = runs[cut..]
            .iter()
            .flat_map(|r| r.stages.iter().map(|s| s.key.clone()))
            .collect();
        let mut live = BTreeSet::new();
        for rec in self.stage_records()? {
            live_keys.insert(rec.key.clone());
            for out in rec.outputs.values() {
                self.expand(out, &mut live);
            }
        }
        let mut entries = self.cache_entries()?;
        entries.sort_by(|a, b| (&a.created_at, &a.run_id).cmp(&(&b.created_at, &b.run_id)));
        for r in self.refs()? {
            live_keys.insert(r.key.clone());
            for t in std::iter::once(&r.target).chain(&r.history) {
                self.expand(t, &mut live);
                // Its makers: the oldest execution that wrote it without reading it, and those
                // that passed it through from an input. A later one that wrote the same bytes
                // without reading them (a promotion that kept the model its ref already
                // pointed at) did not make it, and what it read is not the target's lineage.
                let wrote = |e: &&CacheEntry| e.outputs.values().any(|o| o.id == t.id);
                let passed_on = |e: &CacheEntry| reads(e).iter().any(|r| r.object == t.id);
                let made = entries.iter().filter(wrote).find(|e| !passed_on(e));
                let passed = entries.iter().filter(wrote).filter(|e| passed_on(e));
                live_keys.extend(made.into_iter().chain(passed).map(|e| e.key.clone()));
            }
        }
        let mut pending: Vec<&CacheEntry> = entries
            .iter()
            .filter(|e| live_keys.contains(&e.key))
            .collect();
        while let Some(e) = pending.pop() {
            for read in reads(e) {
                for u in &entries {
                    if !live_keys.contains(&u.key)
                        && u.stage.as_str() == read.stage
                        && u.outputs
                            .get(&read.output)
                            .is_some_and(|o| o.id == read.object)
                    {
                        live_keys.insert(u.key.clone());
                        pending.push(u);
                    }
                }
            }
        }
        for e in entries {
            if live_keys.contains(&e.key) {
                for out in e.outputs.values() {
                    self.expand(out, &mut live);
                }
            } else {
                let p = self.root.join("cache").join(format!("{}.json", e.key));
                if remove {
                    fs::remove_file(&p).io("remove", &p)?;
                }
                report.cache_entries_removed += 1;
            }
        }
        for id in self.all_objects()? {
            if !live.contains(&id) {
                let p = self.object_path(&id);
                report.bytes_freed += fs::metadata(&p).map(|m| m.len()).unwrap_or(0);
                report.objects_removed += 1;
                if !remove {
                    continue;
                }
                let mut perm = fs::metadata(&p).io("stat", &p)?.permissions();
                #[allow(clippy::permissions_set_readonly_false)]
                perm.set_readonly(false);
                let _ = fs::set_permissions(&p, perm);
                fs::remove_file(&p).io("remove", &p)?;
            }
        }
        if !remove {
            return Ok(report);
        }
        let dir = self.root.join("checkouts");
        for e in fs::read_dir(&dir).io("list", &dir)? {
            let p = e.io("list", &dir)?.path();
            let name = p.file_name().unwrap().to_string_lossy().to_string();
            if !live.contains(name.as_str()) {
                let _ = fs::remove_dir_all(&p).or_else(|_| fs::remove_file(&p));
            }
        }
        self.clear_abandoned_temp()?;
        Ok(report)
    }

    /// Removes what ended processes left in `tmp/`: a killed run's staged outputs, a
    /// checkout or download cut off half-way. An entry a live process may still be writing
    /// stays: a `predict` or `serve` makes checkouts there without the store lock. Returns
    /// how many entries went.
    pub fn clear_abandoned_temp(&self) -> Result<usize> {
        let dir = self.root.join("tmp");
        let mut removed = 0;
        for e in fs::read_dir(&dir).io("list", &dir)? {
            let p = e.io("list", &dir)?.path();
            let name = p.file_name().unwrap().to_string_lossy().to_string();
            if !temp_in_use(&name, &p)
                && fs::remove_dir_all(&p)
                    .or_else(|_| fs::remove_file(&p))
                    .is_ok()
            {
                removed += 1;
            }
        }
        Ok(removed)
    }
}

/// How long a temp entry whose writer cannot be looked up is left alone: far longer than a
/// checkout or a download made without the store lock takes.
const TEMP_GRACE: std::time::Duration = std::time::Duration::from_secs(3600);

/// Whether the process that made the temp entry `name` may still be writing it. Temp names
/// carry their maker's process id (`.{hint}.tmp-{pid}-{n}`, see `tmp_name`); where the
/// process table can be read (`/proc`), that process's presence says. Elsewhere, or for a
/// name without an id, an entry younger than [`TEMP_GRACE`] is taken to be in use.
fn temp_in_use(name: &str, path: &Path) -> bool {
    let pid = name
        .rsplit_once(".tmp-")
        .and_then(|(_, rest)| rest.split('-').next())
        .and_then(|p| p.parse::<u32>().ok());
    if let Some(pid) = pid
        && Path::new("/proc/self").is_dir()
    {
        return pid == std::process::id() || Path::new("/proc").join(pid.to_string()).exists();
    }
    fs::symlink_metadata(path)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.elapsed().ok())
        .is_none_or(|age| age < TEMP_GRACE)
}

/// Whether `p` is a regular file (not a symbolic link) that has no other name: moving it
/// into `objects/` and making it read-only touches nothing else.
fn sole_name_of_regular_file(p: &Path) -> bool {
    let Ok(meta) = fs::symlink_metadata(p) else {
        return false;
    };
    #[cfg(unix)]
    let sole = std::os::unix::fs::MetadataExt::nlink(&meta) == 1;
    #[cfg(not(unix))]
    let sole = false;
    meta.file_type().is_file() && sole
}

/// Whether the checkout at `dir` holds exactly the files `tree` lists, each with its content.
fn checkout_holds(tree: &Tree, dir: &Path) -> bool {
    let mut files = Vec::new();
    // A tree that lists a marker as content: the checkout's own marker stands in.
    let content = tree
        .entries
        .iter()
        .filter(|(rel, _)| *rel != CHECKOUT_MARKER);
    walk_files(dir, dir, &mut files).is_ok()
        && files.len() == content.clone().count()
        && content
            .clone()
            .all(|(rel, e)| hash_file(&dir.join(rel)).is_ok_and(|(h, _)| h == e.id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn put_file_is_content_addressed_and_idempotent() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path().join("s")).unwrap();
        let f = dir.path().join("a.txt");
        fs::write(&f, b"hello").unwrap();
        let (a, size) = store.put_file(&f).unwrap();
        let (b, _) = store.put_file(&f).unwrap();
        assert_eq!(a, b);
        assert_eq!(size, 5);
        assert_eq!(a, blake3::hash(b"hello").to_hex().to_string());
        assert!(store.has(&a));
    }

    #[test]
    fn a_staged_output_is_moved_into_the_store_unless_it_has_another_name() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path().join("s")).unwrap();
        let staging = store.staging_dir("train").unwrap();
        fs::create_dir_all(staging.join("model")).unwrap();
        fs::write(staging.join("model/weights.bin"), b"weights").unwrap();
        // A file the stage linked from elsewhere keeps that other name as it was.
        let elsewhere = dir.path().join("kept.json");
        fs::write(&elsewhere, b"{}").unwrap();
        fs::hard_link(&elsewhere, staging.join("model/kept.json")).unwrap();
        let out = store.put_staged_output(&staging.join("model")).unwrap();
        assert_eq!(out.size, 9);
        assert!(!staging.join("model/weights.bin").exists());
        assert!(staging.join("model/kept.json").exists());
        assert!(!fs::metadata(&elsewhere).unwrap().permissions().readonly());
        let co = store.checkout(&out).unwrap();
        // The tree's names are relative to the output directory.
        assert!(!co.join("model").exists());
        assert_eq!(fs::read(co.join("weights.bin")).unwrap(), b"weights");
        assert_eq!(fs::read(co.join("kept.json")).unwrap(), b"{}");
        assert!(!store.verify(false).unwrap().damaged());
        // A file stored again is not stored twice.
        fs::write(staging.join("again.bin"), b"weights").unwrap();
        let again = store.put_staged_output(&staging.join("again.bin")).unwrap();
        assert!(!staging.join("again.bin").exists());
        assert!(store.has(&again.id));
    }

    /// A store in a temp dir holding a small model directory (`a.bin`, `sub/b.json`).
    fn stored_model_dir() -> (tempfile::TempDir, Store, OutputRef) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path().join("s")).unwrap();
        let d = dir.path().join("model");
        fs::create_dir_all(d.join("sub")).unwrap();
        fs::write(d.join("a.bin"), b"weights").unwrap();
        fs::write(d.join("sub/b.json"), b"{}").unwrap();
        let out = store.put_output(&d).unwrap();
        (dir, store, out)
    }

    #[test]
    fn a_copied_checkout_stores_as_its_content_and_checks_out_intact() {
        let (dir, store, out) = stored_model_dir();
        // A stage copies the checkout it read, marker and all, into its own output.
        let co = store.checkout(&out).unwrap();
        assert!(co.join(CHECKOUT_MARKER).is_file());
        let copy = dir.path().join("copy");
        fs::create_dir_all(copy.join("sub")).unwrap();
        for rel in ["a.bin", "sub/b.json", CHECKOUT_MARKER] {
            fs::copy(co.join(rel), copy.join(rel)).unwrap();
        }
        let again = store.put_output(&copy).unwrap();
        assert_eq!(again.id, out.id);
        let co = store.checkout(&again).unwrap();
        assert!(store.checkout_matches(&again.id, &co));
        assert!(!store.verify(false).unwrap().damaged());
    }

    #[test]
    fn a_damaged_checkout_is_swapped_for_a_new_one_under_its_readers() {
        let (_dir, store, out) = stored_model_dir();
        let co = store.checkout(&out).unwrap();
        let mut reading = fs::File::open(co.join("sub/b.json")).unwrap();
        // A file that is not in the tree: another process (its own verified set) sees a
        // damaged checkout and makes it again.
        fs::write(co.join("stray.txt"), b"?").unwrap();
        let other = Store::open(&store.root).unwrap();
        let again = other.checkout(&out).unwrap();
        assert_eq!(again, co);
        assert!(!again.join("stray.txt").exists());
        assert!(other.checkout_matches(&out.id, &again));
        assert_eq!(fs::read(again.join("a.bin")).unwrap(), b"weights");
        // The reader's open file still reads.
        let mut text = String::new();
        std::io::Read::read_to_string(&mut reading, &mut text).unwrap();
        assert_eq!(text, "{}");
        // Nothing is left aside.
        assert_eq!(fs::read_dir(store.root.join("tmp")).unwrap().count(), 0);
    }

    #[test]
    fn verify_repair_makes_a_damaged_checkout_again_under_its_readers() {
        let (_dir, store, out) = stored_model_dir();
        let co = store.checkout(&out).unwrap();
        let mut reading = fs::File::open(co.join("sub/b.json")).unwrap();
        fs::write(co.join("stray.txt"), b"?").unwrap();
        let report = store.verify(true).unwrap();
        assert_eq!(report.bad_checkouts, vec![co.clone()]);
        assert!(
            report.repaired[0].contains("again"),
            "{:?}",
            report.repaired
        );
        // The path names a complete, matching checkout; the reader's open file still reads.
        assert!(store.checkout_matches(&out.id, &co));
        assert!(!co.join("stray.txt").exists());
        let mut text = String::new();
        std::io::Read::read_to_string(&mut reading, &mut text).unwrap();
        assert_eq!(text, "{}");
        assert!(!store.verify(false).unwrap().damaged());
        assert_eq!(fs::read_dir(store.root.join("tmp")).unwrap().count(), 0);
    }

    #[test]
    fn a_separate_copy_of_an_output_is_linked_to_its_objects_again() {
        let (dir, store, out) = stored_model_dir();
        let ws = dir.path().join("ws/model");
        store.materialise(&out, &ws).unwrap();
        // The copy of a store that was rebuilt: the same content in files of their own.
        let copy = dir.path().join("copy");
        copy_all(&ws, &copy).unwrap();
        fs::remove_dir_all(&ws).unwrap();
        fs::rename(&copy, &ws).unwrap();
        let weights = store.object_path(blake3::hash(b"weights").to_hex().as_ref());
        assert!(!same_file(&ws.join("a.bin"), &weights));
        assert!(store.workspace_matches(&out, &ws));
        store.relink(&out, &ws).unwrap();
        assert!(same_file(&ws.join("a.bin"), &weights));
        assert!(store.workspace_matches(&out, &ws));
        assert_eq!(fs::read(ws.join("sub/b.json")).unwrap(), b"{}");
    }

    #[test]
    fn directory_outputs_round_trip_and_verify_detects_corruption() {
        let (dir, store, out) = stored_model_dir();
        assert_eq!(out.kind, OutputKind::Dir);
        assert!(store.output_intact(&out));
        let co = store.checkout(&out).unwrap();
        assert_eq!(fs::read(co.join("sub/b.json")).unwrap(), b"{}");
        let ws = dir.path().join("ws/model");
        store.materialise(&out, &ws).unwrap();
        assert!(store.workspace_matches(&out, &ws));
        fs::write(ws.join("a.bin"), b"edited").unwrap();
        assert!(!store.workspace_matches(&out, &ws));
        // The edit went through the hard link into the store: no object holds that content
        // any more, so a stage's output would move it aside rather than drop it.
        assert!(!store.holds_content_of(&ws).unwrap());
        let aside = store.set_aside(&ws, "../ws/model").unwrap();
        assert!(!ws.exists());
        assert_eq!(fs::read(aside.join("a.bin")).unwrap(), b"edited");
        assert!(aside.starts_with(store.root.join("quarantine")));
        assert!(aside.ends_with("ws/model") && !aside.to_string_lossy().contains(".."));
        assert!(
            store.holds_content_of(&ws).unwrap(),
            "nothing there, nothing to lose"
        );

        // Corrupt one object behind the store's back.
        let victim = store.object_path(blake3::hash(b"weights").to_hex().as_ref());
        let mut perm = fs::metadata(&victim).unwrap().permissions();
        #[allow(clippy::permissions_set_readonly_false)]
        perm.set_readonly(false);
        fs::set_permissions(&victim, perm).unwrap();
        fs::write(&victim, b"weightz").unwrap();
        let report = store.verify(false).unwrap();
        assert_eq!(report.corrupt.len(), 1);
        assert!(report.damaged());
    }

    #[test]
    fn refs_keep_history() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let target = |id: &str| OutputRef {
            id: id.repeat(64 / id.len()).into(),
            kind: OutputKind::File,
            size: 1,
        };
        for id in ["a", "b"] {
            store
                .set_ref(RefRecord {
                    name: "best".into(),
                    target: target(id),
                    key: "k".into(),
                    updated_at: String::new(),
                    details: serde_json::Value::Null,
                    history: vec![],
                })
                .unwrap();
        }
        let r = store.require_ref("best").unwrap();
        assert_eq!(r.target, target("b"));
        assert_eq!(r.history, vec![target("a")]);
        assert!(matches!(
            store.require_ref("nope"),
            Err(Error::UnknownRef(_))
        ));
    }

    /// A run-cache entry of `stage` writing `bytes` as `output`, reading `reads` (its
    /// fingerprint names them as `[stage, output, object]` triples for the test's `reads`).
    fn entry(
        store: &Store,
        stage: &str,
        output: &str,
        bytes: &[u8],
        reads: &[(&str, &str, &ObjectId)],
    ) -> CacheEntry {
        let id = store.put_bytes(bytes).unwrap();
        let made = store.cache_entries().unwrap().len();
        let e = CacheEntry {
            key: format!("{stage}-{made}").into(),
            stage: stage.into(),
            kind: stage.into(),
            fingerprint: serde_json::json!(reads),
            outputs: BTreeMap::from([(
                output.to_string(),
                OutputRef {
                    id,
                    kind: OutputKind::File,
                    size: bytes.len() as u64,
                },
            )]),
            metrics: serde_json::Value::Null,
            run_id: "r".into(),
            created_at: format!("2026-12-07T10:00:{made:02}Z"),
            duration_s: 0.0,
        };
        store.write_cache_entry(&e).unwrap();
        e
    }

    #[test]
    fn gc_keeps_what_a_ref_target_was_made_from() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let reads = |e: &CacheEntry| -> Vec<UpstreamRead> {
            serde_json::from_value::<Vec<(String, String, ObjectId)>>(e.fingerprint.clone())
                .unwrap()
                .into_iter()
                .map(|(stage, output, object)| UpstreamRead {
                    stage,
                    output,
                    object,
                })
                .collect()
        };
        let id = |e: &CacheEntry, out: &str| e.outputs[out].id.clone();
        // split -> train -> promote, the promotion writing model 42 (which it read, or which
        // its ref already pointed at).
        let chain = |split_bytes: &[u8], model_bytes: &[u8]| {
            let split = entry(&store, "split", "train", split_bytes, &[]);
            let read = [("split", "train", &id(&split, "train"))];
            let train = entry(&store, "train", "model", model_bytes, &read);
            let read = [("train", "model", &id(&train, "model"))];
            let promote = entry(&store, "promote", "best", b"model 42", &read);
            (split, train, promote)
        };
        // The promoted model's chain; then a later split and model that nothing kept needs,
        // and a promotion that kept the first model while reading the later one.
        let (split, train, promote) = chain(b"split 42", b"model 42");
        let (split2, train2, promote2) = chain(b"split 43", b"model 43");
        store
            .set_ref(RefRecord {
                name: "best".into(),
                target: promote.outputs["best"].clone(),
                key: Default::default(),
                updated_at: String::new(),
                details: serde_json::Value::Null,
                history: vec![],
            })
            .unwrap();
        let report = store.gc(0, GcMode::Remove, &reads).unwrap();
        let kept: BTreeSet<StageKey> = store
            .cache_entries()
            .unwrap()
            .into_iter()
            .map(|e| e.key)
            .collect();
        for e in [&split, &train, &promote] {
            assert!(kept.contains(&e.key), "{} was removed", e.key);
            assert!(store.has(&e.outputs.values().next().unwrap().id));
        }
        // The later promote only wrote the kept model again: neither it nor what it read is
        // part of that model's making.
        for e in [&split2, &train2, &promote2] {
            assert!(!kept.contains(&e.key), "{} was kept", e.key);
        }
        assert!(!store.has(&id(&train2, "model")));
        assert!(!store.has(&id(&split2, "train")));
        assert_eq!(report.cache_entries_removed, 3);
    }

    #[test]
    fn only_what_ended_processes_left_in_tmp_is_cleared() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        // A process that has ended (and been reaped): its id names no process now.
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let ended = child.id();
        child.wait().unwrap();
        let tmp = dir.path().join("tmp");
        let abandoned = tmp.join(format!(".train.tmp-{ended}-0"));
        fs::create_dir_all(abandoned.join("model")).unwrap();
        fs::write(abandoned.join("model/weights.bin"), b"w").unwrap();
        let file = tmp.join(format!(".object.tmp-{ended}-1"));
        fs::write(&file, b"half").unwrap();
        // This process's own, and an entry without a process id that is new.
        let mine = store.staging_dir("train").unwrap();
        let unnamed = tmp.join("upload.part");
        fs::write(&unnamed, b"x").unwrap();
        let procs = Path::new("/proc/self").is_dir();
        assert_eq!(
            store.clear_abandoned_temp().unwrap(),
            if procs { 2 } else { 0 }
        );
        assert_eq!(abandoned.exists(), !procs);
        assert_eq!(file.exists(), !procs);
        assert!(mine.is_dir());
        assert!(unnamed.is_file());
    }

    #[test]
    fn second_lock_fails_without_wait() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let _held = store.lock(false, &|_| {}).unwrap();
        let err = store.lock(false, &|_| {}).unwrap_err();
        assert!(
            err.to_string()
                .contains("locked by another isco-dag process")
        );
    }
}
