//! Builds the standard plugins (the `plugins/` workspace) for
//! `wasm32-wasip2` and embeds them in the binary as `builtin:NAME`.
//! Tests and the benchmark find every built component (the test plugins
//! `noop` and `behave` too, which are not embedded) through
//! `PORTCULLIS_PLUGIN_DIR`.

// A build script and test harnesses fail by panicking: the crate's panic
// lints (Cargo.toml `[lints]`) are for the code that serves traffic.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::path::{Path, PathBuf};
use std::process::Command;

/// Plugins embedded in the binary: (name in policies, crate's file stem).
const BUILTINS: &[(&str, &str)] = &[
    ("deny-tools", "deny_tools"),
    ("authz", "authz"),
    ("schema-guard", "schema_guard"),
    ("cedar", "cedar"),
    ("rego", "rego"),
    ("redact", "redact"),
];
const TARGET: &str = "wasm32-wasip2";

fn main() {
    let root =
        PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let plugins = root.join("plugins");
    for p in [
        ".cargo",
        "Cargo.toml",
        "Cargo.lock",
        "canon",
        "sdk",
        "deny-tools",
        "authz",
        "schema-guard",
        "cedar",
        "rego",
        "redact",
        "test-plugins",
    ] {
        println!("cargo:rerun-if-changed={}", plugins.join(p).display());
    }
    println!("cargo:rerun-if-changed={}", root.join("wit").display());

    let dest =
        PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR")).join("builtins.rs");
    // cargo-fuzz builds with `--cfg fuzzing` on nightly: the fuzz targets
    // exercise parsers, not plugins, and nightly need not have the wasm
    // target, so that build embeds no plugins.
    if std::env::var_os("CARGO_CFG_FUZZING").is_some() {
        std::fs::write(dest, "pub static BUILTINS: &[(&str, &[u8])] = &[];\n")
            .expect("write builtins.rs");
        return;
    }
    let target_dir = root.join("target").join("plugins");
    let out = target_dir.join(TARGET).join("release");
    if let Err(e) = build(&plugins, &target_dir) {
        panic!("{e}");
    }
    let mut src = String::from(
        "/// Plugins compiled into this binary.\npub static BUILTINS: &[(&str, &[u8])] = &[\n",
    );
    for (name, stem) in BUILTINS {
        let wasm = out.join(format!("{stem}.wasm"));
        assert!(wasm.exists(), "{} was not built", wasm.display());
        src.push_str(&format!(
            "    ({name:?}, include_bytes!({:?})),\n",
            wasm.display().to_string()
        ));
    }
    src.push_str("];\n");
    std::fs::write(dest, src).expect("write builtins.rs");
    println!("cargo:rustc-env=PORTCULLIS_PLUGIN_DIR={}", out.display());
}

fn build(plugins: &Path, target_dir: &Path) -> Result<(), String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let run = || {
        Command::new(&cargo)
            .args([
                "build",
                "--release",
                "--locked",
                "--target",
                TARGET,
                "--manifest-path",
            ])
            .arg(plugins.join("Cargo.toml"))
            .arg("--target-dir")
            .arg(target_dir)
            // Cargo reads `.cargo/config.toml` from the working directory:
            // the plugins' own (target features) applies from there.
            .current_dir(plugins)
            // The outer build's flags are for the host, not for wasm.
            .env_remove("CARGO_ENCODED_RUSTFLAGS")
            .env_remove("RUSTFLAGS")
            .env_remove("CARGO_TARGET_DIR")
            .env_remove("CARGO_BUILD_TARGET")
            .env_remove("RUSTC_WORKSPACE_WRAPPER")
            .status()
    };
    let status = run().map_err(|e| format!("cannot run {cargo}: {e}"))?;
    if status.success() {
        return Ok(());
    }
    // The most common cause: the target is missing. Try to add it once.
    let added = Command::new("rustup")
        .args(["target", "add", TARGET])
        .status()
        .is_ok_and(|s| s.success());
    if added && run().is_ok_and(|s| s.success()) {
        return Ok(());
    }
    Err(format!(
        "building the plugins in {} failed. If the {TARGET} target is missing, run: rustup target add {TARGET}",
        plugins.display()
    ))
}
