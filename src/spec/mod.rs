//! The spec: YAML files in a directory, parsed with their source positions,
//! checked, and resolved into a `model::Fleet`.
//!
//! `load_dir` is the only function here that touches the file system; the
//! rest (`validate::check`) is pure so tests and fuzzers can call it directly.

pub mod diag;
pub mod file;
pub mod identity;
pub mod located;
pub mod validate;
pub mod values;

use std::path::{Path, PathBuf};

pub use diag::{Diagnostic, SourceFile};

use crate::model::Fleet;

/// Largest spec file accepted, against accidental or hostile input.
pub const MAX_FILE_BYTES: u64 = 16 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot read spec directory {path}: {source}")]
    Dir { path: PathBuf, source: std::io::Error },
    #[error("cannot read spec file {path}: {source}")]
    File { path: PathBuf, source: std::io::Error },
    #[error("spec file {path} is larger than {MAX_FILE_BYTES} bytes")]
    TooLarge { path: PathBuf },
    #[error("spec file {path} is not UTF-8")]
    NotUtf8 { path: PathBuf },
    #[error("no spec files (*.yaml, *.yml) in {path}")]
    Empty { path: PathBuf },
}

/// Reads every `*.yaml` / `*.yml` file under `dir` (recursively, sorted by
/// path so that error order and merge order are stable).
pub fn load_dir(dir: &Path) -> Result<Vec<SourceFile>, LoadError> {
    let mut paths = Vec::new();
    collect(dir, &mut paths)?;
    paths.sort();
    if paths.is_empty() {
        return Err(LoadError::Empty { path: dir.to_path_buf() });
    }
    paths
        .into_iter()
        .map(|path| {
            let meta = std::fs::metadata(&path).map_err(|source| LoadError::File { path: path.clone(), source })?;
            if meta.len() > MAX_FILE_BYTES {
                return Err(LoadError::TooLarge { path });
            }
            let bytes = std::fs::read(&path).map_err(|source| LoadError::File { path: path.clone(), source })?;
            let text = String::from_utf8(bytes).map_err(|_| LoadError::NotUtf8 { path: path.clone() })?;
            Ok(SourceFile { path: path.display().to_string(), text })
        })
        .collect()
}

fn collect(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), LoadError> {
    let entries = std::fs::read_dir(dir).map_err(|source| LoadError::Dir { path: dir.to_path_buf(), source })?;
    for e in entries {
        let e = e.map_err(|source| LoadError::Dir { path: dir.to_path_buf(), source })?;
        let path = e.path();
        let name = e.file_name();
        if name.to_string_lossy().starts_with('.') {
            continue;
        }
        let ft = e.file_type().map_err(|source| LoadError::File { path: path.clone(), source })?;
        if ft.is_dir() {
            collect(&path, out)?;
        } else if matches!(path.extension().and_then(|x| x.to_str()), Some("yaml" | "yml")) {
            out.push(path);
        }
    }
    Ok(())
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
