//! The layers of harness/src (ARCHITECTURE.md, "Layers"), checked.
//!
//! Every `.rs` file under harness/src is read and its imports of other files
//! of the crate are resolved: `use crate::a::b::C`, `use super::x`, `use
//! x::y` where `x` is a child module, `self::`, nested `{...}` groups and
//! `pub use` re-exports, and the same paths written in code
//! (`crate::a::b::f(...)`, `super::x::y`, `alias::f(...)` after `use
//! crate::a::alias`). A path to a module names that module's file (`a/b.rs`
//! or `a/b/mod.rs`); a path to an item, the deepest module file on it. A
//! `mod` declaration is not an import, and `#[cfg(test)]` items (`mod tests
//! { ... }`, a `#[cfg(test)] mod x;` file) are left out: unit tests may
//! reach anywhere.
//!
//! The check fails when the files' import graph has a loop (each strongly
//! connected component of more than one file is named, with one loop in
//! order and every import inside it), or when a file imports a file of a
//! higher layer. Within a layer, imports are allowed; loops are not.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt::Write as _;
use std::path::Path;

/// The layers, lowest first: each top-level module of harness/src (a folder
/// `name/` or a file `name.rs`) and its layer. A file may import files of
/// its own layer and of lower ones, never of a higher one. ARCHITECTURE.md's
/// "Layers" section holds the same table (checked below).
const LAYERS: &[(&str, u32)] = &[
    // Shared helpers: no other module of the crate.
    ("workspace.rs", 0),
    ("process.rs", 0),
    ("logging.rs", 0),
    ("events.rs", 0),
    ("units.rs", 0),
    ("loop_alignment.rs", 0),
    // SVG charts: axes, ticks, the document, the ratio chart.
    ("chart/", 0),
    // Driving a running `kiln dev` from outside: the socket, keys, `kiln ctl`.
    ("control/", 1),
    // The swap core, in-process.
    ("swap/", 1),
    // Building a module: cargo, the recorded rustc command, the build thread.
    ("build/", 1),
    // `kiln dev --ui`: the live page, fed by the log, driving through control/.
    ("ui/", 1),
    // The machine's peaks and the roofline a call is judged against.
    ("machine/", 2),
    // Workloads, replay, correctness, timing.
    ("workload/", 3),
    // Autotuning.
    ("tuning/", 4),
    // A session's versions, for `kiln report`.
    ("history.rs", 4),
    // The worker process: the engine host.
    ("worker/", 5),
    // Module code in a worker, from the side that starts it.
    ("isolation/", 6),
    // Running on another machine over ssh: the agent, the mirror, the
    // client side (the agent will host isolation/'s workers).
    // `kiln dev`: watch, the session loop and its lanes.
    ("supervisor/", 7),
    // The one-shot commands.
    ("commands.rs", 8),
    ("kernel_commands.rs", 8),
    ("machine_command.rs", 8),
    ("scaffold/", 8),
    ("remote/", 8),
    // The crate roots.
    ("lib.rs", 9),
    ("main.rs", 9),
];

/// Imports between two files of supervisor/ left out of the check: none.
/// (It held the loops of the session loop before the lanes; an entry must
/// name two files under supervisor/, and one whose import is gone fails.)
const KNOWN_SUPERVISOR_VIOLATIONS: &[(&str, &str)] = &[];

#[test]
fn harness_src_has_no_import_loop_and_no_import_of_a_higher_layer() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let files = read_sources(&src);
    let report = check(&files, LAYERS, KNOWN_SUPERVISOR_VIOLATIONS);
    for note in &report.known {
        eprintln!("known, to be fixed in supervisor/: {note}");
    }
    assert!(
        report.problems.is_empty(),
        "harness/src breaks its layers (ARCHITECTURE.md, \"Layers\"; \
         harness/tests/layers.rs):\n\n{}",
        report.problems.join("\n\n")
    );
}

#[test]
fn architecture_md_states_the_same_layers() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../ARCHITECTURE.md");
    let text = std::fs::read_to_string(&path).expect("ARCHITECTURE.md");
    let stated = layers_in_architecture_md(&text);
    let mut table: Vec<(String, u32)> = LAYERS.iter().map(|(m, l)| (m.to_string(), *l)).collect();
    table.sort();
    assert_eq!(
        stated, table,
        "ARCHITECTURE.md's \"Layers\" table (left) differs from LAYERS in harness/tests/layers.rs (right)"
    );
}

// ---------------------------------------------------------------------------
// The checker's own tests: it must find what it is there to find.

fn synthetic(files: &[(&str, &str)]) -> BTreeMap<String, String> {
    files
        .iter()
        .map(|(p, t)| (p.to_string(), t.to_string()))
        .collect()
}

#[test]
fn self_check_reports_a_loop_and_an_import_of_a_higher_layer() {
    let files = synthetic(&[
        ("lib.rs", "pub mod base;\npub mod low;\npub mod high;\n"),
        ("base.rs", "pub fn helper() {}\n"),
        ("low/mod.rs", "pub mod a;\npub mod b;\npub mod c;\n"),
        // a -> b (a `use`), b -> c (a path in code), c -> a (`super::` in a
        // group): a loop. The comment's import is none.
        (
            "low/a.rs",
            "use crate::low::b::B;\npub struct A;\n// use crate::high::H; (a comment)\n",
        ),
        // b -> high.rs in code: an import of a higher layer (line 4); the
        // string on line 3 is none.
        (
            "low/b.rs",
            "pub struct B;\nfn f() { crate::low::c::run(); }\n\
             const S: &str = \"crate::high::H\";\nfn g() { let _ = crate::high::H; }\n",
        ),
        // c -> a and c -> b in one `use` group; its test module's import is none.
        (
            "low/c.rs",
            "use super::{a::A, b};\npub fn run() {}\n\
             #[cfg(test)]\nmod tests {\n    use crate::high::H;\n}\n",
        ),
        ("high.rs", "use crate::base;\npub struct H;\n"),
    ]);
    let layers = [("lib.rs", 9), ("base.rs", 0), ("low/", 1), ("high.rs", 2)];
    let report = check(&files, &layers, &[]);
    let all = report.problems.join("\n\n");
    assert_eq!(report.problems.len(), 2, "{all}");
    assert!(
        all.contains("low/a.rs -> low/b.rs -> low/c.rs -> low/a.rs"),
        "the loop in order: {all}"
    );
    assert!(
        all.contains("low/b.rs (layer 1) imports high.rs (layer 2, higher)"),
        "the upward import: {all}"
    );
    assert!(all.contains("low/b.rs:4 `crate::high::H`"), "where: {all}");
    // The comment, the string and the test module's import are no imports.
    assert_eq!(all.matches("high.rs").count(), 1, "{all}");
}

#[test]
fn self_check_known_violations_are_supervisor_only_and_must_exist() {
    let files = synthetic(&[
        ("lib.rs", "pub mod supervisor;\npub mod low;\n"),
        ("low.rs", "pub fn f() {}\n"),
        ("supervisor/mod.rs", "pub mod x;\npub mod y;\n"),
        (
            "supervisor/x.rs",
            "use super::y;\npub fn f() { crate::low::f() }\n",
        ),
        ("supervisor/y.rs", "pub fn g() { super::x::f() }\n"),
    ]);
    let layers = [("lib.rs", 9), ("low.rs", 0), ("supervisor/", 1)];
    let report = check(&files, &layers, &[]);
    assert_eq!(report.problems.len(), 1, "{:?}", report.problems);
    assert!(report.problems[0].contains("supervisor/x.rs -> supervisor/y.rs -> supervisor/x.rs"));

    let known = [("supervisor/y.rs", "supervisor/x.rs")];
    let report = check(&files, &layers, &known);
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    assert_eq!(report.known.len(), 1);

    let gone = [("supervisor/x.rs", "supervisor/mod.rs")];
    let report = check(&files, &layers, &gone);
    assert!(
        report
            .problems
            .iter()
            .any(|p| p.contains("no longer imports")),
        "{:?}",
        report.problems
    );

    let outside = [("supervisor/x.rs", "low.rs")];
    let report = check(&files, &layers, &outside);
    assert!(
        report
            .problems
            .iter()
            .any(|p| p.contains("both files under supervisor/")),
        "{:?}",
        report.problems
    );
}

#[test]
fn self_check_resolves_paths_to_files() {
    let files = synthetic(&[
        (
            "lib.rs",
            "pub mod m;\npub mod n;\npub use m::deep::Thing;\n#[cfg(test)]\nmod t;\n",
        ),
        ("t.rs", "use crate::n::f;\n"),
        ("m/mod.rs", "pub mod deep;\nuse deep::Thing as T;\n"),
        ("m/deep.rs", "pub struct Thing;\n"),
        (
            "n.rs",
            "use crate::{m::{self, deep}, m::deep::Thing};\n\
             fn f() -> char { let c = '\"'; let _ = r#\"crate::x\"#; let _: &'static str = \"\"; c }\n\
             fn g() { deep::Thing; m::deep::Thing; }\n",
        ),
    ]);
    let graph = Graph::build(&files);
    let targets = |from: &str| -> Vec<&str> {
        graph
            .edges
            .keys()
            .filter(|(f, _)| f == from)
            .map(|(_, t)| t.as_str())
            .collect()
    };
    assert_eq!(targets("lib.rs"), ["m/deep.rs"]);
    assert_eq!(targets("m/mod.rs"), ["m/deep.rs"]);
    assert_eq!(targets("n.rs"), ["m/deep.rs", "m/mod.rs"]);
    // A `#[cfg(test)] mod t;` file is no part of the graph.
    assert!(!graph.files.contains("t.rs") && targets("t.rs").is_empty());
}

// ---------------------------------------------------------------------------
// The checker.

/// What the check found: `problems` fail it; `known` are the listed
/// supervisor/ imports it let pass.
struct Report {
    problems: Vec<String>,
    known: Vec<String>,
}

/// Every `.rs` file under `dir`, by its path relative to `dir` (`/`-separated).
fn read_sources(dir: &Path) -> BTreeMap<String, String> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, String>) {
        let mut entries: Vec<_> = std::fs::read_dir(dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|e| e.unwrap().path())
            .collect();
        entries.sort();
        for path in entries {
            if path.is_dir() {
                walk(root, &path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let rel = path.strip_prefix(root).unwrap();
                let rel: Vec<String> = rel
                    .components()
                    .map(|c| c.as_os_str().to_string_lossy().into_owned())
                    .collect();
                let text = std::fs::read_to_string(&path)
                    .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                out.insert(rel.join("/"), text);
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

fn check(
    files: &BTreeMap<String, String>,
    layers: &[(&str, u32)],
    known: &[(&str, &str)],
) -> Report {
    let graph = Graph::build(files);
    let mut problems = Vec::new();
    let mut known_notes = Vec::new();

    // Every file has a layer, and every layer entry names something.
    let layer_of = |file: &str| -> Option<u32> {
        let top = match file.split_once('/') {
            Some((dir, _)) => format!("{dir}/"),
            None => file.to_string(),
        };
        layers.iter().find(|(m, _)| *m == top).map(|(_, l)| *l)
    };
    for file in &graph.files {
        if layer_of(file).is_none() {
            problems.push(format!(
                "{file} is in no layer: add its top-level module to LAYERS (harness/tests/layers.rs) \
                 and to ARCHITECTURE.md's \"Layers\""
            ));
        }
    }
    for (module, _) in layers {
        let exists = match module.strip_suffix('/') {
            Some(dir) => files.keys().any(|f| f.starts_with(&format!("{dir}/"))),
            None => files.contains_key(*module),
        };
        if !exists {
            problems.push(format!(
                "LAYERS names {module}, which harness/src does not have"
            ));
        }
    }

    // The temporary list: supervisor/ only, and each import still there.
    let mut edges = graph.edges.clone();
    for (from, to) in known {
        if !(from.starts_with("supervisor/") && to.starts_with("supervisor/")) {
            problems.push(format!(
                "KNOWN_SUPERVISOR_VIOLATIONS lists {from} -> {to}: only imports with both files \
                 under supervisor/ may be listed"
            ));
            continue;
        }
        match edges.remove(&(from.to_string(), to.to_string())) {
            Some(edge) => known_notes.push(edge.describe()),
            None => problems.push(format!(
                "{from} no longer imports {to}: remove the entry from KNOWN_SUPERVISOR_VIOLATIONS \
                 (it must become empty)"
            )),
        }
    }

    // (a) loops
    for component in strongly_connected(&graph.files, &edges) {
        if component.len() < 2 {
            continue;
        }
        let cycle = shortest_cycle(&component, &edges);
        let mut text = format!(
            "import loop among {} files: {}\n  {}\n  the imports inside it:",
            component.len(),
            component.iter().cloned().collect::<Vec<_>>().join(", "),
            cycle.join(" -> "),
        );
        for ((from, to), edge) in &edges {
            if component.contains(from) && component.contains(to) {
                let _ = write!(text, "\n    {}", edge.describe());
            }
        }
        problems.push(text);
    }

    // (b) imports of a higher layer
    for ((from, to), edge) in &edges {
        let (Some(low), Some(high)) = (layer_of(from), layer_of(to)) else {
            continue;
        };
        if low < high {
            problems.push(format!(
                "{from} (layer {low}) imports {to} (layer {high}, higher): {}",
                edge.site()
            ));
        }
    }
    Report {
        problems,
        known: known_notes,
    }
}

/// The first place a file imports another: line and the path as written.
#[derive(Clone, Debug)]
struct Edge {
    from: String,
    to: String,
    line: usize,
    path: String,
}

impl Edge {
    fn site(&self) -> String {
        format!("{}:{} `{}`", self.from, self.line, self.path)
    }
    fn describe(&self) -> String {
        format!("{} -> {} ({})", self.from, self.to, self.site())
    }
}

/// The files (those of `#[cfg(test)]` modules left out) and the imports
/// between them, by (from, to).
struct Graph {
    files: BTreeSet<String>,
    edges: BTreeMap<(String, String), Edge>,
}

impl Graph {
    fn build(files: &BTreeMap<String, String>) -> Graph {
        let parsed: BTreeMap<&str, Parsed> = files
            .iter()
            .map(|(path, text)| (path.as_str(), Parsed::of(text)))
            .collect();
        // Files a `#[cfg(test)] mod x;` declares, and the files under them.
        let mut test_only: BTreeSet<String> = BTreeSet::new();
        for (path, p) in &parsed {
            let module = module_path(path);
            for name in &p.test_children {
                let mut child = module.clone();
                child.push(name.clone());
                let prefix = child.join("/");
                test_only.extend(
                    files
                        .keys()
                        .filter(|f| {
                            **f == format!("{prefix}.rs") || f.starts_with(&format!("{prefix}/"))
                        })
                        .cloned(),
                );
            }
            if p.whole_file_is_test {
                test_only.insert(path.to_string());
            }
        }
        let module_file = |module: &[String]| -> Option<String> {
            if module.is_empty() {
                return Some("lib.rs".to_string()).filter(|f| files.contains_key(f));
            }
            let base = module.join("/");
            [format!("{base}.rs"), format!("{base}/mod.rs")]
                .into_iter()
                .find(|f| files.contains_key(f))
        };
        let mut graph = Graph {
            files: BTreeSet::new(),
            edges: BTreeMap::new(),
        };
        for (path, p) in &parsed {
            if test_only.contains(*path) {
                continue;
            }
            graph.files.insert(path.to_string());
            let is_bin = *path == "main.rs";
            let here = module_path(path);
            // Relative to this file: `crate`, `self`, `super`, child modules,
            // and (once the `use`s are read) aliases of modules.
            let absolute =
                |segs: &[String], aliases: &BTreeMap<String, Vec<String>>| -> Option<Vec<String>> {
                    let first = segs.first()?.as_str();
                    let rest = || segs[1..].to_vec();
                    match first {
                        "crate" | "self" if is_bin => None,
                        "kiln" if is_bin => Some(rest()),
                        "crate" => Some(rest()),
                        "self" => Some([here.clone(), rest()].concat()),
                        "super" => {
                            let ups = segs.iter().take_while(|s| *s == "super").count();
                            let keep = here.len().checked_sub(ups)?;
                            Some([here[..keep].to_vec(), segs[ups..].to_vec()].concat())
                        }
                        name if p.children.contains(name) => {
                            Some([here.clone(), segs.to_vec()].concat())
                        }
                        name => aliases
                            .get(name)
                            .map(|target| [target.clone(), rest()].concat()),
                    }
                };
            let resolve = |abs: &[String]| -> Option<String> {
                (0..=abs.len()).rev().find_map(|k| module_file(&abs[..k]))
            };
            let mut aliases: BTreeMap<String, Vec<String>> = BTreeMap::new();
            let mut found: Vec<(Vec<String>, usize, String)> = Vec::new();
            for leaf in &p.uses {
                let mut segs = leaf.path.clone();
                if segs.len() > 1 && segs.last().is_some_and(|s| s == "self") {
                    segs.pop();
                }
                let Some(abs) = absolute(&segs, &aliases) else {
                    continue;
                };
                if !leaf.glob && module_file(&abs).is_some() {
                    let name = leaf
                        .alias
                        .clone()
                        .unwrap_or_else(|| abs.last().cloned().unwrap_or_default());
                    if name != "_" && !abs.is_empty() {
                        aliases.insert(name, abs.clone());
                    }
                }
                found.push((abs, leaf.line, leaf.path.join("::")));
            }
            for code in &p.code_paths {
                if let Some(abs) = absolute(&code.path, &aliases) {
                    found.push((abs, code.line, code.path.join("::")));
                }
            }
            for (abs, line, written) in found {
                let Some(to) = resolve(&abs) else { continue };
                if to == *path || test_only.contains(&to) {
                    continue;
                }
                let key = (path.to_string(), to.clone());
                let edge = Edge {
                    from: path.to_string(),
                    to,
                    line,
                    path: written,
                };
                graph
                    .edges
                    .entry(key)
                    .and_modify(|e| {
                        if edge.line < e.line {
                            *e = edge.clone();
                        }
                    })
                    .or_insert(edge);
            }
        }
        graph
    }
}

/// The module path of a file: `a/b.rs` and `a/b/mod.rs` are `a::b`; the
/// crate roots are `[]`.
fn module_path(file: &str) -> Vec<String> {
    let file = file.strip_suffix(".rs").unwrap_or(file);
    let mut segs: Vec<String> = file.split('/').map(str::to_string).collect();
    match segs.last().map(String::as_str) {
        Some("mod") => {
            segs.pop();
        }
        Some("lib" | "main") if segs.len() == 1 => segs.clear(),
        _ => {}
    }
    segs
}

/// Tarjan's strongly connected components (iterative), each sorted.
fn strongly_connected(
    files: &BTreeSet<String>,
    edges: &BTreeMap<(String, String), Edge>,
) -> Vec<BTreeSet<String>> {
    let nodes: Vec<&String> = files.iter().collect();
    let index_of: BTreeMap<&String, usize> =
        nodes.iter().enumerate().map(|(i, n)| (*n, i)).collect();
    let mut next: Vec<Vec<usize>> = vec![Vec::new(); nodes.len()];
    for (from, to) in edges.keys() {
        if let (Some(&a), Some(&b)) = (index_of.get(from), index_of.get(to)) {
            next[a].push(b);
        }
    }
    let n = nodes.len();
    let (mut index, mut low) = (vec![usize::MAX; n], vec![0; n]);
    let mut on_stack = vec![false; n];
    let (mut stack, mut out, mut counter) = (Vec::new(), Vec::new(), 0);
    for start in 0..n {
        if index[start] != usize::MAX {
            continue;
        }
        let mut work = vec![(start, 0usize)];
        while let Some(&mut (v, ref mut child)) = work.last_mut() {
            if *child == 0 && index[v] == usize::MAX {
                index[v] = counter;
                low[v] = counter;
                counter += 1;
                stack.push(v);
                on_stack[v] = true;
            }
            if let Some(&w) = next[v].get(*child) {
                *child += 1;
                if index[w] == usize::MAX {
                    work.push((w, 0));
                } else if on_stack[w] {
                    low[v] = low[v].min(index[w]);
                }
                continue;
            }
            work.pop();
            if let Some(&(parent, _)) = work.last() {
                low[parent] = low[parent].min(low[v]);
            }
            if low[v] == index[v] {
                let mut component = BTreeSet::new();
                while let Some(w) = stack.pop() {
                    on_stack[w] = false;
                    component.insert(nodes[w].clone());
                    if w == v {
                        break;
                    }
                }
                out.push(component);
            }
        }
    }
    out.sort();
    out
}

/// The shortest loop through the component's first file, as files in order
/// (first and last the same).
fn shortest_cycle(
    component: &BTreeSet<String>,
    edges: &BTreeMap<(String, String), Edge>,
) -> Vec<String> {
    let start = component.iter().next().unwrap().clone();
    let mut came_from: BTreeMap<String, String> = BTreeMap::new();
    let mut queue = VecDeque::from([start.clone()]);
    while let Some(v) = queue.pop_front() {
        for (_, to) in edges
            .range((v.clone(), String::new())..)
            .map(|(k, _)| k)
            .take_while(|(f, _)| *f == v)
        {
            if !component.contains(to) {
                continue;
            }
            if *to == start {
                let mut path = vec![v.clone()];
                while path.last() != Some(&start) {
                    let before = came_from[path.last().unwrap()].clone();
                    path.push(before);
                }
                path.reverse();
                path.push(start);
                return path;
            }
            if !came_from.contains_key(to) {
                came_from.insert(to.clone(), v.clone());
                queue.push_back(to.clone());
            }
        }
    }
    unreachable!("a strongly connected component has a loop through each file")
}

// ---------------------------------------------------------------------------
// Reading a file: comments and literals blanked, then tokens.

/// One name a `use` brings in: the full path, the name it is bound to
/// (`as`), whether it is a glob, and its line.
struct UseLeaf {
    path: Vec<String>,
    alias: Option<String>,
    glob: bool,
    line: usize,
}

/// A path written in code (not in a `use`), as far as its `::`s go.
struct CodePath {
    path: Vec<String>,
    line: usize,
}

struct Parsed {
    uses: Vec<UseLeaf>,
    code_paths: Vec<CodePath>,
    /// `mod x;` (not `#[cfg(test)]`): child modules, which relative paths name.
    children: BTreeSet<String>,
    /// `#[cfg(test)] mod x;`
    test_children: BTreeSet<String>,
    /// `#![cfg(test)]`
    whole_file_is_test: bool,
}

#[derive(Clone, Debug, PartialEq)]
struct Token {
    text: String,
    line: usize,
}

impl Parsed {
    fn of(text: &str) -> Parsed {
        let tokens = tokens(&blank_comments_and_literals(text));
        let whole_file_is_test = is_seq(&tokens, 0, &["#", "!", "[", "cfg", "(", "test", ")", "]"]);
        let (tokens, test_children) = without_test_items(tokens);
        let t = |i: usize| tokens.get(i).map_or("", |t| t.text.as_str());
        let mut parsed = Parsed {
            uses: Vec::new(),
            code_paths: Vec::new(),
            children: BTreeSet::new(),
            test_children,
            whole_file_is_test,
        };
        let mut i = 0;
        while i < tokens.len() {
            match t(i) {
                "use" => {
                    i += 1;
                    let mut leaves = Vec::new();
                    use_tree(&tokens, &mut i, Vec::new(), &mut leaves);
                    parsed.uses.extend(leaves);
                    while i < tokens.len() && t(i) != ";" {
                        i += 1;
                    }
                }
                "mod" if is_ident(t(i + 1)) && t(i + 2) == ";" => {
                    parsed.children.insert(t(i + 1).to_string());
                    i += 3;
                }
                word if is_ident(word)
                    && t(i + 1) == "::"
                    && t(i.wrapping_sub(1)) != "::"
                    && t(i.wrapping_sub(1)) != "." =>
                {
                    let line = tokens[i].line;
                    let mut path = vec![word.to_string()];
                    i += 1;
                    while t(i) == "::" && is_ident(t(i + 1)) {
                        path.push(t(i + 1).to_string());
                        i += 2;
                    }
                    parsed.code_paths.push(CodePath { path, line });
                }
                _ => i += 1,
            }
        }
        parsed
    }
}

fn is_ident(s: &str) -> bool {
    s.chars()
        .next()
        .is_some_and(|c| c.is_alphabetic() || c == '_')
}

fn is_seq(tokens: &[Token], at: usize, seq: &[&str]) -> bool {
    seq.iter()
        .enumerate()
        .all(|(k, s)| tokens.get(at + k).is_some_and(|t| t.text == *s))
}

/// A `use` tree from `*i` on (after `use`), its leaves into `out`.
fn use_tree(tokens: &[Token], i: &mut usize, prefix: Vec<String>, out: &mut Vec<UseLeaf>) {
    let t = |i: usize| tokens.get(i).map_or("", |t| t.text.as_str());
    let mut path = prefix;
    if t(*i) == "::" {
        *i += 1;
    }
    loop {
        let line = tokens.get(*i).map_or(0, |t| t.line);
        match t(*i) {
            "{" => {
                *i += 1;
                while *i < tokens.len() && t(*i) != "}" {
                    use_tree(tokens, i, path.clone(), out);
                    if t(*i) == "," {
                        *i += 1;
                    } else if t(*i) != "}" {
                        // Not a use tree after all: stop here.
                        return;
                    }
                }
                *i += 1;
                return;
            }
            "*" => {
                *i += 1;
                out.push(UseLeaf {
                    path,
                    alias: None,
                    glob: true,
                    line,
                });
                return;
            }
            word if is_ident(word) => {
                path.push(word.to_string());
                *i += 1;
                if t(*i) == "::" {
                    *i += 1;
                    continue;
                }
                let alias = if t(*i) == "as" {
                    *i += 2;
                    Some(t(*i - 1).to_string())
                } else {
                    None
                };
                out.push(UseLeaf {
                    path,
                    alias,
                    glob: false,
                    line,
                });
                return;
            }
            _ => return,
        }
    }
}

/// The tokens with every `#[cfg(test)]` item taken out, and the names of
/// the `#[cfg(test)] mod x;` declarations.
fn without_test_items(tokens: Vec<Token>) -> (Vec<Token>, BTreeSet<String>) {
    const CFG_TEST: [&str; 7] = ["#", "[", "cfg", "(", "test", ")", "]"];
    let mut out = Vec::with_capacity(tokens.len());
    let mut test_children = BTreeSet::new();
    let mut i = 0;
    while i < tokens.len() {
        if !is_seq(&tokens, i, &CFG_TEST) {
            out.push(tokens[i].clone());
            i += 1;
            continue;
        }
        i += CFG_TEST.len();
        // Further attributes of the same item.
        while tokens.get(i).is_some_and(|t| t.text == "#")
            && tokens.get(i + 1).is_some_and(|t| t.text == "[")
        {
            i = past_group(&tokens, i + 1);
        }
        // The item: up to its `;` or through its `{ ... }`.
        let start = i;
        let mut depth = 0i32;
        while i < tokens.len() {
            match tokens[i].text.as_str() {
                "(" | "[" => depth += 1,
                ")" | "]" => depth -= 1,
                ";" if depth == 0 => {
                    i += 1;
                    break;
                }
                "{" if depth == 0 => {
                    i = past_group(&tokens, i);
                    break;
                }
                _ => {}
            }
            i += 1;
        }
        let item: Vec<&str> = tokens[start..i].iter().map(|t| t.text.as_str()).collect();
        if let [.., "mod", name, ";"] = item.as_slice() {
            test_children.insert(name.to_string());
        }
    }
    (out, test_children)
}

/// The index just past the bracket group opening at `open`.
fn past_group(tokens: &[Token], open: usize) -> usize {
    let mut depth = 0i32;
    let mut i = open;
    while i < tokens.len() {
        match tokens[i].text.as_str() {
            "(" | "[" | "{" => depth += 1,
            ")" | "]" | "}" => {
                depth -= 1;
                if depth == 0 {
                    return i + 1;
                }
            }
            _ => {}
        }
        i += 1;
    }
    i
}

/// Identifiers (and numbers), `::`, and single punctuation characters, each
/// with its line.
fn tokens(text: &str) -> Vec<Token> {
    let chars: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    let (mut i, mut line) = (0, 1);
    while i < chars.len() {
        let c = chars[i];
        if c == '\n' {
            line += 1;
            i += 1;
        } else if c.is_whitespace() {
            i += 1;
        } else if c.is_alphanumeric() || c == '_' {
            let start = i;
            while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            out.push(Token {
                text: chars[start..i].iter().collect(),
                line,
            });
        } else if c == ':' && chars.get(i + 1) == Some(&':') {
            out.push(Token {
                text: "::".into(),
                line,
            });
            i += 2;
        } else {
            out.push(Token {
                text: c.to_string(),
                line,
            });
            i += 1;
        }
    }
    out
}

/// The text with comments, strings and character literals turned into
/// spaces (line breaks kept, so that lines still count).
fn blank_comments_and_literals(text: &str) -> String {
    let c: Vec<char> = text.chars().collect();
    let mut out: Vec<char> = c.clone();
    let blank = |out: &mut Vec<char>, from: usize, to: usize| {
        for ch in out.iter_mut().take(to.min(c.len())).skip(from) {
            if *ch != '\n' {
                *ch = ' ';
            }
        }
    };
    let ident = |k: usize| k < c.len() && (c[k].is_alphanumeric() || c[k] == '_');
    let mut i = 0;
    while i < c.len() {
        if c[i] == '/' && c.get(i + 1) == Some(&'/') {
            let end = c[i..]
                .iter()
                .position(|&ch| ch == '\n')
                .map_or(c.len(), |p| i + p);
            blank(&mut out, i, end);
            i = end;
        } else if c[i] == '/' && c.get(i + 1) == Some(&'*') {
            let (mut depth, mut k) = (0, i);
            while k < c.len() {
                if c[k] == '/' && c.get(k + 1) == Some(&'*') {
                    depth += 1;
                    k += 2;
                } else if c[k] == '*' && c.get(k + 1) == Some(&'/') {
                    depth -= 1;
                    k += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    k += 1;
                }
            }
            blank(&mut out, i, k);
            i = k;
        } else if c[i] == 'r'
            && (i == 0 || !ident(i - 1) || (c[i - 1] == 'b' && (i < 2 || !ident(i - 2))))
            && matches!(c.get(i + 1), Some('"') | Some('#'))
        {
            // A raw string r"..." / r#"..."#, or an identifier starting with r#.
            let hashes = c[i + 1..].iter().take_while(|&&ch| ch == '#').count();
            if c.get(i + 1 + hashes) != Some(&'"') {
                i += 1;
                continue;
            }
            let mut k = i + 2 + hashes;
            while k < c.len()
                && !(c[k] == '"'
                    && c[k + 1..]
                        .iter()
                        .take(hashes)
                        .filter(|&&ch| ch == '#')
                        .count()
                        == hashes)
            {
                k += 1;
            }
            let end = (k + 1 + hashes).min(c.len());
            blank(&mut out, i, end);
            i = end;
        } else if c[i] == '"' {
            let mut k = i + 1;
            while k < c.len() && c[k] != '"' {
                k += if c[k] == '\\' { 2 } else { 1 };
            }
            blank(&mut out, i, k + 1);
            i = k + 1;
        } else if c[i] == '\'' {
            // A character literal ('x', '\n', '\u{..}'), else a lifetime.
            if c.get(i + 1) == Some(&'\\') {
                let mut k = i + 3;
                while k < c.len() && c[k] != '\'' {
                    k += 1;
                }
                blank(&mut out, i, k + 1);
                i = k + 1;
            } else if c.get(i + 2) == Some(&'\'') {
                blank(&mut out, i, i + 3);
                i += 3;
            } else {
                i += 1;
            }
        } else {
            i += 1;
        }
    }
    out.into_iter().collect()
}

// ---------------------------------------------------------------------------
// ARCHITECTURE.md

/// The table in the code block of the "## Layers" section: a line
/// `N  name/ name.rs ...  what they are` starts layer N, a line without a
/// number goes on with the layer above; the names are the words at the
/// start of a line (after the number) that end in `/` or `.rs`.
fn layers_in_architecture_md(text: &str) -> Vec<(String, u32)> {
    let section = text
        .split("\n## ")
        .find(|s| s.starts_with("Layers"))
        .expect("ARCHITECTURE.md has a \"## Layers\" section");
    let block = section
        .split("```")
        .nth(1)
        .expect("the \"Layers\" section has a code block with the table");
    let mut out = Vec::new();
    let mut layer = None;
    for line in block.lines() {
        let mut words = line.split_whitespace().peekable();
        if let Some(n) = words.peek().and_then(|w| w.parse::<u32>().ok()) {
            layer = Some(n);
            words.next();
        }
        let Some(layer) = layer else { continue };
        for word in words.take_while(|w| w.ends_with('/') || w.ends_with(".rs")) {
            out.push((word.to_string(), layer));
        }
    }
    out.sort();
    out
}
