//! Python plugins: componentize-py against the gateway's own WIT and the
//! helper module `portcullis_policy` (`plugins/sdk-python/`), both compiled
//! into this binary and written to `DIR/.portcullis/sdk/` on every build.
//!
//! The toolchain is a virtualenv holding the pinned componentize-py, in
//! `$PORTCULLIS_TOOLCHAINS_DIR`, else `$XDG_CACHE_HOME/portcullis/toolchains`,
//! else `~/.cache/portcullis/toolchains`: one install per user and version
//! (about 70 MB), shared by every plugin, kept out of plugin directories
//! (nothing to commit or ignore), and a new pin installs beside the old one.
//! `PORTCULLIS_COMPONENTIZE_PY` names an installed componentize-py to use
//! instead (it must be the pinned version): for machines without an index.

use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use sha2::{Digest, Sha256};

use super::{wasm_stem, write_if_changed};

/// The componentize-py the builds use (PyPI).
pub const COMPONENTIZE_PY_VERSION: &str = "0.25.1";
/// The helper module plugins import.
const SDK_PY: &str = include_str!("../../../plugins/sdk-python/portcullis_policy.py");
/// The contract, as this gateway implements it.
const WIT: &str = include_str!("../../../wit/policy.wit");
/// Permission bits that let someone other than the owner write.
const GROUP_OTHER_WRITE: u32 = 0o022;

/// Writes the helper module and the WIT into `dir/.portcullis/sdk`.
pub fn write_sdk(dir: &Path) -> Result<PathBuf> {
    let sdk = dir.join(".portcullis").join("sdk");
    write_if_changed(&sdk.join("portcullis_policy.py"), SDK_PY)?;
    write_if_changed(&sdk.join("wit").join("policy.wit"), WIT)?;
    Ok(sdk)
}

/// Builds the plugin in `dir` into `dir/target/NAME.wasm`; a build whose
/// inputs have not changed since the last one is skipped.
pub fn build(dir: &Path) -> Result<PathBuf> {
    let dir = dir
        .canonicalize()
        .with_context(|| format!("cannot resolve {}", dir.display()))?;
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .context("the plugin directory has no name")?;
    let sdk = write_sdk(&dir)?;
    let out_dir = dir.join("target");
    let out = out_dir.join(format!("{}.wasm", wasm_stem(&name)));
    let stamp = out_dir.join(format!("{}.wasm.inputs", wasm_stem(&name)));
    let inputs = inputs_digest(&dir)?;
    if out.is_file() && std::fs::read_to_string(&stamp).is_ok_and(|s| s.trim() == inputs) {
        eprintln!("plugin build: {} is up to date", out.display());
        return Ok(out);
    }
    let componentize = toolchain()?;
    std::fs::create_dir_all(&out_dir)?;
    let tmp = out_dir.join(format!(".{}.wasm.{}", wasm_stem(&name), std::process::id()));
    let started = Instant::now();
    let output = Command::new(&componentize)
        .current_dir(&dir)
        // No __pycache__ in the user's directory from the build's imports.
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .arg("-d")
        .arg(sdk.join("wit"))
        .args(["-w", "plugin", "componentize", "app", "-p"])
        .arg(&dir)
        .arg("-p")
        .arg(&sdk)
        .arg("-o")
        .arg(&tmp)
        .output()
        .with_context(|| format!("cannot run {}", componentize.display()))?;
    if !output.status.success() {
        let _ = std::fs::remove_file(&tmp);
        eprint!("{}", String::from_utf8_lossy(&output.stdout));
        eprint!("{}", String::from_utf8_lossy(&output.stderr));
        bail!(
            "componentize-py could not build {} ({}); its output is above",
            dir.join("app.py").display(),
            output.status
        );
    }
    std::fs::rename(&tmp, &out)?;
    std::fs::write(&stamp, format!("{inputs}\n"))?;
    let size = std::fs::metadata(&out).map_or(0, |m| m.len());
    eprintln!(
        "plugin build: {} ({:.1} MB) in {:.1} s",
        out.display(),
        size as f64 / 1e6,
        started.elapsed().as_secs_f64()
    );
    Ok(out)
}

/// SHA-256 over what a build reads: every `.py` file under `dir` (by
/// relative path, skipping `target`, `.portcullis`, hidden directories and
/// `__pycache__`), the helper module, the WIT and the toolchain version.
fn inputs_digest(dir: &Path) -> Result<String> {
    let mut files = Vec::new();
    collect_py(dir, dir, &mut files)?;
    files.sort();
    let mut h = Sha256::new();
    for part in [COMPONENTIZE_PY_VERSION, SDK_PY, WIT] {
        h.update((part.len() as u64).to_le_bytes());
        h.update(part.as_bytes());
    }
    for rel in files {
        let bytes = std::fs::read(dir.join(&rel))?;
        let rel = rel.to_string_lossy();
        h.update((rel.len() as u64).to_le_bytes());
        h.update(rel.as_bytes());
        h.update((bytes.len() as u64).to_le_bytes());
        h.update(&bytes);
    }
    Ok(hex::encode(h.finalize()))
}

fn collect_py(root: &Path, dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    for entry in std::fs::read_dir(dir).with_context(|| format!("cannot read {}", dir.display()))? {
        let entry = entry?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        let kind = entry.file_type()?;
        if kind.is_dir() {
            let skipped = name.starts_with('.') || name == "target" || name == "__pycache__";
            if !skipped {
                collect_py(root, &entry.path(), out)?;
            }
        } else if name.ends_with(".py") {
            let path = entry.path();
            out.push(path.strip_prefix(root).unwrap_or(&path).to_owned());
        }
    }
    Ok(())
}

/// The pinned componentize-py: `$PORTCULLIS_COMPONENTIZE_PY`, else the one
/// in the toolchain directory, installed there first when missing.
fn toolchain() -> Result<PathBuf> {
    if let Some(bin) = std::env::var_os("PORTCULLIS_COMPONENTIZE_PY") {
        let bin = PathBuf::from(bin);
        check_version(&bin)?;
        return Ok(bin);
    }
    let root = toolchains_dir().context(
        "no toolchain directory: set PORTCULLIS_TOOLCHAINS_DIR (or HOME, or XDG_CACHE_HOME)",
    )?;
    let venv = root.join(format!("componentize-py-{COMPONENTIZE_PY_VERSION}"));
    let bin = venv.join("bin").join("componentize-py");
    if !installed(&venv) {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&root)
            .with_context(|| format!("cannot create {}", root.display()))?;
        trusted(&root)?;
        let _lock = InstallLock::take(&root)?;
        // Another build may have installed it while this one waited.
        if !installed(&venv)
            && let Err(e) = install(&venv)
        {
            let _ = std::fs::remove_dir_all(&venv);
            return Err(e);
        }
    }
    trusted(&root)?;
    trusted(&venv)?;
    Ok(bin)
}

/// The file an install writes last: a toolchain without it is half done.
const COMPLETE: &str = ".portcullis-complete";

fn installed(venv: &Path) -> bool {
    std::fs::read_to_string(venv.join(COMPLETE)).is_ok_and(|v| v.trim() == COMPONENTIZE_PY_VERSION)
}

/// An exclusive `flock` on the toolchain directory's lock file, released
/// when dropped (or when the process dies).
struct InstallLock {
    _file: std::fs::File,
}

impl InstallLock {
    fn take(root: &Path) -> Result<InstallLock> {
        use std::os::fd::AsRawFd;
        let path = root.join(".lock");
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .with_context(|| format!("cannot open {}", path.display()))?;
        // SAFETY: the descriptor is open for the duration of the call.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } != 0 {
            bail!(
                "cannot lock {}: {}",
                path.display(),
                std::io::Error::last_os_error()
            );
        }
        Ok(InstallLock { _file: file })
    }
}

fn toolchains_dir() -> Option<PathBuf> {
    if let Some(d) = std::env::var_os("PORTCULLIS_TOOLCHAINS_DIR") {
        return Some(PathBuf::from(d));
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
    Some(base.join("portcullis").join("toolchains"))
}

/// A toolchain directory runs code as this user: it must be this user's
/// and writable by no one else.
fn trusted(dir: &Path) -> Result<()> {
    let meta = std::fs::metadata(dir).with_context(|| format!("cannot read {}", dir.display()))?;
    // SAFETY: geteuid has no preconditions and cannot fail.
    let user = unsafe { libc::geteuid() };
    if meta.uid() != user || meta.mode() & GROUP_OTHER_WRITE != 0 {
        bail!(
            "{} is not used: it must be owned by uid {user} and writable by no one else \
             (owner {}, mode {:o})",
            dir.display(),
            meta.uid(),
            meta.mode() & 0o7777
        );
    }
    Ok(())
}

/// Installs componentize-py into a fresh virtualenv at `venv` (where it
/// stays: a virtualenv's scripts name their interpreter by absolute path).
fn install(venv: &Path) -> Result<()> {
    let python = std::env::var_os("PORTCULLIS_PYTHON").unwrap_or_else(|| "python3".into());
    let python_name = PathBuf::from(&python).display().to_string();
    let pkg = format!("componentize-py=={COMPONENTIZE_PY_VERSION}");
    let _ = std::fs::remove_dir_all(venv);
    eprintln!(
        "plugin build: installing {pkg} into {} (once per user and version)",
        venv.display()
    );
    let started = Instant::now();
    let venv_out = match Command::new(&python)
        .arg("-m")
        .arg("venv")
        .arg(venv)
        .output()
    {
        Ok(o) => o,
        Err(e) => bail!(
            "cannot run {python_name} ({e}): Python 3.10 or later is needed to build Python \
             plugins. Install python3 (Debian: apt-get install python3 python3-venv), or set \
             PORTCULLIS_PYTHON to an interpreter, then run this again."
        ),
    };
    if !venv_out.status.success() {
        bail!(
            "{python_name} -m venv failed: {}\nInstall the venv module (Debian: apt-get install \
             python3-venv), then run this again.",
            String::from_utf8_lossy(&venv_out.stderr).trim()
        );
    }
    let pip = Command::new(venv.join("bin").join("python"))
        .args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "--no-input",
            &pkg,
        ])
        .output()
        .context("cannot run pip")?;
    if !pip.status.success() {
        bail!(
            "could not install {pkg} with pip:\n{}\nWithout access to a package index, copy the \
             componentize-py {COMPONENTIZE_PY_VERSION} wheel for this platform here and run\n  \
             {python_name} -m venv DIR && DIR/bin/pip install componentize_py-{COMPONENTIZE_PY_VERSION}-*.whl\n\
             then set PORTCULLIS_COMPONENTIZE_PY=DIR/bin/componentize-py and run this again.",
            String::from_utf8_lossy(&pip.stderr).trim(),
        );
    }
    check_version(&venv.join("bin").join("componentize-py"))?;
    std::fs::write(venv.join(COMPLETE), format!("{COMPONENTIZE_PY_VERSION}\n"))?;
    eprintln!(
        "plugin build: {pkg} installed in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Refuses a componentize-py other than the pinned version.
fn check_version(bin: &Path) -> Result<()> {
    let out = Command::new(bin)
        .arg("--version")
        .output()
        .with_context(|| format!("cannot run {}", bin.display()))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let want = format!("componentize-py {COMPONENTIZE_PY_VERSION}");
    if !out.status.success() || text.trim() != want {
        bail!(
            "{} is {:?}, not {want}: install the pinned version",
            bin.display(),
            text.trim()
        );
    }
    Ok(())
}
