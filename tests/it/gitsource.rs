//! The Git policy source against real repositories: bare repositories built
//! with git2 in temp dirs, fetched over a plain path, `file://`, `git daemon`
//! (git://) and `git http-backend` behind a Basic-auth HTTP server, all on
//! loopback. Signed commits are made with in-test ed25519 keys and, for
//! interoperability, by the `git` CLI with `ssh-keygen`.

use std::collections::{BTreeMap, BTreeSet};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use base64::Engine;
use bytes::Bytes;
use git2::{Commit, Oid, Repository, Signature, Time};
use http_body_util::{BodyExt, Full};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use rack_gateway::config::Secret;
use rack_gateway::reload::git::{
    self, AllowedSigners, GitAuth, GitError, GitRef, GitSettings, SignatureStatus, Snapshot,
};
use ssh_key::private::Ed25519Keypair;
use ssh_key::{HashAlg, LineEnding, PrivateKey};
use tempfile::TempDir;

use crate::support::{free_port, git, run_ok, scribble, Daemon};

// ---------------------------------------------------------------------------
// Fixtures

/// One entry of a commit's tree.
#[derive(Clone)]
enum Node {
    Text(&'static str),
    Bytes(Vec<u8>),
    Exec(&'static str),
    /// A symlink whose target is this path.
    Link(&'static str),
    /// A submodule (gitlink) at this commit.
    Submodule(Oid),
}

/// A bare repository playing the remote.
struct Upstream {
    dir: TempDir,
    repo: Repository,
    clock: std::cell::Cell<i64>,
}

const T0: i64 = 1_700_000_000;

impl Upstream {
    fn new() -> Upstream {
        git::init();
        let dir = tempfile::tempdir().unwrap();
        let repo = Repository::init_bare(dir.path().join("policy.git")).unwrap();
        Upstream {
            dir,
            repo,
            clock: std::cell::Cell::new(T0),
        }
    }

    fn path(&self) -> PathBuf {
        self.dir.path().join("policy.git")
    }

    fn url(&self) -> String {
        self.path().to_str().unwrap().to_string()
    }

    /// Each commit gets a distinct, known time (committed_at is asserted).
    fn signature(&self) -> Signature<'static> {
        let t = self.clock.get() + 60;
        self.clock.set(t);
        Signature::new("Policy Author", "author@example.com", &Time::new(t, 0)).unwrap()
    }

    fn tree(&self, files: &[(&str, Node)]) -> Oid {
        let entries: Vec<(String, &Node)> = files.iter().map(|(p, n)| (p.to_string(), n)).collect();
        write_tree(&self.repo, &entries)
    }

    fn commit(
        &self,
        branch: &str,
        message: &str,
        files: &[(&str, Node)],
        parent: Option<Oid>,
    ) -> Oid {
        let tree = self.repo.find_tree(self.tree(files)).unwrap();
        let sig = self.signature();
        let parents = self.parents(parent);
        let refs: Vec<&Commit<'_>> = parents.iter().collect();
        let oid = self
            .repo
            .commit(None, &sig, &sig, message, &tree, &refs)
            .unwrap();
        self.set_branch(branch, oid);
        oid
    }

    /// A commit on `main` of a lone [`GATEWAY`].
    fn commit_gateway(&self, message: &str, parent: Option<Oid>) -> Oid {
        self.commit_gateway_with(message, &[], parent)
    }

    /// A commit on `main` of [`GATEWAY`] and `files`.
    fn commit_gateway_with(
        &self,
        message: &str,
        files: &[(&str, Node)],
        parent: Option<Oid>,
    ) -> Oid {
        let mut all = vec![("gateway.yaml", Node::Text(GATEWAY))];
        all.extend(files.iter().cloned());
        self.commit("main", message, &all, parent)
    }

    /// A first commit on `main` of a lone [`GATEWAY`], its `gpgsig` header
    /// whatever `sign` returns for the commit's bytes.
    fn commit_gateway_signed(&self, message: &str, sign: impl FnOnce(&[u8]) -> String) -> Oid {
        self.commit_signed(
            "main",
            message,
            &[("gateway.yaml", Node::Text(GATEWAY))],
            None,
            sign,
        )
    }

    /// A commit whose `gpgsig` header is whatever `sign` returns for the
    /// commit's bytes.
    fn commit_signed(
        &self,
        branch: &str,
        message: &str,
        files: &[(&str, Node)],
        parent: Option<Oid>,
        sign: impl FnOnce(&[u8]) -> String,
    ) -> Oid {
        let tree = self.repo.find_tree(self.tree(files)).unwrap();
        let sig = self.signature();
        let parents = self.parents(parent);
        let refs: Vec<&Commit<'_>> = parents.iter().collect();
        let buf = self
            .repo
            .commit_create_buffer(&sig, &sig, message, &tree, &refs)
            .unwrap();
        let content = buf.as_str().unwrap().to_string();
        let armored = sign(content.as_bytes());
        let oid = self.repo.commit_signed(&content, &armored, None).unwrap();
        self.set_branch(branch, oid);
        oid
    }

    fn parents(&self, parent: Option<Oid>) -> Vec<Commit<'_>> {
        parent
            .map(|p| self.repo.find_commit(p).unwrap())
            .into_iter()
            .collect()
    }

    /// Moves (or force-moves) a branch, like a push or a force-push.
    fn set_branch(&self, branch: &str, oid: Oid) {
        self.repo
            .reference(&format!("refs/heads/{branch}"), oid, true, "test")
            .unwrap();
    }
}

fn write_tree(repo: &Repository, entries: &[(String, &Node)]) -> Oid {
    let mut builder = repo.treebuilder(None).unwrap();
    let mut dirs: BTreeMap<String, Vec<(String, &Node)>> = BTreeMap::new();
    for (path, node) in entries {
        if let Some((dir, rest)) = path.split_once('/') {
            dirs.entry(dir.to_string())
                .or_default()
                .push((rest.to_string(), node));
            continue;
        }
        let (oid, mode) = match node {
            Node::Text(t) => (repo.blob(t.as_bytes()).unwrap(), 0o100644),
            Node::Bytes(b) => (repo.blob(b).unwrap(), 0o100644),
            Node::Exec(t) => (repo.blob(t.as_bytes()).unwrap(), 0o100755),
            Node::Link(target) => (repo.blob(target.as_bytes()).unwrap(), 0o120000),
            Node::Submodule(c) => (*c, 0o160000),
        };
        builder.insert(path, oid, mode).unwrap();
    }
    for (dir, sub) in dirs {
        let oid = write_tree(repo, &sub);
        builder.insert(&dir, oid, 0o040000).unwrap();
    }
    builder.write().unwrap()
}

/// A gateway cache directory (not created: fetch creates it).
struct Cache(TempDir);

impl Cache {
    fn new() -> Cache {
        Cache(tempfile::tempdir().unwrap())
    }
    fn dir(&self) -> PathBuf {
        self.0.path().join("cache.git")
    }
}

fn settings(url: &str, reference: GitRef, cache: &Cache) -> GitSettings {
    GitSettings {
        url: url.to_string(),
        reference,
        auth: GitAuth::None,
        cache_dir: cache.dir(),
        allowed_signers: None,
        allow_non_descendant: false,
    }
}

fn main_branch() -> GitRef {
    GitRef::Branch("main".into())
}

/// An upstream whose first commit (`one`, a lone [`GATEWAY`] on `main`)
/// was fetched into a cache: the upstream, that commit, the cache and its
/// settings.
fn fetched() -> (Upstream, Oid, Cache, GitSettings) {
    let up = Upstream::new();
    let first = up.commit_gateway("one", None);
    let cache = Cache::new();
    let s = settings(&up.url(), main_branch(), &cache);
    snapshot(&s, None);
    (up, first, cache, s)
}

fn snapshot(s: &GitSettings, current: Option<&str>) -> Snapshot {
    match git::fetch(s, current) {
        Ok(Some(snap)) => snap,
        Ok(None) => panic!("expected a new snapshot, got none"),
        Err(e) => panic!("expected a snapshot, got: {e}"),
    }
}

fn error(s: &GitSettings, current: Option<&str>) -> GitError {
    match git::fetch(s, current) {
        Ok(Some(snap)) => panic!("expected an error, got snapshot {}", snap.commit),
        Ok(None) => panic!("expected an error, got no change"),
        Err(e) => e,
    }
}

fn keys(snap: &Snapshot) -> Vec<&str> {
    snap.files.keys().map(String::as_str).collect()
}

fn key(seed: u8) -> PrivateKey {
    PrivateKey::from(Ed25519Keypair::from_seed(&[seed; 32]))
}

fn fingerprint(key: &PrivateKey) -> String {
    key.public_key().fingerprint(HashAlg::Sha256).to_string()
}

/// An allowed_signers line for a key: `principal [options] keytype base64`.
fn signer_line(principal: &str, options: &str, key: &PrivateKey) -> String {
    let public = key.public_key().to_openssh().unwrap();
    format!("{principal} {options} {public}")
}

fn signers(text: &str) -> AllowedSigners {
    AllowedSigners::parse(text, "allowed_signers").unwrap()
}

fn ssh_sign(key: &PrivateKey, namespace: &str, data: &[u8]) -> String {
    key.sign(namespace, HashAlg::Sha512, data)
        .unwrap()
        .to_pem(LineEnding::LF)
        .unwrap()
}

const GATEWAY: &str = "listen: 127.0.0.1:8443\n";

// ---------------------------------------------------------------------------
// Reading a commit

#[test]
fn first_fetch_reads_root_roles_and_tests_yaml_only() {
    let up = Upstream::new();
    let other = up.commit(
        "elsewhere",
        "submodule target",
        &[("x.yaml", Node::Text("x"))],
        None,
    );
    let id = up.commit(
        "main",
        "Initial policy\n\nLonger body that is not the summary.",
        &[
            ("gateway.yaml", Node::Text(GATEWAY)),
            ("users.yaml", Node::Text("users: []\n")),
            ("ci.yaml", Node::Exec("ci: []\n")),
            ("README.md", Node::Text("not yaml")),
            (".hidden.yaml", Node::Text("dotfile")),
            ("roles/admin.yaml", Node::Text("admin: {}\n")),
            ("roles/nested/deep.yaml", Node::Text("too deep")),
            ("roles/notes.txt", Node::Text("not yaml")),
            ("tests/basic.yaml", Node::Text("cases: []\n")),
            ("docs/other.yaml", Node::Text("other folder")),
            ("secret.yaml", Node::Link("/etc/passwd")),
            ("roles/linked.yaml", Node::Link("../gateway.yaml")),
            ("vendored.yaml", Node::Submodule(other)),
        ],
        None,
    );
    let cache = Cache::new();
    let snap = snapshot(&settings(&up.url(), main_branch(), &cache), None);

    assert_eq!(snap.commit, id.to_string());
    assert_eq!(snap.summary, "Initial policy");
    assert_eq!(snap.committed_at, T0 + 120);
    assert_eq!(snap.signature, SignatureStatus::NotRequired);
    assert_eq!(
        keys(&snap),
        [
            "ci.yaml",
            "gateway.yaml",
            "roles/admin.yaml",
            "tests/basic.yaml",
            "users.yaml"
        ]
    );
    assert_eq!(snap.files["gateway.yaml"], GATEWAY);
    assert_eq!(snap.files["ci.yaml"], "ci: []\n");
    assert_eq!(snap.files["roles/admin.yaml"], "admin: {}\n");
    // The cache is a bare repository: nothing is checked out.
    let cache_repo = Repository::open(cache.dir()).unwrap();
    assert!(cache_repo.is_bare());
    assert!(!cache.dir().join("gateway.yaml").exists());
}

#[test]
fn roles_as_a_symlink_or_file_is_not_followed() {
    let up = Upstream::new();
    up.commit(
        "main",
        "odd shapes",
        &[
            ("gateway.yaml", Node::Text(GATEWAY)),
            ("roles", Node::Link("/etc")),
            ("tests", Node::Text("a file, not a folder")),
        ],
        None,
    );
    let cache = Cache::new();
    let snap = snapshot(&settings(&up.url(), main_branch(), &cache), None);
    assert_eq!(keys(&snap), ["gateway.yaml"]);
}

#[test]
fn unchanged_ref_is_no_change_and_a_new_commit_is_a_new_snapshot() {
    let up = Upstream::new();
    let first = up.commit_gateway("one", None);
    let cache = Cache::new();
    let s = settings(&up.url(), main_branch(), &cache);
    let snap = snapshot(&s, None);
    assert_eq!(snap.commit, first.to_string());

    assert_eq!(git::fetch(&s, Some(&snap.commit)).unwrap(), None);

    let second = up.commit_gateway_with(
        "two",
        &[("roles/dev.yaml", Node::Text("dev: {}\n"))],
        Some(first),
    );
    let next = snapshot(&s, Some(&snap.commit));
    assert_eq!(next.commit, second.to_string());
    assert_eq!(next.summary, "two");
    assert_eq!(keys(&next), ["gateway.yaml", "roles/dev.yaml"]);
    assert_eq!(git::fetch(&s, Some(&next.commit)).unwrap(), None);
}

#[test]
fn force_push_to_unrelated_history_is_refused_unless_allowed() {
    let (up, first, _cache, mut s) = fetched();

    let unrelated = up.commit(
        "main",
        "rewritten",
        &[("gateway.yaml", Node::Text("x: 1\n"))],
        None,
    );
    let e = error(&s, Some(&first.to_string()));
    match &e {
        GitError::NotDescendant {
            current,
            new,
            current_known,
        } => {
            assert_eq!(current, &first.to_string());
            assert_eq!(new, &unrelated.to_string());
            assert!(*current_known);
        }
        other => panic!("expected NotDescendant, got {other:?}"),
    }
    assert_eq!(e.commit(), Some(unrelated.to_string().as_str()));
    assert_eq!(
        e.to_string(),
        format!(
            "commit {unrelated} is not a descendant of the loaded commit {first}: refusing a \
             force-push or rollback (allow_non_descendant accepts it)"
        )
    );
    // Refused again on the next reload, not forgotten.
    assert!(matches!(
        error(&s, Some(&first.to_string())),
        GitError::NotDescendant { .. }
    ));

    s.allow_non_descendant = true;
    let snap = snapshot(&s, Some(&first.to_string()));
    assert_eq!(snap.commit, unrelated.to_string());
    assert_eq!(snap.files["gateway.yaml"], "x: 1\n");
}

#[test]
fn rollback_to_an_ancestor_is_refused() {
    let up = Upstream::new();
    let first = up.commit_gateway("one", None);
    let second = up.commit(
        "main",
        "two",
        &[("gateway.yaml", Node::Text("y: 2\n"))],
        Some(first),
    );
    let cache = Cache::new();
    let s = settings(&up.url(), main_branch(), &cache);
    assert_eq!(snapshot(&s, None).commit, second.to_string());

    up.set_branch("main", first);
    match error(&s, Some(&second.to_string())) {
        GitError::NotDescendant { current, new, .. } => {
            assert_eq!(current, second.to_string());
            assert_eq!(new, first.to_string());
        }
        other => panic!("expected NotDescendant, got {other:?}"),
    }
}

#[test]
fn a_loaded_commit_the_cache_does_not_have_fails_closed() {
    let up = Upstream::new();
    let id = up.commit_gateway("one", None);
    let cache = Cache::new();
    let s = settings(&up.url(), main_branch(), &cache);
    let unknown = "0123456789abcdef0123456789abcdef01234567";
    let e = error(&s, Some(unknown));
    match &e {
        GitError::NotDescendant {
            current,
            new,
            current_known,
        } => {
            assert_eq!(current, unknown);
            assert_eq!(new, &id.to_string());
            assert!(!*current_known);
        }
        other => panic!("expected NotDescendant, got {other:?}"),
    }
    assert!(
        e.to_string()
            .contains("(which the cache repository does not have)"),
        "{e}"
    );
}

#[test]
fn ancestry_is_checked_before_any_file_is_read() {
    let (up, first, _cache, s) = fetched();
    up.commit(
        "main",
        "unrelated and unreadable",
        &[("gateway.yaml", Node::Bytes(vec![0xff, 0xfe]))],
        None,
    );
    assert!(matches!(
        error(&s, Some(&first.to_string())),
        GitError::NotDescendant { .. }
    ));
}

#[test]
fn tags_annotated_and_lightweight() {
    let up = Upstream::new();
    let first = up.commit_gateway("v1", None);
    let second = up.commit(
        "main",
        "v2",
        &[("gateway.yaml", Node::Text("v: 2\n"))],
        Some(first),
    );
    let tagger = up.signature();
    let object = up.repo.find_object(first, None).unwrap();
    up.repo
        .tag("v1", &object, &tagger, "release 1", false)
        .unwrap();
    let object = up.repo.find_object(second, None).unwrap();
    up.repo.tag_lightweight("v2", &object, false).unwrap();

    let cache = Cache::new();
    let v1 = snapshot(&settings(&up.url(), GitRef::Tag("v1".into()), &cache), None);
    assert_eq!(v1.commit, first.to_string());
    assert_eq!(v1.files["gateway.yaml"], GATEWAY);

    let s2 = settings(&up.url(), GitRef::Tag("v2".into()), &cache);
    let v2 = snapshot(&s2, Some(&v1.commit));
    assert_eq!(v2.commit, second.to_string());
    assert_eq!(v2.files["gateway.yaml"], "v: 2\n");

    // A moved tag is seen (forced refspec) and goes through the same checks.
    let unrelated = up.commit(
        "other",
        "unrelated",
        &[("gateway.yaml", Node::Text("u\n"))],
        None,
    );
    let object = up.repo.find_object(unrelated, None).unwrap();
    up.repo.tag_lightweight("v2", &object, true).unwrap();
    match error(&s2, Some(&v2.commit)) {
        GitError::NotDescendant { new, .. } => assert_eq!(new, unrelated.to_string()),
        other => panic!("expected NotDescendant, got {other:?}"),
    }
}

#[test]
fn missing_ref_is_an_error_even_when_the_cache_still_has_it() {
    let up = Upstream::new();
    up.commit_gateway("one", None);
    let cache = Cache::new();
    let e = error(
        &settings(&up.url(), GitRef::Branch("nope".into()), &cache),
        None,
    );
    assert!(matches!(&e, GitError::RefNotFound { .. }), "{e:?}");
    assert_eq!(
        e.to_string(),
        format!("branch `nope` not found on git remote {}", up.url())
    );
    let e = error(&settings(&up.url(), GitRef::Tag("v9".into()), &cache), None);
    assert_eq!(
        e.to_string(),
        format!("tag `v9` not found on git remote {}", up.url())
    );

    let s = settings(&up.url(), main_branch(), &cache);
    let snap = snapshot(&s, None);
    up.repo
        .find_reference("refs/heads/main")
        .unwrap()
        .delete()
        .unwrap();
    let e = error(&s, Some(&snap.commit));
    assert!(matches!(e, GitError::RefNotFound { .. }), "{e:?}");
}

#[test]
fn invalid_ref_names_are_refused_before_fetching() {
    let cache = Cache::new();
    let e = error(
        &settings(
            "/nonexistent",
            GitRef::Branch("main:refs/heads/x".into()),
            &cache,
        ),
        None,
    );
    assert_eq!(
        e.to_string(),
        "invalid git source settings: `main:refs/heads/x` is not a valid branch name"
    );
    assert!(!cache.dir().exists());
}

#[test]
fn unreachable_remotes() {
    let cache = Cache::new();
    let missing = cache.0.path().join("no-such-repo.git");
    let e = error(
        &settings(missing.to_str().unwrap(), main_branch(), &cache),
        None,
    );
    assert!(matches!(e, GitError::Unreachable { .. }), "{e:?}");
    assert_eq!(
        e.to_string(),
        format!(
            "cannot reach git remote {}: no such local path",
            missing.display()
        )
    );
    assert!(e.commit().is_none());

    let port = free_port();
    let url = format!("ssh://git@127.0.0.1:{port}/policy.git");
    let mut s = settings(&url, main_branch(), &cache);
    s.auth = GitAuth::SshKey {
        private_key: cache.0.path().join("id_ed25519"),
        passphrase: Some(Secret::new("key-passphrase")),
    };
    let e = error(&s, None);
    assert!(matches!(e, GitError::Unreachable { .. }), "{e:?}");

    let url = format!("git://127.0.0.1:{port}/policy.git");
    let e = error(&settings(&url, main_branch(), &cache), None);
    assert!(matches!(e, GitError::Unreachable { .. }), "{e:?}");
    assert!(
        e.to_string()
            .starts_with(&format!("cannot reach git remote {url}: ")),
        "{e}"
    );
}

#[test]
fn file_url_works() {
    let up = Upstream::new();
    let id = up.commit_gateway("one", None);
    let cache = Cache::new();
    let url = format!("file://{}", up.url());
    assert_eq!(
        snapshot(&settings(&url, main_branch(), &cache), None).commit,
        id.to_string()
    );
}

#[test]
fn size_limits_and_utf8() {
    let up = Upstream::new();
    let big = vec![b'a'; git::MAX_FILE_BYTES as usize + 1];
    let id = up.commit(
        "big",
        "big",
        &[
            ("gateway.yaml", Node::Text(GATEWAY)),
            ("roles/big.yaml", Node::Bytes(big)),
        ],
        None,
    );
    let cache = Cache::new();
    let e = error(
        &settings(&up.url(), GitRef::Branch("big".into()), &cache),
        None,
    );
    match &e {
        GitError::FileTooLarge { commit, path, size } => {
            assert_eq!(commit, &id.to_string());
            assert_eq!(path, "roles/big.yaml");
            assert_eq!(*size, git::MAX_FILE_BYTES + 1);
        }
        other => panic!("expected FileTooLarge, got {other:?}"),
    }
    assert_eq!(e.commit(), Some(id.to_string().as_str()));

    // Each file at the limit, 17 of them: over the total.
    let names: Vec<String> = (0..17).map(|i| format!("tests/t{i:02}.yaml")).collect();
    let files: Vec<(&str, Node)> = names
        .iter()
        .enumerate()
        .map(|(i, n)| {
            let mut body = vec![b'b'; git::MAX_FILE_BYTES as usize];
            body[0] = b'a' + i as u8;
            (n.as_str(), Node::Bytes(body))
        })
        .collect();
    let id = up.commit("many", "many", &files, None);
    let e = error(
        &settings(&up.url(), GitRef::Branch("many".into()), &cache),
        None,
    );
    match &e {
        GitError::TreeTooLarge { commit } => assert_eq!(commit, &id.to_string()),
        other => panic!("expected TreeTooLarge, got {other:?}"),
    }

    let id = up.commit(
        "latin1",
        "latin1",
        &[("users.yaml", Node::Bytes(b"name: J\xfcrgen\n".to_vec()))],
        None,
    );
    let e = error(
        &settings(&up.url(), GitRef::Branch("latin1".into()), &cache),
        None,
    );
    assert_eq!(
        e.to_string(),
        format!("commit {id}: users.yaml is not valid UTF-8")
    );
}

// ---------------------------------------------------------------------------
// Signatures

#[test]
fn commit_signed_by_an_allowed_key_is_verified() {
    let up = Upstream::new();
    let alice = key(1);
    let id = up.commit_gateway_signed("signed", |data| ssh_sign(&alice, "git", data));
    let cache = Cache::new();
    let mut s = settings(&up.url(), main_branch(), &cache);
    s.allowed_signers = Some(signers(&format!(
        "# signers\n{}\n{}\n",
        signer_line("bob@example.com", "", &key(2)),
        signer_line("alice@example.com", "namespaces=\"git\"", &alice),
    )));
    let snap = snapshot(&s, None);
    assert_eq!(snap.commit, id.to_string());
    assert_eq!(
        snap.signature,
        SignatureStatus::Verified {
            principal: "alice@example.com".into(),
            key_fingerprint: fingerprint(&alice),
        }
    );
    assert!(fingerprint(&alice).starts_with("SHA256:"));
    assert_eq!(snap.files["gateway.yaml"], GATEWAY);
}

fn signed_settings(up: &Upstream, cache: &Cache, allowed: &PrivateKey) -> GitSettings {
    let mut s = settings(&up.url(), main_branch(), cache);
    s.allowed_signers = Some(signers(&signer_line("alice@example.com", "", allowed)));
    s
}

#[test]
fn unsigned_commit_is_refused_before_its_files_are_read() {
    let up = Upstream::new();
    let id = up.commit(
        "main",
        "unsigned",
        &[("gateway.yaml", Node::Bytes(vec![0xff]))],
        None,
    );
    let cache = Cache::new();
    let e = error(&signed_settings(&up, &cache, &key(1)), None);
    assert!(matches!(e, GitError::Unsigned { .. }), "{e:?}");
    assert_eq!(
        e.to_string(),
        format!("commit {id} is not signed, and allowed signers are configured")
    );
    assert_eq!(e.commit(), Some(id.to_string().as_str()));
}

#[test]
fn commit_signed_by_an_unknown_key_is_refused() {
    let up = Upstream::new();
    let mallory = key(9);
    let id = up.commit_gateway_signed("signed by someone else", |data| {
        ssh_sign(&mallory, "git", data)
    });
    let cache = Cache::new();
    match error(&signed_settings(&up, &cache, &key(1)), None) {
        GitError::UntrustedSigner {
            commit,
            fingerprint: fp,
        } => {
            assert_eq!(commit, id.to_string());
            assert_eq!(fp, fingerprint(&mallory));
        }
        other => panic!("expected UntrustedSigner, got {other:?}"),
    }
}

#[test]
fn key_allowed_only_for_other_namespaces_is_untrusted_for_git() {
    let up = Upstream::new();
    let alice = key(1);
    up.commit_gateway_signed("signed", |data| ssh_sign(&alice, "git", data));
    let cache = Cache::new();
    let mut s = settings(&up.url(), main_branch(), &cache);
    s.allowed_signers = Some(signers(&signer_line(
        "alice@example.com",
        "namespaces=\"file,email\"",
        &alice,
    )));
    assert!(matches!(error(&s, None), GitError::UntrustedSigner { .. }));
}

#[test]
fn tampered_content_does_not_verify() {
    let up = Upstream::new();
    let alice = key(1);
    // The signature covers different bytes than the commit holds: what a
    // commit rewritten after signing looks like.
    let id = up.commit_gateway_signed("innocent", |data| {
        let original = String::from_utf8(data.to_vec()).unwrap();
        ssh_sign(
            &alice,
            "git",
            original.replace("innocent", "original").as_bytes(),
        )
    });
    let cache = Cache::new();
    match error(&signed_settings(&up, &cache, &alice), None) {
        GitError::BadSignature { commit, reason } => {
            assert_eq!(commit, id.to_string());
            assert!(reason.starts_with("does not verify"), "{reason}");
        }
        other => panic!("expected BadSignature, got {other:?}"),
    }
}

#[test]
fn signature_for_another_namespace_does_not_count() {
    let up = Upstream::new();
    let alice = key(1);
    let id = up.commit_gateway_signed("signed as a file", |data| ssh_sign(&alice, "file", data));
    let cache = Cache::new();
    let e = error(&signed_settings(&up, &cache, &alice), None);
    assert_eq!(
        e.to_string(),
        format!("commit {id}: bad signature: made for namespace `file`, not `git`")
    );
}

#[test]
fn openpgp_and_garbage_signatures_are_distinct_errors() {
    let up = Upstream::new();
    let id = up.commit_gateway_signed("pgp", |_| {
        "-----BEGIN PGP SIGNATURE-----\n\niQEzBAABCAAdFiEE\n-----END PGP SIGNATURE-----\n".into()
    });
    let cache = Cache::new();
    let s = signed_settings(&up, &cache, &key(1));
    let e = error(&s, None);
    assert_eq!(
        e.to_string(),
        format!("commit {id} has an OpenPGP signature; only SSH signatures are supported")
    );

    let id = up.commit_gateway_signed("broken ssh sig", |_| {
        "-----BEGIN SSH SIGNATURE-----\nU1NIU0lH\n-----END SSH SIGNATURE-----\n".into()
    });
    let mut s = s;
    s.allow_non_descendant = true;
    match error(&s, None) {
        GitError::BadSignature { commit, reason } => {
            assert_eq!(commit, id.to_string());
            assert!(reason.starts_with("malformed SSH signature"), "{reason}");
        }
        other => panic!("expected BadSignature, got {other:?}"),
    }
}

#[test]
fn allowed_signers_file_errors_name_the_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("allowed_signers");
    std::fs::write(
        &path,
        format!(
            "# header\n{}\n* cert-authority {}\n",
            signer_line("alice@example.com", "", &key(1)),
            key(2).public_key().to_openssh().unwrap()
        ),
    )
    .unwrap();
    let e = AllowedSigners::load(&path).unwrap_err();
    assert!(
        e.starts_with(&format!(
            "{}:3: cert-authority lines are not supported",
            path.display()
        )),
        "{e}"
    );
    let e = AllowedSigners::load(&dir.path().join("missing")).unwrap_err();
    assert!(e.contains("missing: cannot read: "), "{e}");
}

/// Commits signed the way people sign them: `git commit -S` with
/// `gpg.format=ssh`, keys from `ssh-keygen`. `git verify-commit` accepts the
/// same allowed_signers file, so both agree on the format.
#[test]
fn commits_signed_by_the_git_cli_verify() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("home");
    let work = tmp.path().join("work");
    std::fs::create_dir_all(&home).unwrap();
    git(
        tmp.path(),
        &home,
        &["init", "-q", "-b", "main", work.to_str().unwrap()],
    );

    let mut allowed = String::new();
    let mut fingerprints = BTreeMap::new();
    for (kind, extra) in [
        ("ed25519", None),
        ("ecdsa", Some("256")),
        ("rsa", Some("2048")),
    ] {
        let path = tmp.path().join(format!("id_{kind}"));
        let mut args = vec![
            "-q",
            "-t",
            kind,
            "-N",
            "",
            "-C",
            kind,
            "-f",
            path.to_str().unwrap(),
        ];
        if let Some(bits) = extra {
            args.extend(["-b", bits]);
        }
        run_ok(Command::new("ssh-keygen").args(&args));
        let public = std::fs::read_to_string(path.with_extension("pub")).unwrap();
        allowed.push_str(&format!("{kind}@example.com {public}"));
        let parsed = ssh_key::PublicKey::from_openssh(public.trim()).unwrap();
        fingerprints.insert(
            kind,
            (path, parsed.fingerprint(HashAlg::Sha256).to_string()),
        );
    }
    let signers_file = tmp.path().join("allowed_signers");
    std::fs::write(&signers_file, &allowed).unwrap();

    let cache = Cache::new();
    let mut s = settings(work.to_str().unwrap(), main_branch(), &cache);
    s.allowed_signers = Some(AllowedSigners::load(&signers_file).unwrap());
    let mut current: Option<String> = None;
    for (i, kind) in ["ed25519", "ecdsa", "rsa"].into_iter().enumerate() {
        let (key_path, fp) = &fingerprints[kind];
        std::fs::write(work.join("gateway.yaml"), format!("# {i}\n{GATEWAY}")).unwrap();
        git(&work, &home, &["add", "gateway.yaml"]);
        git(
            &work,
            &home,
            &[
                "-c",
                "gpg.format=ssh",
                "-c",
                &format!("user.signingkey={}", key_path.display()),
                "commit",
                "-q",
                "-S",
                "-m",
                &format!("signed with {kind}"),
            ],
        );
        git(
            &work,
            &home,
            &[
                "-c",
                &format!("gpg.ssh.allowedSignersFile={}", signers_file.display()),
                "verify-commit",
                "HEAD",
            ],
        );
        let snap = snapshot(&s, current.as_deref());
        assert_eq!(snap.summary, format!("signed with {kind}"));
        assert_eq!(
            snap.signature,
            SignatureStatus::Verified {
                principal: format!("{kind}@example.com"),
                key_fingerprint: fp.clone(),
            },
            "{kind}"
        );
        assert_eq!(snap.files["gateway.yaml"], format!("# {i}\n{GATEWAY}"));
        current = Some(snap.commit);
    }
}

// ---------------------------------------------------------------------------
// Network transports on loopback

#[test]
fn fetch_over_git_daemon() {
    let up = Upstream::new();
    let first = up.commit_gateway("one", None);
    let daemon = Daemon::start(up.dir.path());
    let url = format!("git://127.0.0.1:{}/policy.git", daemon.port);
    let cache = Cache::new();
    let s = settings(&url, main_branch(), &cache);
    let snap = snapshot(&s, None);
    assert_eq!(snap.commit, first.to_string());
    assert_eq!(git::fetch(&s, Some(&snap.commit)).unwrap(), None);

    let second = up.commit_gateway_with("two", &[("tests/t.yaml", Node::Text("t\n"))], Some(first));
    let next = snapshot(&s, Some(&snap.commit));
    assert_eq!(next.commit, second.to_string());
    assert_eq!(keys(&next), ["gateway.yaml", "tests/t.yaml"]);

    let e = error(&settings(&url, GitRef::Branch("nope".into()), &cache), None);
    assert!(matches!(e, GitError::RefNotFound { .. }), "{e:?}");
}

const TOKEN: &str = "ghs_correct-token-1234567890";

/// `git http-backend` as a CGI behind a hyper server that requires Basic
/// auth with username `x-access-token` and [`TOKEN`].
struct HttpGit {
    addr: SocketAddr,
    /// Requests that carried credentials, but the wrong ones.
    wrong: Arc<AtomicUsize>,
    /// Requests that reached http-backend.
    served: Arc<AtomicUsize>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl Drop for HttpGit {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

impl HttpGit {
    fn start(root: &Path) -> HttpGit {
        Self::start_with(root, None)
    }

    /// The same server behind TLS with `acceptor`'s certificate.
    fn start_with(root: &Path, tls: Option<tokio_rustls::TlsAcceptor>) -> HttpGit {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let addr = listener.local_addr().unwrap();
        let wrong = Arc::new(AtomicUsize::new(0));
        let served = Arc::new(AtomicUsize::new(0));
        let expected = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("x-access-token:{TOKEN}"))
        );
        let ctx = Arc::new((root.to_path_buf(), expected, wrong.clone(), served.clone()));
        runtime.spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                let ctx = ctx.clone();
                let service = service_fn(move |req| {
                    let ctx = ctx.clone();
                    async move {
                        let (root, expected, wrong, served) = &*ctx;
                        Ok::<_, Infallible>(cgi(req, root, expected, wrong, served).await)
                    }
                });
                match tls.clone() {
                    None => {
                        tokio::spawn(
                            http1::Builder::new().serve_connection(TokioIo::new(tcp), service),
                        );
                    }
                    Some(acceptor) => {
                        tokio::spawn(async move {
                            let Ok(stream) = acceptor.accept(tcp).await else {
                                return;
                            };
                            let _ = http1::Builder::new()
                                .serve_connection(TokioIo::new(stream), service)
                                .await;
                        });
                    }
                }
            }
        });
        HttpGit {
            addr,
            wrong,
            served,
            runtime: Some(runtime),
        }
    }
}

async fn cgi(
    req: hyper::Request<hyper::body::Incoming>,
    root: &Path,
    expected: &str,
    wrong: &AtomicUsize,
    served: &AtomicUsize,
) -> hyper::Response<Full<Bytes>> {
    let unauthorized = || {
        hyper::Response::builder()
            .status(401)
            .header("www-authenticate", "Basic realm=\"git\"")
            .body(Full::new(Bytes::new()))
            .unwrap()
    };
    match req.headers().get("authorization") {
        None => return unauthorized(),
        Some(v) if v.as_bytes() != expected.as_bytes() => {
            wrong.fetch_add(1, Ordering::SeqCst);
            return unauthorized();
        }
        Some(_) => {}
    }
    served.fetch_add(1, Ordering::SeqCst);
    let (parts, body) = req.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    let header = |name: &str| {
        parts
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    };
    let mut cmd = tokio::process::Command::new("git");
    cmd.arg("http-backend")
        .env("GIT_PROJECT_ROOT", root)
        .env("GIT_HTTP_EXPORT_ALL", "1")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("REQUEST_METHOD", parts.method.as_str())
        .env("PATH_INFO", parts.uri.path())
        .env("QUERY_STRING", parts.uri.query().unwrap_or(""))
        .env("CONTENT_TYPE", header("content-type"))
        .env("CONTENT_LENGTH", body.len().to_string())
        .env("HTTP_CONTENT_ENCODING", header("content-encoding"))
        .env("GIT_PROTOCOL", header("git-protocol"))
        .env("REMOTE_USER", "x-access-token")
        .env("REMOTE_ADDR", "127.0.0.1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let mut child = cmd.spawn().unwrap();
    {
        use tokio::io::AsyncWriteExt;
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(&body).await.unwrap();
    }
    let out = child.wait_with_output().await.unwrap();
    let raw = out.stdout;
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| (i, 4))
        .or_else(|| raw.windows(2).position(|w| w == b"\n\n").map(|i| (i, 2)))
        .expect("CGI output has headers");
    let head = String::from_utf8_lossy(&raw[..split.0]).to_string();
    let mut response = hyper::Response::builder();
    for line in head.lines() {
        let (name, value) = line.split_once(':').unwrap();
        let value = value.trim();
        if name.eq_ignore_ascii_case("status") {
            response = response.status(value[..3].parse::<u16>().unwrap());
        } else {
            response = response.header(name, value);
        }
    }
    response
        .body(Full::new(Bytes::copy_from_slice(&raw[split.0 + split.1..])))
        .unwrap()
}

#[test]
fn fetch_over_http_with_a_token() {
    let up = Upstream::new();
    let id = up.commit_gateway("one", None);
    let server = HttpGit::start(up.dir.path());
    let url = format!("http://{}/policy.git", server.addr);

    let cache = Cache::new();
    let mut s = settings(&url, main_branch(), &cache);
    s.auth = GitAuth::Token(Secret::new(TOKEN));
    let snap = snapshot(&s, None);
    assert_eq!(snap.commit, id.to_string());
    assert_eq!(snap.files["gateway.yaml"], GATEWAY);
    assert_eq!(server.wrong.load(Ordering::SeqCst), 0);
    assert!(
        server.served.load(Ordering::SeqCst) >= 2,
        "ref advertisement and pack"
    );
}

#[test]
fn wrong_token_fails_once_without_looping_and_is_not_echoed() {
    let up = Upstream::new();
    up.commit_gateway("one", None);
    let server = HttpGit::start(up.dir.path());
    let url = format!("http://{}/policy.git", server.addr);
    let cache = Cache::new();
    let mut s = settings(&url, main_branch(), &cache);
    let wrong_token = "ghs_wrong-token-ABCDEFGHIJ";
    s.auth = GitAuth::Token(Secret::new(wrong_token));

    let e = error(&s, None);
    assert!(matches!(e, GitError::AuthFailed { .. }), "{e:?}");
    assert_eq!(
        e.to_string(),
        format!(
            "authentication to git remote {url} failed: the remote rejected the configured \
             credentials"
        )
    );
    assert!(!format!("{e:?}").contains(wrong_token));
    assert_eq!(server.wrong.load(Ordering::SeqCst), 1);
    assert_eq!(server.served.load(Ordering::SeqCst), 0);

    s.auth = GitAuth::None;
    let e = error(&s, None);
    assert_eq!(
        e.to_string(),
        format!(
            "authentication to git remote {url} failed: the remote requires credentials and \
             none are configured"
        )
    );
    assert_eq!(server.wrong.load(Ordering::SeqCst), 1);
}

/// HTTPS with a certificate nobody trusts: refused as untrusted, and the
/// token is never sent (no HTTP request gets through the handshake).
#[test]
fn https_with_an_untrusted_certificate_is_refused() {
    let up = Upstream::new();
    up.commit_gateway("one", None);
    let cert = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).unwrap();
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(cert.signing_key.serialize_der().into());
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(vec![cert.cert.der().clone()], key)
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let server = HttpGit::start_with(up.dir.path(), Some(acceptor));
    let url = format!("https://{}/policy.git", server.addr);
    let cache = Cache::new();
    let mut s = settings(&url, main_branch(), &cache);
    s.auth = GitAuth::Token(Secret::new(TOKEN));

    let e = error(&s, None);
    assert!(matches!(e, GitError::RemoteNotTrusted { .. }), "{e:?}");
    assert!(
        e.to_string().starts_with(&format!(
            "git remote {url} is not trusted (TLS certificate or SSH host key): "
        )),
        "{e}"
    );
    assert_eq!(server.wrong.load(Ordering::SeqCst), 0);
    assert_eq!(server.served.load(Ordering::SeqCst), 0);
}

#[test]
fn snapshot_files_feed_the_config_loader_shape() {
    // The snapshot's keys are exactly what config::MemSource expects.
    let up = Upstream::new();
    up.commit_gateway_with(
        "one",
        &[
            ("roles/a.yaml", Node::Text("a\n")),
            ("roles/b.yaml", Node::Text("b\n")),
        ],
        None,
    );
    let cache = Cache::new();
    let snap = snapshot(&settings(&up.url(), main_branch(), &cache), None);
    let src = rack_gateway::config::MemSource {
        files: snap.files.clone(),
        label: format!("git:{}", &snap.commit[..7]),
        base: PathBuf::from("/"),
    };
    use rack_gateway::config::Source;
    let listed: BTreeSet<String> = src.list_yaml("roles").unwrap().into_iter().collect();
    assert_eq!(
        listed,
        BTreeSet::from(["roles/a.yaml".to_string(), "roles/b.yaml".to_string()])
    );
    assert_eq!(src.read("gateway.yaml").unwrap().as_deref(), Some(GATEWAY));
}

/// [`fetched`], its cache then overwritten with garbage at `part` (`""`:
/// all of it).
fn fetched_then_damaged(part: &str) -> (Upstream, Oid, Cache, GitSettings) {
    let (up, first, cache, s) = fetched();
    scribble(&cache.dir().join(part));
    (up, first, cache, s)
}

/// A cache whose objects, refs or everything were overwritten with
/// garbage after the first fetch: the next fetch rebuilds it from the
/// remote and reads the new commit, checked as usual (the loaded commit
/// must still be an ancestor), and keeps the damaged copy beside it.
#[test]
fn a_damaged_cache_is_rebuilt_from_the_remote() {
    for part in ["objects", "refs", ""] {
        let (up, first, cache, s) = fetched_then_damaged(part);
        let second = up.commit_gateway_with(
            "two",
            &[("roles/x.yaml", Node::Text("x: 1\n"))],
            Some(first),
        );
        let snap = snapshot(&s, Some(&first.to_string()));
        assert_eq!(snap.commit, second.to_string(), "damaged: {part:?}");
        assert_eq!(keys(&snap), ["gateway.yaml", "roles/x.yaml"]);
        let damaged = cache.0.path().join("cache.git.damaged");
        assert!(damaged.is_dir(), "the damaged copy is kept ({part:?})");
        assert!(!cache.0.path().join("cache.git.rebuild").exists());
        // The rebuilt cache is a working one: nothing new, nothing to do.
        assert!(git::fetch(&s, Some(&second.to_string())).unwrap().is_none());
    }
}

/// Controls: a damaged cache with the remote gone keeps failing with the
/// damage (nothing swapped) and repairs itself once the remote is back;
/// a commit that is refused on its merits (a force-push) is refused
/// after a rebuild attempt too, and the cache is left as it was.
#[test]
fn a_rebuild_that_fails_changes_nothing() {
    let (up, first, cache, s) = fetched_then_damaged("refs");
    let second = up.commit_gateway("two", Some(first));
    let away = up.dir.path().join("moved.git");
    std::fs::rename(up.path(), &away).unwrap();
    let e = error(&s, Some(&first.to_string()));
    assert!(
        matches!(e, GitError::Fetch { .. } | GitError::Unreachable { .. }),
        "{e:?}"
    );
    assert!(
        !cache.0.path().join("cache.git.damaged").exists(),
        "swapped without a remote"
    );
    assert!(!cache.0.path().join("cache.git.rebuild").exists());
    std::fs::rename(&away, up.path()).unwrap();
    assert_eq!(
        snapshot(&s, Some(&first.to_string())).commit,
        second.to_string()
    );

    // Unrelated history, against a cache that is fine: refused as before.
    let orphan = up.commit_gateway("rewritten", None);
    let e = error(&s, Some(&second.to_string()));
    match e {
        GitError::NotDescendant {
            new, current_known, ..
        } => {
            assert_eq!(new, orphan.to_string());
            assert!(current_known);
        }
        other => panic!("expected NotDescendant, got {other:?}"),
    }
}
