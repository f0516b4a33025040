//! The Hub's download protocol over `ureq` (blocking, rustls), as `huggingface_hub`
//! speaks it: `GET /api/models/ORG/NAME/revision/REV` for the commit and the file list,
//! `HEAD /ORG/NAME/resolve/COMMIT/PATH` for each file's etag and size (weights answer a
//! `302` to the file CDN with `X-Linked-Etag`: their sha256), then `GET` (with `Range`
//! to resume `blobs/<etag>.incomplete`). Redirects are followed by hand, so that each
//! is checked ([`redirect_allowed`]) and the token never leaves the endpoint's host.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use sha2::Digest;

use super::cache::RepoCache;
use super::{HubConfig, HubError, RepoRef, Result, io_err, safe_rel_path};

/// What a download is doing, for a progress display.
#[derive(Debug)]
pub enum Event<'a> {
    /// `files` to download (path, bytes), of `total` bytes with `done` of them already
    /// here (partials resumed); `cached` files needed nothing.
    Plan {
        repo: &'a str,
        files: &'a [(String, u64)],
        total: u64,
        done: u64,
        cached: usize,
    },
    /// A file starts, `done` of its `size` bytes already here.
    File { path: &'a str, size: u64, done: u64 },
    /// `n` more bytes of the current file arrived.
    Bytes(u64),
}

/// A repo's files as the cache holds them.
#[derive(Clone, Debug)]
pub struct Snapshot {
    pub repo: String,
    pub commit: String,
    /// `.../models--ORG--NAME/snapshots/<commit>`: a folder the loader reads.
    pub dir: PathBuf,
    /// The chosen files, snapshot-relative.
    pub files: Vec<String>,
    /// Bytes downloaded by this call.
    pub downloaded: u64,
}

pub struct Hub {
    pub config: HubConfig,
    agent: ureq::Agent,
}

/// Where a file's bytes come from.
struct Remote {
    path: String,
    etag: String,
    size: u64,
    url: String,
    /// The sha256 the Hub announced (LFS files).
    sha256: Option<String>,
}

fn scheme_host(url: &str) -> Option<(String, String)> {
    let (scheme, rest) = url.split_once("://")?;
    let authority = rest.split(['/', '?', '#']).next()?;
    if authority.contains('@') {
        return None;
    }
    let host = if let Some(v6) = authority.strip_prefix('[') {
        v6.split(']').next()?.to_string()
    } else {
        authority.split(':').next()?.to_string()
    };
    (!host.is_empty()).then(|| (scheme.to_ascii_lowercase(), host.to_ascii_lowercase()))
}

/// A redirect is followed to `https`, or to the endpoint's own scheme and host (any
/// port: the stand-in's plain-HTTP file port on 127.0.0.1 next to an `http://127.0.0.1`
/// endpoint). Anything else (plain HTTP elsewhere, other schemes, user info) is refused.
pub fn redirect_allowed(endpoint: &str, location: &str) -> bool {
    match (scheme_host(endpoint), scheme_host(location)) {
        (Some(e), Some(l)) => l.0 == "https" || l == e,
        _ => false,
    }
}

/// Percent-encodes a repo path or revision for a URL (`/` kept).
fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b'/' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn header(resp: &ureq::http::Response<ureq::Body>, name: &str) -> Option<String> {
    resp.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

fn clean_etag(e: &str) -> String {
    e.trim()
        .trim_start_matches("W/")
        .trim_matches('"')
        .to_ascii_lowercase()
}

impl Hub {
    pub fn new(config: HubConfig) -> Hub {
        let agent = ureq::Agent::config_builder()
            .max_redirects(0)
            .http_status_as_error(false)
            .timeout_connect(Some(Duration::from_secs(20)))
            .timeout_recv_response(Some(Duration::from_secs(60)))
            .user_agent(concat!(
                "roentgen/",
                env!("CARGO_PKG_VERSION"),
                " (huggingface_hub-compatible)"
            ))
            .build()
            .into();
        Hub { config, agent }
    }

    pub fn from_env() -> Hub {
        Hub::new(HubConfig::from_env())
    }

    pub fn repo_cache(&self, repo: &str) -> RepoCache {
        RepoCache::new(&self.config.cache, repo)
    }

    fn same_host(&self, url: &str) -> bool {
        scheme_host(url).is_some() && scheme_host(url) == scheme_host(&self.config.endpoint)
    }

    /// One request, the token only to the endpoint's own host.
    fn call(
        &self,
        method: &str,
        url: &str,
        range_from: Option<u64>,
    ) -> std::result::Result<ureq::http::Response<ureq::Body>, ureq::Error> {
        let mut req = ureq::http::Request::builder().method(method).uri(url);
        if let (Some(t), true) = (&self.config.token, self.same_host(url)) {
            req = req.header("Authorization", format!("Bearer {t}"));
        }
        if let Some(from) = range_from {
            req = req.header("Range", format!("bytes={from}-"));
        }
        let req = req.body(()).map_err(ureq::Error::Http)?;
        self.agent.run(req)
    }

    /// The error for a refusal, from its status and `X-Error-Code`.
    fn refusal(
        &self,
        r: &RepoRef,
        path: Option<&str>,
        url: &str,
        resp: &mut ureq::http::Response<ureq::Body>,
    ) -> HubError {
        let status = resp.status().as_u16();
        let code = header(resp, "x-error-code").unwrap_or_default();
        let endpoint = self.config.endpoint.clone();
        let repo = r.repo.clone();
        match (code.as_str(), status) {
            ("GatedRepo", _) | ("", 401 | 403) if self.config.token.is_none() => HubError::Gated {
                repo,
                endpoint,
                token_file: self.config.token_file.display().to_string(),
            },
            ("GatedRepo", _) | ("", 401 | 403) => HubError::TokenRefused {
                repo,
                endpoint,
                token_from: self.config.token_from.clone(),
            },
            ("RepoNotFound", _) => HubError::RepoNotFound { repo, endpoint },
            ("RevisionNotFound", _) => HubError::RevisionNotFound {
                repo,
                revision: r.revision.clone(),
                endpoint,
            },
            ("EntryNotFound", _) | (_, 404) if path.is_some() => HubError::EntryNotFound {
                repo,
                revision: r.revision.clone(),
                path: path.unwrap_or_default().to_string(),
                hint: String::new(),
            },
            (_, 404) => HubError::RepoNotFound { repo, endpoint },
            _ => {
                let body = resp
                    .body_mut()
                    .with_config()
                    .limit(4096)
                    .read_to_string()
                    .unwrap_or_default();
                HubError::Http {
                    url: url.to_string(),
                    message: format!("HTTP {status} {code} {}", body.trim()),
                }
            }
        }
    }

    /// The repo's files at `r`, choosing what to fetch with `choose` (from the Hub's
    /// listing, or the cached snapshot's offline), downloading what the cache lacks.
    pub fn snapshot(
        &self,
        r: &RepoRef,
        choose: &dyn Fn(&[String]) -> crate::error::Result<Vec<String>>,
        progress: &mut dyn FnMut(Event),
    ) -> Result<Snapshot> {
        let cache = self.repo_cache(&r.repo);
        if self.config.offline {
            return self
                .cached(&cache, r, choose)
                .map_err(|missing| HubError::Offline {
                    repo: r.repo.clone(),
                    revision: r.revision.clone(),
                    cache: self.config.cache.display().to_string(),
                    missing,
                });
        }
        let url = format!(
            "{}/api/models/{}/revision/{}",
            self.config.endpoint,
            r.repo,
            enc(&r.revision).replace('/', "%2F")
        );
        let mut resp = match self.call("GET", &url, None) {
            Ok(resp) => resp,
            // No network: the cache, as huggingface_hub falls back to it.
            Err(e) => {
                return self
                    .cached(&cache, r, choose)
                    .map_err(|_| HubError::Unreachable {
                        repo: r.repo.clone(),
                        revision: r.revision.clone(),
                        endpoint: self.config.endpoint.clone(),
                        message: e.to_string(),
                        cache: self.config.cache.display().to_string(),
                    });
            }
        };
        let status = resp.status().as_u16();
        if status >= 500 {
            // The Hub is down: the cache if it has everything, as huggingface_hub does.
            if let Ok(s) = self.cached(&cache, r, choose) {
                log::warn!(
                    "{url}: HTTP {status}; using the cached snapshot {}",
                    s.commit
                );
                return Ok(s);
            }
        }
        if status != 200 {
            return Err(self.refusal(r, None, &url, &mut resp));
        }
        let info: serde_json::Value = resp
            .body_mut()
            .with_config()
            .limit(64 << 20)
            .read_to_string()
            .map_err(|e| e.to_string())
            .and_then(|s| serde_json::from_str(&s).map_err(|e| e.to_string()))
            .map_err(|e| HubError::Http {
                url: url.clone(),
                message: format!("not the Hub's JSON: {e}"),
            })?;
        let commit = info["sha"]
            .as_str()
            .filter(|c| super::is_commit(c))
            .ok_or_else(|| HubError::Http {
                url: url.clone(),
                message: "the answer has no commit `sha`".into(),
            })?
            .to_ascii_lowercase();
        let listing: Vec<String> = info["siblings"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|s| s["rfilename"].as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        if let Some(bad) = listing.iter().find(|p| !safe_rel_path(p)) {
            return Err(HubError::UnsafePath {
                repo: r.repo.clone(),
                path: bad.clone(),
            });
        }
        let chosen = choose(&listing)?;
        let at_commit = RepoRef {
            repo: r.repo.clone(),
            revision: commit.clone(),
        };
        // What the cache lacks: HEAD each, for its etag and size.
        let mut remote = Vec::new();
        let mut cached = 0;
        for path in &chosen {
            if cache.snapshot_file(&commit, path)?.is_file() {
                cached += 1;
                continue;
            }
            let head = self.head(&at_commit, r, path)?;
            if cache.blob(&head.etag)?.is_file() {
                cache.link(&commit, path, &head.etag)?;
                cached += 1;
            } else {
                remote.push(head);
            }
        }
        let files: Vec<(String, u64)> = remote.iter().map(|f| (f.path.clone(), f.size)).collect();
        let partial = |f: &Remote| -> u64 {
            cache
                .blob(&f.etag)
                .ok()
                .and_then(|b| std::fs::metadata(incomplete(&b)).ok())
                .map(|m| m.len().min(f.size))
                .unwrap_or(0)
        };
        progress(Event::Plan {
            repo: &r.repo,
            files: &files,
            total: files.iter().map(|f| f.1).sum(),
            done: remote.iter().map(partial).sum(),
            cached,
        });
        let mut downloaded = 0;
        for f in &remote {
            downloaded += self.download(&cache, f, progress)?;
            cache.link(&commit, &f.path, &f.etag)?;
        }
        cache.write_ref(&r.revision, &commit)?;
        Ok(Snapshot {
            repo: r.repo.clone(),
            dir: cache.snapshot(&commit),
            commit,
            files: chosen,
            downloaded,
        })
    }

    /// The snapshot the cache holds for `r`, if it has every chosen file; else why not.
    fn cached(
        &self,
        cache: &RepoCache,
        r: &RepoRef,
        choose: &dyn Fn(&[String]) -> crate::error::Result<Vec<String>>,
    ) -> std::result::Result<Snapshot, String> {
        let commit = cache.resolve(&r.revision).ok_or_else(String::new)?;
        let files = cache.snapshot_files(&commit);
        let chosen = choose(&files)
            .map_err(|e| format!(" (the cached snapshot {commit} is incomplete: {e})"))?;
        Ok(Snapshot {
            repo: r.repo.clone(),
            dir: cache.snapshot(&commit),
            commit,
            files: chosen,
            downloaded: 0,
        })
    }

    /// `HEAD .../resolve/COMMIT/PATH`: etag, size and where the bytes are.
    fn head(&self, at: &RepoRef, asked: &RepoRef, path: &str) -> Result<Remote> {
        let mut url = format!(
            "{}/{}/resolve/{}/{}",
            self.config.endpoint,
            at.repo,
            at.revision,
            enc(path)
        );
        for _ in 0..5 {
            let mut resp = self.call("HEAD", &url, None).map_err(|e| HubError::Http {
                url: url.clone(),
                message: e.to_string(),
            })?;
            let status = resp.status().as_u16();
            let etag = header(&resp, "x-linked-etag")
                .or_else(|| header(&resp, "etag"))
                .map(|e| clean_etag(&e));
            let size = header(&resp, "x-linked-size")
                .or_else(|| header(&resp, "content-length"))
                .and_then(|s| s.parse::<u64>().ok());
            let linked = header(&resp, "x-linked-etag").map(|e| clean_etag(&e));
            match status {
                200 => {
                    let (Some(etag), Some(size)) = (etag, size) else {
                        return Err(HubError::Http {
                            url,
                            message: "the answer has no ETag or size".into(),
                        });
                    };
                    return Ok(Remote {
                        path: path.to_string(),
                        sha256: linked.filter(|e| e.len() == 64),
                        etag,
                        size,
                        url,
                    });
                }
                301 | 302 | 303 | 307 | 308 => {
                    let location = header(&resp, "location").unwrap_or_default();
                    let to = if location.starts_with('/') {
                        format!("{}{location}", self.config.endpoint)
                    } else {
                        location
                    };
                    if !redirect_allowed(&self.config.endpoint, &to) {
                        return Err(HubError::UnsafeRedirect { from: url, to });
                    }
                    // The file CDN (an absolute redirect): the Hub's headers say it all.
                    if let (Some(etag), Some(size), false) =
                        (etag, size, self.same_host(&to) && to.contains("/resolve/"))
                    {
                        return Ok(Remote {
                            path: path.to_string(),
                            sha256: linked.filter(|e| e.len() == 64),
                            etag,
                            size,
                            url: to,
                        });
                    }
                    url = to;
                }
                _ => return Err(self.refusal(asked, Some(path), &url, &mut resp)),
            }
        }
        Err(HubError::Http {
            url,
            message: "too many redirects".into(),
        })
    }

    /// Fetches one blob into the cache (resuming its `.incomplete`); returns the bytes
    /// downloaded.
    fn download(
        &self,
        cache: &RepoCache,
        f: &Remote,
        progress: &mut dyn FnMut(Event),
    ) -> Result<u64> {
        let blob = cache.blob(&f.etag)?;
        let part = incomplete(&blob);
        std::fs::create_dir_all(blob.parent().unwrap()).map_err(|e| io_err(&blob, e))?;
        // One writer per blob (another roentgen, or huggingface_hub: the same lock file);
        // released when `_lock` drops.
        let lock_path = cache.lock_file(&f.etag)?;
        std::fs::create_dir_all(lock_path.parent().unwrap()).map_err(|e| io_err(&lock_path, e))?;
        let _lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .and_then(|l| l.lock().map(|_| l))
            .map_err(|e| io_err(&lock_path, e))?;
        if blob.is_file() {
            // The other writer finished it while we waited.
            return Ok(0);
        }
        let mut done = std::fs::metadata(&part).map(|m| m.len()).unwrap_or(0);
        if done > f.size {
            done = 0;
        }
        progress(Event::File {
            path: &f.path,
            size: f.size,
            done,
        });
        let mut got = 0;
        if done < f.size {
            let mut url = f.url.clone();
            let mut resp = None;
            for _ in 0..5 {
                let r = self
                    .call("GET", &url, (done > 0).then_some(done))
                    .map_err(|e| HubError::Interrupted {
                        path: f.path.clone(),
                        done,
                        size: f.size,
                        message: e.to_string(),
                    })?;
                match r.status().as_u16() {
                    301 | 302 | 303 | 307 | 308 => {
                        let to = header(&r, "location").unwrap_or_default();
                        let to = if to.starts_with('/') {
                            match scheme_host(&url) {
                                Some((scheme, _)) => {
                                    let rest = &url[scheme.len() + 3..];
                                    let authority = rest.split('/').next().unwrap_or("");
                                    format!("{scheme}://{authority}{to}")
                                }
                                None => to,
                            }
                        } else {
                            to
                        };
                        if !redirect_allowed(&self.config.endpoint, &to) {
                            return Err(HubError::UnsafeRedirect { from: url, to });
                        }
                        url = to;
                    }
                    _ => {
                        resp = Some(r);
                        break;
                    }
                }
            }
            let Some(mut resp) = resp else {
                return Err(HubError::Http {
                    url,
                    message: "too many redirects".into(),
                });
            };
            match resp.status().as_u16() {
                206 => {
                    let range = header(&resp, "content-range").unwrap_or_default();
                    if !range.starts_with(&format!("bytes {done}-")) {
                        done = 0;
                    }
                }
                200 => done = 0,
                _ => {
                    let r = RepoRef {
                        repo: cache.repo.clone(),
                        revision: "main".into(),
                    };
                    return Err(self.refusal(&r, Some(&f.path), &url, &mut resp));
                }
            }
            let mut out = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&part)
                .map_err(|e| io_err(&part, e))?;
            // A server that ignored the range: start again (only a file with bytes in it
            // needs truncating).
            if done == 0 && out.metadata().is_ok_and(|m| m.len() > 0) {
                out.set_len(0).map_err(|e| io_err(&part, e))?;
            }
            let mut body = resp.body_mut().with_config().limit(u64::MAX).reader();
            let mut buf = vec![0u8; 1 << 20];
            loop {
                let n = match body.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => n,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(e) => {
                        let _ = out.flush();
                        return Err(HubError::Interrupted {
                            path: f.path.clone(),
                            done,
                            size: f.size,
                            message: e.to_string(),
                        });
                    }
                };
                let n = n.min((f.size - done) as usize);
                if let Err(e) = out.write_all(&buf[..n]) {
                    return Err(if e.kind() == std::io::ErrorKind::StorageFull {
                        HubError::DiskFull {
                            path: part.display().to_string(),
                            done,
                            left: f.size - done,
                        }
                    } else {
                        io_err(&part, e)
                    });
                }
                done += n as u64;
                got += n as u64;
                progress(Event::Bytes(n as u64));
                if done == f.size {
                    break;
                }
            }
            out.flush().map_err(|e| io_err(&part, e))?;
            if done < f.size {
                return Err(HubError::Interrupted {
                    path: f.path.clone(),
                    done,
                    size: f.size,
                    message: "the connection closed early".into(),
                });
            }
        }
        if let Some(expected) = &f.sha256 {
            let got_sha = sha256_file(&part)?;
            if &got_sha != expected {
                let _ = std::fs::remove_file(&part);
                return Err(HubError::Checksum {
                    path: f.path.clone(),
                    expected: expected.clone(),
                    got: got_sha,
                });
            }
        }
        std::fs::rename(&part, &blob).map_err(|e| io_err(&blob, e))?;
        Ok(got)
    }
}

fn incomplete(blob: &Path) -> PathBuf {
    let mut s = blob.as_os_str().to_owned();
    s.push(".incomplete");
    PathBuf::from(s)
}

fn sha256_file(path: &Path) -> Result<String> {
    let mut f = std::fs::File::open(path).map_err(|e| io_err(path, e))?;
    let mut h = sha2::Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).map_err(|e| io_err(path, e))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(h.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redirects_to_https_or_the_endpoints_own_host() {
        let hub = "https://huggingface.co";
        assert!(redirect_allowed(hub, "https://cdn-lfs.hf.co/repos/x"));
        assert!(!redirect_allowed(hub, "http://cdn-lfs.hf.co/repos/x"));
        assert!(!redirect_allowed(hub, "ftp://huggingface.co/x"));
        assert!(!redirect_allowed(hub, "https://user@evil.example/x"));
        let local = "http://127.0.0.1:8080";
        assert!(redirect_allowed(local, "http://127.0.0.1:9090/org/x"));
        assert!(!redirect_allowed(local, "http://127.0.0.2:9090/org/x"));
        assert!(!redirect_allowed(local, "http://localhost:9090/org/x"));
        assert!(redirect_allowed(local, "https://example.org/x"));
    }
}
