//! Where a config repository's files come from: a directory on disk, or
//! files held in memory (the demo, a Git commit's tree, a directory
//! snapshot). The loader reads through [`Source`] only, so every mode
//! validates the same way.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Where a config repository's files come from: a directory, or files
/// held in memory (the demo; a Git commit's tree).
pub trait Source {
    /// Reads a file by its path relative to the config root; `Ok(None)`
    /// when it does not exist.
    fn read(&self, rel: &str) -> std::io::Result<Option<String>>;
    /// The `*.yaml` files directly inside a folder, as relative paths, sorted.
    fn list_yaml(&self, folder: &str) -> std::io::Result<Vec<String>>;
    /// How to name a file in messages.
    fn display(&self, rel: &str) -> String;
    /// The local directory relative paths in gateway.yaml (TLS files,
    /// password files) resolve against.
    fn base_dir(&self) -> PathBuf;
}

/// A config repository checked out in a directory.
pub struct DirSource(pub PathBuf);

impl Source for DirSource {
    fn read(&self, rel: &str) -> std::io::Result<Option<String>> {
        match std::fs::read_to_string(self.0.join(rel)) {
            Ok(s) => Ok(Some(s)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn list_yaml(&self, folder: &str) -> std::io::Result<Vec<String>> {
        let dir = self.0.join(folder);
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        let mut out = Vec::new();
        for e in entries {
            let e = e?;
            let name = e.file_name().to_string_lossy().into_owned();
            if name.ends_with(".yaml") && !name.starts_with('.') && e.file_type()?.is_file() {
                out.push(format!("{folder}/{name}"));
            }
        }
        out.sort();
        Ok(out)
    }

    fn display(&self, rel: &str) -> String {
        self.0.join(rel).display().to_string()
    }

    fn base_dir(&self) -> PathBuf {
        self.0.clone()
    }
}

/// Config files held in memory, keyed by relative path.
pub struct MemSource {
    pub files: BTreeMap<String, String>,
    /// Prefix for messages, including its separator: `demo:`,
    /// `git:abc1234:`, or a directory path ending in `/`.
    pub label: String,
    pub base: PathBuf,
}

impl Source for MemSource {
    fn read(&self, rel: &str) -> std::io::Result<Option<String>> {
        Ok(self.files.get(rel).cloned())
    }

    fn list_yaml(&self, folder: &str) -> std::io::Result<Vec<String>> {
        let prefix = format!("{folder}/");
        Ok(self
            .files
            .keys()
            .filter(|k| {
                k.strip_prefix(&prefix)
                    .is_some_and(|rest| !rest.contains('/') && rest.ends_with(".yaml"))
            })
            .cloned()
            .collect())
    }

    fn display(&self, rel: &str) -> String {
        format!("{}{rel}", self.label)
    }

    fn base_dir(&self) -> PathBuf {
        self.base.clone()
    }
}

/// The folders (besides the root) whose `*.yaml` files make up a config
/// repository; a snapshot reads these and nothing else.
pub(crate) const CONFIG_FOLDERS: &[&str] = &["roles", "tests"];

/// Reads every file the loader can read from `dir` into memory, so one
/// reload validates and swaps one consistent set of files even while an
/// editor or `git pull` is rewriting them.
pub fn snapshot_dir(dir: &Path) -> std::io::Result<MemSource> {
    let disk = DirSource(dir.to_path_buf());
    let mut files = BTreeMap::new();
    let mut names = disk.list_yaml(".")?;
    for folder in CONFIG_FOLDERS {
        names.extend(disk.list_yaml(folder)?);
    }
    for name in names {
        let rel = name.strip_prefix("./").unwrap_or(&name).to_string();
        if let Some(text) = disk.read(&rel)? {
            files.insert(rel, text);
        }
    }
    let mut label = dir.display().to_string();
    if !label.ends_with('/') {
        label.push('/');
    }
    Ok(MemSource {
        files,
        label,
        base: dir.to_path_buf(),
    })
}

/// A short, stable id of a snapshot's contents (`sha256:` + 16 hex), the
/// directory-mode counterpart of a commit id.
pub fn content_id(files: &BTreeMap<String, String>) -> String {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    for (name, text) in files {
        for part in [name.as_bytes(), text.as_bytes()] {
            ctx.update(&(part.len() as u64).to_le_bytes());
            ctx.update(part);
        }
    }
    format!(
        "sha256:{}",
        &crate::hex::encode(ctx.finish().as_ref())[..16]
    )
}
