//! `fulcrum plugin new` and `fulcrum plugin componentize`: from nothing to a plugin file.

use std::path::{Path, PathBuf};

use crate::Error;

/// The SDK this binary was built with. `plugin new` writes a copy of it into the new crate (the SDK
/// is not published), with the WIT beside it, so the crate builds wherever it is, with no checkout
/// of Fulcrum, against exactly the interface this binary runs.
const SDK_FILES: &[(&str, &str)] = &[
    ("src/lib.rs", include_str!("../../../sdk/src/lib.rs")),
    ("src/testing.rs", include_str!("../../../sdk/src/testing.rs")),
    ("src/rules_call.rs", include_str!("../../../sdk/src/rules_call.rs")),
    ("src/allocator.rs", include_str!("../../../sdk/src/allocator.rs")),
];

/// The wit-bindgen the SDK is built with (the workspace's; a unit test keeps the two equal).
const WIT_BINDGEN_VERSION: &str = "=0.61.1";

/// The copy's manifest: the SDK's own, without the workspace it inherits from.
fn sdk_manifest() -> String {
    format!(
        r#"# A copy of Fulcrum's plugin SDK (written by `fulcrum plugin new` of Fulcrum {version}).
[package]
name = "fulcrum-sdk"
version = "{version}"
edition = "2024"
publish = false

[features]
default = []
selector = []
rules = []

[dependencies]
wit-bindgen = "{WIT_BINDGEN_VERSION}"
"#,
        version = env!("CARGO_PKG_VERSION")
    )
}

/// Create a Rust selector plugin crate `NAME` in `parent`: a round robin over the candidates
/// that honours an `x-pin` request header naming a member's route.
pub fn new_selector(name: &str, parent: &Path) -> Result<PathBuf, Error> {
    if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
        return Err(Error::msg(format!("`{name}` is not a plugin name (letters, digits, - and _)")));
    }
    let dir = parent.join(name);
    if dir.exists() {
        return Err(Error::msg(format!("{} already exists", dir.display())));
    }
    std::fs::create_dir_all(dir.join("src"))?;
    // The SDK in `fulcrum-sdk/`, which reads its WIT from `../wit`.
    let sdk = dir.join("fulcrum-sdk");
    std::fs::create_dir_all(sdk.join("src"))?;
    std::fs::write(sdk.join("Cargo.toml"), sdk_manifest())?;
    for (path, text) in SDK_FILES {
        std::fs::write(sdk.join(path), text)?;
    }
    write_wit(&dir.join("wit"))?;
    let type_name: String = name
        .split(['-', '_'])
        .map(|w| {
            let mut c = w.chars();
            c.next().map(|f| f.to_ascii_uppercase().to_string() + c.as_str()).unwrap_or_default()
        })
        .collect();
    std::fs::write(
        dir.join("Cargo.toml"),
        format!(
            r#"[package]
name = "{name}"
version = "0.1.0"
edition = "2024"
publish = false

[lib]
crate-type = ["cdylib", "rlib"]

[dependencies]
fulcrum-sdk = {{ path = "fulcrum-sdk", features = ["selector"] }}

[profile.release]
opt-level = "s"
lto = true
codegen-units = 1
panic = "abort"

# Its own workspace, so it builds wherever it is created.
[workspace]
"#
        ),
    )?;
    std::fs::write(
        dir.join("src/lib.rs"),
        format!(
            r#"//! `{name}`: a Fulcrum selector plugin. A request whose `x-pin` header names a member's route
//! goes to that member (when it is a candidate); the others go round robin.

use fulcrum_sdk::selector::*;

pub struct {type_name} {{
    routes: Vec<String>,
    turn: usize,
}}

impl Selector for {type_name} {{
    fn configure(balancer: &BalancerInfo) -> Result<(Self, Needs), PluginError> {{
        let routes = balancer.members.iter().map(|m| m.route.clone()).collect();
        Ok(({type_name} {{ routes, turn: 0 }}, Needs {{ headers: vec!["x-pin".into()], ..Needs::default() }}))
    }}

    fn select(&mut self, request: &RequestView, state: &State) -> Decision {{
        let pinned = request.headers.iter().find(|(name, _)| name == "x-pin").and_then(|(_, route)| {{
            state.candidates.iter().copied().find(|&i| self.routes[i as usize] == *route)
        }});
        let member = pinned.or_else(|| {{
            let i = self.turn % state.candidates.len();
            self.turn += 1;
            state.candidates.get(i).copied()
        }});
        Decision {{ member, lbstatus: Vec::new() }}
    }}
}}

fulcrum_sdk::export_selector!({type_name});

/// Small blocks from size-class free lists instead of Rust's default Wasm allocator: every call
/// allocates its inputs and answer and frees them (`fulcrum_sdk::allocator`).
#[cfg(all(target_family = "wasm", not(target_feature = "atomics")))]
#[global_allocator]
static ALLOCATOR: fulcrum_sdk::allocator::PluginAllocator = fulcrum_sdk::allocator::PluginAllocator::new();

#[cfg(test)]
mod tests {{
    use fulcrum_sdk::testing::SelectorHarness;

    use super::*;

    #[test]
    fn pins_then_round_robin() {{
        let mut h = SelectorHarness::<{type_name}>::new(&[("http://a", "web1", 1), ("http://b", "web2", 1)], &[]).unwrap();
        let pinned = SelectorHarness::<{type_name}>::request(&[("x-pin", "web2")]);
        assert_eq!(h.select(&pinned), Some(1));
        assert_eq!(h.routes(3), ["web1", "web2", "web1"]);
    }}
}}
"#
        ),
    )?;
    std::fs::write(
        dir.join("README.md"),
        format!(
            "# {name}\n\nA Fulcrum selector plugin. `fulcrum-sdk/` is a copy of Fulcrum's plugin SDK and `wit/` the \
             plugin interface it implements.\n\n```sh\ncargo test                                              # the logic, natively\n\
             cargo build --release --target wasm32-unknown-unknown   # the Wasm module\n\
             fulcrum plugin componentize target/wasm32-unknown-unknown/release/{file}.wasm -o {name}.wasm\n\
             cp {name}.wasm /path/to/plugins_dir/                     # then: lbmethod = \"{name}\"\n```\n",
            file = name.replace('-', "_")
        ),
    )?;
    Ok(dir)
}

/// Turn a core module built with wit-bindgen (which carries its WIT in a custom section) into a
/// component, as `wasm-tools component new` does.
pub fn componentize(input: &Path, output: &Path) -> Result<(), Error> {
    let bytes = std::fs::read(input).map_err(|e| Error::msg(format!("{}: {e}", input.display())))?;
    let component = wit_component::ComponentEncoder::default()
        .module(&bytes)
        .and_then(|encoder| encoder.validate(true).encode())
        .map_err(|e| {
            Error::msg(format!(
                "{}: cannot make a component of it: {e:#}\n(it must be a core module built with wit-bindgen for \
                 wasm32-unknown-unknown; modules that import WASI preview 1 need an adapter: use wasm-tools)",
                input.display()
            ))
        })?;
    std::fs::write(output, component).map_err(|e| Error::msg(format!("{}: {e}", output.display())))
}

/// The plugin interface, compiled in: `fulcrum plugin wit` writes it out and `fulcrum plugin
/// bindings` generates guest bindings from it, so a plugin author needs no checkout of Fulcrum.
pub const WIT_FILES: &[(&str, &str)] = &[
    ("types.wit", include_str!("../../../wit/types.wit")),
    ("selector.wit", include_str!("../../../wit/selector.wit")),
    ("rules.wit", include_str!("../../../wit/rules.wit")),
    ("worlds.wit", include_str!("../../../wit/worlds.wit")),
];

/// The worlds a plugin can target, by their short names.
pub const WORLDS: &[(&str, &str)] = &[("selector", "selector-plugin"), ("rules", "rules-plugin")];

/// Write the WIT package into `dir` (created if needed) for guest tool chains that read WIT files
/// (componentize-py, componentize-js, wit-bindgen).
pub fn write_wit(dir: &Path) -> Result<(), Error> {
    std::fs::create_dir_all(dir).map_err(|e| Error::msg(format!("{}: {e}", dir.display())))?;
    for (name, text) in WIT_FILES {
        let path = dir.join(name);
        std::fs::write(&path, text).map_err(|e| Error::msg(format!("{}: {e}", path.display())))?;
    }
    Ok(())
}

/// Generate C bindings (as `wit-bindgen c` does) for `world` (`selector` or `rules`) into `dir`:
/// `NAME.h`, `NAME.c` and `NAME_component_type.o`, the object that carries the WIT into the module
/// so that `fulcrum plugin componentize` can make a component of it. Zig uses the same files.
pub fn bindings_c(world: &str, dir: &Path) -> Result<Vec<PathBuf>, Error> {
    use wit_bindgen_core::wit_parser::Resolve;

    let Some((_, full)) = WORLDS.iter().find(|(short, full)| *short == world || *full == world) else {
        let known: Vec<_> = WORLDS.iter().map(|(s, _)| *s).collect();
        return Err(Error::msg(format!("no world `{world}` (known: {})", known.join(", "))));
    };
    let mut sources = wit_bindgen_core::wit_parser::SourceMap::default();
    for (name, text) in WIT_FILES {
        sources.push_str(&format!("wit/{name}"), *text);
    }
    let group = sources.parse().map_err(|(_, e)| Error::msg(format!("wit: {e}")))?;
    let mut resolve = Resolve::default();
    let pkg = resolve.push_group(group).map_err(|e| Error::msg(format!("wit: {e:#}")))?;
    let world_id = resolve.select_world(&[pkg], Some(full)).map_err(|e| Error::msg(format!("wit: {e:#}")))?;
    let mut files = wit_bindgen_core::Files::default();
    wit_bindgen_c::Opts::default()
        .build()
        .generate(&mut resolve, world_id, &mut files)
        .map_err(|e| Error::msg(format!("generating C bindings for {full}: {e:#}")))?;
    std::fs::create_dir_all(dir).map_err(|e| Error::msg(format!("{}: {e}", dir.display())))?;
    let mut written = Vec::new();
    for (name, bytes) in files.iter() {
        let path = dir.join(name);
        std::fs::write(&path, bytes).map_err(|e| Error::msg(format!("{}: {e}", path.display())))?;
        written.push(path);
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sdk_copy_uses_the_workspace_s_wit_bindgen() {
        let workspace = include_str!("../../../Cargo.toml");
        assert!(
            workspace.contains(&format!("wit-bindgen = \"{WIT_BINDGEN_VERSION}\"")),
            "template.rs WIT_BINDGEN_VERSION differs from the workspace's wit-bindgen"
        );
    }
}
