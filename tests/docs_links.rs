//! The documentation resolves inside a clone, and the code keeps the shape
//! docs/architecture.md draws:
//! - every `docs/<name>.md` named in the sources, tests, benches, tools,
//!   kernels, README.md and docs/ exists;
//! - every relative Markdown link in README.md and docs/ (and its `#anchor`,
//!   when it has one) resolves;
//! - no file points outside the repository at the old contract files (a
//!   `spec` folder, the `shared` folder beside the checkout, the old design
//!   page);
//!   reading real data from the shared `data` folder would be the one
//!   allowed use of it;
//! - the rooms of `src/` import only what docs/architecture.md, "What must
//!   never import what", allows.

use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

const TEXT: &[&str] = &["rs", "md", "py", "sh", "cu", "cuh", "h", "cpp", "toml"];

/// Text files under `dir` (recursively), skipping test fixtures.
fn files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    let mut entries: Vec<_> = entries.flatten().map(|e| e.path()).collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            if p.file_name().is_some_and(|n| n == "fixtures" || n == "target") {
                continue;
            }
            files(&p, out);
        } else if p.extension().and_then(|e| e.to_str()).is_some_and(|e| TEXT.contains(&e)) {
            out.push(p);
        }
    }
}

/// Every text file the checks read: the code, the tests, the tools and the docs.
fn scanned() -> Vec<PathBuf> {
    let r = root();
    let mut out = Vec::new();
    for d in ["src", "tests", "benches", "tools", "kernels", "examples", "docs"] {
        files(&r.join(d), &mut out);
    }
    for f in ["README.md", "build.rs", "Cargo.toml"] {
        if r.join(f).is_file() {
            out.push(r.join(f));
        }
    }
    out
}

fn rel(p: &Path) -> String {
    p.strip_prefix(root()).unwrap_or(p).display().to_string()
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", rel(p)))
}

/// The names of every `docs/<name>.md` in `text`.
fn doc_refs(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(i) = rest.find("docs/") {
        let after = &rest[i + 5..];
        let name: String = after.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '-').collect();
        if !name.is_empty() && after[name.len()..].starts_with(".md") {
            out.push(name);
        }
        rest = after;
    }
    out
}

#[test]
fn every_docs_reference_names_a_file_that_exists() {
    let mut missing = Vec::new();
    let mut count = 0;
    for f in scanned() {
        for name in doc_refs(&read(&f)) {
            count += 1;
            if !root().join("docs").join(format!("{name}.md")).is_file() {
                missing.push(format!("{}: docs/{name}.md", rel(&f)));
            }
        }
    }
    assert!(count > 100, "only {count} docs/ references found: is the scan reading the tree?");
    assert!(missing.is_empty(), "references to missing docs:\n{}", missing.join("\n"));
}

/// GitHub's anchor for a heading: lower case, spaces to `-`, punctuation dropped.
fn slug(heading: &str) -> String {
    heading
        .trim()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c.to_ascii_lowercase()),
            _ => None,
        })
        .collect()
}

fn anchors(markdown: &str) -> Vec<String> {
    let mut in_code = false;
    let mut out = Vec::new();
    for line in markdown.lines() {
        if line.trim_start().starts_with("```") {
            in_code = !in_code;
        } else if !in_code && line.starts_with('#') {
            out.push(slug(line.trim_start_matches('#')));
        }
    }
    out
}

/// The targets of the inline links `[text](target)` of `markdown`, outside code blocks.
fn links(markdown: &str) -> Vec<String> {
    let mut in_code = false;
    let mut out = Vec::new();
    for line in markdown.lines() {
        if line.trim_start().starts_with("```") {
            in_code = !in_code;
            continue;
        }
        if in_code {
            continue;
        }
        let mut rest = line;
        while let Some(i) = rest.find("](") {
            let after = &rest[i + 2..];
            let Some(end) = after.find(')') else { break };
            out.push(after[..end].to_string());
            rest = &after[end..];
        }
    }
    out
}

#[test]
fn markdown_links_resolve() {
    let mut pages = vec![root().join("README.md")];
    files(&root().join("docs"), &mut pages);
    assert!(pages.len() >= 9, "docs/ holds too few pages: {pages:?}");
    let mut broken = Vec::new();
    for page in &pages {
        let text = read(page);
        for target in links(&text) {
            if target.contains("://") || target.starts_with("mailto:") {
                continue;
            }
            let (path, anchor) = match target.split_once('#') {
                Some((p, a)) => (p, Some(a)),
                None => (target.as_str(), None),
            };
            let file = if path.is_empty() { page.clone() } else { page.parent().unwrap().join(path) };
            if !file.exists() {
                broken.push(format!("{}: ({target}): no such file", rel(page)));
                continue;
            }
            if let Some(a) = anchor {
                if file.extension().is_some_and(|e| e == "md") && !anchors(&read(&file)).iter().any(|h| h == a) {
                    broken.push(format!("{}: ({target}): no heading with that anchor", rel(page)));
                }
            }
        }
    }
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
}

#[test]
fn nothing_points_outside_the_repository() {
    // Built from pieces so this file does not match itself.
    let spec = ["spec", "/"].concat();
    let shared = ["..", "/shared/"].concat();
    let allowed = ["..", "/shared/data/"].concat();
    let design = ["design", ".md"].concat();
    let mut found = Vec::new();
    for f in scanned() {
        let text = read(&f);
        for (n, line) in text.lines().enumerate() {
            let at = |what: &str| format!("{}:{}: {what}: {}", rel(&f), n + 1, line.trim());
            let spec_path = line.match_indices(&spec).any(|(i, _)| {
                i == 0 || !line[..i].chars().next_back().is_some_and(|c| c.is_alphanumeric() || c == '_')
            });
            if spec_path {
                found.push(at("a path into a spec folder"));
            }
            if line.match_indices(&shared).any(|(i, _)| !line[i..].starts_with(&allowed)) {
                found.push(at("the shared folder beside the checkout"));
            }
            if line.contains(&design) {
                found.push(at("the old design page"));
            }
        }
    }
    assert!(found.is_empty(), "references outside the repository (use docs/):\n{}", found.join("\n"));
}

/// The rooms of `src/` a room's code names with `crate::…` (comments
/// excluded). A room is a folder or file of `src/` (`server`,
/// `server/engine.rs` as `server/engine`); a use inside `server` is named
/// with its second part (`server::live`), since `server` holds three parts.
fn uses(room: &str) -> Vec<(String, String)> {
    let dir = root().join("src").join(room);
    let mut paths = Vec::new();
    if dir.is_dir() {
        files(&dir, &mut paths);
    } else {
        paths.push(root().join("src").join(format!("{room}.rs")));
    }
    let own = room.replace('/', "::");
    let mut out = Vec::new();
    for p in paths {
        for line in read(&p).lines() {
            if line.trim_start().starts_with("//") {
                continue;
            }
            for (i, _) in line.match_indices("crate::") {
                let word = |from: usize| -> String {
                    line[from..].chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect()
                };
                let mut used = word(i + 7);
                let mut end = i + 7 + used.len();
                if used == "server" && line[end..].starts_with("::") {
                    let part = word(end + 2);
                    end += 2 + part.len();
                    used = format!("server::{part}");
                }
                // Lower case: a room; upper case: a re-export at the root
                // (`crate::Cpu`); followed by `!`: an exported macro, which
                // lives at the root whatever room defines it (`crate::on_device!`).
                let is_macro = line[end..].starts_with('!');
                let inside = used == own || own.starts_with(&format!("{used}::"));
                if used.starts_with(|c: char| c.is_ascii_lowercase()) && !inside && !is_macro {
                    out.push((rel(&p), used));
                }
            }
        }
    }
    out
}

#[test]
fn rooms_import_only_what_the_architecture_allows() {
    const BELOW: &[&str] = &["tensor", "error", "fsutil"];
    // (room, what it may use besides itself)
    let rules: &[(&str, &[&str])] = &[
        ("ensemble", &[]),
        ("backend", BELOW),
        ("market", BELOW),
        ("features", &["market", "tensor", "error", "fsutil"]),
        ("model", &["backend", "weights", "tensor", "error", "fsutil"]),
        ("weights", &["model", "backend", "tensor", "error", "fsutil"]),
        ("train", &["backend", "model", "weights", "features", "market", "tensor", "error", "fsutil"]),
        ("server/engine", &["backend", "model", "weights", "ensemble", "tensor", "error", "fsutil"]),
        (
            "server/live",
            &["server::engine", "features", "market", "ensemble", "model", "backend", "tensor", "error", "fsutil"],
        ),
        (
            "evaluate",
            &[
                "server::engine",
                "server::live",
                "train",
                "features",
                "market",
                "ensemble",
                "model",
                "backend",
                "tensor",
                "error",
                "fsutil",
            ],
        ),
    ];
    let mut broken = Vec::new();
    for (room, allowed) in rules {
        for (file, used) in uses(room) {
            if !allowed.contains(&used.as_str()) {
                broken.push(format!("{file}: {room} uses crate::{used}"));
            }
        }
    }
    assert!(broken.is_empty(), "imports docs/architecture.md forbids:\n{}", broken.join("\n"));
}
