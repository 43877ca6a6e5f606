//! The on-disk cache of compiled plugins, and why its files are trusted.
//!
//! A cached artifact is native code: deserializing one runs it outside the
//! Wasm sandbox. So the cache directory is created `0700`, and it is used
//! only when it is owned by this process's user and not writable by its
//! group or others; each artifact is opened without following symlinks and
//! checked the same way, on the open file, before a byte is read. Artifacts
//! are written to a `0600` temporary file in the same directory and renamed
//! into place, so a reader never sees half of one.
//!
//! A refused directory or artifact is not an error: the plugin is compiled
//! in memory instead (the caller logs why). The cache only saves start-up
//! time, and a refusal then costs that time and nothing else; failing the
//! load would turn a permissions slip in a cache directory into an outage.

use std::fs::{DirBuilder, File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// Mode of a cache directory this process creates.
const DIR_MODE: u32 = 0o700;
/// Mode of an artifact this process writes.
const FILE_MODE: u32 = 0o600;
/// Permission bits that let someone other than the owner write.
const GROUP_OTHER_WRITE: u32 = 0o022;

/// Why the cache directory, or one artifact in it, is not trusted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CacheRefusal {
    #[error("owned by uid {owner}, not by this process's uid {user}")]
    Owner { owner: u32, user: u32 },
    #[error("writable by its group or others (mode {0:o})")]
    Writable(u32),
    #[error("not a directory")]
    NotDirectory,
    #[error("not a regular file (a symlink, directory or device)")]
    NotRegularFile,
    #[error("{0}")]
    Io(String),
}

impl From<std::io::Error> for CacheRefusal {
    fn from(e: std::io::Error) -> Self {
        CacheRefusal::Io(e.to_string())
    }
}

/// What the checks read from a file's metadata; a type of its own so the
/// checks can be tested on owners a test cannot create.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Facts {
    pub owner: u32,
    pub mode: u32,
    pub kind: FileKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    Directory,
    Regular,
    /// A symlink, device, socket or FIFO.
    Other,
}

impl Facts {
    /// The facts of `meta` (from `stat`, `lstat` or `fstat`).
    pub fn of(meta: &std::fs::Metadata) -> Facts {
        let t = meta.file_type();
        Facts {
            owner: meta.uid(),
            mode: meta.mode() & 0o7777,
            kind: if t.is_dir() {
                FileKind::Directory
            } else if t.is_file() {
                FileKind::Regular
            } else {
                FileKind::Other
            },
        }
    }
}

/// The effective uid of this process: the owner of what it creates.
fn current_user() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// Trusted when of `kind`, owned by `user`, and not writable by group or
/// others.
pub fn check(facts: Facts, user: u32, kind: FileKind) -> Result<(), CacheRefusal> {
    if facts.kind != kind {
        return Err(match kind {
            FileKind::Directory => CacheRefusal::NotDirectory,
            _ => CacheRefusal::NotRegularFile,
        });
    }
    if facts.owner != user {
        return Err(CacheRefusal::Owner {
            owner: facts.owner,
            user,
        });
    }
    if facts.mode & GROUP_OTHER_WRITE != 0 {
        return Err(CacheRefusal::Writable(facts.mode));
    }
    Ok(())
}

/// A cache directory that passed [`check`] when it was opened.
#[derive(Debug)]
pub struct CacheDir {
    dir: PathBuf,
}

impl CacheDir {
    /// Creates `dir` (and missing parents) with mode `0700`, then checks
    /// it. The check runs on every open: a directory can change between
    /// runs, and a symlink in its place is judged by what it points to.
    pub fn open(dir: &Path) -> Result<CacheDir, CacheRefusal> {
        DirBuilder::new()
            .recursive(true)
            .mode(DIR_MODE)
            .create(dir)?;
        check(
            Facts::of(&std::fs::metadata(dir)?),
            current_user(),
            FileKind::Directory,
        )?;
        Ok(CacheDir {
            dir: dir.to_owned(),
        })
    }

    fn path(&self, key: &str) -> PathBuf {
        self.dir.join(format!("{key}.cwasm"))
    }

    /// The bytes of artifact `key`: `None` when there is none, an error
    /// when the file is there but not trusted. The file is opened without
    /// following a symlink and checked through the open descriptor, so
    /// what is read is what was checked.
    pub fn read(&self, key: &str) -> Result<Option<Vec<u8>>, CacheRefusal> {
        let opened = OpenOptions::new()
            .read(true)
            // O_NONBLOCK: a FIFO in its place cannot stall the open.
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
            .open(self.path(key));
        let mut file = match opened {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
                return Err(CacheRefusal::NotRegularFile);
            }
            Err(e) => return Err(e.into()),
        };
        check(
            Facts::of(&file.metadata()?),
            current_user(),
            FileKind::Regular,
        )?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)?;
        Ok(Some(bytes))
    }

    /// Stores artifact `key`: a new `0600` file in the directory, renamed
    /// over the final name once complete (the rename also replaces a
    /// refused file or symlink there, never what it points to).
    pub fn write(&self, key: &str, bytes: &[u8]) -> Result<(), CacheRefusal> {
        let tmp = self
            .dir
            .join(format!("{key}.tmp-{}", crate::secret::random_id()));
        let written = (|| {
            let mut f: File = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(FILE_MODE)
                .custom_flags(libc::O_NOFOLLOW)
                .open(&tmp)?;
            f.write_all(bytes)?;
            f.sync_data()?;
            std::fs::rename(&tmp, self.path(key))
        })();
        if written.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        Ok(written?)
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn scratch() -> PathBuf {
        let dir = std::env::temp_dir().join(format!("pc-cache-{}", crate::secret::random_id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn chmod(path: &Path, mode: u32) {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    fn mode(path: &Path) -> u32 {
        std::fs::symlink_metadata(path).unwrap().mode() & 0o7777
    }

    #[test]
    fn a_fresh_cache_dir_is_created_private() {
        let dir = scratch().join("portcullis").join("plugins");
        CacheDir::open(&dir).unwrap();
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(dir.parent().unwrap()), 0o700);
    }

    #[test]
    fn a_group_or_other_writable_cache_dir_is_refused() {
        let dir = scratch();
        for (m, trusted) in [
            (0o700, true),
            (0o755, true),
            (0o770, false),
            (0o707, false),
            (0o777, false),
        ] {
            chmod(&dir, m);
            let opened = CacheDir::open(&dir);
            if trusted {
                assert!(opened.is_ok(), "{m:o}: {opened:?}");
            } else {
                assert_eq!(opened.unwrap_err(), CacheRefusal::Writable(m), "{m:o}");
            }
        }
    }

    #[test]
    fn a_foreign_owner_is_refused() {
        let user = 1000;
        let facts = |owner, mode, kind| Facts { owner, mode, kind };
        for kind in [FileKind::Directory, FileKind::Regular] {
            assert_eq!(check(facts(user, 0o700, kind), user, kind), Ok(()));
            assert_eq!(
                check(facts(0, 0o700, kind), user, kind),
                Err(CacheRefusal::Owner { owner: 0, user })
            );
            assert_eq!(
                check(facts(user + 1, 0o600, kind), user, kind),
                Err(CacheRefusal::Owner {
                    owner: user + 1,
                    user
                })
            );
        }
        assert_eq!(
            check(facts(user, 0o777, FileKind::Other), user, FileKind::Regular),
            Err(CacheRefusal::NotRegularFile)
        );
        assert_eq!(
            check(
                facts(user, 0o600, FileKind::Regular),
                user,
                FileKind::Directory
            ),
            Err(CacheRefusal::NotDirectory)
        );
    }

    /// The same refusal on a real directory and file, which needs root to
    /// give them away.
    #[test]
    fn a_cache_dir_or_artifact_owned_by_someone_else_is_refused() {
        if current_user() != 0 {
            eprintln!("skipped: giving a file to another user needs root");
            return;
        }
        let nobody = 65534;
        let dir = scratch();
        let cache = CacheDir::open(&dir).unwrap();
        cache.write("k", b"artifact").unwrap();
        std::os::unix::fs::lchown(dir.join("k.cwasm"), Some(nobody), None).unwrap();
        assert_eq!(
            cache.read("k"),
            Err(CacheRefusal::Owner {
                owner: nobody,
                user: 0
            })
        );
        std::os::unix::fs::lchown(&dir, Some(nobody), None).unwrap();
        assert_eq!(
            CacheDir::open(&dir).unwrap_err(),
            CacheRefusal::Owner {
                owner: nobody,
                user: 0
            }
        );
    }

    #[test]
    fn only_private_regular_artifacts_are_read() {
        let dir = scratch();
        let cache = CacheDir::open(&dir).unwrap();
        assert_eq!(cache.read("absent"), Ok(None));

        cache.write("good", b"artifact").unwrap();
        assert_eq!(mode(&dir.join("good.cwasm")), 0o600);
        assert_eq!(cache.read("good"), Ok(Some(b"artifact".to_vec())));

        chmod(&dir.join("good.cwasm"), 0o620);
        assert_eq!(cache.read("good"), Err(CacheRefusal::Writable(0o620)));

        // A symlink to a trusted artifact is still refused.
        cache.write("target", b"artifact").unwrap();
        std::os::unix::fs::symlink(dir.join("target.cwasm"), dir.join("link.cwasm")).unwrap();
        assert_eq!(cache.read("link"), Err(CacheRefusal::NotRegularFile));

        std::fs::create_dir(dir.join("sub.cwasm")).unwrap();
        assert_eq!(cache.read("sub"), Err(CacheRefusal::NotRegularFile));
    }

    #[test]
    fn a_write_replaces_a_planted_symlink_and_leaves_no_temporary_file() {
        let dir = scratch();
        let cache = CacheDir::open(&dir).unwrap();
        let elsewhere = scratch().join("victim");
        std::fs::write(&elsewhere, b"untouched").unwrap();
        std::os::unix::fs::symlink(&elsewhere, dir.join("k.cwasm")).unwrap();
        cache.write("k", b"artifact").unwrap();
        assert_eq!(std::fs::read(&elsewhere).unwrap(), b"untouched");
        assert_eq!(cache.read("k"), Ok(Some(b"artifact".to_vec())));
        let names: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["k.cwasm"]);
    }
}
