//! Temporary stand-in until the git2 source lands (feat-git).
use std::collections::BTreeMap;
use std::path::PathBuf;

pub enum GitRef {
    Branch(String),
    Tag(String),
}
pub enum GitAuth {
    None,
    Token(crate::config::Secret),
    SshKey {
        private_key: PathBuf,
        passphrase: Option<crate::config::Secret>,
    },
}
pub struct AllowedSigners;
impl AllowedSigners {
    pub fn load(_path: &std::path::Path) -> Result<Self, String> {
        Err("not built".into())
    }
}
pub struct GitSettings {
    pub url: String,
    pub reference: GitRef,
    pub auth: GitAuth,
    pub cache_dir: PathBuf,
    pub allowed_signers: Option<AllowedSigners>,
    pub allow_non_descendant: bool,
}
pub struct Snapshot {
    pub commit: String,
    pub summary: String,
    pub committed_at: i64,
    pub files: BTreeMap<String, String>,
    pub signature: SignatureStatus,
}
pub enum SignatureStatus {
    NotRequired,
    Verified {
        principal: String,
        key_fingerprint: String,
    },
}
#[derive(Debug, thiserror::Error)]
#[error("git is not built in")]
pub struct GitError;
impl GitError {
    pub fn commit(&self) -> Option<&str> {
        None
    }
}
pub fn fetch(_s: &GitSettings, _current: Option<&str>) -> Result<Option<Snapshot>, GitError> {
    Err(GitError)
}
pub fn init() {}
