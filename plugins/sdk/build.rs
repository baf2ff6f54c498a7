//! Copies the WIT contract into `OUT_DIR` for `wit_bindgen::generate!`,
//! escaping field names that are WIT keywords.
//!
//! `wit/chorus-plugin.wit` (v1.0.0) names a field of `reply` `result`,
//! which is a WIT keyword: every WIT parser (wit-bindgen's and wasmtime's)
//! refuses it unless it is written `%result`. The `%` is only an escape, the
//! field's name in the component type stays `result`, so escaping it here
//! yields exactly the contract the WIT means. Once the contract writes
//! `%result` itself this step changes nothing.

use std::path::PathBuf;
use std::{env, fs};

/// WIT keywords that may appear in the contract as record field names.
const KEYWORDS: &[&str] = &[
    "result", "list", "option", "string", "tuple", "type", "flags", "enum",
];

fn main() {
    let manifest =
        PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let source = manifest.join("../../wit/chorus-plugin.wit");
    println!("cargo::rerun-if-changed={}", source.display());
    let wit = fs::read_to_string(&source).expect("the WIT contract is readable");
    let escaped: Vec<String> = wit.lines().map(escape_field).collect();
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR")).join("wit");
    fs::create_dir_all(&out).expect("OUT_DIR is writable");
    fs::write(out.join("chorus-plugin.wit"), escaped.join("\n") + "\n")
        .expect("OUT_DIR is writable");
}

/// Escapes `keyword:` at the start of a line (a record field) as `%keyword:`.
fn escape_field(line: &str) -> String {
    let body = line.trim_start();
    let indent = &line[..line.len() - body.len()];
    for keyword in KEYWORDS {
        if body
            .strip_prefix(keyword)
            .is_some_and(|rest| rest.starts_with(':'))
        {
            return format!("{indent}%{body}");
        }
    }
    line.to_string()
}
