//! Reading a checked commit's policy files straight out of its tree (no
//! working tree): `*.yaml` at the root and directly in `roles/` and
//! `tests/`, regular files only, with size limits checked before a blob is
//! loaded.

use std::collections::BTreeMap;

use git2::{FileMode, ObjectType, Oid, Repository};

use super::{GitError, FOLDERS, MAX_FILE_BYTES, MAX_TOTAL_BYTES};

/// Reads the policy files of a commit: `*.yaml` at the root and directly in
/// `roles/` and `tests/`. Symlinks and submodules are skipped: a symlink is
/// a path, and following it would read the local disk.
pub(super) fn read_files(
    repo: &Repository,
    commit: &git2::Commit<'_>,
) -> Result<BTreeMap<String, String>, GitError> {
    let mut reader = TreeReader {
        repo,
        commit: commit.id().to_string(),
        total: 0,
        files: BTreeMap::new(),
    };
    let tree = commit.tree().map_err(|e| reader.corrupt(e))?;
    reader.read_folder(&tree, "")?;
    for folder in FOLDERS {
        let Some(entry) = tree.get_name(folder) else {
            continue;
        };
        if entry.filemode() != i32::from(FileMode::Tree) {
            continue;
        }
        let sub = repo.find_tree(entry.id()).map_err(|e| reader.corrupt(e))?;
        reader.read_folder(&sub, folder)?;
    }
    Ok(reader.files)
}

struct TreeReader<'r> {
    repo: &'r Repository,
    commit: String,
    total: u64,
    files: BTreeMap<String, String>,
}

impl TreeReader<'_> {
    fn read_folder(&mut self, tree: &git2::Tree<'_>, folder: &str) -> Result<(), GitError> {
        for entry in tree.iter() {
            let Ok(name) = entry.name() else { continue };
            if !name.ends_with(".yaml")
                || name.starts_with('.')
                || !is_regular_file(entry.filemode())
            {
                continue;
            }
            let path = match folder {
                "" => name.to_string(),
                f => format!("{f}/{name}"),
            };
            self.read_blob(path, entry.id())?;
        }
        Ok(())
    }

    /// Checks the size from the object header before loading the blob, so an
    /// oversized file is refused without being read into memory.
    fn read_blob(&mut self, path: String, id: Oid) -> Result<(), GitError> {
        let odb = self.repo.odb().map_err(|e| self.corrupt(e))?;
        let (size, kind) = odb.read_header(id).map_err(|e| self.corrupt(e))?;
        let size = size as u64;
        if kind != ObjectType::Blob {
            return Err(GitError::Corrupt {
                commit: self.commit.clone(),
                message: format!("{path} is a {kind}, not a blob"),
            });
        }
        if size > MAX_FILE_BYTES {
            return Err(GitError::FileTooLarge {
                commit: self.commit.clone(),
                path,
                size,
            });
        }
        self.total += size;
        if self.total > MAX_TOTAL_BYTES {
            return Err(GitError::TreeTooLarge {
                commit: self.commit.clone(),
            });
        }
        let blob = self.repo.find_blob(id).map_err(|e| self.corrupt(e))?;
        let text = String::from_utf8(blob.content().to_vec()).map_err(|_| GitError::NotUtf8 {
            commit: self.commit.clone(),
            path: path.clone(),
        })?;
        self.files.insert(path, text);
        Ok(())
    }

    fn corrupt(&self, e: git2::Error) -> GitError {
        GitError::Corrupt {
            commit: self.commit.clone(),
            message: e.message().to_string(),
        }
    }
}

/// Regular files only: not symlinks (0o120000), submodules (0o160000) or
/// trees.
fn is_regular_file(mode: i32) -> bool {
    mode == i32::from(FileMode::Blob) || mode == i32::from(FileMode::BlobExecutable)
}
