//! Models assembled from Hub repos: a recipe names each component's repo, revision and
//! subfolder (or one whole diffusers repo), the scheduler's config where no repo has
//! it, and the family's defaults. The known ones are selected by short names
//! (`roentgen models`); a user's own is a JSON file of the same form:
//!
//! ```json
//! { "name": "my-model",
//!   "components": {
//!     "unet":         {"repo": "org/a", "subfolder": "unet"},
//!     "vae":          {"repo": "org/b", "revision": "main"},
//!     "text_encoder": {"repo": "org/c"},
//!     "tokenizer":    {"repo": "org/c"} },
//!   "scheduler_config": {"_class_name": "DDIMScheduler", "...": "..."} }
//! ```
//!
//! A multi-repo recipe becomes a diffusers-layout folder of symlinks into the repos'
//! snapshots, under the cache's own `roentgen-assembled/`, which the ordinary loader
//! reads.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{Event, Hub, HubError, Part, RepoRef, Result, io_err, select, select_part};

/// One component's source.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Source {
    pub repo: String,
    #[serde(default = "main")]
    pub revision: String,
    /// `""`: the repo's root.
    #[serde(default)]
    pub subfolder: String,
}

fn main() -> String {
    "main".into()
}

/// What the model's card says to run it with (shown by `roentgen models`).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Defaults {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub steps: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guidance: Option<f32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt_template: Option<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Recipe {
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// Where the values come from (model cards).
    #[serde(default)]
    pub cite: Vec<String>,
    /// A whole diffusers repo (`model_index.json`, `unet/`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repo: Option<Source>,
    /// Or the parts, keyed `unet`, `vae`, `text_encoder`, `tokenizer`, `scheduler`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub components: BTreeMap<String, Source>,
    /// `scheduler/scheduler_config.json` when no component gives it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheduler_config: Option<serde_json::Value>,
    #[serde(default)]
    pub defaults: Defaults,
}

const PARTS: [(&str, Part); 5] = [
    ("unet", Part::Model),
    ("vae", Part::Model),
    ("text_encoder", Part::Model),
    ("tokenizer", Part::Tokenizer),
    ("scheduler", Part::Scheduler),
];

fn src(repo: &str, subfolder: &str) -> Source {
    Source {
        repo: repo.into(),
        revision: "main".into(),
        subfolder: subfolder.into(),
    }
}

/// The known models. Values from the model cards cited in each (and MISSION.md's table).
pub fn known() -> Vec<Recipe> {
    vec![
        Recipe {
            name: "roentgen-v1".into(),
            description: "RoentGen v1 (Stanford AIMI, 2022): SD 1.4 fine-tuned on MIMIC-CXR; gated (PhysioNet-credentialed MIMIC-CXR users)".into(),
            cite: vec!["https://huggingface.co/StanfordAIMI/roent-gen-v1-0".into()],
            repo: Some(src("StanfordAIMI/roent-gen-v1-0", "")),
            components: BTreeMap::new(),
            scheduler_config: None,
            defaults: Defaults {
                steps: Some(75),
                guidance: Some(4.0),
                size: Some(512),
                prompt_template: None,
            },
        },
        Recipe {
            name: "roentgen-v2".into(),
            description: "RoentGen v2 (Stanford MIMI, 2025): SD 2.1-base fine-tuned, text encoder too; gated".into(),
            cite: vec!["https://huggingface.co/stanfordmimi/RoentGen-v2".into()],
            repo: Some(src("stanfordmimi/RoentGen-v2", "")),
            components: BTreeMap::new(),
            scheduler_config: None,
            defaults: Defaults {
                steps: Some(75),
                guidance: Some(3.0),
                size: Some(512),
                prompt_template: Some("{age} year old {race} {sex}. {impression}".into()),
            },
        },
        Recipe {
            name: "radedit".into(),
            description: "RadEdit (Microsoft, ECCV 2024): UNet from microsoft/radedit (research-use agreement), SDXL's VAE, CXR-BERT text encoder and WordPiece tokenizer from BioViL-T; research use, not for clinical use".into(),
            cite: vec![
                "https://huggingface.co/microsoft/radedit".into(),
                "https://huggingface.co/stabilityai/sdxl-vae".into(),
                "https://huggingface.co/microsoft/BiomedVLP-BioViL-T".into(),
            ],
            repo: None,
            components: BTreeMap::from([
                ("unet".to_string(), src("microsoft/radedit", "unet")),
                ("vae".to_string(), src("stabilityai/sdxl-vae", "")),
                ("text_encoder".to_string(), src("microsoft/BiomedVLP-BioViL-T", "")),
                ("tokenizer".to_string(), src("microsoft/BiomedVLP-BioViL-T", "")),
            ]),
            // The card's pipeline: DDIMScheduler(beta_schedule="linear", clip_sample=False,
            // prediction_type="epsilon", timestep_spacing="trailing", steps_offset=1).
            scheduler_config: Some(serde_json::json!({
                "_class_name": "DDIMScheduler",
                "num_train_timesteps": 1000,
                "beta_start": 0.0001,
                "beta_end": 0.02,
                "beta_schedule": "linear",
                "timestep_spacing": "trailing",
                "steps_offset": 1,
                "clip_sample": false,
                "set_alpha_to_one": true,
                "prediction_type": "epsilon"
            })),
            defaults: Defaults {
                steps: Some(100),
                guidance: Some(7.5),
                size: Some(512),
                prompt_template: None,
            },
        },
    ]
}

pub fn known_names() -> Vec<String> {
    known().into_iter().map(|r| r.name).collect()
}

pub fn find_known(name: &str) -> Option<Recipe> {
    known().into_iter().find(|r| r.name == name)
}

impl Recipe {
    pub fn from_json(file: &str, json: &str) -> Result<Recipe> {
        let bad = |message: String| HubError::Recipe {
            file: file.into(),
            message,
        };
        let r: Recipe = serde_json::from_str(json).map_err(|e| bad(e.to_string()))?;
        match (&r.repo, r.components.is_empty()) {
            (Some(_), false) => {
                return Err(bad("give either `repo` or `components`, not both".into()));
            }
            (None, true) => {
                return Err(bad(
                    "give `repo` (a whole diffusers repo) or `components`".into()
                ));
            }
            _ => {}
        }
        for (k, s) in r
            .repo
            .iter()
            .map(|s| ("repo", s))
            .chain(r.components.iter().map(|(k, s)| (k.as_str(), s)))
        {
            if k != "repo" && !PARTS.iter().any(|(p, _)| *p == k) {
                return Err(bad(format!(
                    "unknown component `{k}`: the parts are unet, vae, text_encoder, tokenizer, scheduler"
                )));
            }
            RepoRef::parse(&format!("{}@{}", s.repo, s.revision))?;
            if !s.subfolder.is_empty() && !super::safe_rel_path(s.subfolder.trim_matches('/')) {
                return Err(bad(format!(
                    "component {k}: subfolder `{}` leaves the repo",
                    s.subfolder
                )));
            }
        }
        if r.repo.is_none() {
            for need in ["unet", "vae", "text_encoder", "tokenizer"] {
                if !r.components.contains_key(need) {
                    return Err(bad(format!("no `{need}` component")));
                }
            }
            if !r.components.contains_key("scheduler") && r.scheduler_config.is_none() {
                return Err(bad(
                    "no `scheduler` component and no `scheduler_config`".into()
                ));
            }
        }
        Ok(r)
    }

    /// Downloads what the recipe needs (or finds it in the cache) and returns the folder
    /// the loader reads: the snapshot itself for a whole repo, else an assembled folder.
    pub fn materialize(
        &self,
        hub: &Hub,
        prefer_f16: bool,
        progress: &mut dyn FnMut(Event),
    ) -> Result<PathBuf> {
        if let Some(s) = &self.repo {
            let r = RepoRef::parse(&format!("{}@{}", s.repo, s.revision))?;
            let snap = hub.snapshot(&r, &|files| select(files, prefer_f16), progress)?;
            return Ok(snap.dir);
        }
        let components = self.home_parts(hub, prefer_f16, progress)?;
        // Each (repo, revision) once, with every part it gives.
        // (repo, revision) -> [(component, part, subfolder)]
        type PerRepo<'a> = BTreeMap<(String, String), Vec<(&'a str, Part, String)>>;
        let mut per_repo: PerRepo = BTreeMap::new();
        for (name, part) in PARTS {
            if let Some(s) = components.get(name) {
                per_repo
                    .entry((s.repo.clone(), s.revision.clone()))
                    .or_default()
                    .push((name, part, s.subfolder.trim_matches('/').to_string()));
            }
        }
        // (component, folder in the snapshot, snapshot dir, chosen files)
        let mut placed: Vec<(String, String, PathBuf, Vec<String>)> = Vec::new();
        let mut commits = Vec::new();
        for ((repo, revision), parts) in &per_repo {
            let r = RepoRef::parse(&format!("{repo}@{revision}"))?;
            let choose = |files: &[String]| -> crate::error::Result<Vec<String>> {
                let mut all = Vec::new();
                for (_, part, sub) in parts {
                    all.extend(select_part(files, sub, *part, prefer_f16)?);
                }
                all.sort();
                all.dedup();
                Ok(all)
            };
            let snap = hub.snapshot(&r, &choose, progress)?;
            commits.push(format!("{repo}@{}", snap.commit));
            for (name, part, sub) in parts {
                let files = select_part(&snap.files, sub, *part, prefer_f16)?;
                placed.push((name.to_string(), sub.clone(), snap.dir.clone(), files));
            }
        }
        self.assemble(&hub.config.cache, &commits, &placed)
    }

    /// The recipe's components, where the UNet's repo carries its own pipeline
    /// (`model_index.json` at its root, as `DiffusionPipeline.from_pretrained` reads
    /// it): each part that index names and the repo holds (`vae/config.json` and its
    /// weights, `scheduler/scheduler_config.json`, ...) comes from the repo itself, the
    /// rest from the recipe. Only the listing and `model_index.json` are fetched here.
    fn home_parts(
        &self,
        hub: &Hub,
        prefer_f16: bool,
        progress: &mut dyn FnMut(Event),
    ) -> Result<BTreeMap<String, Source>> {
        let mut components = self.components.clone();
        let Some(home) = self.components.get("unet").cloned() else {
            return Ok(components);
        };
        let r = RepoRef::parse(&format!("{}@{}", home.repo, home.revision))?;
        let listing = std::cell::RefCell::new(Vec::new());
        let choose = |files: &[String]| -> crate::error::Result<Vec<String>> {
            *listing.borrow_mut() = files.to_vec();
            Ok(files
                .iter()
                .filter(|f| *f == "model_index.json")
                .cloned()
                .collect())
        };
        let snap = hub.snapshot(&r, &choose, progress)?;
        let listing = listing.into_inner();
        if !snap.files.iter().any(|f| f == "model_index.json") {
            return Ok(components);
        }
        let path = snap.dir.join("model_index.json");
        let index: serde_json::Value = std::fs::read_to_string(&path)
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or_default();
        for (name, part) in PARTS {
            let named = index.get(name).is_some_and(|v| !v.is_null());
            if named && select_part(&listing, name, part, prefer_f16).is_ok() {
                let own = Source {
                    repo: home.repo.clone(),
                    revision: home.revision.clone(),
                    subfolder: name.to_string(),
                };
                if components.get(name) != Some(&own) {
                    log::info!(
                        "{}: its model_index.json names its own {name}/: used instead of the recipe's",
                        home.repo
                    );
                }
                components.insert(name.to_string(), own);
            }
        }
        Ok(components)
    }

    fn assemble(
        &self,
        cache: &Path,
        commits: &[String],
        placed: &[(String, String, PathBuf, Vec<String>)],
    ) -> Result<PathBuf> {
        use sha2::Digest;
        let key: String = sha2::Sha256::digest(
            format!(
                "{}\n{}",
                serde_json::to_string(self).unwrap_or_default(),
                commits.join("\n")
            )
            .as_bytes(),
        )
        .iter()
        .take(6)
        .map(|b| format!("{b:02x}"))
        .collect();
        let safe_name: String = self
            .name
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        let base = cache.join("roentgen-assembled");
        let dir = base.join(format!("{safe_name}-{key}"));
        if dir.join("model_index.json").is_file() {
            return Ok(dir);
        }
        let tmp = base.join(format!(".{safe_name}-{key}.{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&tmp);
        let mut index = serde_json::json!({
            "_class_name": "StableDiffusionPipeline",
            // The name images carry in their metadata.
            "_name_or_path": self.name,
            "_roentgen_recipe": self.name,
            "_roentgen_sources": commits,
        });
        for (name, sub, snap, files) in placed {
            let folder = tmp.join(name);
            std::fs::create_dir_all(&folder).map_err(|e| io_err(&folder, e))?;
            for f in files {
                let inside = if sub.is_empty() {
                    f.as_str()
                } else {
                    &f[sub.len() + 1..]
                };
                let link = folder.join(inside);
                let target = snap.join(f);
                #[cfg(unix)]
                std::os::unix::fs::symlink(&target, &link).map_err(|e| io_err(&link, e))?;
                #[cfg(not(unix))]
                std::fs::copy(&target, &link).map_err(|e| io_err(&link, e))?;
            }
            index[name.as_str()] = serde_json::json!(["roentgen", name]);
        }
        if let Some(cfg) = &self.scheduler_config
            && !placed.iter().any(|(n, ..)| n == "scheduler")
        {
            let folder = tmp.join("scheduler");
            std::fs::create_dir_all(&folder).map_err(|e| io_err(&folder, e))?;
            let p = folder.join("scheduler_config.json");
            std::fs::write(&p, serde_json::to_string_pretty(cfg).unwrap_or_default())
                .map_err(|e| io_err(&p, e))?;
            index["scheduler"] = serde_json::json!(["diffusers", cfg["_class_name"]]);
        }
        let p = tmp.join("model_index.json");
        std::fs::write(&p, serde_json::to_string_pretty(&index).unwrap_or_default())
            .map_err(|e| io_err(&p, e))?;
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::rename(&tmp, &dir).map_err(|e| io_err(&dir, e))?;
        Ok(dir)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_recipes_parse_back_from_their_json() {
        for r in known() {
            let json = serde_json::to_string(&r).unwrap();
            assert_eq!(Recipe::from_json("known", &json).unwrap(), r, "{json}");
        }
    }

    #[test]
    fn bad_recipes_are_refused_with_a_reason() {
        for (json, says) in [
            (r#"{"name":"x"}"#, "give `repo`"),
            (
                r#"{"name":"x","components":{"unet":{"repo":"a/b"}}}"#,
                "no `vae`",
            ),
            (
                r#"{"name":"x","components":{"unet":{"repo":"a/b","subfolder":"../x"}}}"#,
                "leaves the repo",
            ),
            (
                r#"{"name":"x","components":{"brain":{"repo":"a/b"}}}"#,
                "unknown component",
            ),
        ] {
            let e = Recipe::from_json("r.json", json).unwrap_err().to_string();
            assert!(e.contains(says), "{json}: {e}");
        }
    }
}
