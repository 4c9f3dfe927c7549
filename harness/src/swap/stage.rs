//! Stage: copy a built artifact to a private, versioned file before loading.
//!
//! Never load from `target/`: cargo rewrites its outputs in place, and a
//! mapped file rewritten in place crashes the process (SIGSEGV on overwrite,
//! SIGBUS on truncate); dlopen also caches by path, so reopening the same
//! path returns the stale library. Every load is of a fresh copy with a new
//! name (`NAME-vN-HASH.so`; never a hard link: the same inode is the same
//! library) in a directory only we can read (0700), made read-only, and
//! hashed again right before dlopen.

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Read};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Instant;

use xxhash_rust::xxh3::Xxh3;

use crate::events::{self, emit};
use crate::swap::version_files::{self, VersionFiles};

/// A staged copy of a module, ready to load.
#[derive(Clone, Debug, PartialEq)]
pub struct Staged {
    /// Package name, e.g. `kernel-cpu`.
    pub module: String,
    /// 1 for the first copy of this module in this session, then 2, 3, ...
    pub version: u64,
    /// `kernel-cpu-v3`.
    pub label: String,
    /// The private copy.
    pub path: PathBuf,
    /// The artifact it was copied from.
    pub source: PathBuf,
    /// xxh3-128 of the contents, hex.
    pub hash: String,
    pub bytes: u64,
    pub ms: f64,
    /// The version's kernel declarations and source files, read when it
    /// was staged: immutable for the life of the version.
    pub files: VersionFiles,
    /// Hash of the library, the declarations and the sources together.
    pub version_hash: String,
    /// Where `files` were written next to the library (read-only), for a
    /// worker process to load the same version.
    pub files_path: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum StageError {
    #[error("cannot stage {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("staged file {path} changed after it was copied (hash {found}, staged as {expected})")]
    Changed {
        path: PathBuf,
        expected: String,
        found: String,
    },
    #[error("cannot stage {module}: the kernel declarations do not parse:\n{}", version_files::describe_errors(.errors))]
    Declarations {
        module: String,
        errors: Vec<kiln_decl::DeclError>,
    },
}

/// The private staging directory of one host process.
#[derive(Debug)]
pub struct StagingDir {
    dir: PathBuf,
    versions: Mutex<BTreeMap<String, u64>>,
    /// The workspace whose declarations and sources are staged with each
    /// version (see [`StagingDir::for_workspace`]).
    workspace: Option<PathBuf>,
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> StageError + '_ {
    move |source| StageError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Hash of a file's contents (xxh3-128, hex).
pub fn hash_file(path: &Path) -> io::Result<(String, u64)> {
    let mut file = fs::File::open(path)?;
    let mut hasher = Xxh3::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0u64;
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        total += n as u64;
    }
    Ok((format!("{:032x}", hasher.digest128()), total))
}

fn pid_alive(pid: u32) -> bool {
    Path::new("/proc").join(pid.to_string()).exists()
}

impl StagingDir {
    /// Creates `root/<pid>` with mode 0700, after removing directories left
    /// under `root` by kiln processes that no longer run (a crash leaves
    /// them behind).
    pub fn create(root: &Path) -> Result<StagingDir, StageError> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(root)
            .map_err(io_err(root))?;
        Self::remove_stale(root);
        let dir = root.join(std::process::id().to_string());
        if dir.exists() {
            // Our pid was reused from a dead process: its files are stale.
            remove_dir_writable(&dir);
        }
        fs::DirBuilder::new()
            .mode(0o700)
            .create(&dir)
            .map_err(io_err(&dir))?;
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o700)).map_err(io_err(&dir))?;
        Ok(StagingDir {
            dir,
            versions: Mutex::new(BTreeMap::new()),
            workspace: None,
        })
    }

    /// Stages versions with the declarations and sources of `workspace`
    /// (without it, the workspace is found from the artifact's path, then
    /// from the one the host was built in).
    pub fn for_workspace(mut self, workspace: &Path) -> StagingDir {
        self.workspace = Some(workspace.to_path_buf());
        self
    }

    /// The workspace a version of `artifact` takes its declarations from.
    pub fn workspace_for(&self, artifact: &Path) -> PathBuf {
        self.workspace.clone().unwrap_or_else(|| {
            crate::workspace::find_workspace_root(artifact)
                .unwrap_or_else(crate::workspace::built_workspace_root)
        })
    }

    fn remove_stale(root: &Path) {
        let Ok(entries) = fs::read_dir(root) else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(pid) = name.to_str().and_then(|s| s.parse::<u32>().ok()) else {
                continue;
            };
            if pid != std::process::id() && !pid_alive(pid) {
                emit!(
                    tracing::Level::INFO,
                    events::StaleStageRemoved {
                        dir: entry.path().display().to_string(),
                    },
                    "removed staging dir of dead process {pid}"
                );
                remove_dir_writable(&entry.path());
            }
        }
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// Stages `artifact` with the declarations and sources the workspace
    /// holds now (see [`StagingDir::stage_with`]). Declarations that do not
    /// parse are an error naming file and line: nothing is staged.
    pub fn stage(&self, module: &str, artifact: &Path) -> Result<Staged, StageError> {
        let root = self.workspace_for(artifact);
        let files =
            VersionFiles::read(&root, module).map_err(|errors| StageError::Declarations {
                module: module.to_string(),
                errors,
            })?;
        self.stage_with(module, artifact, files)
    }

    /// Copies `artifact` to `NAME-vN-HASH.so` in the staging directory
    /// (write to a temporary name, then rename: a file is never visible
    /// half-written), makes the copy read-only, and keeps `files` (the
    /// version's declarations and sources) with it.
    pub fn stage_with(
        &self,
        module: &str,
        artifact: &Path,
        files: VersionFiles,
    ) -> Result<Staged, StageError> {
        let start = Instant::now();
        let version = {
            let mut versions = self.versions.lock().unwrap_or_else(|e| e.into_inner());
            let v = versions.entry(module.to_string()).or_insert(0);
            *v += 1;
            *v
        };
        let label = format!("{module}-v{version}");
        let tmp = self.dir.join(format!(".{label}.partial"));
        fs::copy(artifact, &tmp).map_err(io_err(artifact))?;
        let (hash, bytes) = hash_file(&tmp).map_err(io_err(&tmp))?;
        let path = self.dir.join(format!("{label}-{}.so", &hash[..16]));
        fs::set_permissions(&tmp, fs::Permissions::from_mode(0o500)).map_err(io_err(&tmp))?;
        fs::rename(&tmp, &path).map_err(io_err(&path))?;
        let version_hash = format!("{}-{}", &hash[..16], files.hash());
        let files_path = self.dir.join(format!("{label}-{}.files.json", &hash[..16]));
        files
            .write_staged(&files_path)
            .map_err(io_err(&files_path))?;
        let staged = Staged {
            module: module.to_string(),
            version,
            label,
            path,
            source: artifact.to_path_buf(),
            hash,
            bytes,
            ms: start.elapsed().as_secs_f64() * 1e3,
            files,
            version_hash,
            files_path,
        };
        emit!(
            tracing::Level::INFO,
            events::Staged {
                module: staged.module.clone(),
                version: staged.version,
                bytes: staged.bytes,
                ms: staged.ms,
            },
            "staged {} ({} KiB, {} kernel declarations, {} source files) in {:.1} ms",
            staged.label,
            staged.bytes / 1024,
            staged.files.kernels.len(),
            staged.files.sources.len(),
            staged.ms
        );
        Ok(staged)
    }

    /// Removes one staged version (after its library was closed).
    pub fn remove(&self, staged: &Staged) {
        let _ = fs::remove_file(&staged.path);
        let _ = fs::remove_file(&staged.files_path);
    }
}

impl Staged {
    /// Checks that the file still has the hash it was staged with.
    pub fn verify(&self) -> Result<(), StageError> {
        let (found, _) = hash_file(&self.path).map_err(io_err(&self.path))?;
        if found != self.hash {
            return Err(StageError::Changed {
                path: self.path.clone(),
                expected: self.hash.clone(),
                found,
            });
        }
        Ok(())
    }
}

fn remove_dir_writable(dir: &Path) {
    // Staged files are read-only; their directory is writable by us, which
    // is all unlink needs.
    if let Err(e) = fs::remove_dir_all(dir) {
        tracing::warn!("could not remove staging dir {}: {e}", dir.display());
    }
}

impl Drop for StagingDir {
    fn drop(&mut self) {
        remove_dir_writable(&self.dir);
    }
}
