//! `huggingface_hub`'s cache layout, one repo:
//!
//! ```text
//! models--ORG--NAME/
//!   blobs/<etag>                 the file (etag: the sha256 of LFS files, else git's sha1)
//!   blobs/<etag>.incomplete      a download under way (resumed with a Range request)
//!   snapshots/<commit>/<path>    relative symlink to ../../blobs/<etag> (one ../ per folder)
//!   refs/<revision>              the commit the revision (e.g. main) pointed to
//! ```

use std::path::{Path, PathBuf};

use super::{HubError, Result, io_err, is_commit, safe_rel_path};

pub struct RepoCache {
    pub repo: String,
    /// `<cache>/models--ORG--NAME`.
    pub root: PathBuf,
}

impl RepoCache {
    pub fn new(cache: &Path, repo: &str) -> RepoCache {
        RepoCache {
            repo: repo.to_string(),
            root: cache.join(format!("models--{}", repo.replace('/', "--"))),
        }
    }

    /// An etag as a file name: hex only (the Hub's are sha1 or sha256); anything else is
    /// refused rather than written as a path.
    pub fn blob(&self, etag: &str) -> Result<PathBuf> {
        if etag.is_empty() || etag.len() > 128 || !etag.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(HubError::UnsafePath {
                repo: self.repo.clone(),
                path: format!("blobs/{etag}"),
            });
        }
        Ok(self.root.join("blobs").join(etag))
    }

    /// huggingface_hub's lock file of a blob: `<cache>/.locks/models--ORG--NAME/<etag>.lock`
    /// (it takes it with `flock`, as [`std::fs::File::lock`] does on Unix), so that it
    /// and we never write the same blob at once.
    pub fn lock_file(&self, etag: &str) -> Result<PathBuf> {
        self.blob(etag)?;
        let cache = self.root.parent().unwrap_or(Path::new("."));
        let name = self.root.file_name().unwrap_or_default();
        Ok(cache.join(".locks").join(name).join(format!("{etag}.lock")))
    }

    pub fn snapshot(&self, commit: &str) -> PathBuf {
        self.root.join("snapshots").join(commit)
    }

    /// The snapshot's path of a repo file, refused when it would leave the snapshot.
    pub fn snapshot_file(&self, commit: &str, path: &str) -> Result<PathBuf> {
        if !safe_rel_path(path) {
            return Err(HubError::UnsafePath {
                repo: self.repo.clone(),
                path: path.to_string(),
            });
        }
        Ok(self.snapshot(commit).join(path))
    }

    /// The commit `revision` means in this cache: itself when it is a commit with a
    /// snapshot, else what `refs/<revision>` says.
    pub fn resolve(&self, revision: &str) -> Option<String> {
        if is_commit(revision) && self.snapshot(revision).is_dir() {
            return Some(revision.to_string());
        }
        if !super::safe_rel_path(revision) {
            return None;
        }
        let c = std::fs::read_to_string(self.root.join("refs").join(revision)).ok()?;
        let c = c.trim();
        is_commit(c).then(|| c.to_string())
    }

    pub fn write_ref(&self, revision: &str, commit: &str) -> Result<()> {
        if revision == commit || !safe_rel_path(revision) {
            return Ok(());
        }
        let p = self.root.join("refs").join(revision);
        if std::fs::read_to_string(&p).is_ok_and(|c| c.trim() == commit) {
            return Ok(());
        }
        std::fs::create_dir_all(p.parent().unwrap()).map_err(|e| io_err(&p, e))?;
        let tmp = p.with_extension(format!("roentgen-{}", std::process::id()));
        std::fs::write(&tmp, commit).map_err(|e| io_err(&tmp, e))?;
        std::fs::rename(&tmp, &p).map_err(|e| io_err(&p, e))
    }

    /// Links `snapshots/<commit>/<path>` to `blobs/<etag>` as huggingface_hub does: a
    /// relative symlink (a copy where the file system has no symlinks).
    pub fn link(&self, commit: &str, path: &str, etag: &str) -> Result<PathBuf> {
        let blob = self.blob(etag)?;
        let link = self.snapshot_file(commit, path)?;
        std::fs::create_dir_all(link.parent().unwrap()).map_err(|e| io_err(&link, e))?;
        let up = "../".repeat(2 + path.matches('/').count());
        let target = format!("{up}blobs/{etag}");
        // Made under a name of this process's, then renamed over: another writer of the
        // same snapshot (roentgen or huggingface_hub) never sees a missing link.
        let tmp = link.with_file_name(format!(
            ".{}.roentgen-{}",
            link.file_name().unwrap_or_default().to_string_lossy(),
            std::process::id()
        ));
        let _ = std::fs::remove_file(&tmp);
        #[cfg(unix)]
        let made = std::os::unix::fs::symlink(&target, &tmp);
        #[cfg(not(unix))]
        let made = std::fs::copy(&blob, &tmp).map(|_| ());
        made.map_err(|e| io_err(&link, e))?;
        let _ = blob;
        std::fs::rename(&tmp, &link).map_err(|e| io_err(&link, e))?;
        Ok(link)
    }

    /// Every file of a snapshot whose link leads to a blob, snapshot-relative.
    pub fn snapshot_files(&self, commit: &str) -> Vec<String> {
        fn walk(dir: &Path, prefix: &str, out: &mut Vec<String>) {
            let Ok(entries) = std::fs::read_dir(dir) else {
                return;
            };
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                let rel = if prefix.is_empty() {
                    name
                } else {
                    format!("{prefix}/{name}")
                };
                let p = e.path();
                if p.is_dir() {
                    walk(&p, &rel, out);
                } else if p.is_file() {
                    out.push(rel);
                }
            }
        }
        let mut out = Vec::new();
        walk(&self.snapshot(commit), "", &mut out);
        out.sort();
        out
    }
}
