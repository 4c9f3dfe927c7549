//! The contract names no kernel: kernels are the user's, declared as data
//! under `kernels/declarations/`. This fails if a declared kernel's name
//! comes back into the contract's code (comments do not count).

use std::path::Path;

fn code_words(path: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(path).unwrap();
    text.lines()
        .map(|l| l.split("//").next().unwrap_or(""))
        .flat_map(|l| {
            l.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .map(str::to_ascii_lowercase)
                .collect::<Vec<_>>()
        })
        .collect()
}

#[test]
fn no_declared_kernel_name_appears_in_the_contract() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let decls = root.join("../kernels/declarations");
    let names: Vec<String> = std::fs::read_dir(&decls)
        .unwrap()
        .filter_map(|e| {
            let p = e.unwrap().path();
            (p.extension()? == "toml")
                .then(|| p.file_stem().unwrap().to_string_lossy().into_owned())
        })
        .collect();
    assert!(names.len() >= 5, "declarations found: {names:?}");
    let mut files = vec![root.join("build.rs")];
    for entry in std::fs::read_dir(root.join("src")).unwrap() {
        files.push(entry.unwrap().path());
    }
    let mut found = Vec::new();
    for file in &files {
        let words = code_words(file);
        for name in &names {
            if words.iter().any(|w| w == name) {
                found.push(format!("{} in {}", name, file.display()));
            }
        }
    }
    assert!(found.is_empty(), "kernel names in the contract: {found:?}");
}
