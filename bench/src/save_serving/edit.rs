//! The one-line edits of "save to serving": for the Rust rows (both sides),
//! a constant of the CPU kernels flipped between two values; for the WGSL
//! and `.cu` rows, a line of a shader or CUDA source flipped between two
//! equivalent forms. Every save really changes what the compiler produces
//! (a new SPIR-V or PTX, not only a new comment), and results stay right.

use std::path::{Path, PathBuf};

/// The kernel source edited, relative to the workspace root.
pub const KERNELS_SOURCE: &str = "kernels/cpu/src/kernels.rs";
/// The constant whose value is flipped (the element-wise kernels' chunk
/// size: results and speed stay the same, the code does not).
pub const CONSTANT: &str = "MIN_CHUNK";

/// A file with one line `const CONSTANT: usize = N;`, rewritten in place
/// (the way an editor saves) with `N + 1`, then `N` again, and so on.
#[derive(Clone, Debug)]
pub struct ConstantEdit {
    path: PathBuf,
    /// The file as found, and with the constant changed.
    variants: [String; 2],
    /// The constant's value as found, and the other one (0, 0 for a
    /// [`ConstantEdit::swap_text`] edit).
    pub values: [u64; 2],
    edits: usize,
    description: String,
}

impl ConstantEdit {
    /// Reads `path` and finds the constant; an error names the file if it
    /// has no such line.
    pub fn new(path: &Path) -> Result<ConstantEdit, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let prefix = format!("const {CONSTANT}: usize = ");
        let (line, value) = text
            .lines()
            .find_map(|line| {
                let value = line.strip_prefix(&prefix)?.strip_suffix(';')?;
                Some((line, value.parse::<u64>().ok()?))
            })
            .ok_or_else(|| {
                format!(
                    "{} has no line `{prefix}N;` for the benchmark to edit",
                    path.display()
                )
            })?;
        let other = value + 1;
        let edited = text.replacen(line, &format!("{prefix}{other};"), 1);
        Ok(ConstantEdit {
            path: path.to_path_buf(),
            variants: [text, edited],
            values: [value, other],
            edits: 0,
            description: format!("{CONSTANT} {value} <-> {other} in {KERNELS_SOURCE}"),
        })
    }

    /// An edit of `path` (named `shown` in the description) that flips the
    /// one occurrence of `from` to `to` and back; an error names the file
    /// if `from` is not found exactly once.
    pub fn swap_text(
        path: &Path,
        shown: &str,
        from: &str,
        to: &str,
    ) -> Result<ConstantEdit, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        if text.matches(from).count() != 1 {
            return Err(format!(
                "{} does not have `{from}` exactly once for the benchmark to edit",
                path.display()
            ));
        }
        let edited = text.replacen(from, to, 1);
        Ok(ConstantEdit {
            path: path.to_path_buf(),
            variants: [text, edited],
            values: [0, 0],
            edits: 0,
            description: format!("`{from}` <-> `{to}` in {shown}"),
        })
    }

    /// Saves the next variant over the file (the other value than the one
    /// the file holds now).
    pub fn save_next(&mut self) -> Result<(), String> {
        self.edits += 1;
        std::fs::write(&self.path, &self.variants[self.edits % 2])
            .map_err(|e| format!("cannot write {}: {e}", self.path.display()))
    }

    /// `MIN_CHUNK 4096 <-> 4097 in kernels/cpu/src/kernels.rs`.
    pub fn describe(&self) -> String {
        self.description.clone()
    }

    /// The file's text after the last save (the text as found before any).
    pub fn current(&self) -> &str {
        &self.variants[self.edits % 2]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flips_the_constant_and_back() {
        let dir = std::env::temp_dir().join(format!("kiln-bench-edit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("kernels.rs");
        let original = "//! k\nconst MIN_CHUNK: usize = 4096;\nfn f() {}\n";
        std::fs::write(&path, original).unwrap();
        let mut edit = ConstantEdit::new(&path).unwrap();
        assert_eq!(edit.values, [4096, 4097]);
        edit.save_next().unwrap();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "//! k\nconst MIN_CHUNK: usize = 4097;\nfn f() {}\n"
        );
        edit.save_next().unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), original);

        let mut swap = ConstantEdit::swap_text(&path, "k.rs", "fn f()", "fn g()").unwrap();
        swap.save_next().unwrap();
        assert!(
            std::fs::read_to_string(&path)
                .unwrap()
                .contains("fn g() {}")
        );
        assert_eq!(swap.current(), original.replace("fn f()", "fn g()"));
        swap.save_next().unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), original);
        assert_eq!(swap.describe(), "`fn f()` <-> `fn g()` in k.rs");
        let err = ConstantEdit::swap_text(&path, "k.rs", "nothing", "x").unwrap_err();
        assert!(
            err.contains("kernels.rs") && err.contains("nothing"),
            "{err}"
        );

        std::fs::write(&path, "const OTHER: usize = 1;\n").unwrap();
        let err = ConstantEdit::new(&path).unwrap_err();
        assert!(
            err.contains("kernels.rs") && err.contains("MIN_CHUNK"),
            "{err}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_real_shader_and_cu_sources_have_the_edited_lines() {
        let root = kiln::workspace::built_workspace_root();
        let wgsl = root.join(super::super::WGSL_SOURCE);
        ConstantEdit::swap_text(&wgsl, "", super::super::WGSL_FROM, super::super::WGSL_TO).unwrap();
        let cu = root
            .join("kernels/cuda")
            .join(super::super::cu_compile::SOURCE);
        ConstantEdit::swap_text(
            &cu,
            "",
            super::super::cu_compile::FROM,
            super::super::cu_compile::TO,
        )
        .unwrap();
    }

    #[test]
    fn the_real_kernels_have_the_constant() {
        let root = kiln::workspace::built_workspace_root();
        let edit = ConstantEdit::new(&root.join(KERNELS_SOURCE)).unwrap();
        assert_eq!(edit.values[1], edit.values[0] + 1);
    }
}
