//! Compiled plugins on disk, so that a restart or a reload does not compile the same component
//! again. Interpreted guests are the reason: a Python or JavaScript component holds its whole
//! language runtime and takes seconds to compile, and milliseconds to load once compiled.
//!
//! A cache file is named by the SHA-256 of the component's bytes and a hash of everything in the
//! engine that makes compiled code incompatible (wasmtime's version, its settings, the CPU
//! features), so a changed plugin or a new Fulcrum never loads stale code. Files are written
//! aside and renamed into place, so concurrent Fulcrums sharing a cache never see half a file. A
//! file that fails to load is deleted and the component compiled again.
//!
//! The folder is kept under a size bound (`plugin_cache_max_mib`), as nginx keeps a proxy cache
//! under `max_size`: each load refreshes a file's modification time, and after a file is stored
//! the least recently used ones, but those this process uses, are removed until the rest fit. Every change to a plugin leaves a
//! new file (35 MB for a Python plugin), so without a bound the folder would only grow.
//!
//! Loading compiled code trusts the file (wasmtime checks its header, not its code): the folder
//! must be writable only by the user Fulcrum runs as.

use std::collections::HashSet;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use sha2::{Digest, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;

/// How a component came to be ready.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Loaded {
    /// Compiled now (and stored, when there is a cache), in this long.
    Compiled(Duration),
    /// Loaded from the cache in this long.
    Cached(Duration),
    /// An embedded plugin's code, compiled by the build, loaded in this long.
    Precompiled(Duration),
}

impl Loaded {
    pub fn time(self) -> Duration {
        match self {
            Loaded::Compiled(t) | Loaded::Cached(t) | Loaded::Precompiled(t) => t,
        }
    }
}

#[derive(Debug, Clone)]
pub struct ArtifactCache {
    dir: PathBuf,
    max_bytes: u64,
    /// Files this process loaded or stored: never removed to keep the bound.
    used: Arc<Mutex<HashSet<PathBuf>>>,
}

/// A partial file older than this was left by a writer that died; it is removed.
const PARTIAL_FILE_AGE: Duration = Duration::from_secs(3600);

impl ArtifactCache {
    /// Use `dir` (created if needed), keeping it under `max_bytes` of compiled plugins.
    pub fn open(dir: &Path, max_bytes: u64) -> std::io::Result<ArtifactCache> {
        std::fs::create_dir_all(dir)?;
        Ok(ArtifactCache { dir: dir.to_path_buf(), max_bytes, used: Arc::default() })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The file holding `bytes` compiled by `engine`.
    fn path_for(&self, engine: &Engine, bytes: &[u8]) -> PathBuf {
        let digest = Sha256::digest(bytes);
        let mut engine_hash = std::hash::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut engine_hash);
        let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
        self.dir.join(format!("{hex}-{:016x}.cwasm", engine_hash.finish()))
    }

    /// The compiled component: from the cache when it is there, else compiled now and stored.
    /// Failing to store is not an error (the component is still good); it is logged.
    pub fn load(&self, engine: &Engine, bytes: &[u8]) -> wasmtime::Result<(Component, Loaded)> {
        let path = self.path_for(engine, bytes);
        if path.is_file() {
            let started = Instant::now();
            // SAFETY: the file was written by `Component::serialize` of this engine configuration
            // (its name carries the compatibility hash, and wasmtime checks the header again);
            // the cache folder is Fulcrum's own (see the module docs).
            match unsafe { Component::deserialize_file(engine, &path) } {
                Ok(component) => {
                    let loaded = Loaded::Cached(started.elapsed());
                    // Recently used: the size bound removes files in order of this time.
                    let touched = std::fs::File::options()
                        .write(true)
                        .open(&path)
                        .and_then(|f| f.set_modified(SystemTime::now()));
                    if let Err(e) = touched {
                        tracing::debug!("plugin cache: cannot mark {} as used: {e}", path.display());
                    }
                    self.in_use().insert(path);
                    return Ok((component, loaded));
                }
                Err(e) => {
                    tracing::warn!("plugin cache: {} is unusable ({e}); compiling again", path.display());
                    let _ = std::fs::remove_file(&path);
                }
            }
        }
        let (component, loaded) = compile(engine, bytes)?;
        if let Err(e) =
            component.serialize().map_err(std::io::Error::other).and_then(|code| write_atomically(&path, &code))
        {
            tracing::warn!("plugin cache: cannot store {}: {e}", path.display());
        }
        self.in_use().insert(path);
        self.keep_under_bound();
        Ok((component, loaded))
    }

    fn in_use(&self) -> std::sync::MutexGuard<'_, HashSet<PathBuf>> {
        self.used.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Remove the least recently used compiled plugins until the folder's compiled plugins fit in
    /// `max_bytes`, never one this process uses (those alone may be larger); also partial files
    /// that dead writers left. Only files named as this cache names them are touched. Files of
    /// another Fulcrum sharing the folder may go: that one compiles them again when it next needs
    /// them.
    fn keep_under_bound(&self) {
        let keep = self.in_use().clone();
        let Ok(entries) = std::fs::read_dir(&self.dir) else { return };
        let mut files = Vec::new();
        let mut total: u64 = 0;
        for entry in entries.flatten() {
            let (path, Ok(meta)) = (entry.path(), entry.metadata()) else { continue };
            let name = entry.file_name();
            let Some(name) = name.to_str().filter(|_| meta.is_file()) else { continue };
            let modified = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
            if is_partial_name(name) {
                if modified.elapsed().is_ok_and(|age| age > PARTIAL_FILE_AGE) {
                    let _ = std::fs::remove_file(&path);
                }
            } else if is_artifact_name(name) {
                total += meta.len();
                files.push((modified, meta.len(), path));
            }
        }
        if total <= self.max_bytes {
            return;
        }
        files.sort();
        for (_, len, path) in files {
            if total <= self.max_bytes {
                break;
            }
            if !keep.contains(&path) && std::fs::remove_file(&path).is_ok() {
                total -= len;
                tracing::info!(
                    "plugin cache: removed {} (least recently used; the cache is kept under {} MiB)",
                    path.display(),
                    self.max_bytes >> 20
                );
            }
        }
    }
}

/// `<64 hex digits>-<16 hex digits>.cwasm`, as [`ArtifactCache::path_for`] names files.
fn is_artifact_name(name: &str) -> bool {
    let Some(stem) = name.strip_suffix(".cwasm") else { return false };
    let Some((digest, engine)) = stem.split_once('-') else { return false };
    let hex = |s: &str, len: usize| s.len() == len && s.bytes().all(|b| b.is_ascii_hexdigit());
    hex(digest, 64) && hex(engine, 16)
}

/// `<64 hex>-<16 hex>.tmp.<pid>.<n>`, as `write_atomically` names the file it writes aside.
fn is_partial_name(name: &str) -> bool {
    name.split_once(".tmp.").is_some_and(|(stem, _)| is_artifact_name(&format!("{stem}.cwasm")))
}

/// Compile without a cache.
pub fn compile(engine: &Engine, bytes: &[u8]) -> wasmtime::Result<(Component, Loaded)> {
    let started = Instant::now();
    let component = Component::new(engine, bytes)?;
    Ok((component, Loaded::Compiled(started.elapsed())))
}

fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let tmp = path.with_extension(format!("tmp.{}.{}", std::process::id(), COUNTER.fetch_add(1, Ordering::Relaxed)));
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path).inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A file name as the cache names compiled plugins, distinct per `tag`.
    fn artifact(tag: char) -> String {
        format!("{}-00000000000000ff.cwasm", tag.to_string().repeat(64))
    }

    fn put(dir: &Path, name: &str, len: usize, age: Duration) {
        let path = dir.join(name);
        std::fs::write(&path, vec![0u8; len]).unwrap();
        let file = std::fs::File::options().write(true).open(&path).unwrap();
        file.set_modified(SystemTime::now() - age).unwrap();
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> =
            std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
        names.sort();
        names
    }

    #[test]
    fn the_least_recently_used_go_until_the_rest_fit() {
        let dir = tempfile::tempdir().unwrap();
        let day = Duration::from_secs(86_400);
        let cache = ArtifactCache::open(dir.path(), 3000).unwrap();
        let (a, b, c, stored) = (artifact('a'), artifact('b'), artifact('c'), artifact('d'));
        let (stale_partial, fresh_partial) = (format!("{}.tmp.1.0", &a[..81]), format!("{}.tmp.2.0", &b[..81]));
        // name, bytes, last used
        put(dir.path(), &a, 1000, 5 * day);
        put(dir.path(), &b, 1000, 3 * day);
        put(dir.path(), &c, 1000, day);
        put(dir.path(), &stored, 1000, 10 * day); // in use by this process: kept whatever its time
        put(dir.path(), "notes.txt", 5000, 30 * day); // not the cache's: neither counted nor removed
        put(dir.path(), &stale_partial, 100, 2 * PARTIAL_FILE_AGE);
        put(dir.path(), &fresh_partial, 100, Duration::from_secs(60));

        cache.in_use().insert(dir.path().join(&stored));
        cache.keep_under_bound();

        // 4000 bytes of compiled plugins over a bound of 3000: `a`, the least recently used, goes.
        let mut expected = vec![b, c, stored, "notes.txt".to_string(), fresh_partial];
        expected.sort();
        assert_eq!(names(dir.path()), expected);
    }

    #[test]
    fn only_the_cache_s_own_names_are_recognised() {
        assert!(is_artifact_name(&artifact('0')));
        assert!(!is_artifact_name("notes.cwasm"));
        assert!(!is_artifact_name(&artifact('g')));
        assert!(!is_artifact_name(&artifact('0').replace(".cwasm", ".wasm")));
        assert!(is_partial_name(&format!("{}.tmp.12.3", &artifact('0')[..81])));
        assert!(!is_partial_name("x.tmp.12.3"));
    }
}
