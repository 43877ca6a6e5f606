//! `portcullis plugin new`: the templates, compiled into the binary from
//! `plugins/templates/`, with `__NAME__`, `__WASM__` and `__SDK__` filled in.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use super::{Lang, wasm_stem, write_if_changed};

const PYTHON: &[(&str, &str)] = &[
    (
        "app.py",
        include_str!("../../../plugins/templates/python/app.py"),
    ),
    (
        "policy.toml",
        include_str!("../../../plugins/templates/python/policy.toml"),
    ),
    (
        "policy.cases.toml",
        include_str!("../../../plugins/templates/python/policy.cases.toml"),
    ),
    (
        ".gitignore",
        include_str!("../../../plugins/templates/python/gitignore"),
    ),
];

const RUST: &[(&str, &str)] = &[
    (
        "Cargo.toml",
        include_str!("../../../plugins/templates/rust/Cargo.toml"),
    ),
    (
        "src/lib.rs",
        include_str!("../../../plugins/templates/rust/src/lib.rs"),
    ),
    (
        "policy.toml",
        include_str!("../../../plugins/templates/rust/policy.toml"),
    ),
    (
        "policy.cases.toml",
        include_str!("../../../plugins/templates/rust/policy.cases.toml"),
    ),
    (
        ".gitignore",
        include_str!("../../../plugins/templates/rust/gitignore"),
    ),
    // The SDK's dependency versions, so the first build resolves like the
    // standard plugins' and works from a populated Cargo cache offline.
    ("Cargo.lock", include_str!("../../../plugins/Cargo.lock")),
];

/// Longest plugin name: it becomes a policy key, a file and a crate name.
const MAX_NAME_LEN: usize = 64;

/// Whether `name` can be a plugin's name: lowercase ASCII letter, then
/// lowercase letters, digits and single `-` (a crate name, a TOML bare key
/// and a file name alike).
fn valid_name(name: &str) -> bool {
    let b = name.as_bytes();
    !b.is_empty()
        && b.len() <= MAX_NAME_LEN
        && b.first().is_some_and(u8::is_ascii_lowercase)
        && !name.ends_with('-')
        && !name.contains("--")
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
}

/// The SDK crate a Rust template depends on: `--sdk`, else the checkout
/// this binary was built from.
fn rust_sdk(sdk: Option<&Path>) -> Result<PathBuf> {
    let path = match sdk {
        Some(p) => p.to_owned(),
        None => PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/plugins/sdk")),
    };
    if !path.join("Cargo.toml").is_file() {
        bail!(
            "the Rust plugin SDK is not at {} (pass --sdk PATH/TO/portcullis/plugins/sdk)",
            path.display()
        );
    }
    path.canonicalize()
        .with_context(|| format!("cannot resolve {}", path.display()))
}

/// Writes the `lang` template for plugin `name` into `dir`.
pub fn write(name: &str, lang: Lang, dir: &Path, sdk: Option<&Path>) -> Result<()> {
    if !valid_name(name) {
        bail!(
            "plugin name {name:?}: use lowercase letters, digits and single '-', starting with a letter (at most {MAX_NAME_LEN})"
        );
    }
    if dir.exists()
        && std::fs::read_dir(dir)
            .with_context(|| format!("cannot read {}", dir.display()))?
            .next()
            .is_some()
    {
        bail!("{} exists and is not empty", dir.display());
    }
    let sdk = match lang {
        Lang::Rust => rust_sdk(sdk)?.display().to_string(),
        Lang::Python => String::new(),
    };
    let files = match lang {
        Lang::Python => PYTHON,
        Lang::Rust => RUST,
    };
    let stem = wasm_stem(name);
    for (file, text) in files {
        let text = text
            .replace("__NAME__", name)
            .replace("__WASM__", &stem)
            .replace("__SDK__", &sdk);
        write_if_changed(&dir.join(file), &text)?;
    }
    if lang == Lang::Python {
        super::python::write_sdk(dir)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::valid_name;

    #[test]
    fn plugin_names_are_crate_file_and_key_safe() {
        for ok in ["a", "my-policy", "change-control2"] {
            assert!(valid_name(ok), "{ok}");
        }
        for bad in [
            "", "-a", "a-", "a--b", "My", "1a", "a_b", "a.b", "../x", "a b", "é",
        ] {
            assert!(!valid_name(bad), "{bad}");
        }
        assert!(!valid_name(&"a".repeat(65)));
    }
}
