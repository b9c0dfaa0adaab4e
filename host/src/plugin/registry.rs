//! The plugin registry: built-in plugins plus the components found in `plugins_dir`, by name.
//!
//! Built-ins are compiled on first use (a config that never names `bytraffic` never pays for it);
//! files from the plugin directory are compiled and type-checked at load, so a broken file is an
//! error before traffic arrives. Each compiled plugin keeps an `InstancePre` per world it exports.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::SystemTime;

use wasmtime::component::types::ComponentItem;

use super::bindings::v0_1;
use super::cache::{self, ArtifactCache, Loaded};
use super::store::{self, StoreState};
use super::{PluginLimits, builtin, engine};
use crate::Error;
use crate::balancer::{BalancerSpec, MemberSelector, SelectorFactory};
use crate::rules::{RequestRules, RulesFactory, RulesSetupError};

/// The WIT package version this host implements (`wit/`), and the versions it still loads
/// plugins of (`host/wit-0.4.0/` to `host/wit-0.1.0/`): a component exports and imports
/// `fulcrum:plugin` interfaces of one of these, all of the same one.
pub const WIT_PACKAGE: &str = "fulcrum:plugin";
pub const WIT_VERSION: &str = "0.5.0";
pub const WIT_VERSIONS: &[&str] = &["0.5.0", "0.4.0", "0.3.0", "0.2.0", "0.1.0"];

/// Which worlds a plugin implements.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Worlds {
    pub selector: bool,
    pub rules: bool,
}

impl fmt::Display for Worlds {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.selector, self.rules) {
            (true, true) => f.write_str("selector, rules"),
            (true, false) => f.write_str("selector"),
            (false, true) => f.write_str("rules"),
            (false, false) => f.write_str("none"),
        }
    }
}

/// What `fulcrum check` and `plugin inspect` show about a plugin.
#[derive(Debug, Clone)]
pub struct PluginInfo {
    pub name: String,
    /// `built-in`, or the file it came from.
    pub origin: String,
    pub worlds: Worlds,
    /// The `fulcrum:plugin` version the component was built against (`0.5.0` to `0.1.0`).
    pub wit_version: &'static str,
    pub imports: Vec<String>,
    pub size: usize,
    /// Compiled now, or loaded compiled from the cache, and how long that took.
    pub loaded: Loaded,
}

/// A compiled, type-checked plugin.
pub struct CompiledPlugin {
    pub info: PluginInfo,
    pub name: Arc<str>,
    pub selector: Option<super::selector::SelectorPre>,
    pub rules: Option<RulesPre>,
}

/// A rules component ready to instantiate, by the interface version it was built for.
pub enum RulesPre {
    /// `fulcrum:plugin@0.5.0`, and `@0.4.0` to `@0.2.0` (the same `rules` shapes): names declared
    /// at configure, values by slot.
    V2(super::rules::RulesPreV2),
    /// `fulcrum:plugin@0.1.0`: called through [`super::rules`]'s adapter.
    V1(v0_1::RulesPluginPre<StoreState>),
}

/// A plugin embedded in the binary: the component, and its code precompiled by the build.
#[derive(Clone, Copy)]
struct Builtin {
    component: &'static [u8],
    precompiled: &'static [u8],
}

enum Source {
    Builtin(Builtin),
    File(PathBuf),
}

struct Entry {
    source: Source,
    /// The built-in this file shadows (`[plugins.NAME] shadow_builtin = true`), restored when the
    /// file goes away.
    shadows: Option<Builtin>,
    compiled: Option<Arc<CompiledPlugin>>,
    /// A file's modification time and size when it was compiled, to notice replacements.
    stamp: Option<(SystemTime, u64)>,
}

/// What a [`PluginRegistry::rescan`] changed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Rescan {
    /// Plugins added or replaced (compiled and type-checked).
    pub changed: Vec<String>,
    /// Plugins whose file is gone.
    pub removed: Vec<String>,
    /// Files that could not be loaded, in words; the previous version (if any) stays.
    pub errors: Vec<String>,
    /// The names of those plugins.
    pub failed: Vec<String>,
}

/// How a [`PluginRegistry`] loads plugins beyond the defaults.
#[derive(Debug, Clone, Default)]
pub struct RegistryOptions {
    /// Limits of every plugin not in `overrides`.
    pub limits: PluginLimits,
    /// Plugins with their own limits and WASI grants (`[plugins.NAME]`).
    pub overrides: BTreeMap<String, PluginLimits>,
    /// Built-ins that a file of the same name may replace (`shadow_builtin`); any other name
    /// clash is an error.
    pub shadow: Vec<String>,
    /// Where compiled plugins are kept between runs (none: compile every time).
    pub cache: Option<ArtifactCache>,
}

/// All plugins known to this process, by name.
pub struct PluginRegistry {
    entries: Mutex<BTreeMap<String, Entry>>,
    limits: PluginLimits,
    /// Limits of plugins configured with their own (`[plugins.NAME]`).
    overrides: BTreeMap<String, PluginLimits>,
    /// Built-ins that a file of the same name may replace.
    shadow: Vec<String>,
    cache: Option<ArtifactCache>,
    dir: Option<PathBuf>,
    /// Files that failed to load, by name, with their stamp then: not compiled again until they
    /// change (an interpreted guest takes seconds to compile).
    failed: Mutex<BTreeMap<String, Option<(SystemTime, u64)>>>,
}

impl fmt::Debug for PluginRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PluginRegistry").field("plugins", &self.names()).finish()
    }
}

impl PluginRegistry {
    /// The built-in plugins, plus every `*.wasm` in `plugins_dir` (compiled and checked now).
    pub fn load(plugins_dir: Option<&Path>, limits: PluginLimits) -> Result<PluginRegistry, Error> {
        Self::load_configured(plugins_dir, RegistryOptions { limits, ..RegistryOptions::default() })
    }

    /// Like [`PluginRegistry::load`], with per-plugin limits and grants, shadowing and a cache.
    /// A plugin file that fails fails the load; the error names every such file.
    pub fn load_configured(plugins_dir: Option<&Path>, options: RegistryOptions) -> Result<PluginRegistry, Error> {
        let (registry, failed) = Self::load_each(plugins_dir, options)?;
        if failed.is_empty() {
            return Ok(registry);
        }
        let messages: Vec<String> = failed.into_iter().map(|f| f.message).collect();
        Err(Error::msg(messages.join("\n")))
    }

    /// Like [`PluginRegistry::load_configured`], but a plugin file that cannot be loaded is left
    /// out and reported (every one of them, so `fulcrum check` lists them all); only a folder that
    /// cannot be read is an error.
    pub fn load_each(
        plugins_dir: Option<&Path>,
        options: RegistryOptions,
    ) -> Result<(PluginRegistry, Vec<FailedFile>), Error> {
        let RegistryOptions { limits, overrides, shadow, cache } = options;
        let mut entries = BTreeMap::new();
        for (name, bytes, precompiled) in builtin::BUILTIN_PLUGINS {
            entries.insert(
                name.to_string(),
                Entry {
                    source: Source::Builtin(Builtin { component: bytes, precompiled }),
                    shadows: None,
                    compiled: None,
                    stamp: None,
                },
            );
        }
        let registry = PluginRegistry {
            entries: Mutex::new(entries),
            limits,
            overrides,
            shadow,
            cache,
            dir: plugins_dir.map(Path::to_path_buf),
            failed: Mutex::new(BTreeMap::new()),
        };
        let failed = match plugins_dir {
            Some(dir) => registry.load_dir(dir)?,
            None => Vec::new(),
        };
        Ok((registry, failed))
    }

    /// The plugin folder, when there is one.
    pub fn dir(&self) -> Option<&Path> {
        self.dir.as_deref()
    }

    /// Look at the plugin folder again: compile new and replaced files (a file that fails keeps
    /// the previous version and is reported), forget removed ones. Compiling happens before the
    /// registry is touched, so lookups meanwhile see the old plugins.
    pub fn rescan(&self) -> Rescan {
        let mut rescan = Rescan::default();
        let Some(dir) = &self.dir else { return rescan };
        let files = match wasm_files(dir) {
            Ok(files) => files,
            Err(e) => {
                rescan.errors.push(format!("plugins_dir {}: {e}", dir.display()));
                return rescan;
            }
        };
        let known: BTreeMap<String, Option<(SystemTime, u64)>> = {
            let entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
            entries
                .iter()
                .filter(|(_, e)| matches!(e.source, Source::File(_)))
                .map(|(name, e)| (name.clone(), e.stamp))
                .collect()
        };
        let mut present = Vec::new();
        for path in files {
            let name = plugin_name(&path);
            present.push(name.clone());
            let stamp = file_stamp(&path);
            if known.get(&name).is_some_and(|s| *s == stamp) {
                continue;
            }
            if self.failed.lock().unwrap_or_else(PoisonError::into_inner).get(&name).is_some_and(|s| *s == stamp) {
                continue;
            }
            let builtin = {
                let entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
                entries.get(&name).and_then(|e| match e.source {
                    Source::Builtin(builtin) => Some(builtin),
                    Source::File(_) => e.shadows,
                })
            };
            if builtin.is_some() && !self.shadow.contains(&name) {
                // Refused once per version of the file, like a file that does not compile.
                self.failed.lock().unwrap_or_else(PoisonError::into_inner).insert(name.clone(), stamp);
                rescan.errors.push(builtin_clash(&path, &name));
                rescan.failed.push(name);
                continue;
            }
            let compiled = std::fs::read(&path)
                .map_err(|e| Error::msg(format!("plugin file {}: {e}", path.display())))
                .and_then(|bytes| {
                    compile(&name, &path.display().to_string(), &bytes, None, self.limits(&name), self.cache.as_ref())
                });
            match compiled {
                Ok(compiled) => {
                    let entry = Entry {
                        source: Source::File(path),
                        shadows: builtin,
                        compiled: Some(Arc::new(compiled)),
                        stamp,
                    };
                    self.entries.lock().unwrap_or_else(PoisonError::into_inner).insert(name.clone(), entry);
                    self.failed.lock().unwrap_or_else(PoisonError::into_inner).remove(&name);
                    rescan.changed.push(name);
                }
                Err(e) => {
                    self.failed.lock().unwrap_or_else(PoisonError::into_inner).insert(name.clone(), stamp);
                    rescan.errors.push(format!("{e:#}"));
                    rescan.failed.push(name);
                }
            }
        }
        self.failed.lock().unwrap_or_else(PoisonError::into_inner).retain(|name, _| present.contains(name));
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        for name in known.keys() {
            if !present.contains(name) {
                // A shadowing file that goes away gives the built-in back.
                match entries.remove(name).and_then(|e| e.shadows) {
                    Some(builtin) => {
                        let builtin =
                            Entry { source: Source::Builtin(builtin), shadows: None, compiled: None, stamp: None };
                        entries.insert(name.clone(), builtin);
                        rescan.changed.push(name.clone());
                    }
                    None => rescan.removed.push(name.clone()),
                }
            }
        }
        rescan
    }

    /// Load every plugin file of `dir`; the files that fail are reported (and remembered, so a
    /// rescan does not report them again until they change).
    fn load_dir(&self, dir: &Path) -> Result<Vec<FailedFile>, Error> {
        let files = wasm_files(dir).map_err(|e| Error::msg(format!("plugins_dir {}: {e}", dir.display())))?;
        let mut failed = Vec::new();
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        for path in files {
            let name = plugin_name(&path);
            let stamp = file_stamp(&path);
            let mut shadows = None;
            let clash = match entries.get(&name).map(|e| &e.source) {
                Some(Source::Builtin(builtin)) if self.shadow.contains(&name) => {
                    shadows = Some(*builtin);
                    None
                }
                Some(Source::Builtin(_)) => Some(builtin_clash(&path, &name)),
                Some(Source::File(p)) => Some(format!(
                    "plugin file {} is named `{name}`, like the plugin from {}",
                    path.display(),
                    p.display()
                )),
                None => None,
            };
            let compiled = match clash {
                Some(message) => Err(Error::msg(message)),
                None => std::fs::read(&path)
                    .map_err(|e| Error::msg(format!("plugin file {}: {e}", path.display())))
                    .and_then(|bytes| {
                        compile(
                            &name,
                            &path.display().to_string(),
                            &bytes,
                            None,
                            self.limits(&name),
                            self.cache.as_ref(),
                        )
                    }),
            };
            match compiled {
                Ok(compiled) => {
                    let entry =
                        Entry { source: Source::File(path), shadows, compiled: Some(Arc::new(compiled)), stamp };
                    entries.insert(name, entry);
                }
                Err(e) => {
                    self.failed.lock().unwrap_or_else(PoisonError::into_inner).insert(name.clone(), stamp);
                    failed.push(FailedFile { name, path, message: format!("{e:#}") });
                }
            }
        }
        Ok(failed)
    }

    /// The names of every known plugin.
    pub fn names(&self) -> Vec<String> {
        self.entries.lock().unwrap_or_else(PoisonError::into_inner).keys().cloned().collect()
    }

    /// The limits plugin `name` runs under.
    pub fn limits(&self, name: &str) -> PluginLimits {
        self.overrides.get(name).copied().unwrap_or(self.limits)
    }

    /// The compiled plugin called `name`, compiling a built-in on first use.
    pub fn get(&self, name: &str) -> Result<Arc<CompiledPlugin>, Error> {
        let limits = self.limits(name);
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(entry) = entries.get_mut(name) else {
            let known: Vec<_> = entries.keys().map(String::as_str).collect();
            return Err(Error::msg(format!("no plugin named `{name}` (known: {})", known.join(", "))));
        };
        if let Some(compiled) = &entry.compiled {
            return Ok(Arc::clone(compiled));
        }
        let compiled = match &entry.source {
            Source::Builtin(b) => {
                Arc::new(compile(name, "built-in", b.component, Some(b.precompiled), limits, self.cache.as_ref())?)
            }
            Source::File(path) => {
                let bytes =
                    std::fs::read(path).map_err(|e| Error::msg(format!("plugin file {}: {e}", path.display())))?;
                Arc::new(compile(name, &path.display().to_string(), &bytes, None, limits, self.cache.as_ref())?)
            }
        };
        entry.compiled = Some(Arc::clone(&compiled));
        Ok(compiled)
    }

    /// Compile and describe a component file without registering it (`fulcrum plugin inspect`).
    pub fn inspect(path: &Path) -> Result<PluginInfo, Error> {
        let bytes = std::fs::read(path).map_err(|e| Error::msg(format!("{}: {e}", path.display())))?;
        let name = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
        Ok(compile(&name, &path.display().to_string(), &bytes, None, PluginLimits::default(), None)?.info)
    }
}

impl SelectorFactory for PluginRegistry {
    fn selector(&self, spec: &BalancerSpec<'_>) -> Result<Box<dyn MemberSelector>, Error> {
        let plugin =
            self.get(spec.lbmethod).map_err(|e| Error::msg(format!("balancer `{}`: lbmethod: {e}", spec.name)))?;
        let selector = super::selector::WasmSelector::new(plugin, spec, self.limits(spec.lbmethod))
            .map_err(|e| Error::msg(format!("balancer `{}`: {e}", spec.name)))?;
        Ok(Box::new(selector))
    }
}

impl RulesFactory for PluginRegistry {
    fn rules(&self, plugin: &str, config: &toml::Table) -> Result<Box<dyn RequestRules>, RulesSetupError> {
        let compiled =
            self.get(plugin).map_err(|e| RulesSetupError { option: None, line: None, message: format!("{e:#}") })?;
        Ok(Box::new(super::rules::build(compiled, config, self.limits(plugin))?))
    }
}

/// Compile `bytes` (or load `precompiled`, the build's compiled code of an embedded plugin, when
/// this engine accepts it), find the worlds it implements, and type-check it against them, linking
/// the WASI capabilities `limits` grants.
fn compile(
    name: &str,
    origin: &str,
    bytes: &[u8],
    precompiled: Option<&[u8]>,
    limits: PluginLimits,
    cache: Option<&ArtifactCache>,
) -> Result<CompiledPlugin, Error> {
    let fail = |why: String| Error::msg(format!("plugin `{name}` ({origin}): {why}"));
    if wasmparser::Parser::is_core_wasm(bytes) {
        // What wit-bindgen and most guest tool chains produce first: it needs one more step.
        return Err(fail(format!(
            "it is a core WebAssembly module, not a component: turn it into one with `fulcrum plugin componentize \
             {origin} -o OUT.wasm` and put OUT.wasm in its place"
        )));
    }
    let engine = engine::engine();
    let embedded = precompiled.and_then(|code| {
        let started = std::time::Instant::now();
        // SAFETY: the code was compiled by this binary's own build (host/build.rs) and is part of
        // the binary, as trusted as the binary itself; wasmtime checks that it was compiled with
        // this engine's version and settings (a build on another CPU fails that and compiles).
        match unsafe { wasmtime::component::Component::deserialize(engine, code) } {
            Ok(component) => {
                release_pages(code);
                Some((component, Loaded::Precompiled(started.elapsed())))
            }
            Err(e) => {
                tracing::debug!(plugin = name, "the code built with the binary does not fit this machine ({e})");
                None
            }
        }
    });
    let (component, loaded) = match (embedded, cache) {
        (Some(ready), _) => Ok(ready),
        (None, Some(cache)) => cache.load(engine, bytes),
        (None, None) => cache::compile(engine, bytes),
    }
    .map_err(|e| fail(format!("not a valid WebAssembly component: {e}")))?;
    match loaded {
        Loaded::Compiled(t) => tracing::debug!(plugin = name, "compiled {origin} in {:.1} ms", t.as_secs_f64() * 1e3),
        Loaded::Precompiled(t) => {
            tracing::debug!(
                plugin = name,
                "loaded {origin} (code built with the binary) in {:.1} ms",
                t.as_secs_f64() * 1e3
            )
        }
        Loaded::Cached(t) => {
            tracing::debug!(plugin = name, "loaded {origin} from the plugin cache in {:.1} ms", t.as_secs_f64() * 1e3)
        }
    }
    let ty = component.component_type();

    let mut worlds = Worlds::default();
    let mut wit_version: Option<&'static str> = None;
    for (export, item) in ty.exports(engine) {
        let Some((package, interface, version)) = split_interface(export) else { continue };
        if package != WIT_PACKAGE || !matches!(item.ty, ComponentItem::ComponentInstance(_)) {
            continue;
        }
        let Some(known) = WIT_VERSIONS.iter().copied().find(|v| *v == version) else {
            return Err(fail(format!(
                "exports `{export}`, built against {WIT_PACKAGE}@{version}; this Fulcrum implements @{WIT_VERSION} \
                 (and still loads @{})",
                WIT_VERSIONS[1..].join(", @")
            )));
        };
        if let Some(other) = wit_version.filter(|v| *v != known) {
            return Err(fail(format!("exports `{export}` and interfaces of {WIT_PACKAGE}@{other}: one version only")));
        }
        wit_version = Some(known);
        match interface {
            "selector" => worlds.selector = true,
            "rules" => worlds.rules = true,
            _ => {}
        }
    }
    if !worlds.selector && !worlds.rules {
        return Err(fail(format!(
            "exports neither {WIT_PACKAGE}/selector@{WIT_VERSION} nor {WIT_PACKAGE}/rules@{WIT_VERSION}"
        )));
    }
    let wit_version = wit_version.unwrap_or(WIT_VERSION);

    let imports: Vec<String> = ty.imports(engine).map(|(n, _)| n.to_string()).collect();
    let with_wasi = imports.iter().any(|i| i.starts_with("wasi:"));
    for import in &imports {
        if let Some((package, _, version)) = split_interface(import)
            && package == WIT_PACKAGE
            && version != wit_version
        {
            return Err(fail(format!(
                "imports `{import}` but exports {WIT_PACKAGE}@{wit_version} interfaces; this Fulcrum implements \
                 {WIT_PACKAGE}@{WIT_VERSION} (and still loads @{})",
                WIT_VERSIONS[1..].join(", @")
            )));
        }
    }
    if let Some(other) = imports.iter().find(|i| !i.starts_with("wasi:") && !i.starts_with(&format!("{WIT_PACKAGE}/")))
    {
        return Err(fail(format!("imports `{other}`, which Fulcrum does not provide")));
    }
    let linker = store::linker(engine, &component, with_wasi, limits.wasi).map_err(|e| fail(format!("{e:#}")))?;
    let pre = linker
        .instantiate_pre(&component)
        .map_err(|e| fail(format!("imports something Fulcrum does not provide: {e:#}")))?;
    let selector = if worlds.selector {
        Some(
            super::selector::SelectorPre::new(pre.clone(), wit_version)
                .map_err(|e| fail(format!("its selector interface does not match: {e:#}")))?,
        )
    } else {
        None
    };
    let rules = if worlds.rules {
        let mismatch = |e: wasmtime::Error| fail(format!("its rules interface does not match: {e:#}"));
        Some(match wit_version {
            "0.1.0" => RulesPre::V1(v0_1::RulesPluginPre::new(pre).map_err(mismatch)?),
            version => RulesPre::V2(super::rules::RulesPreV2::new(pre, version).map_err(mismatch)?),
        })
    } else {
        None
    };
    Ok(CompiledPlugin {
        name: Arc::from(name),
        info: PluginInfo {
            name: name.to_string(),
            origin: origin.to_string(),
            worlds,
            wit_version,
            imports,
            size: bytes.len(),
            loaded,
        },
        selector,
        rules,
    })
}

/// Give back the binary's pages that hold an embedded plugin's compiled code, once wasmtime has
/// copied it into memory of its own (executable, which the binary's read-only data is not).
///
/// Without this an idle Fulcrum keeps both copies resident: the apache-rules code is 2.9 MB, so
/// the guide's configuration would stay above 20 MB. The pages are the binary's read-only file
/// pages, read once and never written: dropping them loses nothing, and a later read (a plugin
/// loaded again after a reload) brings them back from the file.
fn release_pages(code: &[u8]) {
    // SAFETY: sysconf has no preconditions.
    let page = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(4096).max(1);
    let start = (code.as_ptr() as usize).next_multiple_of(page);
    let end = (code.as_ptr() as usize + code.len()) / page * page;
    if end > start {
        // SAFETY: [start, end) lies inside `code`, whole pages of the binary's read-only data;
        // MADV_DONTNEED on a private file mapping only drops its page-table entries (contents
        // that were never written come back unchanged from the file on the next access).
        let failed = unsafe { libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_DONTNEED) } != 0;
        if failed {
            tracing::debug!("madvise of embedded plugin code: {}", std::io::Error::last_os_error());
        }
    }
}

/// A plugin file that could not be loaded, and why.
#[derive(Debug, Clone)]
pub struct FailedFile {
    pub name: String,
    pub path: PathBuf,
    /// What went wrong, naming the plugin and its file.
    pub message: String,
}

fn builtin_clash(path: &Path, name: &str) -> String {
    format!(
        "plugin file {} is named `{name}`, like the built-in plugin (set `shadow_builtin = true` in [plugins.{name}] \
         to replace it)",
        path.display()
    )
}

/// The `*.wasm` files of a folder, sorted.
fn wasm_files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "wasm") && p.is_file())
        .collect();
    files.sort();
    Ok(files)
}

/// A plugin file's name is its file stem: `plugins.d/canary.wasm` is `canary`.
fn plugin_name(path: &Path) -> String {
    path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default()
}

fn file_stamp(path: &Path) -> Option<(SystemTime, u64)> {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len()))
}

/// `fulcrum:plugin/selector@0.1.0` → (`fulcrum:plugin`, `selector`, `0.1.0`).
fn split_interface(name: &str) -> Option<(&str, &str, &str)> {
    let (path, version) = name.split_once('@')?;
    let (package, interface) = path.split_once('/')?;
    Some((package, interface, version))
}
