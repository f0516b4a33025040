//! Models from the Hugging Face Hub, natively: `--model ORG/NAME[@REVISION]`.
//!
//! The same environment and the same cache as `huggingface_hub` (and so diffusers):
//! `HF_ENDPOINT`, `HF_HOME` / `HF_HUB_CACHE`, `HF_TOKEN` or `$HF_HOME/token`,
//! `HF_HUB_OFFLINE=1`; files in `models--ORG--NAME/blobs/<etag>`, linked from
//! `snapshots/<commit>/<path>` (relative symlinks), `refs/<revision>` holding the commit.
//! A model downloaded by diffusers is used without a byte fetched again, and one we
//! downloaded is read by diffusers. Only what the pipeline reads is fetched
//! ([`select`]), resumably, and a blob enters the cache only whole and with the sha256
//! the Hub announced. Models assembled from several repos (RadEdit) are [`recipe`]s.
//!
//! Native only: the page downloads with the browser's `fetch` (src/web).

mod cache;
mod client;
pub mod recipe;
mod select;

pub use cache::RepoCache;
pub use client::{Event, Hub, Snapshot};
pub use select::{Part, select, select_combined, select_part};

use std::path::PathBuf;

/// What went wrong getting a model from the Hub: each sentence says what to do.
#[derive(Debug, thiserror::Error)]
pub enum HubError {
    #[error(
        "`{0}` is neither a folder nor a Hub repo id: give a diffusers folder, ORG/NAME[@REVISION], a known model ({known}) or a recipe .json",
        known = recipe::known_names().join(", ")
    )]
    BadRepoId(String),
    #[error(
        "{repo} is gated: accept its terms at {endpoint}/{repo} and set HF_TOKEN (or put the token in {token_file})"
    )]
    Gated {
        repo: String,
        endpoint: String,
        token_file: String,
    },
    #[error(
        "the Hub refused the token from {token_from} for {repo}: ask for access at {endpoint}/{repo} (or check that the token is right and can read)"
    )]
    TokenRefused {
        repo: String,
        endpoint: String,
        token_from: String,
    },
    #[error(
        "no repository {repo} on {endpoint} (and no such folder here): check ORG/NAME, or set HF_TOKEN if it is private"
    )]
    RepoNotFound { repo: String, endpoint: String },
    #[error(
        "{repo} has no revision `{revision}` on {endpoint}: use a branch, tag or commit it has"
    )]
    RevisionNotFound {
        repo: String,
        revision: String,
        endpoint: String,
    },
    #[error("{repo}@{revision} has no file {path}{hint}")]
    EntryNotFound {
        repo: String,
        revision: String,
        path: String,
        hint: String,
    },
    #[error(
        "HF_HUB_OFFLINE is set and {repo}@{revision} is not in the cache {cache}{missing}: run once without HF_HUB_OFFLINE (`roentgen download {repo}`), or give a folder"
    )]
    Offline {
        repo: String,
        revision: String,
        cache: String,
        missing: String,
    },
    #[error(
        "could not reach {endpoint} ({message}) and {repo}@{revision} is not in the cache {cache}: check the network or HF_ENDPOINT, or set HF_HUB_OFFLINE=1 to use the cache only"
    )]
    Unreachable {
        repo: String,
        revision: String,
        endpoint: String,
        message: String,
        cache: String,
    },
    #[error("{url}: {message}")]
    Http { url: String, message: String },
    #[error(
        "the disk is full writing {path}: the {done} bytes downloaded so far are kept and the next run resumes there; free {left} more bytes (or set HF_HUB_CACHE to a bigger disk)"
    )]
    DiskFull { path: String, done: u64, left: u64 },
    #[error(
        "the download of {path} stopped after {done} of {size} bytes ({message}): what arrived is kept; run the same command again to resume"
    )]
    Interrupted {
        path: String,
        done: u64,
        size: u64,
        message: String,
    },
    #[error(
        "{path} arrived whole but its sha256 is {got}, not the {expected} the Hub announced: the file was deleted; run again to download it afresh"
    )]
    Checksum {
        path: String,
        expected: String,
        got: String,
    },
    #[error(
        "refused a redirect from {from} to {to}: only https, or the endpoint's own scheme and host, are followed"
    )]
    UnsafeRedirect { from: String, to: String },
    #[error(
        "refused {repo}'s file name `{path}`: it would leave the cache folder (absolute, `..`, or odd characters)"
    )]
    UnsafePath { repo: String, path: String },
    #[error("{path}: {message}")]
    Io { path: String, message: String },
    #[error("{file}: {message}")]
    Recipe { file: String, message: String },
    #[error(transparent)]
    Select(#[from] crate::error::Error),
}

pub type Result<T, E = HubError> = std::result::Result<T, E>;

pub(crate) fn io_err(path: &std::path::Path, e: std::io::Error) -> HubError {
    HubError::Io {
        path: path.display().to_string(),
        message: e.to_string(),
    }
}

/// `huggingface_hub`'s environment.
#[derive(Clone, Debug)]
pub struct HubConfig {
    /// `HF_ENDPOINT` without a trailing `/` (default `https://huggingface.co`).
    pub endpoint: String,
    /// `HF_HUB_CACHE`, else `$HF_HOME/hub` (`HF_HOME` defaults to
    /// `$XDG_CACHE_HOME/huggingface`, else `~/.cache/huggingface`).
    pub cache: PathBuf,
    /// `HF_TOKEN` when set and not empty, else the token file's content.
    pub token: Option<String>,
    /// Where the token came from (said in errors, never the token itself).
    pub token_from: String,
    /// The token file: `HF_TOKEN_PATH`, else `$HF_HOME/token`.
    pub token_file: PathBuf,
    /// `HF_HUB_OFFLINE` is 1/ON/YES/TRUE.
    pub offline: bool,
}

impl HubConfig {
    pub fn from_env() -> HubConfig {
        Self::from_vars(|k| std::env::var(k).ok())
    }

    /// From any source of variables (tests).
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> HubConfig {
        let set = |k: &str| var(k).filter(|v| !v.is_empty());
        let home = set("HF_HOME").map(PathBuf::from).unwrap_or_else(|| {
            set("XDG_CACHE_HOME")
                .map(PathBuf::from)
                .or_else(|| set("HOME").map(|h| PathBuf::from(h).join(".cache")))
                .unwrap_or_else(|| PathBuf::from(".cache"))
                .join("huggingface")
        });
        let cache = set("HF_HUB_CACHE")
            .map(PathBuf::from)
            .unwrap_or_else(|| home.join("hub"));
        let token_file = set("HF_TOKEN_PATH")
            .map(PathBuf::from)
            .unwrap_or_else(|| home.join("token"));
        let (token, token_from) = match set("HF_TOKEN").map(|t| t.trim().to_string()) {
            Some(t) if !t.is_empty() => (Some(t), "HF_TOKEN".to_string()),
            _ => match std::fs::read_to_string(&token_file) {
                Ok(t) if !t.trim().is_empty() => {
                    (Some(t.trim().to_string()), token_file.display().to_string())
                }
                _ => (None, "nowhere".to_string()),
            },
        };
        let offline = set("HF_HUB_OFFLINE").is_some_and(|v| {
            matches!(v.to_ascii_uppercase().as_str(), "1" | "ON" | "YES" | "TRUE")
        });
        HubConfig {
            endpoint: set("HF_ENDPOINT")
                .unwrap_or_else(|| "https://huggingface.co".into())
                .trim_end_matches('/')
                .to_string(),
            cache,
            token,
            token_from,
            token_file,
            offline,
        }
    }
}

/// `ORG/NAME[@REVISION]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RepoRef {
    pub repo: String,
    pub revision: String,
}

impl RepoRef {
    pub fn parse(s: &str) -> Result<RepoRef> {
        let bad = || HubError::BadRepoId(s.to_string());
        let (repo, revision) = s.split_once('@').unwrap_or((s, "main"));
        let (org, name) = repo.split_once('/').ok_or_else(bad)?;
        let part_ok = |p: &str| {
            !p.is_empty()
                && p.len() <= 96
                && !p.starts_with(['.', '-'])
                && !p.contains("..")
                && p.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        };
        let rev_ok = !revision.is_empty()
            && !revision.contains("..")
            && !revision.starts_with('/')
            && revision
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'/'));
        if !part_ok(org) || !part_ok(name) || !rev_ok {
            return Err(bad());
        }
        Ok(RepoRef {
            repo: repo.to_string(),
            revision: revision.to_string(),
        })
    }

    /// The revision is a commit id (40 hex digits).
    pub fn is_commit(&self) -> bool {
        is_commit(&self.revision)
    }
}

impl std::fmt::Display for RepoRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.revision == "main" {
            write!(f, "{}", self.repo)
        } else {
            write!(f, "{}@{}", self.repo, self.revision)
        }
    }
}

pub(crate) fn is_commit(s: &str) -> bool {
    s.len() == 40 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// A repo's file name that stays inside the snapshot folder: relative, `/`-separated,
/// no empty, `.` or `..` segment, no backslash or control characters.
pub fn safe_rel_path(path: &str) -> bool {
    !path.is_empty()
        && !path.starts_with('/')
        && !path.contains('\\')
        && !path.chars().any(|c| c.is_control())
        // `C:x`: a drive on Windows.
        && path.as_bytes().get(1) != Some(&b':')
        && path
            .split('/')
            .all(|seg| !seg.is_empty() && seg != "." && seg != "..")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repo_ids_and_revisions() {
        let r = RepoRef::parse("stanfordmimi/RoentGen-v2@abc").unwrap();
        assert_eq!(
            (r.repo.as_str(), r.revision.as_str()),
            ("stanfordmimi/RoentGen-v2", "abc")
        );
        assert_eq!(RepoRef::parse("a/b").unwrap().revision, "main");
        for bad in [
            "a", "a/b/c", "../b", "a/..", "a/b@", "a/b@../x", "/a/b", "a/b c",
        ] {
            assert!(RepoRef::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn paths_that_leave_the_cache_are_refused() {
        for ok in ["model_index.json", "unet/config.json", "a.b/c..d"] {
            assert!(safe_rel_path(ok), "{ok}");
        }
        for bad in [
            "",
            "/etc/passwd",
            "../x",
            "unet/../../x",
            "a//b",
            "./a",
            "a\\b",
            "C:x",
            "a/\n",
        ] {
            assert!(!safe_rel_path(bad), "{bad:?}");
        }
    }

    #[test]
    fn environment() {
        let vars = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                pairs
                    .iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| v.to_string())
            }
        };
        let c = HubConfig::from_vars(vars(&[("HOME", "/h"), ("HF_TOKEN", "")]));
        assert_eq!(c.endpoint, "https://huggingface.co");
        assert_eq!(c.cache, PathBuf::from("/h/.cache/huggingface/hub"));
        assert_eq!(c.token, None, "an empty HF_TOKEN is no token");
        assert!(!c.offline);
        let c = HubConfig::from_vars(vars(&[
            ("HF_HOME", "/x"),
            ("HF_HUB_CACHE", "/y"),
            ("HF_ENDPOINT", "http://127.0.0.1:9/"),
            ("HF_TOKEN", "hf_a"),
            ("HF_HUB_OFFLINE", "true"),
        ]));
        assert_eq!(c.cache, PathBuf::from("/y"));
        assert_eq!(c.endpoint, "http://127.0.0.1:9");
        assert_eq!(c.token.as_deref(), Some("hf_a"));
        assert_eq!(c.token_file, PathBuf::from("/x/token"));
        assert!(c.offline);
    }
}
