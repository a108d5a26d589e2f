//! Tidy: the structure ARCHITECTURE.md promises, checked against `src/`
//! (as rust-analyzer's `tidy.rs` checks its own invariants). It reads the
//! code as text: the `use crate::` (and `crate::`) references of each
//! top-level module's non-test code, the status codes, the producer, and
//! the size of every file and function. Each rule names the ARCHITECTURE.md
//! invariant it keeps; the test fails if the document stops stating it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// A dependency rule: `module` may use only `allowed` of the crate's
/// top-level modules. `invariant` is text ARCHITECTURE.md must contain.
struct Allowed {
    module: &'static str,
    allowed: &'static [&'static str],
    invariant: &'static str,
}

const RULES: &[Allowed] = &[
    Allowed {
        module: "event",
        allowed: &[],
        invariant: "`event/` imports nothing from the crate",
    },
    Allowed {
        module: "clock",
        allowed: &[],
        invariant: "`clock.rs` imports nothing from the crate",
    },
    Allowed {
        module: "callback",
        allowed: &["event"],
        invariant: "`callback/` imports nothing but `event`",
    },
    Allowed {
        module: "sink",
        allowed: &["clock", "config", "event", "health", "metrics"],
        invariant: "`sink/` never imports `http`, `callback` or `route`",
    },
    Allowed {
        module: "metrics",
        allowed: &["callback", "clock", "dedup"],
        invariant: "`metrics/` never imports `http`, `sink`, `config` or `app`",
    },
    Allowed {
        module: "route",
        allowed: &["callback"],
        invariant: "`route.rs` imports nothing but `callback`",
    },
];

const NO_CYCLES: &str = "No module cycle";
const STATUS_CODES: &str = "Only `http/respond.rs` and `http/admin.rs` choose status codes";
const PRODUCER: &str = "only by `sink/kafka.rs`";
const SIZES: &str = "No file over 500 lines of non-test code and no function over 100 lines";
const MAX_FILE_LINES: usize = 500;
const MAX_FN_LINES: usize = 100;

/// One source file: its path under `src/`, and its non-test lines.
struct Source {
    path: String,
    code: Vec<String>,
}

fn architecture() -> String {
    std::fs::read_to_string(Path::new(ROOT).join("ARCHITECTURE.md")).expect("ARCHITECTURE.md")
}

/// Every `.rs` file under `src/`, with test-only code removed: files
/// declared `#[cfg(test)] mod x;`, and `#[cfg(test)] mod x { ... }` blocks.
fn sources() -> Vec<Source> {
    let src = Path::new(ROOT).join("src");
    let mut files = Vec::new();
    walk(&src, &mut files);
    files.sort();
    let texts: BTreeMap<PathBuf, String> = files
        .iter()
        .map(|p| (p.clone(), std::fs::read_to_string(p).expect("read source")))
        .collect();
    let mut test_files = BTreeSet::new();
    for (path, text) in &texts {
        let dir = if path
            .file_name()
            .is_some_and(|n| n == "mod.rs" || n == "lib.rs" || n == "main.rs")
        {
            path.parent().expect("in src").to_path_buf()
        } else {
            path.with_extension("")
        };
        let lines: Vec<&str> = text.lines().collect();
        for w in lines.windows(2) {
            if w[0].trim() == "#[cfg(test)]" {
                let decl = w[1].trim().trim_start_matches("pub(crate) ");
                if let Some(name) = decl.strip_prefix("mod ").and_then(|d| d.strip_suffix(';')) {
                    test_files.insert(dir.join(format!("{name}.rs")));
                    test_files.insert(dir.join(name).join("mod.rs"));
                }
            }
        }
    }
    texts
        .into_iter()
        .filter(|(p, _)| !test_files.contains(p))
        .map(|(p, text)| Source {
            path: p
                .strip_prefix(&src)
                .expect("under src")
                .to_string_lossy()
                .into_owned(),
            code: without_tests_and_comments(&text),
        })
        .collect()
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read dir") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            walk(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The lines of `text` outside `#[cfg(test)]` blocks, with `//` comments cut.
fn without_tests_and_comments(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut lines = text.lines().peekable();
    while let Some(line) = lines.next() {
        if line.trim() == "#[cfg(test)]" {
            // Skip the item that follows: to its `;`, or its balanced braces.
            let mut depth = 0i32;
            let mut opened = false;
            for item in lines.by_ref() {
                depth += braces(item);
                opened |= item.contains('{');
                if (opened && depth <= 0) || (!opened && item.trim_end().ends_with(';')) {
                    break;
                }
            }
            continue;
        }
        let code = match line.find("//") {
            Some(i) if !line[..i].contains('"') => &line[..i],
            _ => line,
        };
        out.push(code.to_owned());
    }
    out
}

/// Net braces on a line, ignoring those in string and char literals.
fn braces(line: &str) -> i32 {
    let mut n = 0;
    let mut in_str = false;
    let mut prev = ' ';
    for c in line.chars() {
        match c {
            '"' if prev != '\\' && prev != '\'' => in_str = !in_str,
            '{' if !in_str && prev != '\'' => n += 1,
            '}' if !in_str && prev != '\'' => n -= 1,
            _ => {}
        }
        prev = c;
    }
    n
}

fn top_module(path: &str) -> String {
    path.split('/')
        .next()
        .expect("a path")
        .trim_end_matches(".rs")
        .to_owned()
}

/// `module -> modules it references` (`crate::x`), top level only.
fn graph(sources: &[Source]) -> BTreeMap<String, BTreeSet<String>> {
    let mut g: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for s in sources {
        let from = top_module(&s.path);
        let entry = g.entry(from.clone()).or_default();
        for line in &s.code {
            for (i, _) in line.match_indices("crate::") {
                let rest = &line[i + "crate::".len()..];
                let to: String = rest
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                if !to.is_empty() && to != from {
                    entry.insert(to);
                }
            }
        }
    }
    g
}

#[test]
fn module_dependencies_follow_the_architecture() {
    let arch = architecture();
    let g = graph(&sources());
    let mut wrong = Vec::new();
    for rule in RULES {
        assert!(
            arch.contains(rule.invariant),
            "ARCHITECTURE.md no longer states: {}",
            rule.invariant
        );
        let uses = g
            .get(rule.module)
            .unwrap_or_else(|| panic!("no module {}", rule.module));
        for used in uses {
            if !rule.allowed.contains(&used.as_str()) {
                wrong.push(format!("{} uses {used} ({})", rule.module, rule.invariant));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "forbidden dependencies:\n{}",
        wrong.join("\n")
    );
}

#[test]
fn top_level_modules_have_no_cycle() {
    assert!(architecture().contains(NO_CYCLES));
    let g = graph(&sources());
    // Depth-first search; a back edge closes a cycle.
    fn visit(
        n: &str,
        g: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(i) = path.iter().position(|p| p == n) {
            let mut cycle = path[i..].to_vec();
            cycle.push(n.to_owned());
            return Some(cycle);
        }
        if done.contains(n) {
            return None;
        }
        path.push(n.to_owned());
        for m in g.get(n).into_iter().flatten() {
            if let Some(c) = visit(m, g, path, done) {
                return Some(c);
            }
        }
        path.pop();
        done.insert(n.to_owned());
        None
    }
    let mut done = BTreeSet::new();
    for n in g.keys() {
        if let Some(cycle) = visit(n, &g, &mut Vec::new(), &mut done) {
            panic!("module cycle: {}", cycle.join(" -> "));
        }
    }
}

/// The tidy rules themselves catch what they claim to: a made-up source
/// with a forbidden import, a cycle and a test block.
#[test]
fn the_tidy_rules_can_fail() {
    let fake = |path: &str, text: &str| Source {
        path: path.to_owned(),
        code: without_tests_and_comments(text),
    };
    let g = graph(&[
        fake(
            "event/mod.rs",
            "use crate::sink::Thing;\n#[cfg(test)]\nmod tests {\n    use crate::http::X;\n}\n",
        ),
        fake(
            "sink/mod.rs",
            "use crate::event::Event; // crate::http in a comment\n",
        ),
    ]);
    assert_eq!(g["event"], BTreeSet::from(["sink".to_owned()]));
    assert_eq!(g["sink"], BTreeSet::from(["event".to_owned()]));
    assert_eq!(braces(r#"let s = "{"; f('{'); {"#), 1);
}

#[test]
fn only_the_answer_mappings_choose_status_codes_and_only_the_producer_writes_kafka() {
    let arch = architecture();
    assert!(arch.contains(STATUS_CODES) && arch.contains(PRODUCER));
    for s in sources() {
        let text = s.code.join("\n");
        if text.contains("StatusCode::") || text.contains("StatusCode as") {
            assert!(
                s.path == "http/respond.rs" || s.path == "http/admin.rs",
                "{} chooses a status code",
                s.path
            );
        }
        for producer in [
            "BaseRecord",
            "ThreadedProducer",
            "FutureProducer",
            "BaseProducer",
        ] {
            if text.contains(producer) {
                assert_eq!(s.path, "sink/kafka.rs", "{} uses {producer}", s.path);
            }
        }
    }
}

/// Files and functions stay small enough to hold in one's head, except
/// those ARCHITECTURE.md names (as `path:function` in backquotes) with why.
#[test]
fn files_and_functions_stay_small_unless_architecture_says_why() {
    let arch = architecture();
    assert!(arch.contains(SIZES));
    let mut too_big = Vec::new();
    for s in sources() {
        let lines = s.code.iter().filter(|l| !l.trim().is_empty()).count();
        if lines > MAX_FILE_LINES && !arch.contains(&format!("`{}`", s.path)) {
            too_big.push(format!("{}: {lines} lines of non-test code", s.path));
        }
        let mut i = 0;
        while i < s.code.len() {
            let line = s.code[i].trim_start();
            let name = [
                "pub fn ",
                "pub(crate) fn ",
                "pub(super) fn ",
                "fn ",
                "pub async fn ",
                "async fn ",
            ]
            .iter()
            .find_map(|p| line.strip_prefix(p))
            .map(|rest| rest.split(['(', '<']).next().unwrap_or("").to_owned());
            if let Some(name) = name.filter(|_| !line.trim_end().ends_with(';')) {
                let (mut depth, mut opened, mut j) = (0, false, i);
                while j < s.code.len() {
                    depth += braces(&s.code[j]);
                    opened |= s.code[j].contains('{');
                    if opened && depth <= 0 {
                        break;
                    }
                    j += 1;
                }
                let n = j - i + 1;
                if n > MAX_FN_LINES && !arch.contains(&format!("`{}:{name}`", s.path)) {
                    too_big.push(format!("{}:{name}: {n} lines", s.path));
                }
            }
            i += 1;
        }
    }
    assert!(
        too_big.is_empty(),
        "too big (split it, or say why in ARCHITECTURE.md):\n{}",
        too_big.join("\n")
    );
}
