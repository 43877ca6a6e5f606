//! Rust plugins: `cargo build --release --target wasm32-wasip2` in the
//! plugin's directory; the component is the cdylib Cargo reports.

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};

/// The target plugins are built for (recent rustc links its cdylibs into
/// components directly).
const TARGET: &str = "wasm32-wasip2";

/// Builds the crate in `dir`; returns the path of its component.
pub fn build(dir: &Path) -> Result<PathBuf> {
    let dir = dir
        .canonicalize()
        .with_context(|| format!("cannot resolve {}", dir.display()))?;
    target_installed(&dir)?;
    let manifest = dir.join("Cargo.toml");
    let mut child = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
        .current_dir(&dir)
        .args(["build", "--release", "--target", TARGET])
        .arg("--manifest-path")
        .arg(&manifest)
        .arg("--message-format=json-render-diagnostics")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .context("cannot run cargo (is Rust installed? https://rustup.rs)")?;
    let mut wasm = Vec::new();
    if let Some(stdout) = child.stdout.take() {
        for line in std::io::BufReader::new(stdout).lines() {
            let line = line?;
            let Ok(msg) = serde_json::from_str::<serde_json::Value>(&line) else {
                continue;
            };
            let field = |k: &str| msg.get(k).and_then(serde_json::Value::as_str);
            if field("reason") != Some("compiler-artifact")
                || field("manifest_path") != Some(&*manifest.to_string_lossy())
            {
                continue;
            }
            let files = msg.get("filenames").and_then(serde_json::Value::as_array);
            for f in files.into_iter().flatten() {
                if let Some(f) = f.as_str().filter(|f| f.ends_with(".wasm")) {
                    wasm.push(PathBuf::from(f));
                }
            }
        }
    }
    let status = child.wait()?;
    if !status.success() {
        bail!("cargo build failed ({status}); its output is above");
    }
    match wasm.as_slice() {
        [one] => Ok(one.clone()),
        [] => bail!(
            "{} built no .wasm: a plugin crate needs `[lib] crate-type = [\"cdylib\"]`",
            manifest.display()
        ),
        _ => bail!("{} built several components: {wasm:?}", manifest.display()),
    }
}

/// Refuses early, and says what to run, when rustup manages the toolchain
/// and the target is missing.
fn target_installed(dir: &Path) -> Result<()> {
    let Ok(out) = Command::new("rustup")
        .current_dir(dir)
        .args(["target", "list", "--installed"])
        .output()
    else {
        // No rustup: cargo's own error will have to do.
        return Ok(());
    };
    let installed = String::from_utf8_lossy(&out.stdout);
    if out.status.success() && !installed.lines().any(|l| l.trim() == TARGET) {
        bail!("the {TARGET} target is not installed: run `rustup target add {TARGET}`");
    }
    Ok(())
}
