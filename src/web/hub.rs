//! The page's "From the Hugging Face Hub": the pure parts, tested natively. A repo id
//! as typed, the endpoint setting, the Hub's URLs, its file listing, the files the
//! pipeline reads (the folder import's own plan, [`crate::checkpoint::plan_import`]),
//! and the Hub's refusals (status + `X-Error-Code`) as sentences that say what to do.
//!
//! The protocol is the one `huggingface_hub` speaks (and `tests`' stand-in serves):
//! `GET {endpoint}/api/models/ORG/NAME/revision/REV` gives the commit (`sha`), then
//! `GET {endpoint}/api/models/ORG/NAME/tree/{sha}?recursive=true` the files with their
//! sizes (an LFS file's `lfs.size`), and each file comes from
//! `{endpoint}/ORG/NAME/resolve/{sha}/PATH` (a weight file by a 302 to the file CDN, which
//! `fetch` follows). Everything is asked for at the commit, so a push to the repo while a
//! download runs (or between a cut and its resume) cannot mix two versions.
//!
//! The access token never enters a stored structure: it travels only in
//! [`Token`] (whose `Debug` hides it) inside the request to the worker, which keeps it
//! in memory for that one download and sends it only as `Authorization: Bearer` to the
//! endpoint's origin (the browser drops it on the cross-origin redirect to the CDN, as
//! the Fetch standard requires). What an unfinished download records for its resume is
//! [`HubSource`]: endpoint, repo and commit, no token.

use serde::{Deserialize, Serialize};

use crate::checkpoint::{plan_import, remote_candidates};
use crate::error::{Error, Result};

/// The default endpoint (the page's `hub-endpoint` setting starts with it).
pub const DEFAULT_ENDPOINT: &str = "https://huggingface.co";

/// The repos the page offers (a `datalist`: any other repo id may be typed).
pub const KNOWN_REPOS: [(&str, &str); 2] = [
    (
        "StanfordAIMI/roent-gen-v1-0",
        "RoentGen v1 (SD 1.x; gated: MIMIC-CXR credentialed users, needs a token)",
    ),
    ("stanfordmimi/RoentGen-v2", "RoentGen v2 (SD 2.x)"),
];

/// The access token type lives with the messages that carry it.
pub use super::protocol::Token;

/// `ORG/NAME[@REVISION]` as typed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RepoId {
    pub org: String,
    pub name: String,
    /// `main` unless typed.
    pub revision: String,
}

impl RepoId {
    pub fn parse(typed: &str) -> Result<RepoId> {
        let typed = typed.trim();
        // a pasted page address works too
        let typed = typed
            .strip_prefix("https://huggingface.co/")
            .unwrap_or(typed)
            .trim_end_matches('/');
        let bad = || {
            Error::Input(format!(
                "“{typed}” is not a Hugging Face repo id: type it as ORG/NAME, e.g. stanfordmimi/RoentGen-v2"
            ))
        };
        let (id, revision) = match typed.split_once('@') {
            Some((id, rev)) => (id, rev),
            None => (typed, "main"),
        };
        let (org, name) = id.split_once('/').ok_or_else(bad)?;
        let ok = |s: &str| {
            !s.is_empty()
                && s.len() <= 96
                && !s.starts_with(['.', '-'])
                && !s.contains("..")
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        };
        if !ok(org) || !ok(name) {
            return Err(bad());
        }
        let rev_ok = !revision.is_empty()
            && revision.len() <= 200
            && !revision.contains("..")
            && revision
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/'));
        if !rev_ok {
            return Err(Error::Input(format!(
                "“{revision}” is not a revision: give a branch, tag or commit after @, e.g. {org}/{name}@main"
            )));
        }
        Ok(RepoId {
            org: org.into(),
            name: name.into(),
            revision: revision.into(),
        })
    }

    /// `ORG/NAME`.
    pub fn id(&self) -> String {
        format!("{}/{}", self.org, self.name)
    }

    /// The stored model's name: the repo's name (as a folder's name would be).
    pub fn model_name(&self) -> String {
        super::protocol::model_name(&self.name)
    }
}

/// The endpoint setting as typed: `http(s)://host[:port][/path]`, no trailing `/`;
/// empty means the Hub.
pub fn endpoint(typed: &str) -> Result<String> {
    let e = typed.trim().trim_end_matches('/');
    if e.is_empty() {
        return Ok(DEFAULT_ENDPOINT.into());
    }
    let rest = e
        .strip_prefix("https://")
        .or_else(|| e.strip_prefix("http://"))
        .filter(|r| !r.is_empty() && !r.contains(['?', '#', ' ']))
        .ok_or_else(|| {
            Error::Input(format!(
                "“{e}” is not a Hub endpoint: give its address, e.g. {DEFAULT_ENDPOINT} or an on-premise mirror's https:// address"
            ))
        })?;
    let _ = rest;
    Ok(e.into())
}

/// `scheme://host[:port]` of a URL (the origin the token may go to).
pub fn origin(url: &str) -> &str {
    let after = url.find("://").map_or(0, |i| i + 3);
    match url[after..].find('/') {
        Some(i) => &url[..after + i],
        None => url,
    }
}

/// Percent-encodes a revision for a URL path segment (`/` too: `refs/pr/1`).
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

pub fn revision_url(endpoint: &str, repo: &RepoId) -> String {
    format!(
        "{endpoint}/api/models/{}/{}/revision/{}",
        repo.org,
        repo.name,
        encode(&repo.revision)
    )
}

pub fn tree_url(endpoint: &str, repo: &RepoId, commit: &str) -> String {
    format!(
        "{endpoint}/api/models/{}/{}/tree/{}?recursive=true",
        repo.org,
        repo.name,
        encode(commit)
    )
}

/// The folder every file of the commit is fetched from (ends in `/`).
pub fn resolve_base(endpoint: &str, repo: &RepoId, commit: &str) -> String {
    format!(
        "{endpoint}/{}/{}/resolve/{}/",
        repo.org,
        repo.name,
        encode(commit)
    )
}

/// Where an unfinished Hub download came from: what its resume asks for again. No token.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HubSource {
    pub endpoint: String,
    /// `ORG/NAME`.
    pub repo: String,
    pub commit: String,
}

/// The commit of `GET …/revision/REV` (`{"sha": …, "siblings": […]}`).
pub fn parse_revision(json: &str) -> Result<String> {
    #[derive(Deserialize)]
    struct Info {
        sha: Option<String>,
    }
    let info: Info = serde_json::from_str(json).map_err(|e| {
        Error::Input(format!(
            "the Hub's answer about the repo is not what the Hub sends ({e}): is the endpoint a Hugging Face Hub?"
        ))
    })?;
    let sha = info.sha.unwrap_or_default();
    if sha.is_empty() || !sha.chars().all(|c| c.is_ascii_alphanumeric()) {
        return Err(Error::Input(
            "the Hub's answer about the repo names no commit (sha): is the endpoint a Hugging Face Hub?"
                .into(),
        ));
    }
    Ok(sha)
}

/// The files of `GET …/tree/SHA?recursive=true`: (path, size), an LFS file by its
/// `lfs.size` (its `size` may be the pointer's). A path that would leave the model's
/// folder (`..`, absolute, backslashes) is refused, not skipped.
pub fn parse_tree(json: &str) -> Result<Vec<(String, u64)>> {
    #[derive(Deserialize)]
    struct Lfs {
        size: u64,
    }
    #[derive(Deserialize)]
    struct Entry {
        #[serde(rename = "type")]
        kind: String,
        path: String,
        #[serde(default)]
        size: u64,
        #[serde(default)]
        lfs: Option<Lfs>,
    }
    let entries: Vec<Entry> = serde_json::from_str(json).map_err(|e| {
        Error::Input(format!(
            "the Hub's file list is not what the Hub sends ({e}): is the endpoint a Hugging Face Hub?"
        ))
    })?;
    let mut out = Vec::new();
    for e in entries.into_iter().filter(|e| e.kind == "file") {
        if e.path.starts_with('/')
            || e.path.contains('\\')
            || e.path
                .split('/')
                .any(|s| s.is_empty() || s == "." || s == "..")
        {
            return Err(Error::Input(format!(
                "the Hub's file list names “{}”, a path outside the model's folder: refused",
                e.path
            )));
        }
        let size = e.lfs.map_or(e.size, |l| l.size);
        out.push((e.path, size));
    }
    Ok(out)
}

/// The files the pipeline reads, with their sizes: one weight file per component
/// (safetensors before `.bin`, never an `fp16` variant), configs, tokenizer files;
/// never `safety_checker/`, `feature_extractor/` or root single-file checkpoints.
/// The same plan as a picked folder's ([`plan_import`]) over the files the repo has
/// among those a URL download looks for ([`remote_candidates`]).
pub fn choose(listing: &[(String, u64)]) -> Result<Vec<(String, Option<u64>)>> {
    let candidates = remote_candidates();
    let paths: Vec<String> = listing
        .iter()
        .map(|(p, _)| p.clone())
        .filter(|p| candidates.contains(p))
        .collect();
    let plan = plan_import(&paths, false).map_err(|e| match e {
        Error::MissingFile { path, .. } => Error::Input(format!(
            "the repo has no {path}: it is not a diffusers model (model_index.json, unet/, vae/, text_encoder/, tokenizer/, scheduler/)"
        )),
        e => e,
    })?;
    Ok(plan
        .into_iter()
        .map(|(_, path)| {
            let size = listing.iter().find(|(p, _)| *p == path).map(|(_, s)| *s);
            (path, size)
        })
        .collect())
}

/// What a refused Hub request means, as a sentence that says what to do. `status` and
/// `code` (`X-Error-Code`) are the answer's; `file` the repo file asked for, if any.
pub fn refusal(
    status: u16,
    code: Option<&str>,
    endpoint: &str,
    repo: &RepoId,
    had_token: bool,
    file: Option<&str>,
    url: &str,
) -> Error {
    let id = repo.id();
    let page = format!("{endpoint}/{id}");
    let code = code.unwrap_or_default();
    match (status, code) {
        (401 | 403, "GatedRepo") if !had_token => Error::Input(format!(
            "the repo {id} is gated: accept its terms at {page} and paste an access token"
        )),
        (401 | 403, "GatedRepo") => Error::Input(format!(
            "the repo {id} is gated and the Hub refused this access token ({status}): accept the terms at {page} with the account the token belongs to (access may take a while to be granted), or paste a token of that account with read access"
        )),
        (_, "RepoNotFound") | (404, "") if file.is_none() || code == "RepoNotFound" => {
            Error::Input(if had_token {
                format!(
                    "the repo {id} does not exist on {endpoint}, or this access token cannot read it: check the repo id (ORG/NAME) and the token"
                )
            } else {
                format!(
                    "the repo {id} does not exist on {endpoint} (or it is private: paste an access token that can read it); check the repo id (ORG/NAME)"
                )
            })
        }
        (_, "RevisionNotFound") => Error::Input(format!(
            "the repo {id} has no revision “{}”: give a branch, tag or commit after @",
            repo.revision
        )),
        (404, _) => Error::Input(format!(
            "the repo {id} has no file {} at this revision: the repo changed or is not a complete diffusers model",
            file.unwrap_or("(unnamed)")
        )),
        (401, _) if !had_token => Error::Input(format!(
            "the repo {id} needs an access token (401): paste one that can read it"
        )),
        (401 | 403, _) => Error::Input(format!(
            "the Hub refused this access token for {id} ({status}): check it was copied whole and has read access"
        )),
        (429, _) => Error::Download {
            url: url.into(),
            message: "the Hub is rate-limiting this address (429): wait a few minutes and press Download again; what was stored is kept".into(),
        },
        _ => Error::Download {
            url: url.into(),
            message: format!(
                "the Hub answered {status}{}; press Download again later: what was stored is kept",
                if code.is_empty() {
                    String::new()
                } else {
                    format!(" ({code})")
                }
            ),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repo_ids_as_typed() {
        let r = RepoId::parse(" stanfordmimi/RoentGen-v2 ").unwrap();
        assert_eq!(
            (r.org.as_str(), r.name.as_str(), r.revision.as_str()),
            ("stanfordmimi", "RoentGen-v2", "main")
        );
        assert_eq!(r.model_name(), "RoentGen-v2");
        let r = RepoId::parse("https://huggingface.co/StanfordAIMI/roent-gen-v1-0/").unwrap();
        assert_eq!(r.id(), "StanfordAIMI/roent-gen-v1-0");
        let r = RepoId::parse("a/b@refs/pr/1").unwrap();
        assert_eq!(r.revision, "refs/pr/1");
        for bad in [
            "roentgen", "a/b/c", "../x", "a/..", "/b", "a/b c", "a/b@", "a/b@x..y", ".a/b",
        ] {
            let e = RepoId::parse(bad).unwrap_err().to_string();
            assert!(
                e.contains("ORG/NAME") || e.contains("revision"),
                "{bad}: {e}"
            );
        }
    }

    #[test]
    fn endpoints_and_urls() {
        assert_eq!(endpoint("").unwrap(), DEFAULT_ENDPOINT);
        assert_eq!(
            endpoint(" http://127.0.0.1:9000/ ").unwrap(),
            "http://127.0.0.1:9000"
        );
        assert!(endpoint("ftp://x").is_err() && endpoint("huggingface.co").is_err());
        let r = RepoId::parse("ORG/NAME@refs/pr/1").unwrap();
        let e = DEFAULT_ENDPOINT;
        assert_eq!(
            revision_url(e, &r),
            "https://huggingface.co/api/models/ORG/NAME/revision/refs%2Fpr%2F1"
        );
        assert_eq!(
            tree_url(e, &r, "abc123"),
            "https://huggingface.co/api/models/ORG/NAME/tree/abc123?recursive=true"
        );
        assert_eq!(
            resolve_base(e, &r, "abc123"),
            "https://huggingface.co/ORG/NAME/resolve/abc123/"
        );
        assert_eq!(
            origin("http://127.0.0.1:9/ORG/NAME/x"),
            "http://127.0.0.1:9"
        );
        assert_eq!(origin("https://huggingface.co"), "https://huggingface.co");
    }

    fn listing() -> Vec<(String, u64)> {
        [
            ("model_index.json", 500),
            ("README.md", 10),
            ("v1-5-pruned.safetensors", 4_000_000_000),
            ("feature_extractor/preprocessor_config.json", 300),
            ("safety_checker/config.json", 300),
            ("safety_checker/model.safetensors", 1_200_000_000),
            ("scheduler/scheduler_config.json", 300),
            ("text_encoder/config.json", 300),
            ("text_encoder/model.safetensors", 490_000_000),
            ("text_encoder/pytorch_model.bin", 490_000_000),
            ("tokenizer/merges.txt", 500_000),
            ("tokenizer/vocab.json", 1_000_000),
            ("tokenizer/special_tokens_map.json", 400),
            ("tokenizer/tokenizer_config.json", 700),
            ("unet/config.json", 900),
            ("unet/diffusion_pytorch_model.bin", 3_400_000_000),
            (
                "unet/diffusion_pytorch_model.fp16.safetensors",
                1_700_000_000,
            ),
            ("unet/diffusion_pytorch_model.safetensors", 3_400_000_000),
            ("vae/config.json", 500),
            ("vae/diffusion_pytorch_model.bin", 330_000_000),
        ]
        .into_iter()
        .map(|(p, s)| (p.to_string(), s))
        .collect()
    }

    #[test]
    fn only_what_the_pipeline_reads() {
        let chosen = choose(&listing()).unwrap();
        let paths: Vec<&str> = chosen.iter().map(|(p, _)| p.as_str()).collect();
        for want in [
            "model_index.json",
            "unet/diffusion_pytorch_model.safetensors",
            "text_encoder/model.safetensors",
            "vae/diffusion_pytorch_model.bin",
            "tokenizer/vocab.json",
            "tokenizer/merges.txt",
            "scheduler/scheduler_config.json",
        ] {
            assert!(paths.contains(&want), "{want} missing from {paths:?}");
        }
        for never in [
            "safety_checker/",
            "feature_extractor/",
            "v1-5-pruned",
            ".fp16.",
            "text_encoder/pytorch_model.bin",
            "README",
        ] {
            assert!(
                !paths.iter().any(|p| p.contains(never)),
                "{never} in {paths:?}"
            );
        }
        let unet = chosen
            .iter()
            .find(|(p, _)| p.starts_with("unet/") && p.ends_with(".safetensors"))
            .unwrap();
        assert_eq!(unet.1, Some(3_400_000_000));
        let e = choose(&listing()[1..]).unwrap_err().to_string();
        assert!(
            e.contains("model_index.json") && e.contains("diffusers"),
            "{e}"
        );
    }

    #[test]
    fn tree_and_revision_answers() {
        let json = r#"[{"type":"directory","oid":"x","size":0,"path":"unet"},
            {"type":"file","oid":"a","size":135,"path":"unet/diffusion_pytorch_model.safetensors",
             "lfs":{"oid":"sha","size":3438167536,"pointerSize":135}},
            {"type":"file","oid":"b","size":743,"path":"unet/config.json"}]"#;
        assert_eq!(
            parse_tree(json).unwrap(),
            [
                (
                    "unet/diffusion_pytorch_model.safetensors".to_string(),
                    3438167536
                ),
                ("unet/config.json".to_string(), 743)
            ]
        );
        for evil in ["../x", "/etc/passwd", "unet/../../x", "a\\b", "a//b"] {
            let j = format!(
                r#"[{{"type":"file","size":1,"path":"{}"}}]"#,
                evil.replace('\\', "\\\\")
            );
            let e = parse_tree(&j).unwrap_err().to_string();
            assert!(e.contains("outside the model's folder"), "{evil}: {e}");
        }
        assert_eq!(
            parse_revision(r#"{"id":"a/b","sha":"0123abcd","siblings":[]}"#).unwrap(),
            "0123abcd"
        );
        assert!(parse_revision(r#"{"sha":"../x"}"#).is_err());
        assert!(parse_revision("<html>").is_err());
    }

    #[test]
    fn refusals_say_what_to_do() {
        let r = RepoId::parse("StanfordAIMI/roent-gen-v1-0").unwrap();
        let e = DEFAULT_ENDPOINT;
        let say =
            |status, code, token, file| refusal(status, code, e, &r, token, file, "u").to_string();
        assert_eq!(
            say(401, Some("GatedRepo"), false, Some("model_index.json")),
            "the repo StanfordAIMI/roent-gen-v1-0 is gated: accept its terms at https://huggingface.co/StanfordAIMI/roent-gen-v1-0 and paste an access token"
        );
        let m = say(403, Some("GatedRepo"), true, None);
        assert!(
            m.contains("refused this access token") && m.contains("accept the terms"),
            "{m}"
        );
        let m = say(403, None, true, None);
        assert!(m.contains("refused this access token"), "{m}");
        // the Hub answers an unknown repo 401 RepoNotFound without a token
        for (status, token) in [(404, false), (401, false), (404, true)] {
            let m = say(status, Some("RepoNotFound"), token, None);
            assert!(
                m.contains("does not exist on https://huggingface.co"),
                "{m}"
            );
        }
        let m = say(404, Some("EntryNotFound"), false, Some("unet/config.json"));
        assert!(m.contains("has no file unet/config.json"), "{m}");
        let m = say(404, Some("RevisionNotFound"), false, None);
        assert!(m.contains("no revision “main”"), "{m}");
        let m = say(500, None, false, None);
        assert!(m.contains("answered 500") && m.contains("kept"), "{m}");
        assert_eq!(
            FailureKindOf::of(refusal(401, Some("GatedRepo"), e, &r, false, None, "u")),
            crate::web::protocol::FailureKind::Input
        );
    }

    struct FailureKindOf;
    impl FailureKindOf {
        fn of(e: Error) -> crate::web::protocol::FailureKind {
            crate::web::protocol::FailureKind::of(&e)
        }
    }

    #[test]
    fn the_token_is_never_shown_or_stored() {
        let t = Token::typed("  hf_secret123 ").unwrap();
        assert_eq!(t.bearer(), "Bearer hf_secret123");
        assert!(Token::typed("   ").is_none());
        assert!(!format!("{t:?}").contains("secret"));
        let source = HubSource {
            endpoint: DEFAULT_ENDPOINT.into(),
            repo: "a/b".into(),
            commit: "abc".into(),
        };
        assert!(!serde_json::to_string(&source).unwrap().contains("secret"));
    }
}
