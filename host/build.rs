//! Builds the default plugins (the `plugins/` workspace) to WebAssembly components and embeds them.
//!
//! `cargo run` and `cargo test` need nothing else: this script installs the `wasm32-unknown-unknown`
//! target with rustup when it is missing, runs a nested `cargo build` of `plugins/` (with its own
//! target dir: sharing ours would deadlock on cargo's build lock), turns each core module into a
//! component with `wit-component`, precompiles each embedded one with the plugin engine's settings
//! (`src/plugin/engine_config.rs`: so that a first start needs no compiling), and writes
//! `builtin_plugins.rs` for `include!`.

use std::path::{Path, PathBuf};

#[path = "src/plugin/engine_config.rs"]
mod engine_config;
use std::process::Command;
use std::{env, fs};

const TARGET: &str = "wasm32-unknown-unknown";
/// Plugins compiled into the binary, by crate name.
const EMBEDDED: &[&str] = &["byrequests", "bytraffic", "bybusyness", "heartbeat", "apache-rules"];
/// Plugins built for Fulcrum's own tests only: written to `$OUT_DIR/test-plugins/NAME.wasm`.
const TEST_ONLY: &[&str] = &["fault-test", "spin-test"];
/// Test plugins kept out of that folder (tests that load it whole need not compile them): written
/// to `$OUT_DIR/test-plugins-apart/NAME.wasm`, for the tests that copy them where they need them.
const TEST_ONLY_APART: &[&str] = &["rules-fault-test"];

fn main() {
    if let Err(message) = run() {
        eprintln!("\nerror: building Fulcrum's default plugins failed:\n{message}\n");
        std::process::exit(1);
    }
}

fn run() -> Result<(), String> {
    let manifest_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR").map_err(|e| e.to_string())?);
    let root = manifest_dir.parent().ok_or("host/ has no parent folder")?.to_path_buf();
    let out_dir = PathBuf::from(env::var("OUT_DIR").map_err(|e| e.to_string())?);
    let plugins = root.join("plugins");

    rerun_if_changed(&root.join("wit"));
    rerun_if_changed(&root.join("sdk"));
    rerun_if_changed(&plugins);

    ensure_wasm_target()?;

    // Share the nested build across profiles: target/wasm-plugins next to our own target dir.
    // OUT_DIR is <target>/<profile>/build/<pkg>-<hash>/out.
    let nested_target =
        out_dir.ancestors().nth(4).map(|t| t.join("wasm-plugins")).unwrap_or_else(|| out_dir.join("wasm-plugins"));

    // One build per plugin: cargo unifies features across the packages of one build, and a
    // selector must not be compiled with the SDK's `rules` feature (nor the reverse), or its
    // component type would promise exports it does not have.
    let cargo = env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    for name in EMBEDDED.iter().chain(TEST_ONLY).chain(TEST_ONLY_APART) {
        let mut cmd = Command::new(&cargo);
        cmd.arg("build")
            .arg("--release")
            .arg("--target")
            .arg(TARGET)
            .arg("--manifest-path")
            .arg(plugins.join("Cargo.toml"))
            .arg("--target-dir")
            .arg(&nested_target)
            .arg("-p")
            .arg(name)
            // Its own build dir too: a `build.build-dir` from the user's cargo config would otherwise
            // be the outer build's, whose lock the outer cargo holds (a deadlock in release builds).
            .env("CARGO_BUILD_BUILD_DIR", &nested_target);
        for var in [
            "RUSTFLAGS",
            "CARGO_ENCODED_RUSTFLAGS",
            "CARGO_BUILD_TARGET",
            "CARGO_TARGET_DIR",
            "CARGO_BUILD_RUSTFLAGS",
            "RUSTC_WRAPPER",
            "RUSTC_WORKSPACE_WRAPPER",
            "CARGO_PROFILE_RELEASE_DEBUG",
            "CARGO_MAKEFLAGS",
        ] {
            cmd.env_remove(var);
        }
        let status = cmd.status().map_err(|e| format!("could not run `{cargo} build` for plugins/{name}: {e}"))?;
        if !status.success() {
            return Err(format!(
                "`cargo build --release --target {TARGET} --manifest-path plugins/Cargo.toml -p {name}` failed \
                 ({status}); its output is above"
            ));
        }
    }

    let built = nested_target.join(TARGET).join("release");
    let test_dir = out_dir.join("test-plugins");
    fs::create_dir_all(&test_dir).map_err(|e| format!("{}: {e}", test_dir.display()))?;
    let apart_dir = out_dir.join("test-plugins-apart");
    fs::create_dir_all(&apart_dir).map_err(|e| format!("{}: {e}", apart_dir.display()))?;

    let mut table = String::from(
        "/// The default plugins compiled into this binary: (name, component bytes, the component\n\
         /// precompiled for the engine of this build).\n\
         pub const BUILTIN_PLUGINS: &[(&str, &[u8], &[u8])] = &[\n",
    );
    let engine = wasmtime::Engine::new(&engine_config::config()).map_err(|e| format!("wasmtime engine: {e:#}"))?;
    for name in EMBEDDED {
        let dest = out_dir.join(format!("{name}.wasm"));
        componentize(&built.join(format!("{}.wasm", name.replace('-', "_"))), &dest)?;
        let precompiled = out_dir.join(format!("{name}.cwasm"));
        let bytes = fs::read(&dest).map_err(|e| format!("{}: {e}", dest.display()))?;
        let code = engine.precompile_component(&bytes).map_err(|e| format!("precompiling {name}: {e:#}"))?;
        fs::write(&precompiled, code).map_err(|e| format!("{}: {e}", precompiled.display()))?;
        table.push_str(&format!(
            "    ({name:?}, include_bytes!({:?}), include_bytes!({:?})),\n",
            dest.display().to_string(),
            precompiled.display().to_string()
        ));
    }
    table.push_str("];\n");
    for name in TEST_ONLY {
        componentize(&built.join(format!("{}.wasm", name.replace('-', "_"))), &test_dir.join(format!("{name}.wasm")))?;
    }
    for name in TEST_ONLY_APART {
        let core = built.join(format!("{}.wasm", name.replace('-', "_")));
        componentize(&core, &apart_dir.join(format!("{name}.wasm")))?;
    }
    table.push_str(&format!(
        "/// Folder holding plugins built only for Fulcrum's own tests (`fault-test.wasm`, `spin-test.wasm`).\n\
         pub const TEST_PLUGIN_DIR: &str = {:?};\n\
         /// Folder holding test plugins that tests copy where they need them (`rules-fault-test.wasm`).\n\
         pub const TEST_PLUGINS_APART_DIR: &str = {:?};\n",
        test_dir.display().to_string(),
        apart_dir.display().to_string()
    ));
    fs::write(out_dir.join("builtin_plugins.rs"), table).map_err(|e| e.to_string())?;
    Ok(())
}

/// Turn a core module built with wit-bindgen into a component (what `wasm-tools component new` does).
fn componentize(core: &Path, dest: &Path) -> Result<(), String> {
    let bytes = fs::read(core).map_err(|e| format!("{}: {e}", core.display()))?;
    let component = wit_component::ComponentEncoder::default()
        .module(&bytes)
        .and_then(|encoder| encoder.validate(true).encode())
        .map_err(|e| format!("{}: not a valid plugin module: {e:#}", core.display()))?;
    fs::write(dest, component).map_err(|e| format!("{}: {e}", dest.display()))
}

/// Make sure the rust standard library for wasm32-unknown-unknown is installed, installing it with
/// rustup when it can; otherwise say exactly what to run.
fn ensure_wasm_target() -> Result<(), String> {
    let rustc = env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let sysroot = Command::new(&rustc)
        .args(["--print", "sysroot"])
        .output()
        .map_err(|e| format!("could not run `{rustc} --print sysroot`: {e}"))?;
    let sysroot = PathBuf::from(String::from_utf8_lossy(&sysroot.stdout).trim());
    let installed = |sysroot: &Path| sysroot.join("lib/rustlib").join(TARGET).join("lib").is_dir();
    if installed(&sysroot) {
        return Ok(());
    }
    println!("cargo:warning=installing the {TARGET} target with rustup (needed to build the default plugins)");
    let toolchain = env::var("RUSTUP_TOOLCHAIN").ok();
    let mut cmd = Command::new("rustup");
    cmd.args(["target", "add", TARGET]);
    if let Some(toolchain) = &toolchain {
        cmd.args(["--toolchain", toolchain]);
    }
    let ok = cmd.status().map(|s| s.success()).unwrap_or(false);
    if ok && installed(&sysroot) {
        return Ok(());
    }
    Err(format!(
        "the Rust standard library for {TARGET} is not installed and `rustup target add {TARGET}` did not \
         install it.\nRun this, then build again:\n\n    rustup target add {TARGET}{}\n",
        toolchain.map(|t| format!(" --toolchain {t}")).unwrap_or_default()
    ))
}

/// Ask cargo to rerun this script when any source file under `dir` changes (never a target dir).
fn rerun_if_changed(dir: &Path) {
    let Ok(entries) = fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name();
        if name == "target" || name.to_string_lossy().starts_with('.') {
            continue;
        }
        if path.is_dir() {
            rerun_if_changed(&path);
        } else {
            println!("cargo:rerun-if-changed={}", path.display());
        }
    }
}
