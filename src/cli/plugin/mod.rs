//! `portcullis plugin`: start a policy plugin from a template (Python or
//! Rust) and build it into a component a policy can load with
//! `source = "PATH"`.
//!
//! - [`new`]: the templates (kept as files under `plugins/templates/`).
//! - [`python`]: componentize-py, installed into a versioned toolchain
//!   directory on first use, and the build.
//! - [`rust`]: `cargo build --release --target wasm32-wasip2`.

use std::path::{Path, PathBuf};

use anyhow::{Result, bail};

mod new;
mod python;
mod rust;

/// A plugin's language.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Lang {
    Python,
    Rust,
}

/// `portcullis plugin`'s subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Write a working plugin template, with a policy and its test cases.
    New {
        /// The plugin's name: lowercase letters, digits and `-`.
        name: String,
        #[arg(long, value_enum)]
        lang: Lang,
        /// Where to write it (default: ./NAME); must not exist or be empty.
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Rust only: the portcullis-plugin-sdk crate to depend on (default:
        /// plugins/sdk of the checkout this binary was built from).
        #[arg(long, value_name = "PATH")]
        sdk: Option<PathBuf>,
    },
    /// Build the plugin in DIR; prints the component's path.
    Build {
        /// The plugin's directory (app.py: Python; Cargo.toml: Rust).
        #[arg(default_value = ".")]
        dir: PathBuf,
    },
}

/// Runs one `plugin` subcommand.
pub fn run(command: Command) -> Result<()> {
    match command {
        Command::New {
            name,
            lang,
            dir,
            sdk,
        } => {
            let dir = dir.unwrap_or_else(|| PathBuf::from(&name));
            new::write(&name, lang, &dir, sdk.as_deref())?;
            let d = dir.display();
            let policy = dir.join("policy.toml");
            println!("wrote a {lang:?} plugin in {d}; next:");
            println!("  portcullis plugin build {d}");
            println!("  portcullis policy test {}", policy.display());
            Ok(())
        }
        Command::Build { dir } => {
            let wasm = match detect(&dir)? {
                Lang::Python => python::build(&dir)?,
                Lang::Rust => rust::build(&dir)?,
            };
            println!("{}", wasm.display());
            Ok(())
        }
    }
}

/// The language of the plugin in `dir`, by the file that drives its build.
fn detect(dir: &Path) -> Result<Lang> {
    let cargo = dir.join("Cargo.toml").is_file();
    let app = dir.join("app.py").is_file();
    match (cargo, app) {
        (true, false) => Ok(Lang::Rust),
        (false, true) => Ok(Lang::Python),
        (true, true) => bail!(
            "{}: both Cargo.toml and app.py: one plugin per directory",
            dir.display()
        ),
        (false, false) => bail!(
            "{}: no plugin here (a Python plugin has app.py, a Rust one Cargo.toml; \
             `portcullis plugin new NAME --lang python|rust` writes one)",
            dir.display()
        ),
    }
}

/// The file stem of a plugin's component: its directory's name, `-` as
/// `_` (as Cargo names a cdylib).
fn wasm_stem(name: &str) -> String {
    name.replace('-', "_")
}

/// Writes `contents` to `path` unless it already holds exactly that (its
/// time stamp then stays, and so does an editor's view of it).
fn write_if_changed(path: &Path, contents: &str) -> Result<()> {
    if std::fs::read_to_string(path).is_ok_and(|old| old == contents) {
        return Ok(());
    }
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(path, contents)
        .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))
}
