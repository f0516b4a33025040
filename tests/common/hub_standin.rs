//! A local stand-in for the Hugging Face Hub's download protocol, std-only (plus `sha2`,
//! already a dependency): what `huggingface_hub` 2.x's `snapshot_download`, our native
//! client (`src/hub/`) and the page ask of `https://huggingface.co`, served from folders
//! on disk on 127.0.0.1. Used in-process by tests/hub.rs and as the binary
//! `examples/hub_standin.rs` by scripts (tools/check_hub_standin.py) and the page's tests.
//!
//! Two listeners: the Hub (API + `resolve`) and a "file CDN" on another port, where
//! weight files (`*.safetensors`, `*.bin`: LFS files on the Hub) are redirected with a
//! `302`, as the Hub sends them to its CDN. Every answer carries CORS headers; one
//! request per connection (`Connection: close`).
//!
//! Endpoints (REV is `main` or the commit):
//! - `GET /api/models/ORG/NAME[/revision/REV]`: `{id, sha, siblings: [{rfilename}], gated}`
//! - `GET /api/models/ORG/NAME/tree/REV[/PATH][?recursive=true]`: `[{type, oid, size,
//!   path, lfs?: {oid, size, pointerSize}}]`
//! - `HEAD`/`GET /ORG/NAME/resolve/REV/PATH`: small files with `ETag` (git blob sha1),
//!   `X-Repo-Commit`, `Content-Length`; weight files `302` to the CDN with `X-Linked-Etag`
//!   (sha256), `X-Linked-Size`, `X-Repo-Commit`, `ETag`.
//! - CDN: `HEAD`/`GET /ORG/NAME/COMMIT/PATH`, `Range: bytes=A-[B]` answered `206`.
//! - Gated repos (content only, as on the Hub: the listing is public): `401` without a
//!   bearer token, `403` with another, `X-Error-Code: GatedRepo`. Unknown repo `404
//!   RepoNotFound`, unknown file `404 EntryNotFound`, unknown revision `404
//!   RevisionNotFound`.
#![allow(dead_code)]

use std::collections::{BTreeMap, HashSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

/// What to serve.
#[derive(Clone, Debug, Default)]
pub struct Config {
    /// `(ORG/NAME, folder)`.
    pub repos: Vec<(String, PathBuf)>,
    /// Repos that need the token.
    pub gated: Vec<String>,
    /// The token that opens gated repos.
    pub token: Option<String>,
    /// 0: any free port.
    pub port: u16,
    pub cdn_port: u16,
    /// Every repo's commit; by default one derived from the repo's files.
    pub commit: Option<String>,
    /// Repo paths (`ORG/NAME/PATH` or just `PATH`) whose first CDN download is cut after
    /// half its bytes (resume tests).
    pub cut_once: Vec<String>,
}

impl Config {
    /// Reads the binary's flags (see examples/hub_standin.rs).
    pub fn from_args(args: impl Iterator<Item = String>) -> Result<Config, String> {
        let mut c = Config::default();
        let mut args = args.peekable();
        while let Some(flag) = args.next() {
            let mut value = || args.next().ok_or_else(|| format!("{flag} needs a value"));
            match flag.as_str() {
                "--repo" => {
                    let v = value()?;
                    let (name, dir) = v
                        .split_once('=')
                        .ok_or_else(|| format!("--repo {v}: expected ORG/NAME=DIR"))?;
                    c.repos.push((name.to_string(), PathBuf::from(dir)));
                }
                "--gated" => c.gated.push(value()?),
                "--token" => c.token = Some(value()?),
                "--port" => c.port = value()?.parse().map_err(|e| format!("--port: {e}"))?,
                "--cdn-port" => {
                    c.cdn_port = value()?.parse().map_err(|e| format!("--cdn-port: {e}"))?
                }
                "--commit" => {
                    let v = value()?;
                    if v.len() != 40 || !v.bytes().all(|b| b.is_ascii_hexdigit()) {
                        return Err(format!("--commit {v}: expected 40 hex digits"));
                    }
                    c.commit = Some(v.to_ascii_lowercase());
                }
                "--cut-once" => c.cut_once.push(value()?),
                other => return Err(format!("unknown flag {other}")),
            }
        }
        if c.repos.is_empty() {
            return Err("at least one --repo ORG/NAME=DIR".into());
        }
        Ok(c)
    }
}

struct File {
    path: String,
    full: PathBuf,
    size: u64,
    /// git blob sha1 of the content (small files) or of the LFS pointer (weights).
    oid: String,
    /// sha256 and pointer size of LFS (weight) files.
    lfs: Option<(String, u64)>,
}

struct Repo {
    commit: String,
    files: BTreeMap<String, File>,
}

struct State {
    repos: BTreeMap<String, Repo>,
    gated: HashSet<String>,
    token: Option<String>,
    cdn: String,
    cut_once: Mutex<HashSet<String>>,
    log: Mutex<Vec<String>>,
}

/// A running stand-in; stopped (ports closed) when dropped.
pub struct Standin {
    /// `http://127.0.0.1:P`: what `HF_ENDPOINT` is set to.
    pub url: String,
    pub cdn_url: String,
    state: Arc<State>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    ports: [u16; 2],
}

pub fn is_weight(path: &str) -> bool {
    path.ends_with(".safetensors") || path.ends_with(".bin")
}

fn lfs_pointer(sha256: &str, size: u64) -> String {
    format!("version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n")
}

fn git_blob_oid(bytes: &[u8]) -> String {
    let mut data = format!("blob {}\0", bytes.len()).into_bytes();
    data.extend_from_slice(bytes);
    hex(&sha1(&data))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex(&sha2::Sha256::digest(bytes))
}

/// SHA-1 (FIPS 180-4), for git blob ids: the only use, so no crate for it.
fn sha1(data: &[u8]) -> [u8; 20] {
    let mut h: [u32; 5] = [0x67452301, 0xEFCDAB89, 0x98BADCFE, 0x10325476, 0xC3D2E1F0];
    let mut msg = data.to_vec();
    let bit_len = (data.len() as u64).wrapping_mul(8);
    msg.push(0x80);
    while msg.len() % 64 != 56 {
        msg.push(0);
    }
    msg.extend_from_slice(&bit_len.to_be_bytes());
    for chunk in msg.chunks(64) {
        let mut w = [0u32; 80];
        for i in 0..16 {
            w[i] = u32::from_be_bytes(chunk[4 * i..4 * i + 4].try_into().unwrap());
        }
        for i in 16..80 {
            w[i] = (w[i - 3] ^ w[i - 8] ^ w[i - 14] ^ w[i - 16]).rotate_left(1);
        }
        let [mut a, mut b, mut c, mut d, mut e] = h;
        for (i, wi) in w.iter().enumerate() {
            let (f, k) = match i {
                0..=19 => ((b & c) | (!b & d), 0x5A827999),
                20..=39 => (b ^ c ^ d, 0x6ED9EBA1),
                40..=59 => ((b & c) | (b & d) | (c & d), 0x8F1BBCDC),
                _ => (b ^ c ^ d, 0xCA62C1D6),
            };
            let t = a
                .rotate_left(5)
                .wrapping_add(f)
                .wrapping_add(e)
                .wrapping_add(k)
                .wrapping_add(*wi);
            e = d;
            d = c;
            c = b.rotate_left(30);
            b = a;
            a = t;
        }
        for (x, y) in h.iter_mut().zip([a, b, c, d, e]) {
            *x = x.wrapping_add(y);
        }
    }
    let mut out = [0u8; 20];
    for (i, x) in h.iter().enumerate() {
        out[4 * i..4 * i + 4].copy_from_slice(&x.to_be_bytes());
    }
    out
}

fn walk(root: &Path, dir: &Path, out: &mut Vec<(String, PathBuf)>) -> std::io::Result<()> {
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        let p = e.path();
        if p.is_dir() {
            walk(root, &p, out)?;
        } else {
            let rel = p.strip_prefix(root).unwrap().to_string_lossy().replace('\\', "/");
            out.push((rel, p));
        }
    }
    Ok(())
}

fn load_repo(dir: &Path, commit: Option<&str>) -> Result<Repo, String> {
    let mut paths = Vec::new();
    walk(dir, dir, &mut paths).map_err(|e| format!("{}: {e}", dir.display()))?;
    paths.sort();
    let mut files = BTreeMap::new();
    for (path, full) in paths {
        let bytes = std::fs::read(&full).map_err(|e| format!("{}: {e}", full.display()))?;
        let size = bytes.len() as u64;
        let (oid, lfs) = if is_weight(&path) {
            let sha = sha256_hex(&bytes);
            let pointer = lfs_pointer(&sha, size);
            (git_blob_oid(pointer.as_bytes()), Some((sha, pointer.len() as u64)))
        } else {
            (git_blob_oid(&bytes), None)
        };
        files.insert(
            path.clone(),
            File {
                path,
                full,
                size,
                oid,
                lfs,
            },
        );
    }
    let commit = match commit {
        Some(c) => c.to_string(),
        // A commit id that changes with the content, like git's.
        None => {
            let tree: String = files.values().map(|f| format!("{} {}\n", f.oid, f.path)).collect();
            hex(&sha1(tree.as_bytes()))
        }
    };
    Ok(Repo { commit, files })
}

impl Standin {
    pub fn start(config: Config) -> Result<Standin, String> {
        let mut repos = BTreeMap::new();
        for (name, dir) in &config.repos {
            if name.split('/').count() != 2 {
                return Err(format!("repo {name}: expected ORG/NAME"));
            }
            repos.insert(name.clone(), load_repo(dir, config.commit.as_deref())?);
        }
        let hub = TcpListener::bind(("127.0.0.1", config.port)).map_err(|e| e.to_string())?;
        let cdn = TcpListener::bind(("127.0.0.1", config.cdn_port)).map_err(|e| e.to_string())?;
        let ports = [
            hub.local_addr().unwrap().port(),
            cdn.local_addr().unwrap().port(),
        ];
        let state = Arc::new(State {
            repos,
            gated: config.gated.iter().cloned().collect(),
            token: config.token.clone(),
            cdn: format!("http://127.0.0.1:{}", ports[1]),
            cut_once: Mutex::new(config.cut_once.iter().cloned().collect()),
            log: Mutex::new(Vec::new()),
        });
        let stop = Arc::new(AtomicBool::new(false));
        let threads = [(hub, false), (cdn, true)]
            .into_iter()
            .map(|(listener, is_cdn)| {
                let state = state.clone();
                let stop = stop.clone();
                std::thread::spawn(move || {
                    for conn in listener.incoming() {
                        if stop.load(Ordering::SeqCst) {
                            break;
                        }
                        let Ok(conn) = conn else { continue };
                        let state = state.clone();
                        std::thread::spawn(move || {
                            let _ = serve(&state, conn, is_cdn);
                        });
                    }
                })
            })
            .collect();
        Ok(Standin {
            url: format!("http://127.0.0.1:{}", ports[0]),
            cdn_url: state.cdn.clone(),
            state,
            stop,
            threads,
            ports,
        })
    }

    /// The commit a repo is served at.
    pub fn commit(&self, repo: &str) -> String {
        self.state.repos[repo].commit.clone()
    }

    /// Every request so far, as `METHOD path [range]` (`cdn ` before CDN requests).
    pub fn log(&self) -> Vec<String> {
        self.state.log.lock().unwrap().clone()
    }

    /// Closes both ports (the listeners are dropped before this returns).
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for p in self.ports {
            let _ = TcpStream::connect(("127.0.0.1", p));
        }
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl Drop for Standin {
    fn drop(&mut self) {
        self.shutdown();
    }
}

struct Request {
    method: String,
    path: String,
    query: String,
    headers: Vec<(String, String)>,
}

impl Request {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: Body,
}

enum Body {
    Bytes(Vec<u8>),
    /// `(file, offset, len, cut after this many bytes)`
    File(PathBuf, u64, u64, Option<u64>),
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        204 => "No Content",
        206 => "Partial Content",
        302 => "Found",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        416 => "Range Not Satisfiable",
        _ => "",
    }
}

fn json_answer(status: u16, body: String) -> Answer {
    Answer {
        status,
        headers: vec![("Content-Type".into(), "application/json".into())],
        body: Body::Bytes(body.into_bytes()),
    }
}

fn error(status: u16, code: &str, message: &str) -> Answer {
    let mut a = json_answer(status, format!("{{\"error\":{}}}", json_str(message)));
    a.headers.push(("X-Error-Code".into(), code.into()));
    a.headers.push(("X-Error-Message".into(), message.into()));
    a
}

fn json_str(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn read_request(conn: &mut BufReader<TcpStream>) -> std::io::Result<Option<Request>> {
    let mut line = String::new();
    if conn.read_line(&mut line)? == 0 {
        return Ok(None);
    }
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or("").to_string();
    let target = parts.next().unwrap_or("/").to_string();
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        if conn.read_line(&mut h)? == 0 {
            break;
        }
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.push((k.trim().to_string(), v.trim().to_string()));
        }
    }
    let (path, query) = target.split_once('?').unwrap_or((&target, ""));
    Ok(Some(Request {
        method,
        path: percent_decode(path),
        query: query.to_string(),
        headers,
    }))
}

fn serve(state: &State, conn: TcpStream, is_cdn: bool) -> std::io::Result<()> {
    let mut reader = BufReader::new(conn.try_clone()?);
    let Some(req) = read_request(&mut reader)? else {
        return Ok(());
    };
    // A request body (none expected) is not read: the connection closes after the answer.
    let range = req.header("range").unwrap_or("").to_string();
    state.log.lock().unwrap().push(format!(
        "{}{} {}{}",
        if is_cdn { "cdn " } else { "" },
        req.method,
        req.path,
        if range.is_empty() { String::new() } else { format!(" {range}") }
    ));
    let answer = if req.method == "OPTIONS" {
        let allow = req
            .header("access-control-request-headers")
            .map(|h| format!("Authorization, Range, Content-Type, {h}"))
            .unwrap_or_else(|| "Authorization, Range, Content-Type".into());
        Answer {
            status: 204,
            headers: vec![
                ("Access-Control-Allow-Methods".into(), "GET, HEAD, OPTIONS".into()),
                ("Access-Control-Allow-Headers".into(), allow),
                ("Access-Control-Max-Age".into(), "600".into()),
            ],
            body: Body::Bytes(Vec::new()),
        }
    } else if req.method != "GET" && req.method != "HEAD" {
        error(405, "MethodNotAllowed", "only GET, HEAD and OPTIONS")
    } else if is_cdn {
        cdn(state, &req)
    } else {
        hub(state, &req)
    };
    write_answer(conn, &req, answer)
}

fn write_answer(mut conn: TcpStream, req: &Request, a: Answer) -> std::io::Result<()> {
    let len = match &a.body {
        Body::Bytes(b) => b.len() as u64,
        Body::File(_, _, len, _) => *len,
    };
    let mut head = format!("HTTP/1.1 {} {}\r\n", a.status, reason(a.status));
    let mut has_len = false;
    for (k, v) in &a.headers {
        has_len |= k.eq_ignore_ascii_case("content-length");
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    if !has_len {
        head.push_str(&format!("Content-Length: {len}\r\n"));
    }
    head.push_str("Access-Control-Allow-Origin: *\r\n");
    head.push_str("Access-Control-Expose-Headers: ETag, X-Repo-Commit, X-Linked-Etag, X-Linked-Size, X-Error-Code, X-Error-Message, Content-Range, Content-Length, Location, Accept-Ranges\r\n");
    head.push_str("Connection: close\r\n\r\n");
    conn.write_all(head.as_bytes())?;
    if req.method != "HEAD" {
        match a.body {
            Body::Bytes(b) => conn.write_all(&b)?,
            Body::File(path, offset, len, cut) => {
                let mut f = std::fs::File::open(path)?;
                std::io::Seek::seek(&mut f, std::io::SeekFrom::Start(offset))?;
                let send = cut.unwrap_or(len).min(len);
                let mut rest = f.take(send);
                std::io::copy(&mut rest, &mut conn)?;
                if cut.is_some() {
                    conn.flush()?;
                    let _ = conn.shutdown(Shutdown::Both);
                    return Ok(());
                }
            }
        }
    }
    conn.flush()?;
    let _ = conn.shutdown(Shutdown::Write);
    Ok(())
}

/// `(repo name, repo)` or the 404 for an unknown repo.
fn find_repo<'a>(state: &'a State, org: &str, name: &str) -> Result<(String, &'a Repo), Answer> {
    let id = format!("{org}/{name}");
    match state.repos.get(&id) {
        Some(r) => Ok((id, r)),
        None => Err(error(
            404,
            "RepoNotFound",
            "Repository not found",
        )),
    }
}

fn check_revision(repo: &Repo, rev: &str) -> Result<(), Answer> {
    if rev == "main" || rev == repo.commit {
        Ok(())
    } else {
        Err(error(404, "RevisionNotFound", &format!("Invalid rev id: {rev}")))
    }
}

/// The gate on a repo's content: `None` lets the request through.
fn gate(state: &State, id: &str, req: &Request) -> Option<Answer> {
    if !state.gated.contains(id) {
        return None;
    }
    let token = req
        .header("authorization")
        .and_then(|h| h.strip_prefix("Bearer "))
        .map(str::trim);
    match token {
        None => Some(error(
            401,
            "GatedRepo",
            &format!("Access to model {id} is restricted. You must have access to it and be authenticated to access it. Please log in."),
        )),
        Some(t) if Some(t) == state.token.as_deref() => None,
        Some(_) => Some(error(
            403,
            "GatedRepo",
            &format!("Access to model {id} is restricted and you are not in the authorized list. Visit https://huggingface.co/{id} to ask for access."),
        )),
    }
}

fn hub(state: &State, req: &Request) -> Answer {
    let segs: Vec<&str> = req.path.trim_start_matches('/').split('/').collect();
    let result = match segs.as_slice() {
        ["api", "models", org, name] => api_info(state, org, name, "main"),
        ["api", "models", org, name, "revision", rev] => api_info(state, org, name, rev),
        ["api", "models", org, name, "tree", rev, rest @ ..] => {
            api_tree(state, req, org, name, rev, &rest.join("/"))
        }
        [org, name, "resolve", rev, rest @ ..] if !rest.is_empty() => {
            resolve(state, req, org, name, rev, &rest.join("/"))
        }
        _ => Err(error(404, "NotFound", "Not Found")),
    };
    result.unwrap_or_else(|e| e)
}

fn api_info(state: &State, org: &str, name: &str, rev: &str) -> Result<Answer, Answer> {
    let (id, repo) = find_repo(state, org, name)?;
    check_revision(repo, rev)?;
    let siblings: Vec<String> = repo
        .files
        .keys()
        .map(|p| format!("{{\"rfilename\":{}}}", json_str(p)))
        .collect();
    let gated = if state.gated.contains(&id) { "\"manual\"" } else { "false" };
    Ok(json_answer(
        200,
        format!(
            "{{\"_id\":{id_j},\"id\":{id_j},\"modelId\":{id_j},\"sha\":\"{sha}\",\"private\":false,\"gated\":{gated},\"disabled\":false,\"tags\":[\"diffusers\"],\"library_name\":\"diffusers\",\"siblings\":[{sib}]}}",
            id_j = json_str(&id),
            sha = repo.commit,
            sib = siblings.join(",")
        ),
    ))
}

fn tree_entry(f: &File) -> String {
    let lfs = match &f.lfs {
        Some((sha, pointer)) => format!(
            ",\"lfs\":{{\"oid\":\"{sha}\",\"size\":{},\"pointerSize\":{pointer}}}",
            f.size
        ),
        None => String::new(),
    };
    format!(
        "{{\"type\":\"file\",\"oid\":\"{}\",\"size\":{},\"path\":{}{lfs}}}",
        f.oid,
        f.size,
        json_str(&f.path)
    )
}

fn api_tree(
    state: &State,
    req: &Request,
    org: &str,
    name: &str,
    rev: &str,
    under: &str,
) -> Result<Answer, Answer> {
    let (_, repo) = find_repo(state, org, name)?;
    check_revision(repo, rev)?;
    let recursive = req
        .query
        .split('&')
        .any(|kv| matches!(kv, "recursive=true" | "recursive=True" | "recursive=1"));
    let under = under.trim_matches('/');
    let prefix = if under.is_empty() { String::new() } else { format!("{under}/") };
    if !under.is_empty() && !repo.files.keys().any(|p| p.starts_with(&prefix)) {
        return Err(error(404, "EntryNotFound", &format!("{under} does not exist on \"{rev}\"")));
    }
    let mut entries = Vec::new();
    let mut dirs = std::collections::BTreeSet::new();
    for f in repo.files.values() {
        let Some(rest) = f.path.strip_prefix(&prefix) else { continue };
        // Every folder between `under` and the file, as the Hub lists them.
        let parts: Vec<&str> = rest.split('/').collect();
        let depth = if recursive { parts.len() - 1 } else { (parts.len() - 1).min(1) };
        for d in 1..=depth {
            dirs.insert(format!("{prefix}{}", parts[..d].join("/")));
        }
        if recursive || parts.len() == 1 {
            entries.push(tree_entry(f));
        }
    }
    let dir_entries = dirs.iter().map(|d| {
        format!(
            "{{\"type\":\"directory\",\"oid\":\"{}\",\"size\":0,\"path\":{}}}",
            git_blob_oid(d.as_bytes()),
            json_str(d)
        )
    });
    let all: Vec<String> = dir_entries.chain(entries).collect();
    Ok(json_answer(200, format!("[{}]", all.join(","))))
}

/// `Range: bytes=A-[B]` against `len`: `Ok(None)` for no range, `Err` for a 416.
fn parse_range(range: Option<&str>, len: u64) -> Result<Option<(u64, u64)>, Answer> {
    let Some(r) = range else { return Ok(None) };
    let bad = || {
        let mut a = error(416, "RangeNotSatisfiable", "Range Not Satisfiable");
        a.headers.push(("Content-Range".into(), format!("bytes */{len}")));
        a
    };
    let spec = r.trim().strip_prefix("bytes=").ok_or_else(bad)?;
    let (a, b) = spec.split_once('-').ok_or_else(bad)?;
    let (start, end) = if a.is_empty() {
        let n: u64 = b.parse().map_err(|_| bad())?;
        (len.saturating_sub(n), len.saturating_sub(1))
    } else {
        let start: u64 = a.parse().map_err(|_| bad())?;
        let end = if b.is_empty() { len.saturating_sub(1) } else { b.parse::<u64>().map_err(|_| bad())?.min(len.saturating_sub(1)) };
        (start, end)
    };
    if start >= len || end < start {
        return Err(bad());
    }
    Ok(Some((start, end)))
}

fn file_answer(f: &File, req: &Request, cut: bool) -> Answer {
    let (status, start, len, mut headers) = match parse_range(req.header("range"), f.size) {
        Err(a) => return a,
        Ok(None) => (200, 0, f.size, Vec::new()),
        Ok(Some((s, e))) => (
            206,
            s,
            e - s + 1,
            vec![("Content-Range".to_string(), format!("bytes {s}-{e}/{}", f.size))],
        ),
    };
    headers.push(("Content-Type".into(), "application/octet-stream".into()));
    headers.push(("Accept-Ranges".into(), "bytes".into()));
    headers.push((
        "ETag".into(),
        format!("\"{}\"", f.lfs.as_ref().map(|(s, _)| s.as_str()).unwrap_or(&f.oid)),
    ));
    headers.push(("Content-Length".into(), len.to_string()));
    Answer {
        status,
        headers,
        body: Body::File(f.full.clone(), start, len, cut.then_some(len / 2)),
    }
}

fn resolve(
    state: &State,
    req: &Request,
    org: &str,
    name: &str,
    rev: &str,
    path: &str,
) -> Result<Answer, Answer> {
    let (id, repo) = find_repo(state, org, name)?;
    if let Some(refused) = gate(state, &id, req) {
        return Err(refused);
    }
    check_revision(repo, rev)?;
    let f = repo.files.get(path).ok_or_else(|| {
        error(404, "EntryNotFound", &format!("{path} does not exist on \"{rev}\""))
    })?;
    let mut headers = vec![
        ("X-Repo-Commit".to_string(), repo.commit.clone()),
    ];
    if let Some((sha, _)) = &f.lfs {
        headers.push(("ETag".into(), format!("\"{}\"", f.oid)));
        headers.push(("X-Linked-Etag".into(), format!("\"{sha}\"")));
        headers.push(("X-Linked-Size".into(), f.size.to_string()));
        headers.push((
            "Location".into(),
            format!("{}/{id}/{}/{path}", state.cdn, repo.commit),
        ));
        return Ok(Answer {
            status: 302,
            headers,
            body: Body::Bytes(Vec::new()),
        });
    }
    let mut a = file_answer(f, req, false);
    a.headers.extend(headers);
    Ok(a)
}

fn cdn(state: &State, req: &Request) -> Answer {
    let segs: Vec<&str> = req.path.trim_start_matches('/').splitn(4, '/').collect();
    let [org, name, commit, path] = segs.as_slice() else {
        return error(404, "NotFound", "Not Found");
    };
    let id = format!("{org}/{name}");
    let Some(repo) = state.repos.get(&id).filter(|r| r.commit == *commit) else {
        return error(404, "NotFound", "Not Found");
    };
    let Some(f) = repo.files.get(*path) else {
        return error(404, "NotFound", "Not Found");
    };
    let cut = req.method == "GET" && {
        let mut once = state.cut_once.lock().unwrap();
        once.remove(&format!("{id}/{path}")) || once.remove(*path)
    };
    file_answer(f, req, cut)
}

#[cfg(test)]
mod tests {
    #[test]
    fn sha1_known_answers() {
        assert_eq!(super::hex(&super::sha1(b"abc")), "a9993e364706816aba3e25717850c26c9cd0d89d");
        // `git hash-object` of an empty file.
        assert_eq!(super::git_blob_oid(b""), "e69de29bb2d1d6429bd7ba8c5d8e27bf6e8eb9e9");
    }
}
