//! What a version is besides its library: the kernel declarations
//! (`kernels/declarations/*.toml`) and the module's source files that its
//! engine compiles when it is created (WGSL shaders, `.cu` files). They are
//! read when the version is staged, hashed, and handed to the engine in its
//! `EngineContext`; later edits on disk never change a staged version.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use kiln_decl::{DECLARATIONS_DIR, DeclError};
use shared_state::{KernelSet, SourceFile};
use xxhash_rust::xxh3::xxh3_64;

/// Extensions of the source files staged with a module (the files its
/// engine compiles at creation).
pub const SOURCE_EXTENSIONS: &[&str] = &["wgsl", "cu", "cuh", "glsl", "comp", "hlsl"];

/// The declarations and sources of one version.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct VersionFiles {
    pub kernels: Arc<KernelSet>,
    pub sources: Arc<Vec<SourceFile>>,
    /// Each declaration file's path (relative to the workspace) and text,
    /// as read: what is written next to the staged library.
    pub declaration_texts: Arc<Vec<(String, String)>>,
}

/// The on-disk form of a version's files, next to its staged library
/// (`NAME-vN-HASH.files.json`, read-only): how a worker process gets the
/// very declarations and sources the supervisor staged.
#[derive(serde::Serialize, serde::Deserialize)]
struct StagedFilesJson {
    declarations: Vec<(String, String)>,
    sources: Vec<(String, String)>,
}

impl VersionFiles {
    /// Reads the declarations of the workspace at `root` and the source
    /// files of the module `package` (found under `root/kernels/`). Every
    /// declaration must parse: a version is never staged with part of its
    /// declarations.
    pub fn read(root: &Path, package: &str) -> Result<VersionFiles, Vec<DeclError>> {
        let texts = declaration_texts(root);
        let (decls, errors) = parse_declarations(&texts);
        if !errors.is_empty() {
            return Err(errors);
        }
        let sources = match module_dir(root, package) {
            Some(dir) => read_sources(&dir),
            None => Vec::new(),
        };
        Ok(VersionFiles {
            kernels: Arc::new(KernelSet::new(decls)),
            sources: Arc::new(sources),
            declaration_texts: Arc::new(texts),
        })
    }

    /// Writes the files as staged next to a library (`path`, made
    /// read-only).
    pub fn write_staged(&self, path: &Path) -> std::io::Result<()> {
        use std::os::unix::fs::PermissionsExt;
        let json = StagedFilesJson {
            declarations: self.declaration_texts.to_vec(),
            sources: self
                .sources
                .iter()
                .map(|s| (s.path.clone(), s.text.clone()))
                .collect(),
        };
        let bytes = serde_json::to_vec(&json).map_err(std::io::Error::other)?;
        std::fs::write(path, bytes)?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o400))
    }

    /// Reads files written by [`VersionFiles::write_staged`].
    pub fn read_staged(path: &Path) -> Result<VersionFiles, String> {
        let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let json: StagedFilesJson =
            serde_json::from_slice(&bytes).map_err(|e| format!("{}: {e}", path.display()))?;
        let (decls, errors) = parse_declarations(&json.declarations);
        if !errors.is_empty() {
            return Err(describe_errors(&errors));
        }
        let sources = json
            .sources
            .into_iter()
            .map(|(path, text)| SourceFile {
                hash: format!("{:016x}", xxh3_64(text.as_bytes())),
                path,
                text,
            })
            .collect();
        Ok(VersionFiles {
            kernels: Arc::new(KernelSet::new(decls)),
            sources: Arc::new(sources),
            declaration_texts: Arc::new(json.declarations),
        })
    }

    /// Hash of every declaration and source (names and contents), hex.
    pub fn hash(&self) -> String {
        let mut text = String::new();
        for d in self.kernels.iter() {
            text.push_str(&format!("{}={};", d.file, d.hash));
        }
        for s in self.sources.iter() {
            text.push_str(&format!("{}={};", s.path, s.hash));
        }
        format!("{:016x}", xxh3_64(text.as_bytes()))
    }
}

/// The declarations of the workspace at `root`; any that does not parse is
/// an error naming file and line.
pub fn declarations(root: &Path) -> Result<KernelSet, String> {
    let (decls, errors) = read_declarations(root);
    if !errors.is_empty() {
        return Err(format!(
            "the kernel declarations do not parse:\n{}",
            describe_errors(&errors)
        ));
    }
    Ok(KernelSet::new(decls))
}

/// Every declaration under `root/kernels/declarations` that parses, and
/// every error (file, line, column, what is wrong). A workspace with no
/// declarations folder has no kernels (and no error).
pub fn read_declarations(root: &Path) -> (Vec<shared_state::KernelDecl>, Vec<DeclError>) {
    parse_declarations(&declaration_texts(root))
}

/// Each `*.toml` under `root/kernels/declarations`, sorted: (path relative
/// to `root`, text). Unreadable files are left out (and reported by
/// `kiln_decl::load_dir` when the caller parses the folder itself).
fn declaration_texts(root: &Path) -> Vec<(String, String)> {
    let dir = root.join(DECLARATIONS_DIR);
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Vec::new();
    };
    let mut paths: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    paths.sort();
    paths
        .into_iter()
        .filter_map(|p| {
            let text = std::fs::read_to_string(&p).ok()?;
            let rel = p
                .strip_prefix(root)
                .unwrap_or(&p)
                .to_string_lossy()
                .into_owned();
            Some((rel, text))
        })
        .collect()
}

fn parse_declarations(
    texts: &[(String, String)],
) -> (Vec<shared_state::KernelDecl>, Vec<DeclError>) {
    let mut decls = Vec::new();
    let mut errors = Vec::new();
    for (file, text) in texts {
        match kiln_decl::parse(Path::new(file), text) {
            Ok(d) => decls.push(d),
            Err(e) => errors.push(e),
        }
    }
    (decls, errors)
}

/// The directory of the kernel module `package`: the folder under
/// `root/kernels/` whose `Cargo.toml` names it.
pub fn module_dir(root: &Path, package: &str) -> Option<PathBuf> {
    let entries = std::fs::read_dir(root.join("kernels")).ok()?;
    let wanted = format!("name = \"{package}\"");
    entries.flatten().map(|e| e.path()).find(|dir| {
        std::fs::read_to_string(dir.join("Cargo.toml"))
            .is_ok_and(|m| m.lines().any(|l| l.trim() == wanted))
    })
}

/// The source files under `dir` (recursively, build output and Rust
/// sources left out), sorted by path.
pub fn read_sources(dir: &Path) -> Vec<SourceFile> {
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort_by(|a, b| a.path.cmp(&b.path));
    out
}

fn walk(root: &Path, dir: &Path, out: &mut Vec<SourceFile>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with('.') || name == "target" {
            continue;
        }
        if path.is_dir() {
            walk(root, &path, out);
        } else if path
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| SOURCE_EXTENSIONS.contains(&e))
        {
            if let Ok(text) = std::fs::read_to_string(&path) {
                let rel = path.strip_prefix(root).unwrap_or(&path);
                out.push(SourceFile {
                    path: rel.to_string_lossy().into_owned(),
                    hash: format!("{:016x}", xxh3_64(text.as_bytes())),
                    text,
                });
            }
        }
    }
}

/// Declaration errors as one message, one error per line.
pub fn describe_errors(errors: &[DeclError]) -> String {
    errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("\n")
}
