//! The host's layering, checked on every test run: a module may name
//! (`crate::…`) only modules of a lower layer, so no cycle can come back.
//! The table is the one `ARCHITECTURE.md` draws; change both together.
//!
//! A test over the sources rather than one crate per layer: the layers are
//! fine-grained (ten of them) and share one wasmtime-heavy build, and
//! splitting them into crates would multiply compile units and `pub`
//! surface for the same guarantee.

use std::path::{Path, PathBuf};

/// Each top-level module of the host and its layer, lowest first.
pub(crate) const LAYERS: &[(&str, u8)] = &[
    ("bounds", 0),
    ("admission", 0),
    ("config", 0),
    ("ids", 0),
    ("replay", 0),
    ("revocations", 0),
    ("token", 0),
    ("telemetry", 0),
    ("store", 1),
    ("plugin", 2),
    ("connections", 2),
    ("webhooks", 2),
    ("cluster", 3),
    ("delivery", 4),
    ("dispatch", 5),
    ("app", 6),
    ("session", 7),
    ("http", 8),
    ("server", 9),
];

/// The layer of a top-level module.
fn layer_of(module: &str) -> Option<u8> {
    LAYERS.iter().find(|(m, _)| *m == module).map(|(_, l)| *l)
}

/// The files of a top-level module (`src/<m>.rs` or `src/<m>/**.rs`).
fn files_of(src: &Path, module: &str) -> Vec<PathBuf> {
    let single = src.join(format!("{module}.rs"));
    if single.exists() {
        return vec![single];
    }
    let mut files = Vec::new();
    let mut stack = vec![src.join(module)];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).expect("module folder").flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                files.push(path);
            }
        }
    }
    files
}

/// The top-level modules a source text names through `crate::`, outside
/// comments.
fn named_modules(text: &str) -> Vec<String> {
    let mut names = Vec::new();
    for line in text.lines() {
        let code = line.split("//").next().unwrap_or_default();
        let mut rest = code;
        while let Some(at) = rest.find("crate::") {
            rest = &rest[at + "crate::".len()..];
            let name: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() {
                names.push(name);
            }
        }
        // `use crate::{a, b}` groups.
        if let Some(at) = code.find("crate::{") {
            let group = &code[at + "crate::{".len()..];
            for part in group.split([',', '}']) {
                let name: String = part
                    .trim()
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                if !name.is_empty() {
                    names.push(name);
                }
            }
        }
    }
    names
}

/// Every import that goes up or sideways, as `from -> to` lines.
pub(crate) fn violations(src: &Path) -> Vec<String> {
    let mut found = Vec::new();
    for (module, layer) in LAYERS {
        for file in files_of(src, module) {
            let text = std::fs::read_to_string(&file).expect("readable source");
            for name in named_modules(&text) {
                if name == *module {
                    continue;
                }
                let Some(target) = layer_of(&name) else {
                    continue; // an item of lib.rs (`crate::Config`) or a macro path
                };
                let allowed = target < *layer || (target == 0 && *layer == 0);
                if !allowed {
                    found.push(format!(
                        "{} names crate::{name}: {module} (layer {layer}) may not import {name} (layer {target})",
                        file.display()
                    ));
                }
            }
        }
    }
    found.sort();
    found.dedup();
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn src() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src")
    }

    #[test]
    fn no_module_imports_upward() {
        let found = violations(&src());
        assert!(
            found.is_empty(),
            "layering broken (see ARCHITECTURE.md):\n{}",
            found.join("\n")
        );
    }

    #[test]
    fn every_module_has_a_layer() {
        for entry in std::fs::read_dir(src()).expect("src").flatten() {
            let name = entry.file_name().to_string_lossy().replace(".rs", "");
            if ["lib", "main", "layering"].contains(&name.as_str()) {
                continue;
            }
            assert!(
                layer_of(&name).is_some(),
                "module {name} has no layer in LAYERS"
            );
        }
    }

    #[test]
    fn the_check_sees_an_upward_import() {
        let text =
            "use crate::app::App;\n// crate::http in a comment\nuse crate::{store, session};";
        assert_eq!(named_modules(text), ["app", "store", "session"]);
    }
}
