//! The layering rules of DESIGN.md, checked on the sources so they cannot regress:
//! `core` is pure (no files, no tokio, no egui, nothing from the outer layers) and
//! `store` imports nothing from `runtime` or `capture`. Comments are ignored.

use std::path::{Path, PathBuf};

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    for e in entries {
        let p = e.expect("directory entry").path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// Every `file:line: text` in `dir` whose code (comments stripped) contains one of `banned`.
fn offenders(dir: &str, banned: &[&str]) -> Vec<String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join(dir);
    let mut files = Vec::new();
    if root.is_file() {
        files.push(root.clone());
    } else {
        rust_files(&root, &mut files);
    }
    assert!(!files.is_empty(), "no sources under {}", root.display());
    let mut found = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
        for (n, line) in text.lines().enumerate() {
            let code = line.split("//").next().unwrap_or("");
            for b in banned {
                if code.contains(b) {
                    found.push(format!("{}:{}: {}", f.display(), n + 1, line.trim()));
                }
            }
        }
    }
    found
}

#[test]
fn core_reads_no_files_and_uses_no_tokio_or_egui() {
    let bad = offenders(
        "src/core",
        &[
            "std::fs",
            "fs::read",
            "File::open",
            "tokio",
            "egui",
            "reqwest",
            "rusqlite",
        ],
    );
    assert!(bad.is_empty(), "core must stay pure:\n{}", bad.join("\n"));
}

#[test]
fn core_depends_on_no_outer_layer() {
    let bad = offenders(
        "src/core",
        &[
            "crate::store",
            "crate::runtime",
            "crate::capture",
            "crate::cli",
            "crate::ui",
        ],
    );
    assert!(
        bad.is_empty(),
        "core must not import outer layers:\n{}",
        bad.join("\n")
    );
}

#[test]
fn store_imports_nothing_from_runtime_or_capture() {
    let bad = offenders(
        "src/store",
        &["crate::runtime", "crate::capture", "crate::cli"],
    );
    assert!(
        bad.is_empty(),
        "store must not import runtime types:\n{}",
        bad.join("\n")
    );
}

#[test]
fn batch_does_not_depend_back_on_render_nor_template_on_mapping() {
    let batch = offenders("src/core/batch.rs", &["super::render", "core::render"]);
    assert!(
        batch.is_empty(),
        "render↔batch cycle:\n{}",
        batch.join("\n")
    );
    let template = offenders("src/core/template.rs", &["super::mapping", "core::mapping"]);
    assert!(
        template.is_empty(),
        "template↔mapping cycle:\n{}",
        template.join("\n")
    );
}

#[test]
fn unix_signal_code_is_behind_cfg_unix() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&root, &mut files);
    let mut bad = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(&f).expect("source");
        let lines: Vec<&str> = text.lines().collect();
        for (n, line) in lines.iter().enumerate() {
            let code = line.split("//").next().unwrap_or("");
            if !(code.contains("signal::unix") || code.contains("std::os::unix")) {
                continue;
            }
            // The attribute is on this line, or within the few lines above (a block).
            let guarded = lines[n.saturating_sub(4)..=n]
                .iter()
                .any(|l| l.contains("cfg(unix)"));
            if !guarded {
                bad.push(format!("{}:{}: {}", f.display(), n + 1, line.trim()));
            }
        }
    }
    assert!(
        bad.is_empty(),
        "unix-only code without cfg(unix):\n{}",
        bad.join("\n")
    );
}

/// The app talks to the runtime only through `Command`/`Update`: it never awaits,
/// never opens a socket or a database itself, and does not reach into the CLI.
#[test]
fn ui_never_awaits_and_talks_to_the_runtime_only_by_messages() {
    let bad = offenders(
        "src/ui",
        &[
            ".await",
            "tokio",
            "reqwest",
            "rusqlite",
            "crate::cli",
            "crate::runtime::delivery",
            "crate::runtime::oauth2",
            "crate::capture::serve",
            "block_on",
        ],
    );
    assert!(
        bad.is_empty(),
        "the ui layer must stay a client of the runtime:\n{}",
        bad.join("\n")
    );
}

/// Frames read no files: the only disk access in the app is on its I/O thread
/// (`work.rs`) and at start-up, before the window (`run`).
#[test]
fn ui_panels_touch_no_files() {
    for panel in [
        "src/ui/sidebar.rs",
        "src/ui/editor.rs",
        "src/ui/mapping.rs",
        "src/ui/preview.rs",
        "src/ui/widgets.rs",
        "src/ui/state.rs",
    ] {
        let bad = offenders(
            panel,
            &[
                "std::fs",
                "File::",
                "store::import",
                "store::workspace",
                "store::keyring",
                "keyring_core",
            ],
        );
        assert!(
            bad.is_empty(),
            "{panel} must not touch files or the keyring:\n{}",
            bad.join("\n")
        );
    }
}
