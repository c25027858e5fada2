//! The imports follow the layers documented in `src/lib.rs`: every arrow between rooms (top-level
//! modules) points down the documented order, and no file of `src/` sits in an import circle.
//!
//! An arrow from file A to file B is any path in A's code (not its comments, strings or
//! `#[cfg(test)]` items: tests may reach anywhere) that names B's module: `crate::…`, `super::…`,
//! `self::…` or a child module's name (`child::…`, which is how a `mod.rs` re-exports). The listing
//! of every module's arrows prints with `scripts/layers.sh` (this test with `--nocapture`).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};

type Module = Vec<String>;

#[test]
fn imports_point_down_the_layers_and_form_no_circle() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let layers = documented_layers(&std::fs::read_to_string(src.join("lib.rs")).unwrap());
    let graph = Graph::of(&src);

    let listing = graph.listing();
    if std::env::var_os("LAYERS_LIST").is_some() {
        println!("{listing}");
    }

    let rank: HashMap<&str, usize> = layers
        .iter()
        .enumerate()
        .map(|(i, l)| (l.as_str(), i))
        .collect();
    let mut problems = Vec::new();
    for room in graph.rooms() {
        if !rank.contains_key(room.as_str()) {
            problems.push(format!(
                "module `{room}` is not in the layer list of src/lib.rs"
            ));
        }
    }
    for (from, targets) in &graph.edges {
        for to in targets {
            let (a, b) = (&from[0], &to[0]);
            if a == b {
                continue;
            }
            if let (Some(ra), Some(rb)) = (rank.get(a.as_str()), rank.get(b.as_str()))
                && ra <= rb
            {
                problems.push(format!(
                    "{} imports {} (layer `{a}` may only import layers below it)",
                    name(from),
                    name(to)
                ));
            }
        }
    }
    for circle in graph.circles() {
        problems.push(format!(
            "import circle: {}",
            circle.iter().map(name).collect::<Vec<_>>().join(" → ")
        ));
    }
    assert!(
        problems.is_empty(),
        "{}\n\n{} problem(s); the arrows:\n{listing}",
        problems.join("\n"),
        problems.len()
    );
}

/// The rooms listed after `Layers, bottom first:` in the crate docs, in order.
fn documented_layers(lib: &str) -> Vec<String> {
    let mut lines = lib
        .lines()
        .filter_map(|l| l.strip_prefix("//!"))
        .skip_while(|l| !l.contains("Layers, bottom first:"));
    let mut out = Vec::new();
    lines.next();
    for line in lines.skip_while(|l| l.trim().is_empty()) {
        if line.trim().is_empty() {
            break;
        }
        // `N. [`room`], [`room`]: what they are`: several rooms on a line are in order too.
        for part in line.split("[`").skip(1) {
            if let Some(room) = part.split('`').next()
                && !room.contains("::")
            {
                out.push(room.to_string());
            }
        }
    }
    assert!(
        out.len() > 5,
        "src/lib.rs must list the layers after `Layers, bottom first:`"
    );
    out
}

fn name(m: &Module) -> String {
    if m.is_empty() {
        "crate".into()
    } else {
        m.join("::")
    }
}

struct Graph {
    /// Module → the modules its code names.
    edges: BTreeMap<Module, BTreeSet<Module>>,
}

impl Graph {
    fn of(src: &Path) -> Graph {
        let mut files = BTreeMap::new();
        collect(src, src, &mut files);
        let modules: BTreeSet<Module> = files.keys().cloned().collect();
        // Files declared under `#[cfg(test)]` are tests: left out, with everything below them.
        let mut test_modules = BTreeSet::new();
        for (module, path) in &files {
            let code = std::fs::read_to_string(path).unwrap();
            for child in test_children(&code) {
                let mut m = module.clone();
                m.push(child);
                test_modules.insert(m);
            }
        }
        let is_test = |m: &Module| test_modules.iter().any(|t| m.starts_with(t));
        let mut edges = BTreeMap::new();
        for (module, path) in &files {
            if module.is_empty() || is_test(module) {
                continue;
            }
            let code = strip_tests(&strip_comments_and_strings(
                &std::fs::read_to_string(path).unwrap(),
            ));
            let mut targets = BTreeSet::new();
            for path in paths_in(&code) {
                let absolute: Module = match path.first().map(String::as_str) {
                    Some("crate") => path[1..].to_vec(),
                    Some("super") => {
                        let ups = path.iter().take_while(|p| *p == "super").count();
                        let Some(base) = module.len().checked_sub(ups) else {
                            continue;
                        };
                        let mut m = module[..base].to_vec();
                        m.extend_from_slice(&path[ups..]);
                        m
                    }
                    Some("self") => {
                        let mut m = module.clone();
                        m.extend_from_slice(&path[1..]);
                        m
                    }
                    Some(first) => {
                        let mut child = module.clone();
                        child.push(first.to_string());
                        if !modules.contains(&child) {
                            continue;
                        }
                        let mut m = module.clone();
                        m.extend_from_slice(&path);
                        m
                    }
                    None => continue,
                };
                let target = (0..=absolute.len())
                    .rev()
                    .map(|n| absolute[..n].to_vec())
                    .find(|m| modules.contains(m));
                if let Some(target) = target
                    && &target != module
                    && !target.is_empty()
                    && !is_test(&target)
                {
                    targets.insert(target);
                }
            }
            edges.insert(module.clone(), targets);
        }
        Graph { edges }
    }

    fn rooms(&self) -> BTreeSet<String> {
        self.edges.keys().map(|m| m[0].clone()).collect()
    }

    fn listing(&self) -> String {
        self.edges
            .iter()
            .map(|(m, t)| {
                format!(
                    "{} -> {}",
                    name(m),
                    t.iter().map(name).collect::<Vec<_>>().join(", ")
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Strongly connected components with more than one module (Tarjan).
    fn circles(&self) -> Vec<Vec<Module>> {
        struct State<'a> {
            graph: &'a Graph,
            index: HashMap<&'a Module, usize>,
            low: HashMap<&'a Module, usize>,
            stack: Vec<&'a Module>,
            on_stack: BTreeSet<&'a Module>,
            out: Vec<Vec<Module>>,
        }
        fn visit<'a>(s: &mut State<'a>, v: &'a Module) {
            let i = s.index.len();
            s.index.insert(v, i);
            s.low.insert(v, i);
            s.stack.push(v);
            s.on_stack.insert(v);
            for w in s.graph.edges.get(v).into_iter().flatten() {
                let Some((w, _)) = s.graph.edges.get_key_value(w) else {
                    continue;
                };
                if !s.index.contains_key(w) {
                    visit(s, w);
                    let low = s.low[v].min(s.low[w]);
                    s.low.insert(v, low);
                } else if s.on_stack.contains(w) {
                    let low = s.low[v].min(s.index[w]);
                    s.low.insert(v, low);
                }
            }
            if s.low[v] == s.index[v] {
                let mut component = Vec::new();
                while let Some(w) = s.stack.pop() {
                    s.on_stack.remove(w);
                    component.push(w.clone());
                    if w == v {
                        break;
                    }
                }
                if component.len() > 1 {
                    component.sort();
                    s.out.push(component);
                }
            }
        }
        let mut s = State {
            graph: self,
            index: HashMap::new(),
            low: HashMap::new(),
            stack: Vec::new(),
            on_stack: BTreeSet::new(),
            out: Vec::new(),
        };
        for v in self.edges.keys() {
            if !s.index.contains_key(v) {
                visit(&mut s, v);
            }
        }
        s.out
    }
}

/// Every `.rs` file under `dir`, by module path (`a/mod.rs` and `a.rs` are `a`).
fn collect(root: &Path, dir: &Path, out: &mut BTreeMap<Module, PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            collect(root, &path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            let relative = path.strip_prefix(root).unwrap().with_extension("");
            let mut module: Module = relative
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect();
            if matches!(
                module.last().map(String::as_str),
                Some("mod" | "lib" | "main")
            ) {
                module.pop();
            }
            if path.file_name().is_some_and(|f| f == "main.rs") && module.is_empty() {
                continue;
            }
            out.insert(module, path);
        }
    }
}

/// Code without comments and the contents of string and char literals.
fn strip_comments_and_strings(code: &str) -> String {
    let b = code.as_bytes();
    let mut out = String::with_capacity(code.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'/' if b.get(i + 1) == Some(&b'/') => {
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
            }
            b'/' if b.get(i + 1) == Some(&b'*') => {
                let mut depth = 0;
                while i < b.len() {
                    if b[i] == b'/' && b.get(i + 1) == Some(&b'*') {
                        depth += 1;
                        i += 2;
                    } else if b[i] == b'*' && b.get(i + 1) == Some(&b'/') {
                        depth -= 1;
                        i += 2;
                        if depth == 0 {
                            break;
                        }
                    } else {
                        i += 1;
                    }
                }
            }
            b'r' if matches!(b.get(i + 1), Some(b'"' | b'#'))
                && (i == 0 || !(b[i - 1].is_ascii_alphanumeric() || b[i - 1] == b'_')) =>
            {
                let hashes = b[i + 1..].iter().take_while(|c| **c == b'#').count();
                if b.get(i + 1 + hashes) != Some(&b'"') {
                    out.push('r');
                    i += 1;
                    continue;
                }
                i += 2 + hashes;
                let close: Vec<u8> = std::iter::once(b'"')
                    .chain(std::iter::repeat_n(b'#', hashes))
                    .collect();
                while i < b.len() && !b[i..].starts_with(&close) {
                    i += 1;
                }
                i += close.len();
                out.push_str("\"\"");
            }
            b'"' => {
                i += 1;
                while i < b.len() && b[i] != b'"' {
                    i += if b[i] == b'\\' { 2 } else { 1 };
                }
                i += 1;
                out.push_str("\"\"");
            }
            // A char literal ('x', '\n', '\''), not a lifetime ('a).
            b'\'' if b.get(i + 2) == Some(&b'\'') || b.get(i + 1) == Some(&b'\\') => {
                i += 1;
                while i < b.len() && b[i] != b'\'' {
                    i += if b[i] == b'\\' { 2 } else { 1 };
                }
                i += 1;
                out.push_str("' '");
            }
            c => {
                out.push(c as char);
                i += 1;
            }
        }
    }
    out
}

/// The names of child modules declared `#[cfg(test)] mod name;` (or with a body).
fn test_children(code: &str) -> Vec<String> {
    let code = strip_comments_and_strings(code);
    let mut out = Vec::new();
    let mut rest = code.as_str();
    while let Some(at) = rest.find("#[cfg(test)]") {
        rest = &rest[at + "#[cfg(test)]".len()..];
        let item = rest.trim_start();
        let item = item.strip_prefix("pub(crate) ").unwrap_or(item);
        let item = item.strip_prefix("pub ").unwrap_or(item);
        if let Some(after) = item.strip_prefix("mod ") {
            let name: String = after
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            out.push(name);
        }
    }
    out
}

/// Code without `#[cfg(test)]` items (a `mod … { … }`, a `fn`, a `use`).
fn strip_tests(code: &str) -> String {
    let mut out = String::with_capacity(code.len());
    let mut rest = code;
    while let Some(at) = rest.find("#[cfg(test)]") {
        out.push_str(&rest[..at]);
        rest = &rest[at + "#[cfg(test)]".len()..];
        // The item ends at its first `;` outside braces, or at the brace closing its body.
        let mut depth = 0usize;
        let mut end = rest.len();
        for (i, c) in rest.char_indices() {
            match c {
                '{' => depth += 1,
                '}' => {
                    depth = depth.saturating_sub(1);
                    if depth == 0 {
                        end = i + 1;
                        break;
                    }
                }
                ';' if depth == 0 => {
                    end = i + 1;
                    break;
                }
                _ => {}
            }
        }
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

/// Every path of two or more segments (`a::b::c`), with `use` groups expanded
/// (`use crate::a::{b, c::d}` gives `crate::a::b` and `crate::a::c::d`).
fn paths_in(code: &str) -> Vec<Vec<String>> {
    let chars: Vec<char> = code.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let starts_word = (chars[i].is_alphabetic() || chars[i] == '_')
            && (i == 0 || !(chars[i - 1].is_alphanumeric() || chars[i - 1] == '_'))
            && !(i >= 2 && chars[i - 1] == ':' && chars[i - 2] == ':');
        if !starts_word {
            i += 1;
            continue;
        }
        let (segments, next) = read_path(&chars, i, Vec::new(), &mut out);
        if segments.len() >= 2 {
            out.push(segments);
        }
        i = next.max(i + 1);
    }
    out
}

/// Reads `a::b::{…}` from `i`, pushing group members to `out`; returns the plain path read and
/// where it ended.
fn read_path(
    chars: &[char],
    mut i: usize,
    prefix: Vec<String>,
    out: &mut Vec<Vec<String>>,
) -> (Vec<String>, usize) {
    let mut segments = prefix;
    loop {
        while i < chars.len() && chars[i].is_whitespace() {
            i += 1;
        }
        if chars.get(i) == Some(&'{') {
            // A group: each member continues the path.
            i += 1;
            loop {
                while i < chars.len() && (chars[i].is_whitespace() || chars[i] == ',') {
                    i += 1;
                }
                match chars.get(i) {
                    None => return (Vec::new(), i),
                    Some('}') => return (Vec::new(), i + 1),
                    Some(_) => {
                        let (member, next) = read_path(chars, i, segments.clone(), out);
                        if member.len() > segments.len() {
                            out.push(member);
                        }
                        // Skip `as name` and anything else up to the next member.
                        i = next;
                        while i < chars.len() && chars[i] != ',' && chars[i] != '}' {
                            if chars[i] == '{' {
                                break;
                            }
                            i += 1;
                        }
                    }
                }
            }
        }
        if chars.get(i) == Some(&'*') && !segments.is_empty() {
            // A glob (`use super::*`) names the module it reads.
            segments.push("*".into());
            return (segments, i + 1);
        }
        let start = i;
        while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
            i += 1;
        }
        if i == start {
            return (segments, i);
        }
        segments.push(chars[start..i].iter().collect());
        if chars.get(i) == Some(&':') && chars.get(i + 1) == Some(&':') {
            i += 2;
        } else {
            return (segments, i);
        }
    }
}

#[test]
fn paths_and_groups_are_read() {
    let code =
        "use crate::a::{b, c::{d, e as f}, self};\nlet x = super::g::h(1); y::z; use super::*;";
    let paths = paths_in(code);
    for wanted in [
        vec!["crate", "a", "b"],
        vec!["crate", "a", "c", "d"],
        vec!["crate", "a", "c", "e"],
        vec!["crate", "a", "self"],
        vec!["super", "g", "h"],
        vec!["y", "z"],
        vec!["super", "*"],
    ] {
        assert!(
            paths.iter().any(|p| p == &wanted),
            "{wanted:?} not in {paths:?}"
        );
    }
}

#[test]
fn comments_strings_and_test_items_are_not_code() {
    let code = "// crate::a\nlet s = \"crate::b\"; /* crate::c */ let r = r#\"crate::d\"#;\n#[cfg(test)]\nmod tests { use crate::e; }\nuse crate::f;";
    let paths = paths_in(&strip_tests(&strip_comments_and_strings(code)));
    assert_eq!(paths, vec![vec!["crate".to_string(), "f".to_string()]]);
}
