//! Which kernel modules a changed file belongs to.
//!
//! [`ModuleGraph::discover`] asks `cargo metadata` for the workspace: the
//! kernel modules are the members under `kernels/` whose lib target is a
//! `cdylib`. For each it records the local path packages it depends on
//! (transitively, normal and build dependencies), except the contract crate
//! `shared-state`, which is recorded once as the contract: a change there means
//! the host itself must be rebuilt and restarted.
//!
//! [`ModuleGraph::classify`] maps one changed path to the modules that must be
//! rebuilt, to "the contract changed", or to "ignored" (build output, VCS
//! internals, editor swap and temp files, files that are not sources).

use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::fmt;
use std::path::{Component, Path, PathBuf};

use cargo_metadata::{CrateType, DependencyKind, Metadata, MetadataCommand, PackageId};

/// Package name of the contract crate.
pub const CONTRACT_PACKAGE: &str = "shared-state";

/// The workspace directory holding the kernel modules.
pub const KERNELS_DIR: &str = "kernels";

/// One kernel module: a workspace member under `kernels/` built as a `cdylib`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KernelModule {
    /// Cargo package name, what `cargo build -p` takes (`kernel-cpu`).
    pub package: String,
    /// Backend name: the module's directory name (`cpu`).
    pub backend: String,
    /// The package directory (holds its `Cargo.toml`).
    pub dir: PathBuf,
    /// The package's `Cargo.toml`.
    pub manifest_path: PathBuf,
    /// The package id as `cargo metadata` and cargo's JSON messages spell it.
    pub package_id: String,
    /// Directories of the local path packages this module uses (transitively),
    /// the contract excluded.
    pub path_deps: Vec<PathBuf>,
}

impl KernelModule {
    /// The directories whose sources this module is built from: its own and
    /// its path dependencies'.
    pub fn source_dirs(&self) -> impl Iterator<Item = &Path> {
        std::iter::once(self.dir.as_path()).chain(self.path_deps.iter().map(PathBuf::as_path))
    }
}

/// What a changed path means for the running harness.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Classified {
    /// These modules (package names) must be rebuilt.
    Modules(BTreeSet<String>),
    /// The contract crate (or a path package it uses) changed: modules built
    /// against it no longer match the host, which must be rebuilt and restarted.
    Contract,
    /// A kernel declaration (`kernels/declarations/*.toml`): data staged with
    /// every version, never the contract; a change is a re-stage and a swap.
    Declarations,
    /// A file watched for itself (the workload given with `--workload`).
    Watched,
    /// Not a source of any module: build output, `.git/`, editor swap or temp
    /// files, non-source files, or packages no module uses.
    Ignored,
}

/// Why the module graph could not be discovered.
#[derive(Debug)]
pub enum GraphError {
    /// `cargo metadata` failed or its output could not be read.
    Metadata {
        manifest: PathBuf,
        source: cargo_metadata::Error,
    },
    /// `cargo metadata` ran without dependency resolution.
    NoResolve { manifest: PathBuf },
}

impl fmt::Display for GraphError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GraphError::Metadata { manifest, source } => {
                write!(f, "{}: cargo metadata failed: {source}", manifest.display())
            }
            GraphError::NoResolve { manifest } => write!(
                f,
                "{}: cargo metadata returned no dependency graph",
                manifest.display()
            ),
        }
    }
}

impl std::error::Error for GraphError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            GraphError::Metadata { source, .. } => Some(source),
            GraphError::NoResolve { .. } => None,
        }
    }
}

/// The kernel modules of a workspace, their source directories and the
/// contract's, as `cargo metadata` describes them.
#[derive(Clone, Debug)]
pub struct ModuleGraph {
    workspace_root: PathBuf,
    target_dir: PathBuf,
    modules: Vec<KernelModule>,
    contract_dirs: Vec<PathBuf>,
    ignored_dirs: Vec<PathBuf>,
    /// `kernels/declarations` under the workspace root.
    declarations_dir: PathBuf,
    /// Single files watched for themselves ([`ModuleGraph::watch_file`]).
    watched_files: Vec<PathBuf>,
}

impl ModuleGraph {
    /// Runs `cargo metadata` on the workspace at `workspace_root` and finds its
    /// kernel modules and contract.
    pub fn discover(workspace_root: &Path) -> Result<ModuleGraph, GraphError> {
        let manifest = workspace_root.join("Cargo.toml");
        let mut command = MetadataCommand::new();
        command.manifest_path(&manifest);
        if let Some(cargo) = std::env::var_os("CARGO") {
            command.cargo_path(cargo);
        }
        let metadata = command.exec().map_err(|source| GraphError::Metadata {
            manifest: manifest.clone(),
            source,
        })?;
        Self::from_metadata(&metadata).ok_or(GraphError::NoResolve { manifest })
    }

    fn from_metadata(metadata: &Metadata) -> Option<ModuleGraph> {
        let resolve = metadata.resolve.as_ref()?;
        let workspace_root = metadata.workspace_root.clone().into_std_path_buf();
        let kernels_dir = workspace_root.join(KERNELS_DIR);
        let package_dir = |id: &PackageId| -> Option<PathBuf> {
            let package = &metadata[id];
            // Only local path packages: registry and git ones have a source.
            if package.source.is_some() {
                return None;
            }
            package
                .manifest_path
                .parent()
                .map(|d| d.to_path_buf().into_std_path_buf())
        };
        // Local path dependencies (normal and build) of a package, transitively.
        let path_closure = |root: &PackageId| -> Vec<&PackageId> {
            let mut seen: BTreeSet<&PackageId> = BTreeSet::new();
            let mut stack = vec![root];
            while let Some(id) = stack.pop() {
                let Some(node) = resolve.nodes.iter().find(|n| &n.id == id) else {
                    continue;
                };
                for dep in &node.deps {
                    let used_by_build = dep
                        .dep_kinds
                        .iter()
                        .any(|k| k.kind != DependencyKind::Development);
                    if used_by_build && metadata[&dep.pkg].source.is_none() && seen.insert(&dep.pkg)
                    {
                        stack.push(&dep.pkg);
                    }
                }
            }
            seen.into_iter().collect()
        };

        let mut contract_dirs = Vec::new();
        if let Some(contract) = metadata
            .packages
            .iter()
            .find(|p| p.name == CONTRACT_PACKAGE && p.source.is_none())
        {
            contract_dirs.extend(package_dir(&contract.id));
            contract_dirs.extend(
                path_closure(&contract.id)
                    .into_iter()
                    .filter_map(package_dir),
            );
        }

        let mut modules = Vec::new();
        for package in metadata.workspace_packages() {
            let manifest_path = package.manifest_path.clone().into_std_path_buf();
            let Some(dir) = manifest_path.parent().map(Path::to_path_buf) else {
                continue;
            };
            let is_cdylib = package
                .targets
                .iter()
                .any(|t| t.crate_types.contains(&CrateType::CDyLib));
            if !dir.starts_with(&kernels_dir) || !is_cdylib {
                continue;
            }
            let backend = dir
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| package.name.clone());
            let mut path_deps: Vec<PathBuf> = path_closure(&package.id)
                .into_iter()
                .filter_map(package_dir)
                .filter(|d| !contract_dirs.contains(d) && d != &workspace_root)
                .collect();
            path_deps.sort();
            path_deps.dedup();
            modules.push(KernelModule {
                package: package.name.clone(),
                backend,
                dir,
                manifest_path,
                package_id: package.id.repr.clone(),
                path_deps,
            });
        }
        modules.sort_by(|a, b| a.package.cmp(&b.package));
        Some(ModuleGraph {
            declarations_dir: workspace_root.join(kiln_decl::DECLARATIONS_DIR),
            workspace_root,
            target_dir: metadata.target_directory.clone().into_std_path_buf(),
            modules,
            contract_dirs,
            ignored_dirs: Vec::new(),
            watched_files: Vec::new(),
        })
    }

    /// Also ignore everything under `dir` (e.g. the staging directory when it
    /// lives outside `target/`).
    pub fn ignore_dir(&mut self, dir: impl Into<PathBuf>) {
        self.ignored_dirs.push(dir.into());
    }

    /// Also watch the single file `path` (absolute or relative to the current
    /// directory): a change to it is [`Classified::Watched`].
    pub fn watch_file(&mut self, path: &Path) {
        let path = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
        self.watched_files.push(path);
    }

    /// The single files watched for themselves.
    pub fn watched_files(&self) -> &[PathBuf] {
        &self.watched_files
    }

    /// `kernels/declarations` under the workspace root.
    pub fn declarations_dir(&self) -> &Path {
        &self.declarations_dir
    }

    /// The workspace root (where `Cargo.toml` and `Cargo.lock` live).
    pub fn workspace_root(&self) -> &Path {
        &self.workspace_root
    }

    /// The workspace's cargo target directory.
    pub fn target_dir(&self) -> &Path {
        &self.target_dir
    }

    /// The kernel modules, sorted by package name.
    pub fn modules(&self) -> &[KernelModule] {
        &self.modules
    }

    /// The module with this package name.
    pub fn module(&self, package: &str) -> Option<&KernelModule> {
        self.modules.iter().find(|m| m.package == package)
    }

    /// The contract crate's directory and those of the path packages it uses.
    pub fn contract_dirs(&self) -> &[PathBuf] {
        &self.contract_dirs
    }

    /// Directories to watch recursively: every module's source dirs and the
    /// contract's, without nesting (a dir inside another is left out). The
    /// workspace root itself is not among them: watch it non-recursively for
    /// `Cargo.lock` and `Cargo.toml`.
    pub fn watch_dirs(&self) -> Vec<PathBuf> {
        let mut dirs: Vec<PathBuf> = self
            .modules
            .iter()
            .flat_map(|m| m.source_dirs().map(Path::to_path_buf))
            .chain(self.contract_dirs.iter().cloned())
            .chain(Some(self.declarations_dir.clone()).filter(|d| d.is_dir()))
            .filter(|d| d != &self.workspace_root)
            .collect();
        dirs.sort();
        dirs.dedup();
        let mut outer: Vec<PathBuf> = Vec::new();
        for dir in dirs {
            if !outer.iter().any(|o| dir.starts_with(o)) {
                outer.push(dir);
            }
        }
        outer
    }

    /// The module serving `backend` (its directory name, `cpu`, or its
    /// package, `kernel-cpu`); the error lists the backends there are.
    pub fn module_for_backend(&self, backend: &str) -> Result<KernelModule, String> {
        self.modules
            .iter()
            .find(|m| m.backend == backend || m.package == backend)
            .cloned()
            .ok_or_else(|| {
                let have: Vec<&str> = self.modules.iter().map(|m| m.backend.as_str()).collect();
                format!(
                    "no kernel module for backend {backend:?} under kernels/ (have: {})",
                    have.join(", ")
                )
            })
    }

    /// What a change to `path` (absolute, or relative to the workspace root)
    /// means: which modules to rebuild, a contract change, or nothing.
    pub fn classify(&self, path: &Path) -> Classified {
        let path = if path.is_absolute() {
            path.to_path_buf()
        } else {
            self.workspace_root.join(path)
        };
        if self.watched_files.contains(&path) {
            return Classified::Watched;
        }
        if path.parent() == Some(self.declarations_dir.as_path())
            && path.extension().is_some_and(|e| e == "toml")
            && path
                .file_name()
                .and_then(OsStr::to_str)
                .is_some_and(|n| !is_editor_temp(n))
        {
            return Classified::Declarations;
        }
        let relative = path.strip_prefix(&self.workspace_root).unwrap_or(&path);
        // Cargo's configuration (rustflags, profiles, target): every
        // module's build reads it.
        if relative == Path::new(".cargo/config.toml") || relative == Path::new(".cargo/config") {
            return Classified::Modules(self.modules.iter().map(|m| m.package.clone()).collect());
        }
        if self.is_ignored_location(&path) {
            return Classified::Ignored;
        }
        if !is_source_file(&path) {
            // Any other file in a module's own directory may be read by its
            // build (`include_bytes!`, `include_str!`, a build script): a
            // build decides whether it changed anything.
            let name_ok = path
                .file_name()
                .and_then(OsStr::to_str)
                .is_some_and(|n| !is_editor_temp(n));
            let modules: BTreeSet<String> = self
                .modules
                .iter()
                .filter(|m| path.starts_with(&m.dir))
                .map(|m| m.package.clone())
                .collect();
            return match name_ok && !path.is_dir() && !modules.is_empty() {
                true => Classified::Modules(modules),
                false => Classified::Ignored,
            };
        }
        // Root-level Cargo.lock / Cargo.toml: versions and profiles of every module.
        if relative == Path::new("Cargo.lock") || relative == Path::new("Cargo.toml") {
            return Classified::Modules(self.modules.iter().map(|m| m.package.clone()).collect());
        }
        if self.contract_dirs.iter().any(|d| path.starts_with(d)) {
            return Classified::Contract;
        }
        let modules: BTreeSet<String> = self
            .modules
            .iter()
            .filter(|m| m.source_dirs().any(|d| path.starts_with(d)))
            .map(|m| m.package.clone())
            .collect();
        if modules.is_empty() {
            Classified::Ignored
        } else {
            Classified::Modules(modules)
        }
    }

    /// Whether `path` (absolute) is outside the workspace or under build
    /// output (`target/`, the workspace target dir), `.git/` or a dir added
    /// with [`ModuleGraph::ignore_dir`].
    pub fn is_ignored_location(&self, path: &Path) -> bool {
        let Ok(relative) = path.strip_prefix(&self.workspace_root) else {
            return true;
        };
        path.starts_with(&self.target_dir)
            || self.ignored_dirs.iter().any(|d| path.starts_with(d))
            || relative.components().any(|c| match c {
                Component::Normal(name) => name == "target" || name == ".git",
                _ => false,
            })
    }
}

/// Whether a file name is a source file of a kernel module: Rust sources,
/// manifests and lock file, build scripts, shaders and CUDA sources. Editor
/// swap, backup and temp files never are (hidden files included: no crate
/// source starts with a dot).
pub fn is_source_file(path: &Path) -> bool {
    let Some(name) = path.file_name().and_then(OsStr::to_str) else {
        return false;
    };
    if is_editor_temp(name) {
        return false;
    }
    if name == "Cargo.toml" || name == "Cargo.lock" || name == "build.rs" {
        return true;
    }
    const SOURCE_EXTENSIONS: &[&str] = &["rs", "comp", "glsl", "wgsl", "hlsl", "spv", "cu", "cuh"];
    Path::new(name)
        .extension()
        .and_then(OsStr::to_str)
        .is_some_and(|ext| SOURCE_EXTENSIONS.contains(&ext))
}

/// Swap, backup, lock and atomic-save temp files of common editors: vim
/// (`.x.swp`, `.x.swx`, `x~`, its `4913` probe), emacs (`#x#`, `.#x`), VS Code
/// and browsers (`.x.tmp`, `x.crswap`), JetBrains (`x___jb_tmp___`), and any
/// `*.tmp` or hidden file.
pub fn is_editor_temp(name: &str) -> bool {
    name.starts_with('.')
        || name.ends_with('~')
        || name == "4913"
        || (name.starts_with('#') && name.ends_with('#'))
        || name.ends_with(".tmp")
        || name.ends_with(".swp")
        || name.ends_with(".swx")
        || name.ends_with(".crswap")
        || name.ends_with("___jb_tmp___")
        || name.ends_with("___jb_old___")
        || name.ends_with(".bak")
        || name.ends_with(".orig")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_and_temps() {
        for source in [
            "lib.rs",
            "Cargo.toml",
            "build.rs",
            "add.comp",
            "k.wgsl",
            "k.glsl",
            "k.hlsl",
            "k.spv",
            "k.cu",
            "k.cuh",
        ] {
            assert!(is_source_file(Path::new(source)), "{source}");
        }
        for other in [
            ".lib.rs.swp",
            ".lib.rs.swx",
            "lib.rs~",
            "4913",
            "#lib.rs#",
            ".#lib.rs",
            "lib.rs.tmp",
            ".lib.rs.tmp",
            "lib.rs.crswap",
            "lib.rs___jb_tmp___",
            "README.md",
            "notes.txt",
            "lib.rs.bak",
        ] {
            assert!(!is_source_file(Path::new(other)), "{other}");
        }
    }
}
