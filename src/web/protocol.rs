//! The messages between the page and the engine's Web Worker: JSON (serde) in the first
//! element of a posted array, bulk bytes (picked files, previews, PNGs) beside it as JS
//! objects. Plain Rust, so the protocol is unit-tested natively.

use serde::{Deserialize, Serialize};

use crate::error::Error;
use crate::generation::{
    self, EditRequest, Inversion, Prompts, ROENTGEN_GUIDANCE, ROENTGEN_SIZE, ROENTGEN_STEPS,
    Sampling,
};
use crate::schedulers::SchedulerKind;

/// Page → worker.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Request {
    /// Copy a picked folder into the browser's storage, then load it. `paths` are
    /// relative to the picked folder; the `File` objects follow in the same order.
    Import {
        name: String,
        paths: Vec<String>,
        /// `int8` (the page's default), `int4`: an f32/f16 folder is quantized while it
        /// is copied (docs/QUANTIZATION.md), so storage holds only the small model;
        /// `original`: copied as it is. An already quantized folder is copied as it is.
        #[serde(default = "default_import_format")]
        format: String,
        /// Go on with an interrupted import of the same folder into `name`: files
        /// already stored whole (same size) are kept, the rest copied.
        #[serde(default)]
        resume: bool,
    },
    /// Download a diffusers folder served over HTTP(S) (a hospital intranet, a local
    /// server) into the browser's storage, resuming files an earlier try left
    /// unfinished, then load it.
    ImportUrl {
        url: String,
    },
    /// Download a diffusers model from a Hugging Face Hub repo (`ORG/NAME[@REV]`) at
    /// `endpoint` into the browser's storage as `format` (see `Import`), resuming an
    /// unfinished download of the same repo, then load it (src/web/hub.rs). The token,
    /// if any, lives in the worker's memory for this download only: it is sent as
    /// `Authorization: Bearer` to the endpoint's origin and nowhere else, never stored
    /// or logged (its `Debug` is hidden).
    ImportHub {
        repo: String,
        endpoint: String,
        #[serde(default)]
        token: Option<Token>,
        #[serde(default = "default_import_format")]
        format: String,
    },
    /// Load a stored model.
    Load {
        name: String,
    },
    /// Remove a stored model.
    Delete {
        name: String,
    },
    /// How many of the 77 tokens a prompt uses.
    CountTokens {
        text: String,
    },
    Generate(Settings),
    /// Stop the running generation after the current step (or, during the decode,
    /// drop the image it makes).
    Cancel,
    /// Test hooks, honoured only when the worker's URL has `test-hooks` in its query
    /// (the page passes its own `?test-hooks` on): destroy the GPU device as a driver
    /// reset would lose it, and make the engine panic (a crash of the worker).
    TestLoseDevice,
    TestCrash,
}

/// What the page's form holds.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Settings {
    pub prompt: String,
    pub negative_prompt: String,
    pub seed: u64,
    pub steps: usize,
    pub guidance: f32,
    /// A scheduler's short name (`pndm`, `ddim`, `dpm++2m`, `euler-a`).
    pub scheduler: String,
    pub size: usize,
    /// Image-to-image, inpainting or RadEdit's edit: the init image (RGB, 8 bits,
    /// `size x size`, the page fits the dropped image to it) follows as bytes, then the
    /// mask if `masked` (`size x size` bytes, nonzero = repaint, or for RadEdit's edit
    /// the edit mask), then RadEdit's keep mask if [`RadEditSettings::keep`] (see
    /// [`Settings::edit_bytes`]).
    #[serde(default)]
    pub edit: Option<EditSettings>,
    /// Make per-word attention maps (`Reply::WordMaps` follows the image).
    #[serde(default)]
    pub attention_maps: bool,
}

/// The edit part of [`Settings`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EditSettings {
    /// `None`: 0.8 for image-to-image, 1.0 for inpainting (diffusers' defaults). RadEdit's
    /// edit takes none.
    pub strength: Option<f32>,
    pub masked: bool,
    /// RadEdit's edit (docs/WORKBENCH.md) instead of image-to-image or inpainting: the
    /// mask is the edit mask.
    #[serde(default)]
    pub radedit: Option<RadEditSettings>,
}

/// RadEdit's edit in [`EditSettings`]: [`generation::Inversion`] as the page's form holds it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RadEditSettings {
    /// The share of the inverted steps not run again (RadEdit's 0.3).
    pub skip: f32,
    /// The prompt the image is inverted with (RadEdit's "").
    #[serde(default)]
    pub invert_prompt: String,
    /// A keep mask follows the edit mask; without one the keep region is everything
    /// outside the edit mask.
    #[serde(default)]
    pub keep: bool,
}

impl Default for RadEditSettings {
    fn default() -> Self {
        RadEditSettings {
            skip: generation::RADEDIT_SKIP,
            invert_prompt: String::new(),
            keep: false,
        }
    }
}

/// The bulk bytes that follow a `Generate`: the init image, the mask (or edit mask), the
/// keep mask.
#[derive(Clone, Copy, Debug, Default)]
pub struct EditBytes<'a> {
    pub rgb: Option<&'a [u8]>,
    pub mask: Option<&'a [u8]>,
    pub keep: Option<&'a [u8]>,
}

impl EditSettings {
    /// The strength to run, or the sentence every front end gives
    /// ([`generation::edit_strength`]).
    pub fn strength(&self) -> Result<f32, Error> {
        generation::edit_strength(self.strength, self.masked)
    }
}

impl Default for Settings {
    /// RoentGen's recipe.
    fn default() -> Self {
        Settings {
            prompt: String::new(),
            negative_prompt: String::new(),
            seed: 0,
            steps: ROENTGEN_STEPS,
            guidance: ROENTGEN_GUIDANCE,
            scheduler: SchedulerKind::Pndm.name().into(),
            size: ROENTGEN_SIZE,
            edit: None,
            attention_maps: false,
        }
    }
}

impl Settings {
    /// Which of the bytes that followed a `Generate` are which: `parts` in the order the
    /// page sends them (the init image, the mask if [`EditSettings::masked`], the keep
    /// mask if [`RadEditSettings::keep`]).
    pub fn edit_bytes<'a>(&self, parts: &'a [Vec<u8>]) -> EditBytes<'a> {
        let Some(e) = &self.edit else {
            return EditBytes::default();
        };
        let mut it = parts.iter().map(Vec::as_slice);
        let rgb = it.next();
        let mask = if e.masked { it.next() } else { None };
        let keep = if e.radedit.as_ref().is_some_and(|r| r.keep) {
            it.next()
        } else {
            None
        };
        EditBytes { rgb, mask, keep }
    }

    /// The generation request these settings ask for, checked as the CLI's are
    /// ([`generation::Request::check`]: the same sentence for the same bad value). `edit`:
    /// the init image (RGB, 8 bits, `size x size`), the mask and the keep mask (`size x
    /// size`, nonzero = in the mask) that follow the message when [`Settings::edit`] is set.
    pub fn request(&self, edit: EditBytes) -> Result<generation::Request, Error> {
        let scheduler: SchedulerKind = self.scheduler.parse()?;
        let px = self.size * self.size;
        let edit = match &self.edit {
            None => None,
            Some(e) => {
                let bytes = |b: Option<&[u8]>, what: &str, want: usize| -> Result<Vec<u8>, Error> {
                    let b = b.ok_or_else(|| {
                        Error::Internal(format!(
                            "the {what} did not reach the engine with the request"
                        ))
                    })?;
                    if b.len() != want {
                        return Err(Error::Input(format!(
                            "the {what} has {} bytes, not the {want} of a {}x{} image",
                            b.len(),
                            self.size,
                            self.size
                        )));
                    }
                    Ok(b.to_vec())
                };
                let rgb = bytes(edit.rgb, "init image", px * 3)?
                    .iter()
                    .map(|&v| v as f32 / 255.0)
                    .collect();
                let mask = |b: Option<&[u8]>, what: &str| -> Result<Vec<bool>, Error> {
                    Ok(bytes(b, what, px)?.iter().map(|&v| v != 0).collect())
                };
                let (mask, inversion) = match &e.radedit {
                    None => (e.masked.then(|| mask(edit.mask, "mask")).transpose()?, None),
                    Some(r) => (
                        e.masked.then(|| mask(edit.mask, "edit mask")).transpose()?,
                        Some(Inversion {
                            keep: r.keep.then(|| mask(edit.keep, "keep mask")).transpose()?,
                            skip: r.skip,
                            invert_prompt: r.invert_prompt.clone(),
                        }),
                    ),
                };
                Some(EditRequest {
                    width: self.size,
                    height: self.size,
                    rgb,
                    mask,
                    strength: e.strength,
                    inversion,
                })
            }
        };
        let req = generation::Request {
            prompts: Prompts::One {
                prompt: self.prompt.clone(),
                negative_prompt: self.negative_prompt.clone(),
                seed: self.seed,
                count: 1,
            },
            sampling: Sampling {
                steps: Some(self.steps),
                guidance: Some(self.guidance),
                scheduler: Some(scheduler),
                width: Some(self.size),
                height: Some(self.size),
            },
            edit,
            attention_maps: self.attention_maps,
        };
        req.check()?;
        Ok(req)
    }
}

fn default_import_format() -> String {
    "int8".into()
}

/// A model in the browser's storage.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StoredModel {
    pub name: String,
    pub bytes: u64,
    /// False when an import was interrupted: the model must be imported again.
    pub complete: bool,
    /// How its weights are stored: `int8`, `int4`, `f16` (converted) or `original`.
    #[serde(default)]
    pub format: String,
    /// For an unfinished download: the folder URL it came from (Resume downloads the
    /// rest from there). An unfinished folder import has none (Resume asks for the
    /// folder again).
    #[serde(default)]
    pub source_url: Option<String>,
    /// For an unfinished Hub download: the repo (`ORG/NAME`) it came from (Resume
    /// downloads the rest of the same commit). Never a token.
    #[serde(default)]
    pub hub_repo: Option<String>,
    /// The family its configs say (RoentGen v1, v2, RadEdit), for the model list's
    /// family and license line; `None` for an unfinished import or a model of no known
    /// family.
    #[serde(default)]
    pub family: Option<crate::generation::Family>,
}

/// The engine's memory after a load or a generation.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct MemoryFigures {
    /// Bytes in GPU buffers that exist now (in use or pooled for reuse).
    pub gpu_allocated: u64,
    /// Bytes in GPU buffers a weight or tensor uses now.
    pub gpu_in_use: u64,
    /// Most GPU bytes allocated at once during the last task.
    pub gpu_peak: u64,
    /// GPU bytes held by weights.
    pub gpu_weights: u64,
    /// The worker's WebAssembly memory (it only grows).
    pub wasm: u64,
}

/// Worker → page.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Reply {
    /// The worker is up: WebGPU works and these models are stored.
    Started {
        adapter: String,
        /// The limits the engine runs under, in words.
        limits: String,
        /// Which kernels run: "subgroup kernels, 4 lanes" or "portable kernels (no
        /// subgroups)" ([`crate::web::gpu_info_text`]).
        #[serde(default)]
        kernels: String,
        models: Vec<StoredModel>,
    },
    Models {
        models: Vec<StoredModel>,
    },
    Importing {
        file: String,
        done: u64,
        total: u64,
        /// A download's estimate of the time left, from its speed so far.
        #[serde(default)]
        left_ms: Option<f64>,
    },
    Loading {
        part: String,
    },
    Ready {
        name: String,
        millis: f64,
        /// SD 1.x (RoentGen v1), SD 2.x (v2), or `None` for no family we know.
        family: Option<crate::generation::Family>,
        /// The model's recipe (the page sets it as the form's defaults): scheduler
        /// short name, steps, guidance.
        scheduler: String,
        steps: usize,
        guidance: f32,
    },
    Tokens {
        count: usize,
        max: usize,
        dropped: Option<String>,
    },
    /// After every UNet call; an RGBA preview (`width` x `height`) follows.
    Step {
        call: usize,
        calls: usize,
        elapsed_ms: f64,
        width: usize,
        height: usize,
    },
    /// A finished image; its PNG follows.
    Image {
        width: usize,
        height: usize,
        seed: u64,
        millis: f64,
        file_name: String,
    },
    /// The DICOM file of the image just sent (Secondary Capture, marked synthetic, the
    /// same pixels); its bytes follow.
    Dicom {
        file_name: String,
    },
    /// The image's per-word attention maps: `[tokens, h, w]` f32 (little endian) follow;
    /// `words`: each word of the prompt with its token indices.
    WordMaps {
        words: Vec<(String, Vec<usize>)>,
        tokens: usize,
        h: usize,
        w: usize,
        /// The image's own metadata (`Outcome::metadata`), which each word's overlay PNG
        /// carries as the image's PNG does.
        metadata: crate::image_io::ImageMetadata,
    },
    Cancelled,
    /// After a load or a generation.
    Memory(MemoryFigures),
    Failed {
        kind: FailureKind,
        message: String,
    },
}

/// What went wrong, so the page can offer the right way out.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureKind {
    /// No WebGPU adapter: say which browsers and flags have it.
    NoWebGpu,
    /// The GPU device was lost: offer to load the model again.
    DeviceLost,
    OutOfMemory,
    /// A WebGPU limit is below what the model needs.
    Limit,
    /// The checkpoint is incomplete or unreadable.
    Model,
    /// The browser's storage refused (quota, private mode).
    Storage,
    /// A download failed (unreachable server, a missing file, a cut connection).
    Network,
    /// A setting is out of range, or no model is loaded.
    Input,
    /// Another task is running.
    Busy,
    Other,
}

impl FailureKind {
    pub fn of(e: &Error) -> FailureKind {
        match e {
            Error::NoAdapter(_) | Error::NoDevice(_) => FailureKind::NoWebGpu,
            Error::DeviceLost(_) => FailureKind::DeviceLost,
            Error::OutOfMemory(_) => FailureKind::OutOfMemory,
            Error::Limit { .. } => FailureKind::Limit,
            Error::Weights(_) | Error::Config { .. } | Error::MissingFile { .. } => {
                FailureKind::Model
            }
            Error::Input(_) | Error::Image { .. } => FailureKind::Input,
            Error::Internal(_) => FailureKind::Other,
            Error::Storage(_) => FailureKind::Storage,
            Error::Download { .. } => FailureKind::Network,
            Error::Gpu(_) | Error::Shape(_) => FailureKind::Other,
        }
    }
}

impl Reply {
    pub fn failed(e: &Error) -> Reply {
        Reply::Failed {
            kind: FailureKind::of(e),
            message: e.to_string(),
        }
    }
}

/// An access token. Serialized as the plain string (it crosses to the worker in the
/// request's JSON); its `Debug` never shows it, so no `{:?}` of a request logs it.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Token(pub String);

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(hidden)")
    }
}

impl Token {
    /// A typed token: trimmed, `None` when empty (an empty field means no token).
    pub fn typed(s: &str) -> Option<Token> {
        let t = s.trim();
        (!t.is_empty()).then(|| Token(t.to_string()))
    }

    /// The `Authorization` header's value.
    pub fn bearer(&self) -> String {
        format!("Bearer {}", self.0)
    }
}

/// A stored model's name from a picked folder's name: letters, digits, `-`, `_`, `.`
/// and spaces kept, the rest replaced, never empty, never `.` or `..`.
pub fn model_name(folder: &str) -> String {
    let cleaned: String = folder
        .trim()
        .chars()
        .map(|c| {
            if c.is_alphanumeric() || matches!(c, '-' | '_' | '.' | ' ') {
                c
            } else {
                '_'
            }
        })
        .take(80)
        .collect();
    let cleaned = cleaned.trim_matches(|c| c == '.' || c == ' ').to_string();
    if cleaned.is_empty() {
        "model".into()
    } else {
        cleaned
    }
}

/// The storage format an import or a download asks for: `original` (stored as it is) or
/// a converter target (`int8`, `int4`, `f16`), or a sentence.
pub fn import_target(format: &str) -> Result<Option<crate::convert::Target>, Error> {
    match format {
        "original" => Ok(None),
        f => crate::convert::Target::from_name(f)
            .map(Some)
            .ok_or_else(|| {
                Error::Input(format!(
                    "unknown import format `{f}`: choose int8, int4 or original"
                ))
            }),
    }
}

/// A model URL as typed: the folder's URL ending in `/` (a trailing `model_index.json`
/// is dropped, so either may be pasted) and the stored model's name (its last segment).
pub fn model_url(url: &str) -> Result<(String, String), Error> {
    let url = url.trim();
    let not_url = || {
        Error::Input(format!(
            "“{url}” is not a web address: give the folder's http:// or https:// URL, e.g. https://intranet.example/models/roentgen/"
        ))
    };
    let (scheme, rest) = ["https://", "http://"]
        .into_iter()
        .find_map(|s| url.strip_prefix(s).map(|r| (s, r)))
        .ok_or_else(not_url)?;
    let path = rest.split(['?', '#']).next().unwrap_or_default();
    let path = path.strip_suffix("model_index.json").unwrap_or(path);
    let path = path.trim_end_matches('/');
    match path.rsplit_once('/') {
        Some((host, last)) if !host.is_empty() && !last.is_empty() => {
            Ok((format!("{scheme}{path}/"), model_name(last)))
        }
        _ if path.is_empty() => Err(not_url()),
        _ => Err(Error::Input(format!(
            "“{url}” names a server, not a model folder on it: add the folder's path"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_round_trip_as_tagged_json() {
        let r = Request::Generate(Settings {
            prompt: "Small right-sided pleural effusion.".into(),
            ..Settings::default()
        });
        let json = serde_json::to_string(&r).unwrap();
        assert!(json.starts_with(r#"{"type":"generate","prompt":"Small right-sided"#));
        assert_eq!(serde_json::from_str::<Request>(&json).unwrap(), r);
        let c: Request = serde_json::from_str(r#"{"type":"cancel"}"#).unwrap();
        assert_eq!(c, Request::Cancel);
        let t: Request = serde_json::from_str(r#"{"type":"test_lose_device"}"#).unwrap();
        assert_eq!(t, Request::TestLoseDevice);
        // an import from before resuming existed
        let i: Request =
            serde_json::from_str(r#"{"type":"import","name":"m","paths":[]}"#).unwrap();
        assert_eq!(
            i,
            Request::Import {
                name: "m".into(),
                paths: vec![],
                format: "int8".into(),
                resume: false
            }
        );
        let m = serde_json::to_string(&Reply::Memory(MemoryFigures {
            gpu_peak: 5,
            ..Default::default()
        }))
        .unwrap();
        assert!(
            m.contains(r#""type":"memory""#) && m.contains(r#""gpu_peak":5"#),
            "{m}"
        );
    }

    #[test]
    fn settings_default_to_roentgen_and_reject_bad_fields_with_a_sentence() {
        let small = Settings {
            size: 8,
            ..Settings::default()
        };
        let (rgb, mask) = (vec![128u8; 192], vec![1u8; 64]);
        let edit = |strength, masked| {
            Settings {
                edit: Some(EditSettings {
                    strength,
                    masked,
                    radedit: None,
                }),
                ..small.clone()
            }
            .request(EditBytes {
                rgb: Some(&rgb),
                mask: Some(&mask),
                keep: None,
            })
        };
        assert!(edit(Some(0.6), true).is_ok());
        for bad in [0.0, -0.5, 1.5, f32::NAN, f32::INFINITY] {
            let msg = edit(Some(bad), false).unwrap_err().to_string();
            assert!(msg.contains("greater than 0 and at most 1"), "{bad}: {msg}");
        }
        let req = Settings::default().request(EditBytes::default()).unwrap();
        let s = req.sampling;
        assert_eq!(
            (s.steps, s.guidance, s.width),
            (Some(75), Some(4.0), Some(512))
        );
        assert_eq!(s.scheduler, Some(SchedulerKind::Pndm));
        let bad = Settings {
            size: 100,
            ..Settings::default()
        };
        let msg = bad.request(EditBytes::default()).unwrap_err().to_string();
        assert!(msg.contains("multiples of 8"), "{msg}");
        let bad = Settings {
            scheduler: "lms".into(),
            ..Settings::default()
        };
        assert!(
            bad.request(EditBytes::default())
                .unwrap_err()
                .to_string()
                .contains("pndm, ddim")
        );
    }

    #[test]
    fn radedits_edit_carries_its_masks_and_is_checked_as_the_clis() {
        let settings = |keep: bool, skip: f32| Settings {
            size: 8,
            scheduler: "ddim".into(),
            edit: Some(EditSettings {
                strength: None,
                masked: true,
                radedit: Some(RadEditSettings {
                    skip,
                    invert_prompt: "Normal chest.".into(),
                    keep,
                }),
            }),
            ..Settings::default()
        };
        let rgb = vec![128u8; 192];
        let edit: Vec<u8> = (0..64).map(|i| u8::from(i < 16)).collect();
        let keep: Vec<u8> = (0..64).map(|i| u8::from(i >= 48)).collect();
        let parts = [rgb.clone(), edit.clone(), keep.clone()];
        // the bytes in the order the page sends them
        let s = settings(true, 0.3);
        let b = s.edit_bytes(&parts);
        assert_eq!(
            (b.rgb, b.mask, b.keep),
            (Some(&rgb[..]), Some(&edit[..]), Some(&keep[..]))
        );
        let req = s.request(b).unwrap();
        let e = req.edit.unwrap();
        assert_eq!(e.mask.as_ref().unwrap().iter().filter(|&&m| m).count(), 16);
        let inv = e.inversion.unwrap();
        assert_eq!(inv.keep.unwrap().iter().filter(|&&k| k).count(), 16);
        assert_eq!(
            (inv.skip, inv.invert_prompt.as_str()),
            (0.3, "Normal chest.")
        );
        // without a keep mask: the default keep region (None), and no third part read
        let s = settings(false, 0.3);
        assert_eq!(s.edit_bytes(&parts[..2]).keep, None);
        assert_eq!(
            s.request(s.edit_bytes(&parts[..2]))
                .unwrap()
                .edit
                .unwrap()
                .inversion,
            Some(Inversion {
                keep: None,
                skip: 0.3,
                invert_prompt: "Normal chest.".into()
            })
        );
        // the sentences of generation::Request::check, as the CLI gives them
        let check = |s: Settings, parts: &[Vec<u8>]| {
            s.request(s.edit_bytes(parts)).unwrap_err().to_string()
        };
        let msg = check(settings(false, 1.0), &parts[..2]);
        assert!(
            msg.contains("the skip ratio must be a number from 0 to below 1"),
            "{msg}"
        );
        let msg = check(
            settings(true, 0.3),
            &[rgb.clone(), edit.clone(), vec![1; 64]],
        );
        assert!(
            msg.contains("the keep mask covers the whole image"),
            "{msg}"
        );
        let msg = check(settings(false, 0.3), &[rgb.clone(), vec![0; 64]]);
        assert!(msg.contains("the edit mask is empty"), "{msg}");
        let unmasked = Settings {
            edit: Some(EditSettings {
                masked: false,
                ..settings(false, 0.3).edit.unwrap()
            }),
            ..settings(false, 0.3)
        };
        let msg = check(unmasked, std::slice::from_ref(&rgb));
        assert!(msg.contains("an edit needs an edit mask"), "{msg}");
        let msg = check(
            settings(true, 0.3),
            &[rgb.clone(), edit.clone(), vec![1; 10]],
        );
        assert!(msg.contains("the keep mask has 10 bytes"), "{msg}");
        // a message from before RadEdit's edit reads as image-to-image or inpainting
        let old: EditSettings = serde_json::from_str(r#"{"strength":null,"masked":true}"#).unwrap();
        assert_eq!(old.radedit, None);
    }

    #[test]
    fn import_formats_are_read_or_refused() {
        assert!(import_target("original").unwrap().is_none());
        assert_eq!(
            import_target("int8").unwrap().map(|t| t.name()),
            Some("int8")
        );
        let msg = import_target("int3").unwrap_err().to_string();
        assert!(msg.contains("choose int8, int4 or original"), "{msg}");
    }

    #[test]
    fn failures_are_classified() {
        let e = Error::DeviceLost("gone".into());
        assert_eq!(FailureKind::of(&e), FailureKind::DeviceLost);
        // the user's input and the engine's own faults are different failures
        let e = Error::Input("steps must be at least 1".into());
        assert_eq!(FailureKind::of(&e), FailureKind::Input);
        let e = Error::Internal("a buffer was read past its end".into());
        assert_eq!(FailureKind::of(&e), FailureKind::Other);
        assert!(e.to_string().contains("not in your input"), "{e}");
        let e = Error::Limit {
            limit: "maxBufferSize",
            have: 1,
            need: 2,
        };
        match Reply::failed(&e) {
            Reply::Failed { kind, message } => {
                assert_eq!(kind, FailureKind::Limit);
                assert!(message.contains("maxBufferSize"), "{message}");
            }
            r => panic!("{r:?}"),
        }
    }

    #[test]
    fn model_urls_give_the_folder_and_a_name() {
        let want = (
            "https://intranet.example/models/roentgen/".to_string(),
            "roentgen".to_string(),
        );
        for typed in [
            "https://intranet.example/models/roentgen",
            " https://intranet.example/models/roentgen/ ",
            "https://intranet.example/models/roentgen/model_index.json",
            "https://intranet.example/models/roentgen/?download=1",
        ] {
            assert_eq!(model_url(typed).unwrap(), want, "{typed}");
        }
        assert_eq!(
            model_url("http://127.0.0.1:8000/a/RoentGen v1").unwrap(),
            (
                "http://127.0.0.1:8000/a/RoentGen v1/".into(),
                "RoentGen v1".into()
            )
        );
        for bad in [
            "roentgen",
            "ftp://x/y",
            "https://",
            "https://intranet.example/",
        ] {
            let msg = model_url(bad).unwrap_err().to_string();
            assert!(
                msg.contains("URL") || msg.contains("folder"),
                "{bad}: {msg}"
            );
        }
    }

    #[test]
    fn model_names_are_safe_folder_names() {
        assert_eq!(model_name("roentgen"), "roentgen");
        assert_eq!(model_name("../x/y"), "_x_y");
        assert_eq!(model_name(" .. "), "model");
        assert_eq!(model_name("RoentGen v1 (fp16)"), "RoentGen v1 _fp16_");
    }
}
