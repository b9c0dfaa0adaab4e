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
//! Loading compiled code trusts the file (wasmtime checks its header, not its code): the folder
//! must be writable only by the user Fulcrum runs as.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

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
}

impl Loaded {
    pub fn time(self) -> Duration {
        match self {
            Loaded::Compiled(t) | Loaded::Cached(t) => t,
        }
    }
}

#[derive(Debug, Clone)]
pub struct ArtifactCache {
    dir: PathBuf,
}

impl ArtifactCache {
    /// Use `dir` (created if needed).
    pub fn open(dir: &Path) -> std::io::Result<ArtifactCache> {
        std::fs::create_dir_all(dir)?;
        Ok(ArtifactCache { dir: dir.to_path_buf() })
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
                Ok(component) => return Ok((component, Loaded::Cached(started.elapsed()))),
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
        Ok((component, loaded))
    }
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
