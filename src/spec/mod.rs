//! The spec: YAML files in a directory, parsed with their source positions,
//! checked, and resolved into a `model::Fleet`.
//!
//! `load_dir` is the only function here that touches the file system; the
//! rest (`validate::check`) is pure so tests and fuzzers can call it directly.

pub mod diag;
pub mod file;
pub mod identity;
pub mod limits;
pub mod located;
pub mod validate;
pub mod values;

use std::path::{Path, PathBuf};

pub use diag::{Diagnostic, SourceFile};

use crate::model::Fleet;

pub use limits::{MAX_FILE_BYTES, MAX_FILES, MAX_TOTAL_BYTES};

/// Paths in load errors are the spec's own file names: escaped like every
/// other spec text (a name may hold an escape sequence).
fn shown(p: &Path) -> String {
    diag::shown(&p.display().to_string())
}

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot read spec directory {}: {source}", shown(path))]
    Dir { path: PathBuf, source: std::io::Error },
    #[error("cannot read spec file {}: {source}", shown(path))]
    File { path: PathBuf, source: std::io::Error },
    #[error("spec file {} is larger than {MAX_FILE_BYTES} bytes", shown(path))]
    TooLarge { path: PathBuf },
    #[error("spec file {} is not UTF-8", shown(path))]
    NotUtf8 { path: PathBuf },
    #[error("no spec files (*.yaml, *.yml) in {}", shown(path))]
    Empty { path: PathBuf },
    #[error(
        "{} is a symbolic link that leads out of the spec directory {}: drover reads nothing outside it",
        shown(link),
        shown(root)
    )]
    Outside { link: PathBuf, root: PathBuf },
    #[error("{} is a symbolic link to nothing (or a loop)", shown(link))]
    BrokenLink { link: PathBuf },
    #[error("spec file {} is not a regular file", shown(path))]
    NotAFile { path: PathBuf },
    #[error("the spec directory {} has more than {MAX_FILES} spec files", shown(path))]
    TooMany { path: PathBuf },
    #[error("the spec files under {} hold more than {MAX_TOTAL_BYTES} bytes together", shown(path))]
    TooLargeTotal { path: PathBuf },
    #[error("the spec directory {} nests deeper than {} directories", shown(path), limits::MAX_DEPTH)]
    TooDeep { path: PathBuf },
}

/// Reads every `*.yaml` / `*.yml` file under `dir` (recursively, sorted by
/// path so that error order and merge order are stable).
///
/// The spec directory is untrusted input (with `--git`, a remote's): nothing
/// outside it is read. A symbolic link is followed only when its target,
/// canonicalised, lies under the canonical spec directory; a link to a spec
/// file or a directory elsewhere is refused by the link's name (the target's
/// content is never read, so never quoted). Each directory is visited once
/// (no loops). File count and sizes are checked on the metadata before
/// anything is read (`limits`).
pub fn load_dir(dir: &Path) -> Result<Vec<SourceFile>, LoadError> {
    let root = std::fs::canonicalize(dir).map_err(|source| LoadError::Dir { path: dir.to_path_buf(), source })?;
    let mut walk = Walk { root, seen: std::collections::HashSet::new(), files: Vec::new(), total: 0 };
    walk.seen.insert(walk.root.clone());
    walk.dir(dir, dir, 0)?;
    let mut files = walk.files;
    files.sort();
    if files.is_empty() {
        return Err(LoadError::Empty { path: dir.to_path_buf() });
    }
    files.into_iter().map(|(path, real)| read_capped(path, &real)).collect()
}

struct Walk {
    root: PathBuf,
    /// Canonical directories already walked (a link back up is not a loop).
    seen: std::collections::HashSet<PathBuf>,
    /// (path as the user names it, canonical path read).
    files: Vec<(PathBuf, PathBuf)>,
    total: u64,
}

impl Walk {
    fn dir(&mut self, top: &Path, dir: &Path, depth: usize) -> Result<(), LoadError> {
        if depth > limits::MAX_DEPTH {
            return Err(LoadError::TooDeep { path: top.to_path_buf() });
        }
        let entries = std::fs::read_dir(dir).map_err(|source| LoadError::Dir { path: dir.to_path_buf(), source })?;
        for e in entries {
            let e = e.map_err(|source| LoadError::Dir { path: dir.to_path_buf(), source })?;
            let path = e.path();
            if e.file_name().to_string_lossy().starts_with('.') {
                continue;
            }
            let is_spec = matches!(path.extension().and_then(|x| x.to_str()), Some("yaml" | "yml"));
            let ft = e.file_type().map_err(|source| LoadError::File { path: path.clone(), source })?;
            if ft.is_symlink() {
                // Where it leads, and whether that is still the spec directory.
                let Ok(real) = std::fs::canonicalize(&path) else {
                    if is_spec {
                        return Err(LoadError::BrokenLink { link: path });
                    }
                    continue;
                };
                let meta = std::fs::metadata(&real).map_err(|source| LoadError::File { path: path.clone(), source })?;
                if !(meta.is_dir() || is_spec) {
                    continue; // never read: a README link may lead anywhere
                }
                if !real.starts_with(&self.root) {
                    return Err(LoadError::Outside { link: path, root: top.to_path_buf() });
                }
                if meta.is_dir() {
                    if self.seen.insert(real) {
                        self.dir(top, &path, depth + 1)?;
                    }
                } else {
                    self.file(top, path, real, &meta)?;
                }
            } else if ft.is_dir() {
                let real =
                    std::fs::canonicalize(&path).map_err(|source| LoadError::Dir { path: path.clone(), source })?;
                if self.seen.insert(real) {
                    self.dir(top, &path, depth + 1)?;
                }
            } else if is_spec {
                let meta = e.metadata().map_err(|source| LoadError::File { path: path.clone(), source })?;
                self.file(top, path.clone(), path, &meta)?;
            }
        }
        Ok(())
    }

    /// Counts a spec file against the limits, from its metadata only.
    fn file(&mut self, top: &Path, path: PathBuf, real: PathBuf, meta: &std::fs::Metadata) -> Result<(), LoadError> {
        if !meta.is_file() {
            // A FIFO or a device would block or never end.
            return Err(LoadError::NotAFile { path });
        }
        if meta.len() > MAX_FILE_BYTES {
            return Err(LoadError::TooLarge { path });
        }
        self.total += meta.len();
        if self.total > MAX_TOTAL_BYTES {
            return Err(LoadError::TooLargeTotal { path: top.to_path_buf() });
        }
        if self.files.len() >= MAX_FILES {
            return Err(LoadError::TooMany { path: top.to_path_buf() });
        }
        self.files.push((path, real));
        Ok(())
    }
}

/// Reads at most `MAX_FILE_BYTES` (+1 to notice a file that grew since its metadata was read).
fn read_capped(path: PathBuf, real: &Path) -> Result<SourceFile, LoadError> {
    use std::io::Read as _;
    let f = std::fs::File::open(real).map_err(|source| LoadError::File { path: path.clone(), source })?;
    let mut bytes = Vec::new();
    f.take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|source| LoadError::File { path: path.clone(), source })?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(LoadError::TooLarge { path });
    }
    let text = String::from_utf8(bytes).map_err(|_| LoadError::NotUtf8 { path: path.clone() })?;
    Ok(SourceFile { path: path.display().to_string(), text })
}

/// The outcome of loading a spec directory: the fleet, or everything wrong with it.
pub enum Loaded {
    Valid { fleet: Fleet, files: Vec<SourceFile> },
    Invalid { diagnostics: Vec<Diagnostic>, files: Vec<SourceFile> },
}

pub fn load(dir: &Path) -> Result<Loaded, LoadError> {
    let files = load_dir(dir)?;
    Ok(match validate::check(&files) {
        Ok(fleet) => Loaded::Valid { fleet, files },
        Err(diagnostics) => Loaded::Invalid { diagnostics, files },
    })
}

/// JSON Schema (draft-07, which yaml-language-server understands) of a spec file.
pub fn json_schema() -> serde_json::Value {
    let generator = schemars::generate::SchemaSettings::draft07().into_generator();
    let schema = generator.into_root_schema_for::<file::SpecFile>();
    serde_json::to_value(schema).unwrap_or(serde_json::Value::Null)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::symlink;
    use std::path::PathBuf;

    use super::*;

    /// A fresh directory for one test, with `specs/` in it.
    fn scratch(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("drover-load-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(d.join("specs")).unwrap();
        d
    }

    const SPEC: &str = "profiles: []\n";

    #[test]
    fn a_link_to_a_file_outside_is_refused_by_its_name_and_never_read() {
        let d = scratch("outside-file");
        std::fs::write(d.join("shadow"), "root:$6$SECRETHASH:19000:0:99999:7:::\n").unwrap();
        std::fs::write(d.join("specs/fleet.yaml"), SPEC).unwrap();
        symlink(d.join("shadow"), d.join("specs/x.yaml")).unwrap();
        let e = load_dir(&d.join("specs")).unwrap_err();
        assert!(matches!(e, LoadError::Outside { .. }), "{e}");
        let msg = e.to_string();
        assert!(msg.contains("x.yaml") && msg.contains("leads out of the spec directory"), "{msg}");
        assert!(!msg.contains("SECRET") && !msg.contains("shadow"), "{msg}");
        // Relative links too, and through `..`.
        std::fs::remove_file(d.join("specs/x.yaml")).unwrap();
        symlink("../shadow", d.join("specs/x.yaml")).unwrap();
        assert!(matches!(load_dir(&d.join("specs")), Err(LoadError::Outside { .. })));
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn a_linked_directory_inside_is_followed_and_one_outside_refused() {
        let d = scratch("linked-dir");
        std::fs::create_dir_all(d.join("specs/real")).unwrap();
        std::fs::write(d.join("specs/real/farms.yaml"), SPEC).unwrap();
        symlink("real", d.join("specs/farms")).unwrap();
        // A loop: a link back to the spec directory itself.
        symlink("..", d.join("specs/real/up")).unwrap();
        let files = load_dir(&d.join("specs")).unwrap();
        let names: Vec<&str> = files.iter().map(|f| f.path.rsplit("specs/").next().unwrap()).collect();
        assert_eq!(names, ["farms/farms.yaml"], "each file once, under the first path that reached it");

        std::fs::create_dir_all(d.join("elsewhere")).unwrap();
        std::fs::write(d.join("elsewhere/secret.yaml"), "password: hunter2\n").unwrap();
        symlink(d.join("elsewhere"), d.join("specs/more")).unwrap();
        let e = load_dir(&d.join("specs")).unwrap_err().to_string();
        assert!(e.contains("specs/more") && e.contains("leads out"), "{e}");
        assert!(!e.contains("hunter2"), "{e}");
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn a_dangling_link_and_a_fifo_are_refused() {
        let d = scratch("special");
        std::fs::write(d.join("specs/fleet.yaml"), SPEC).unwrap();
        symlink("nowhere.yaml", d.join("specs/x.yaml")).unwrap();
        assert!(matches!(load_dir(&d.join("specs")), Err(LoadError::BrokenLink { .. })));
        std::fs::remove_file(d.join("specs/x.yaml")).unwrap();
        // A FIFO would block the reader forever.
        let ok = std::process::Command::new("mkfifo").arg(d.join("specs/pipe.yaml")).status().unwrap().success();
        assert!(ok, "mkfifo");
        assert!(matches!(load_dir(&d.join("specs")), Err(LoadError::NotAFile { .. })));
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn sizes_and_counts_are_refused_from_metadata_before_reading() {
        let d = scratch("sizes");
        let specs = d.join("specs");
        // Sparse files: the limits apply to the size the metadata gives.
        let sized = |name: &str, len: u64| {
            let f = std::fs::File::create(specs.join(name)).unwrap();
            f.set_len(len).unwrap();
        };
        sized("big.yaml", MAX_FILE_BYTES + 1);
        assert!(matches!(load_dir(&specs), Err(LoadError::TooLarge { .. })));
        std::fs::remove_file(specs.join("big.yaml")).unwrap();
        for i in 0..(MAX_TOTAL_BYTES / MAX_FILE_BYTES + 1) {
            sized(&format!("f{i}.yaml"), MAX_FILE_BYTES);
        }
        let e = load_dir(&specs).unwrap_err();
        assert!(matches!(e, LoadError::TooLargeTotal { .. }), "{e}");
        std::fs::remove_dir_all(&specs).unwrap();
        std::fs::create_dir_all(&specs).unwrap();
        for i in 0..=MAX_FILES {
            std::fs::write(specs.join(format!("f{i:04}.yaml")), SPEC).unwrap();
        }
        assert!(matches!(load_dir(&specs), Err(LoadError::TooMany { .. })));
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn control_characters_in_names_and_values_are_escaped_in_every_report() {
        let d = scratch("controls");
        let name = "evil\u{1b}]0;pwned\u{7}\u{202e}lmay.yaml";
        std::fs::write(d.join("specs").join(name), "sites:\n  - name: \"a\u{202e}\\e[2J\"\n    environment: production\n    lb: { admin_tcp: \"127.0.0.1:1\" }\n").unwrap();
        let files = load_dir(&d.join("specs")).unwrap();
        let diags = match validate::check(&files) {
            Err(d) => d,
            Ok(_) => panic!("accepted"),
        };
        let text = diag::render(&diags, &files);
        let json = serde_json::to_string(&diags).unwrap();
        for out in [&text, &json] {
            assert!(!out.chars().any(|c| c == '\u{1b}' || c == '\u{7}' || c == '\u{202e}'), "{out}");
        }
        assert!(text.contains("\\u{1B}]0;pwned") && text.contains("\\u{202E}"), "{text}");
        // The snippet is still found for a file whose name was escaped.
        assert!(text.contains("here"), "{text}");
        std::fs::remove_dir_all(&d).unwrap();
    }
}
