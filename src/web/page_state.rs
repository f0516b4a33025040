//! The page's state as a pure reducer (STYLE.md item 19): [`PageState::update`] takes an
//! [`Event`] (a reply from the engine's worker, the worker failing, a click) and returns
//! the [`Effect`]s that follow (post a request, restart the worker, say a sentence,
//! render). Plain Rust, so every transition is unit-tested natively. The page
//! (`page.rs`, wasm only) owns the DOM, the worker and the bulk data (picked `File`s,
//! pixels, object URLs), turns clicks and messages into events and effects into calls,
//! and renders what this state says.

use super::protocol::{
    EditBytes, EditSettings, FailureKind, MemoryFigures, RadEditSettings, Reply, Request, Settings,
    StoredModel, model_name, model_url,
};
use crate::findings::{self, Demographics, Finding, LABELS, Side, Size, Style};
use crate::generation::Family;

/// What the engine is busy with, as the page knows it.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Task {
    Idle,
    Starting,
    Importing,
    Loading,
    Generating,
}

/// A folder the user picked. Its `File` handles stay with the page, under `id`.
#[derive(Clone, Debug, PartialEq)]
pub struct PickedFolder {
    /// The page's number for the picked files.
    pub id: u32,
    /// Each file's path in the picked folder, in the order of the files.
    pub paths: Vec<String>,
    /// The import format chosen when it was picked (`int8`, `int4`, `original`).
    pub format: String,
}

/// An unfinished import that the next picked folder resumes: its stored name and format.
#[derive(Clone, Debug, PartialEq)]
pub struct Resume {
    pub name: String,
    pub format: String,
}

/// A folder picked before the engine was ready, imported once it is.
#[derive(Clone, Debug, PartialEq)]
pub struct PendingImport {
    pub folder: PickedFolder,
    pub resume: Option<Resume>,
}

/// What a generation does, by the workbench's state.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Mode {
    TextToImage,
    ImageToImage,
    Inpainting,
    /// RadEdit's edit: an edit mask and a keep mask over the init image.
    RadEdit,
}

impl Mode {
    /// The edit box's `data-mode`.
    pub fn name(self) -> &'static str {
        match self {
            Mode::TextToImage => "text-to-image",
            Mode::ImageToImage => "image-to-image",
            Mode::Inpainting => "inpainting",
            Mode::RadEdit => "radedit",
        }
    }

    /// The sentence under the init image.
    pub fn sentence(self) -> &'static str {
        match self {
            Mode::Inpainting => "Inpainting: only the painted region is repainted.",
            Mode::ImageToImage => {
                "Image-to-image: the whole image follows the prompt, keeping its layout. Paint over it to repaint only there."
            }
            Mode::RadEdit => {
                "RadEdit's edit: the image is inverted on DDIM's schedule, then the prompt acts only inside the edit mask (white); the keep mask (blue) stays as the image, by default everything outside the edit mask."
            }
            Mode::TextToImage => "",
        }
    }

    /// The strength field's placeholder: diffusers' default for the mode.
    pub fn strength_placeholder(self) -> &'static str {
        if self == Mode::Inpainting {
            "1.0"
        } else {
            "0.8"
        }
    }
}

/// How an init image is edited (the edit box's `edit-method` select).
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub enum EditMethod {
    /// diffusers' image-to-image (SDEdit), or inpainting where a mask is painted.
    #[default]
    Sdedit,
    /// RadEdit's edit: DDPM inversion with an edit mask and a keep mask.
    RadEdit,
}

impl EditMethod {
    /// The select's value.
    pub fn name(self) -> &'static str {
        match self {
            EditMethod::Sdedit => "sdedit",
            EditMethod::RadEdit => "radedit",
        }
    }

    pub fn from_name(s: &str) -> Option<EditMethod> {
        match s {
            "sdedit" => Some(EditMethod::Sdedit),
            "radedit" => Some(EditMethod::RadEdit),
            _ => None,
        }
    }
}

/// Which mask the pointer paints (RadEdit's edit has two; the others only the first).
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub enum Layer {
    /// The mask: inpainting's repaint region, RadEdit's edit mask.
    #[default]
    Edit,
    /// RadEdit's keep mask.
    Keep,
}

impl Layer {
    /// The `mask-layer` select's value.
    pub fn name(self) -> &'static str {
        match self {
            Layer::Edit => "edit",
            Layer::Keep => "keep",
        }
    }

    pub fn from_name(s: &str) -> Option<Layer> {
        match s {
            "edit" => Some(Layer::Edit),
            "keep" => Some(Layer::Keep),
            _ => None,
        }
    }
}

/// The workbench's state. Its data (the init image's pixels, the mask canvases, the last
/// result, the word maps, object URLs, Compare's pinned image) stays with the page.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct WorkbenchState {
    /// The loaded model's family, whose recipe the form was given.
    pub family: Option<Family>,
    /// The recipe the form was last given (`None`: the page's own defaults, RoentGen
    /// v1's): a field still holding its value was not changed by the user.
    pub recipe: Option<FormRecipe>,
    /// An init image is chosen.
    pub init_image: bool,
    /// A mask (RadEdit: the edit mask) is painted over it.
    pub painted: bool,
    /// RadEdit's keep mask is painted.
    pub keep_painted: bool,
    pub method: EditMethod,
    /// The mask the pointer paints.
    pub layer: Layer,
    /// The ticked findings, in the order ticked (the impression's order).
    pub ticked: Vec<&'static str>,
}

impl WorkbenchState {
    pub fn mode(&self) -> Mode {
        match (self.init_image, self.method, self.painted) {
            (false, _, _) => Mode::TextToImage,
            (true, EditMethod::RadEdit, _) => Mode::RadEdit,
            (true, EditMethod::Sdedit, false) => Mode::ImageToImage,
            (true, EditMethod::Sdedit, true) => Mode::Inpainting,
        }
    }

    /// Whether `layer` has paint.
    fn painted_on(&mut self, layer: Layer) -> &mut bool {
        match layer {
            Layer::Edit => &mut self.painted,
            Layer::Keep => &mut self.keep_painted,
        }
    }
}

/// Everything the page decides by.
#[derive(Clone, Debug, PartialEq)]
pub struct PageState {
    pub task: Task,
    /// Which worker is current: events of one that was replaced are ignored.
    pub worker: u32,
    /// The engine has said it is ready (`Reply::Started`).
    pub started: bool,
    pub model: Option<String>,
    pub models: Vec<StoredModel>,
    /// The model loaded last (kept in `localStorage`): loaded when the engine starts.
    pub last_model: Option<String>,
    /// The settings of the running (or last) generation, for the caption and the maps.
    pub settings: Option<Settings>,
    pub generations: u32,
    /// The model that was loaded when the GPU device was lost.
    pub lost_model: Option<String>,
    /// A folder chosen before the engine was ready (it used to be refused as "Busy"
    /// and lost).
    pub pending_import: Option<PendingImport>,
    /// Generate once the model is loaded again (after a device loss).
    pub generate_after_load: bool,
    /// Load no model when the restarted engine is up (the user cancelled a load).
    pub skip_autoload: bool,
    /// The unfinished import that the next picked folder resumes.
    pub resume_into: Option<Resume>,
    /// Cancel was pressed during this generation.
    pub cancelling: bool,
    /// Why the last Generate was not started; cleared when the page is idle again.
    pub busy_note: Option<String>,
    pub workbench: WorkbenchState,
}

/// The checked findings as the form holds them (side and size as their selects' values).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CheckedFinding {
    pub id: &'static str,
    pub side: String,
    pub size: String,
}

/// The prompt builder's form.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PromptForm {
    pub checked: Vec<CheckedFinding>,
    pub age: String,
    pub sex: String,
    pub race: String,
}

/// What happened.
#[derive(Clone, Debug, PartialEq)]
pub enum Event {
    /// A message from worker `worker` (its bulk bytes stay with the page).
    Reply {
        worker: u32,
        reply: Reply,
    },
    /// Worker `worker` sent a message that is not a [`Reply`].
    Unreadable {
        worker: u32,
        error: String,
    },
    /// Worker `worker` threw (its `error` event: a panic in the engine, out of memory).
    WorkerError {
        worker: u32,
        message: String,
    },
    /// The page ended the engine itself (the `restart()` test hook).
    RestartHook,
    /// Generate pressed (the button, the form's submit, Ctrl+Enter).
    GenerateClicked,
    /// The form as read after [`Effect::ReadForm`], or the sentence saying what is wrong.
    Form(Result<Settings, String>),
    CancelClicked,
    FolderPicked(PickedFolder),
    /// The directory picker failed (not a plain cancel).
    FolderUnreadable(String),
    /// The folder dialog was closed without a folder.
    FolderDialogCancelled,
    /// The model URL form, as typed.
    UrlSubmitted(String),
    /// The Hub form, as typed (`token` empty: none), with the import format chosen.
    HubSubmitted {
        repo: String,
        endpoint: String,
        token: Option<super::hub::Token>,
        format: String,
    },
    LoadClicked(String),
    ResumeClicked(String),
    /// Delete pressed and confirmed.
    DeleteConfirmed(String),
    /// The error's "Load the model again".
    ReloadLostClicked,
    PromptEdited,
    /// An init image was read (the page holds its pixels), or the sentence why not.
    InitImage(Result<(), String>),
    InitRemoved,
    /// A mask's Clear (`clear-mask`: the mask or edit mask; `clear-keep`: the keep mask).
    MaskCleared(Layer),
    /// The pointer painted on the mask of the current layer.
    MaskPainted,
    /// A mask file was read into `layer` (the page holds its pixels), or the sentence
    /// why not.
    MaskLoaded {
        layer: Layer,
        result: Result<(), String>,
    },
    /// The edit method chosen.
    EditMethodChosen(EditMethod),
    /// The mask to paint chosen.
    LayerChosen(Layer),
    FindingTicked {
        id: &'static str,
        on: bool,
    },
    BuildPrompt(PromptForm),
}

/// What the page does about it.
#[derive(Clone, Debug, PartialEq)]
pub enum Effect {
    /// Post a request to the current worker (to `Generate` the page adds the init image
    /// and mask it read with the form).
    Post(Request),
    /// Post an import with the `File`s of picked folder `folder`.
    PostImport {
        folder: u32,
        request: Request,
    },
    /// Terminate the worker and start worker `id`.
    RestartWorker {
        id: u32,
    },
    /// The model status line (`data-state` and text).
    Status {
        state: &'static str,
        text: String,
    },
    /// The error box (its "Load the model again" hidden).
    Error {
        text: String,
        kind: Option<FailureKind>,
    },
    /// Show the error box's "Load the model again".
    OfferReload,
    ClearError,
    /// Render the controls ([`PageState::controls`]) and the model list.
    Controls,
    /// Render the model list ([`PageState::model_rows`]).
    Models,
    /// Read the form (and the workbench's image and mask), then send [`Event::Form`].
    ReadForm,
    /// Ask the engine how many tokens the prompt uses.
    CountTokens,
    GpuInfo(String),
    /// Keep in `localStorage`.
    RememberModel(String),
    RememberUrl(String),
    SetUrlInput(String),
    /// Keep the Hub form's repo and endpoint in `localStorage` (never the token).
    RememberHub {
        repo: String,
        endpoint: String,
    },
    /// Put `repo` in the Hub form and submit it (Resume of a Hub download: the page
    /// adds the token field's value and the endpoint setting).
    SubmitHub(String),
    OpenFolderDialog,
    /// The progress box shown, its bar at 0, "Encoding the prompt…".
    ProgressStart,
    ProgressText(&'static str),
    /// A UNet call done: the bar, its sentence, the preview that came with it.
    Step {
        call: usize,
        calls: usize,
        text: String,
        width: usize,
        height: usize,
    },
    HidePreview,
    /// A finished image (its PNG came with the reply): the result, the gallery, the
    /// workbench's copy.
    ShowImage {
        generation: u32,
        caption: String,
        alt: String,
        thumb_alt: String,
        thumb_caption: String,
        done: String,
        file_name: String,
    },
    Dicom {
        file_name: String,
    },
    WordMaps {
        words: Vec<(String, Vec<usize>)>,
        tokens: usize,
        h: usize,
        w: usize,
        metadata: crate::image_io::ImageMetadata,
    },
    Memory(MemoryFigures),
    Tokens {
        text: String,
        over: bool,
    },
    /// A model of `family` loaded: its recipe into the form where a field still holds
    /// `previous`, the recipe the form was given before ([`recipe_changes`]); the
    /// demographics for SD 2.x.
    Family {
        family: Option<Family>,
        previous: FormRecipe,
        recipe: FormRecipe,
    },
    /// Render the workbench's mode (the method select, the strength or RadEdit's
    /// fields).
    Mode(Mode),
    /// Render the mask layer select.
    Layer(Layer),
    /// Set the scheduler select (RadEdit's edit runs on DDIM).
    SetScheduler(&'static str),
    ClearMask(Layer),
    /// Draw the init image fitted to the chosen size, or hide the edit box.
    DrawInit,
    SetPrompt(String),
}

/// The controls as the state has them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Controls {
    pub generate_disabled: bool,
    pub cancel_hidden: bool,
    pub cancel_disabled: bool,
    /// The folder input, the directory picker, the URL form.
    pub import_disabled: bool,
    /// Load, Resume and Delete in the model list.
    pub models_enabled: bool,
}

/// A row of the model list.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelRow {
    pub name: String,
    pub label: String,
    /// The family and whose terms it comes under ("RadEdit (CXR-BERT) · Microsoft
    /// research license …; research use, not for clinical use"); `None` for an unfinished
    /// import.
    pub family: Option<String>,
    pub load: bool,
    /// Resume, with its title.
    pub resume: Option<&'static str>,
    pub delete_question: String,
    pub enabled: bool,
}

/// The form's fields as typed.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FormFields {
    pub prompt: String,
    pub negative_prompt: String,
    pub seed: String,
    pub steps: String,
    pub guidance: String,
    pub scheduler: String,
    pub size: String,
}

/// The form's fields to set when a model loaded: each of guidance, steps and scheduler
/// that still holds the recipe the form was given before (or is empty) takes the new
/// recipe's value; one the user changed is left alone.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RecipeChanges {
    pub guidance: Option<String>,
    pub scheduler: Option<String>,
    pub steps: Option<String>,
}

pub fn recipe_changes(
    previous: &FormRecipe,
    recipe: &FormRecipe,
    guidance: &str,
    steps: &str,
    scheduler: &str,
) -> RecipeChanges {
    let (guidance, steps, scheduler) = (guidance.trim(), steps.trim(), scheduler.trim());
    // a field takes the new value if it holds the old one (or nothing) and differs
    fn change<T: std::str::FromStr + PartialEq + ToString>(
        field: &str,
        was: &T,
        new: &T,
    ) -> Option<String> {
        let now = field.parse::<T>().ok();
        ((field.is_empty() || now.as_ref() == Some(was)) && now.as_ref() != Some(new))
            .then(|| new.to_string())
    }
    RecipeChanges {
        guidance: change(guidance, &previous.guidance, &recipe.guidance),
        steps: change(steps, &previous.steps, &recipe.steps),
        scheduler: change(scheduler, &previous.scheduler, &recipe.scheduler),
    }
}

/// A model's recipe as the worker sends it after a load ([`Reply::Ready`]).
#[derive(Clone, Debug, PartialEq)]
pub struct FormRecipe {
    /// A scheduler's short name (`pndm`, `ddim`, …).
    pub scheduler: String,
    pub steps: usize,
    pub guidance: f32,
}

impl FormRecipe {
    /// A family's recipe, as the worker would send it.
    pub fn of(family: Family) -> FormRecipe {
        let r = family.recipe();
        FormRecipe {
            scheduler: r.scheduler.name().into(),
            steps: r.steps,
            guidance: r.guidance,
        }
    }
}

pub fn human_bytes(b: u64) -> String {
    let b = b as f64;
    if b >= 1e9 {
        format!("{:.2} GB", b / 1e9)
    } else if b >= 1e6 {
        format!("{:.1} MB", b / 1e6)
    } else {
        format!("{:.0} kB", b / 1e3)
    }
}

pub fn seconds(ms: f64) -> String {
    let s = ms / 1000.0;
    if s < 10.0 {
        format!("{s:.1} s")
    } else if s < 120.0 {
        format!("{s:.0} s")
    } else {
        format!("{:.0} min {:.0} s", (s / 60.0).floor(), s % 60.0)
    }
}

/// An engine error as the page shows it: capitalised, with a full stop.
pub fn sentence(e: impl std::fmt::Display) -> String {
    let m = e.to_string();
    let mut c = m.chars();
    let s = c
        .next()
        .map(|f| f.to_uppercase().collect::<String>() + c.as_str())
        .unwrap_or(m);
    if s.ends_with('.') { s } else { s + "." }
}

/// The form's settings (no edit, no maps yet), or a sentence saying which field is wrong.
pub fn parse_settings(f: &FormFields) -> Result<Settings, String> {
    let seed = f.seed.trim();
    let seed: u64 = seed
        .parse()
        .map_err(|_| format!("The seed must be a whole number from 0 up (got “{seed}”)."))?;
    let steps = f.steps.trim();
    let steps: usize = steps
        .parse()
        .map_err(|_| format!("Steps must be a whole number (got “{steps}”)."))?;
    let guidance = f.guidance.trim();
    let guidance: f32 = guidance
        .parse()
        .map_err(|_| format!("Guidance must be a number (got “{guidance}”)."))?;
    let s = Settings {
        prompt: f.prompt.clone(),
        negative_prompt: f.negative_prompt.clone(),
        seed,
        steps,
        guidance,
        scheduler: f.scheduler.clone(),
        size: f.size.parse().unwrap_or(512),
        edit: None,
        attention_maps: false,
    };
    s.request(EditBytes::default()).map_err(sentence)?;
    Ok(s)
}

/// The edit's settings from the strength field (empty: the mode's default).
pub fn parse_edit(strength: &str, masked: bool) -> Result<EditSettings, String> {
    let strength = match strength.trim() {
        "" => None,
        t => Some(t.parse::<f32>().map_err(|_| {
            format!("The strength must be a number greater than 0 and at most 1 (got “{t}”).")
        })?),
    };
    let edit = EditSettings {
        strength,
        masked,
        radedit: None,
    };
    edit.strength().map_err(sentence)?;
    Ok(edit)
}

/// RadEdit's edit from its fields: the skip ratio (empty: RadEdit's 0.3) and the
/// inversion prompt, with the edit mask if painted and the keep mask if painted. The
/// values are checked with the masks, by [`Settings::request`] (the CLI's sentences).
pub fn parse_radedit(
    skip: &str,
    invert_prompt: &str,
    masked: bool,
    keep: bool,
) -> Result<EditSettings, String> {
    let skip = match skip.trim() {
        "" => crate::generation::RADEDIT_SKIP,
        t => t.parse::<f32>().map_err(|_| {
            format!("The skip ratio must be a number from 0 to below 1 (got “{t}”).")
        })?,
    };
    Ok(EditSettings {
        strength: None,
        masked,
        radedit: Some(RadEditSettings {
            skip,
            invert_prompt: invert_prompt.to_string(),
            keep,
        }),
    })
}

/// The sentence for an engine failure.
pub fn failure_sentence(kind: FailureKind, message: &str) -> String {
    match kind {
        FailureKind::NoWebGpu => format!(
            "This browser gives the page no WebGPU, which the generator needs ({message}). \
             Use Chrome or Edge 113 or later (on Linux start them with --enable-unsafe-webgpu \
             or turn on chrome://flags/#enable-unsafe-webgpu), Safari 26 or later, or Firefox 141 \
             or later on Windows (elsewhere Firefox Nightly with dom.webgpu.enabled)."
        ),
        FailureKind::DeviceLost => format!(
            "The GPU device was lost: the GPU was reset or taken away from this page ({message}). Load the model again to go on."
        ),
        FailureKind::OutOfMemory => format!(
            "The GPU ran out of memory ({message}). Close other tabs that use the GPU, or choose a smaller size, and try again."
        ),
        FailureKind::Limit => format!(
            "This browser's WebGPU limits are too small for this model: {message}. A browser or GPU with larger limits is needed."
        ),
        FailureKind::Model => format!("The model cannot be used: {message}."),
        FailureKind::Storage | FailureKind::Network => format!("{message}."),
        FailureKind::Busy => format!("Busy: {message}."),
        FailureKind::Input | FailureKind::Other => {
            let mut c = message.chars();
            c.next()
                .map(|f| f.to_uppercase().collect::<String>() + c.as_str() + ".")
                .unwrap_or_default()
        }
    }
}

fn side(value: &str) -> Option<Side> {
    match value {
        "left" => Some(Side::Left),
        "right" => Some(Side::Right),
        "bilateral" => Some(Side::Bilateral),
        _ => None,
    }
}

fn size(value: &str) -> Option<Size> {
    match value {
        "small" => Some(Size::Small),
        "moderate" => Some(Size::Moderate),
        "large" => Some(Size::Large),
        _ => None,
    }
}

fn status(state: &'static str, text: impl Into<String>) -> Effect {
    Effect::Status {
        state,
        text: text.into(),
    }
}

fn error(text: impl Into<String>, kind: Option<FailureKind>) -> Effect {
    Effect::Error {
        text: text.into(),
        kind,
    }
}

impl PageState {
    /// The page as it opens: the engine starting; `last_model` from `localStorage`.
    pub fn new(last_model: Option<String>) -> PageState {
        PageState {
            task: Task::Starting,
            worker: 0,
            started: false,
            model: None,
            models: vec![],
            last_model,
            settings: None,
            generations: 0,
            lost_model: None,
            pending_import: None,
            generate_after_load: false,
            skip_autoload: false,
            resume_into: None,
            cancelling: false,
            busy_note: None,
            workbench: WorkbenchState::default(),
        }
    }

    /// The controls as this state has them.
    pub fn controls(&self) -> Controls {
        let t = self.task;
        // a model loaded, or one to load again after a device loss
        let ready = self.model.is_some() || self.lost_model.is_some();
        Controls {
            generate_disabled: !(t == Task::Idle && ready),
            cancel_hidden: !matches!(t, Task::Generating | Task::Loading),
            cancel_disabled: self.cancelling,
            import_disabled: t != Task::Idle,
            models_enabled: t == Task::Idle,
        }
    }

    /// The model list.
    pub fn model_rows(&self) -> Vec<ModelRow> {
        let idle = self.task == Task::Idle;
        self.models
            .iter()
            .map(|m| {
                let size = if m.complete {
                    format!("{}, {}", m.format, human_bytes(m.bytes))
                } else {
                    "import did not finish".into()
                };
                let loaded = self.model.as_deref() == Some(m.name.as_str());
                let family = m.complete.then(|| match m.family {
                    Some(f) => format!("{} · {}", f.model(), f.license()),
                    None => "No family this page knows: its own license applies; research use, not for clinical use".into(),
                });
                ModelRow {
                    name: m.name.clone(),
                    family,
                    label: format!(
                        "{} — {size}{}",
                        m.name,
                        if loaded { " (loaded)" } else { "" }
                    ),
                    load: m.complete && !loaded,
                    resume: (!m.complete).then_some(if m.hub_repo.is_some() {
                        "Download the rest from the Hub (paste the token again if the repo is gated)"
                    } else if m.source_url.is_some() {
                        "Download the rest from the same address"
                    } else {
                        "Choose the same folder again: the files already stored are kept"
                    }),
                    delete_question: format!(
                        "Delete the model “{}” ({}) from this browser? You can import it again later.",
                        m.name,
                        human_bytes(m.bytes)
                    ),
                    enabled: idle,
                }
            })
            .collect()
    }

    /// The next state, and what the page does about it.
    pub fn update(&mut self, event: Event) -> Vec<Effect> {
        let mut fx = Vec::new();
        match event {
            Event::Reply { worker, reply } if worker == self.worker => {
                self.on_reply(reply, &mut fx)
            }
            Event::Unreadable { worker, error } if worker == self.worker => fx.push(self::error(
                format!("The engine sent an unreadable message ({error})."),
                None,
            )),
            Event::WorkerError { worker, message } if worker == self.worker => {
                if !self.started && self.worker == 0 {
                    // The first worker never came up: no WebAssembly or module workers here.
                    fx.push(self::error(
                        format!("The engine could not start ({message}). Reload the page; if it happens again, this browser may lack WebAssembly or module workers."),
                        Some(FailureKind::Other),
                    ));
                    fx.push(status("error", "No model loaded."));
                } else {
                    self.on_worker_crash(&message, &mut fx);
                }
            }
            // a worker that was replaced: its late events are ignored
            Event::Reply { .. } | Event::Unreadable { .. } | Event::WorkerError { .. } => {}
            Event::RestartHook => self.on_worker_crash("terminated by the page", &mut fx),
            Event::GenerateClicked => self.generate(&mut fx),
            Event::Form(form) => self.on_form(form, &mut fx),
            Event::CancelClicked => self.cancel(&mut fx),
            Event::FolderPicked(folder) => {
                if folder.paths.is_empty() {
                    return fx;
                }
                fx.push(Effect::ClearError);
                let resume = self.resume_into.take();
                self.import(PendingImport { folder, resume }, &mut fx);
            }
            Event::FolderUnreadable(e) => {
                fx.push(self::error(
                    format!("The folder could not be read: {e}."),
                    None,
                ));
            }
            Event::FolderDialogCancelled => {
                if self.resume_into.take().is_some() && self.task == Task::Idle {
                    fx.push(status("none", "Resume cancelled: no folder was chosen."));
                }
            }
            Event::UrlSubmitted(url) => self.import_url(url, &mut fx),
            Event::HubSubmitted {
                repo,
                endpoint,
                token,
                format,
            } => self.import_hub(repo, endpoint, token, format, &mut fx),
            Event::LoadClicked(name) => self.load(name, &mut fx),
            Event::ResumeClicked(name) => self.resume(&name, &mut fx),
            Event::DeleteConfirmed(name) => {
                if self.model.as_deref() == Some(name.as_str()) {
                    self.model = None;
                    fx.push(status("none", "No model loaded."));
                }
                fx.push(Effect::Post(Request::Delete { name }));
            }
            Event::ReloadLostClicked => {
                if let Some(name) = self.lost_model.take() {
                    self.load(name, &mut fx);
                }
            }
            Event::PromptEdited => self.count_tokens(&mut fx),
            Event::InitImage(Ok(())) => {
                fx.push(Effect::ClearError);
                self.new_init(true, &mut fx);
            }
            Event::InitImage(Err(m)) => fx.push(self::error(m, Some(FailureKind::Input))),
            Event::InitRemoved => self.new_init(false, &mut fx),
            Event::MaskCleared(layer) => {
                *self.workbench.painted_on(layer) = false;
                fx.extend([
                    Effect::ClearMask(layer),
                    Effect::Mode(self.workbench.mode()),
                ]);
            }
            Event::MaskPainted => {
                let layer = self.workbench.layer;
                let painted = self.workbench.painted_on(layer);
                if !*painted {
                    *painted = true;
                    fx.push(Effect::Mode(self.workbench.mode()));
                }
            }
            Event::MaskLoaded { layer, result } => match result {
                Ok(()) => {
                    fx.push(Effect::ClearError);
                    *self.workbench.painted_on(layer) = true;
                    fx.push(Effect::Mode(self.workbench.mode()));
                }
                Err(m) => fx.push(self::error(m, Some(FailureKind::Input))),
            },
            Event::EditMethodChosen(method) => {
                let w = &mut self.workbench;
                w.method = method;
                match method {
                    // RadEdit's edit inverts on DDIM's schedule: the CLI refuses another
                    // scheduler, so the form takes DDIM (the mode's sentence says so)
                    EditMethod::RadEdit => fx.push(Effect::SetScheduler("ddim")),
                    // the keep mask is RadEdit's: paint the mask again
                    EditMethod::Sdedit => {
                        w.layer = Layer::Edit;
                        fx.push(Effect::Layer(Layer::Edit));
                    }
                }
                fx.push(Effect::Mode(w.mode()));
            }
            Event::LayerChosen(layer) => {
                self.workbench.layer = match self.workbench.method {
                    EditMethod::RadEdit => layer,
                    EditMethod::Sdedit => Layer::Edit,
                };
                fx.push(Effect::Layer(self.workbench.layer));
            }
            Event::FindingTicked { id, on } => {
                let t = &mut self.workbench.ticked;
                t.retain(|&x| x != id);
                if on {
                    t.push(id);
                }
            }
            Event::BuildPrompt(form) => self.build_prompt(form, &mut fx),
        }
        fx
    }

    /// An init image chosen (`on`) or removed: both masks cleared.
    fn new_init(&mut self, on: bool, fx: &mut Vec<Effect>) {
        let w = &mut self.workbench;
        w.init_image = on;
        w.painted = false;
        w.keep_painted = false;
        fx.extend([
            Effect::ClearMask(Layer::Edit),
            Effect::ClearMask(Layer::Keep),
            Effect::DrawInit,
            Effect::Mode(w.mode()),
        ]);
    }

    fn set_task(&mut self, t: Task, fx: &mut Vec<Effect>) {
        self.task = t;
        self.cancelling = false;
        if t == Task::Idle {
            self.busy_note = None;
        }
        if !fx.contains(&Effect::Controls) {
            fx.push(Effect::Controls);
        }
    }

    fn count_tokens(&self, fx: &mut Vec<Effect>) {
        if self.model.is_some() {
            fx.push(Effect::CountTokens);
        }
    }

    fn load(&mut self, name: String, fx: &mut Vec<Effect>) {
        fx.push(Effect::ClearError);
        self.set_task(Task::Loading, fx);
        fx.push(status("loading", format!("Loading “{name}”…")));
        fx.push(Effect::Post(Request::Load { name }));
    }

    fn import(&mut self, imp: PendingImport, fx: &mut Vec<Effect>) {
        let folder = imp.folder.paths[0]
            .split('/')
            .next()
            .unwrap_or("model")
            .to_string();
        let name = match &imp.resume {
            Some(r) => r.name.clone(),
            None => model_name(&folder),
        };
        if !self.started {
            // Chosen while the engine starts (the inputs are disabled then, but a file
            // dialog opened before may still deliver): import it once the engine is ready.
            fx.push(status(
                "importing",
                format!("The engine is starting; “{name}” is imported as soon as it is ready…"),
            ));
            self.pending_import = Some(imp);
            return;
        }
        self.model = None;
        self.set_task(Task::Importing, fx);
        fx.push(status(
            "importing",
            if imp.resume.is_some() {
                format!("Resuming “{name}”: checking which files are stored already…")
            } else {
                format!("Checking “{name}”…")
            },
        ));
        let format = match &imp.resume {
            Some(r) if !r.format.is_empty() => r.format.clone(),
            _ => imp.folder.format,
        };
        fx.push(Effect::PostImport {
            folder: imp.folder.id,
            request: Request::Import {
                name,
                paths: imp.folder.paths,
                format,
                resume: imp.resume.is_some(),
            },
        });
    }

    /// Resume an unfinished import: a download from where it stopped; a folder by
    /// choosing it again (a page cannot reopen a folder without the user).
    fn resume(&mut self, name: &str, fx: &mut Vec<Effect>) {
        let Some(m) = self.models.iter().find(|m| m.name == name) else {
            return;
        };
        if let Some(repo) = m.hub_repo.clone() {
            fx.push(Effect::SubmitHub(repo));
            return;
        }
        if let Some(url) = m.source_url.clone() {
            fx.push(Effect::SetUrlInput(url.clone()));
            self.import_url(url, fx);
            return;
        }
        self.resume_into = Some(Resume {
            name: name.into(),
            format: m.format.clone(),
        });
        fx.push(status(
            "none",
            format!(
                "Choose the folder “{name}” was imported from: the files already stored are kept."
            ),
        ));
        fx.push(Effect::OpenFolderDialog);
    }

    fn import_url(&mut self, url: String, fx: &mut Vec<Effect>) {
        fx.push(Effect::ClearError);
        let name = match model_url(&url) {
            Ok((_, name)) => name,
            Err(e) => {
                fx.push(error(format!("{e}."), Some(FailureKind::Input)));
                return;
            }
        };
        fx.push(Effect::RememberUrl(url.trim().into()));
        self.model = None;
        self.set_task(Task::Importing, fx);
        fx.push(status(
            "importing",
            format!("Looking for “{name}” on the server…"),
        ));
        fx.push(Effect::Post(Request::ImportUrl { url }));
    }

    fn import_hub(
        &mut self,
        repo: String,
        endpoint: String,
        token: Option<super::hub::Token>,
        format: String,
        fx: &mut Vec<Effect>,
    ) {
        fx.push(Effect::ClearError);
        let checked = super::hub::RepoId::parse(&repo)
            .and_then(|r| Ok((r, super::hub::endpoint(&endpoint)?)));
        let (id, endpoint) = match checked {
            Ok(x) => x,
            Err(e) => {
                fx.push(error(format!("{e}."), Some(FailureKind::Input)));
                return;
            }
        };
        let repo = repo.trim().to_string();
        fx.push(Effect::RememberHub {
            repo: repo.clone(),
            endpoint: endpoint.clone(),
        });
        self.model = None;
        self.set_task(Task::Importing, fx);
        fx.push(status(
            "importing",
            format!("Asking {endpoint} for {}…", id.id()),
        ));
        fx.push(Effect::Post(Request::ImportHub {
            repo,
            endpoint,
            token,
            format,
        }));
    }

    /// The Cancel button: a generation stops after its step (or drops the image being
    /// decoded); a load cannot stop halfway inside the engine, so the engine is
    /// restarted without it.
    fn cancel(&mut self, fx: &mut Vec<Effect>) {
        match self.task {
            Task::Generating => {
                fx.push(Effect::Post(Request::Cancel));
                self.cancelling = true;
                fx.push(Effect::Controls);
                fx.push(Effect::ProgressText("Cancelling after this step…"));
            }
            Task::Loading => {
                self.generate_after_load = false;
                self.skip_autoload = true;
                self.restart_worker(fx);
                fx.push(status(
                    "starting",
                    "Loading cancelled; restarting the engine…",
                ));
            }
            _ => {}
        }
    }

    /// A Generate while something runs is refused, with a sentence (never a second
    /// generation at once).
    fn refuse_busy(&mut self, fx: &mut Vec<Effect>) {
        let what = match self.task {
            Task::Generating => "an image is being generated",
            Task::Loading => "the model is loading",
            Task::Importing => "a model is being imported",
            Task::Starting => "the engine is starting",
            Task::Idle => "no model is loaded yet",
        };
        self.busy_note = Some(format!(
            "Not started: {what}. Wait for it to finish{}.",
            if matches!(self.task, Task::Generating | Task::Loading) {
                ", or press Cancel"
            } else {
                ""
            }
        ));
        fx.push(Effect::Controls);
    }

    fn generate(&mut self, fx: &mut Vec<Effect>) {
        if self.task == Task::Idle
            && self.model.is_none()
            && let Some(name) = self.lost_model.take()
        {
            // After a device loss: load the model again, then generate.
            self.generate_after_load = true;
            self.load(name, fx);
            return;
        }
        if self.task == Task::Idle && self.model.is_some() {
            fx.push(Effect::ReadForm);
        } else {
            self.refuse_busy(fx);
        }
    }

    fn on_form(&mut self, form: Result<Settings, String>, fx: &mut Vec<Effect>) {
        if !(self.task == Task::Idle && self.model.is_some()) {
            return self.refuse_busy(fx);
        }
        match form {
            Ok(s) => {
                fx.push(Effect::ClearError);
                self.settings = Some(s.clone());
                self.set_task(Task::Generating, fx);
                fx.push(Effect::ProgressStart);
                fx.push(Effect::Post(Request::Generate(s)));
            }
            Err(m) => fx.push(error(m, Some(FailureKind::Input))),
        }
    }

    /// Replaces the engine's worker with a fresh one (after a crash, or to stop a
    /// load): the old one is terminated and its late events ignored.
    fn restart_worker(&mut self, fx: &mut Vec<Effect>) {
        self.worker += 1;
        fx.push(Effect::RestartWorker { id: self.worker });
        self.model = None;
        self.started = false;
        self.set_task(Task::Starting, fx);
    }

    /// The worker threw (a panic in the engine, out of memory): say so, start a new
    /// one, and load the model again.
    fn on_worker_crash(&mut self, msg: &str, fx: &mut Vec<Effect>) {
        let was = self.task;
        let lost = self.model.is_some();
        self.generate_after_load = false;
        self.restart_worker(fx);
        fx.push(error(
            format!(
                "The engine stopped unexpectedly ({}) and was restarted{}. If it happens again, reload the page.",
                if msg.is_empty() { "no reason given" } else { msg },
                if lost { "; the model is loaded again" } else { "" }
            ),
            Some(FailureKind::Other),
        ));
        fx.push(status("starting", "Restarting the engine…"));
        if was == Task::Generating {
            fx.push(Effect::ProgressText("Stopped: the engine crashed."));
            fx.push(Effect::HidePreview);
        }
    }

    fn on_reply(&mut self, reply: Reply, fx: &mut Vec<Effect>) {
        match reply {
            Reply::Started {
                adapter,
                limits,
                kernels,
                models,
            } => {
                fx.push(Effect::GpuInfo(if kernels.is_empty() {
                    format!("WebGPU: {adapter}; running on {limits}.")
                } else {
                    format!("WebGPU: {adapter}; {kernels}; running on {limits}.")
                }));
                self.models = models;
                self.started = true;
                self.set_task(Task::Idle, fx);
                if let Some(imp) = self.pending_import.take() {
                    fx.push(Effect::ClearError);
                    return self.import(imp, fx);
                }
                if std::mem::take(&mut self.skip_autoload) {
                    fx.push(status(
                        "none",
                        "Loading cancelled: no model loaded. Load one below.",
                    ));
                    return;
                }
                // Load the model used last time, or the only one stored.
                let pick = self
                    .models
                    .iter()
                    .filter(|m| m.complete)
                    .find(|m| Some(&m.name) == self.last_model.as_ref())
                    .or_else(|| self.models.iter().find(|m| m.complete))
                    .map(|m| m.name.clone());
                match pick {
                    Some(name) => self.load(name, fx),
                    None => fx.push(status(
                        "none",
                        "No model yet: import a RoentGen folder below.",
                    )),
                }
            }
            Reply::Models { models } => {
                self.models = models;
                fx.push(Effect::Models);
            }
            Reply::Importing {
                file,
                done,
                total,
                left_ms,
            } => fx.push(status(
                "importing",
                format!(
                    "Storing in this browser: {file} ({:.0} %, {} of {}{})",
                    100.0 * done as f64 / total.max(1) as f64,
                    human_bytes(done),
                    human_bytes(total),
                    left_ms.map_or(String::new(), |ms| format!(", about {} left", seconds(ms)))
                ),
            )),
            Reply::Loading { part } => {
                self.set_task(Task::Loading, fx);
                fx.push(status("loading", format!("Loading the model: {part}…")));
            }
            Reply::Ready {
                name,
                millis,
                family,
                scheduler,
                steps,
                guidance,
            } => {
                fx.push(Effect::RememberModel(name.clone()));
                self.last_model = Some(name.clone());
                self.workbench.family = family;
                let recipe = FormRecipe {
                    scheduler,
                    steps,
                    guidance,
                };
                let previous = self
                    .workbench
                    .recipe
                    .replace(recipe.clone())
                    // the page's own defaults
                    .unwrap_or_else(|| FormRecipe::of(Family::Sd1));
                fx.push(Effect::Family {
                    family,
                    previous,
                    recipe,
                });
                self.model = Some(name.clone());
                self.set_task(Task::Idle, fx);
                fx.push(status(
                    "ready",
                    format!("Model “{name}” ready (loaded in {}).", seconds(millis)),
                ));
                self.count_tokens(fx);
                if std::mem::take(&mut self.generate_after_load) {
                    self.generate(fx);
                }
            }
            Reply::Tokens {
                count,
                max,
                dropped,
            } => fx.push(match dropped {
                Some(d) => Effect::Tokens {
                    text: format!("{count} / {max} tokens: “{d}” does not fit and is ignored"),
                    over: true,
                },
                None => Effect::Tokens {
                    text: format!("{count} / {max} tokens"),
                    over: false,
                },
            }),
            Reply::Step {
                call,
                calls,
                elapsed_ms,
                width,
                height,
            } => {
                let left = elapsed_ms / call as f64 * (calls - call) as f64;
                let text = if call == calls {
                    format!("Step {call} / {calls} · decoding the image…")
                } else {
                    format!("Step {call} / {calls} · about {} left", seconds(left))
                };
                fx.push(Effect::Step {
                    call,
                    calls,
                    text,
                    width,
                    height,
                });
            }
            Reply::Image {
                width,
                height,
                seed,
                millis,
                file_name,
            } => {
                let s = self.settings.clone().unwrap_or_default();
                let mode = match &s.edit {
                    None => String::new(),
                    Some(EditSettings {
                        radedit: Some(r), ..
                    }) => format!(
                        "RadEdit edit (skip {}{}{}) · ",
                        r.skip,
                        if r.keep { ", keep mask" } else { "" },
                        if r.invert_prompt.is_empty() {
                            String::new()
                        } else {
                            format!(", inverted with “{}”", r.invert_prompt)
                        }
                    ),
                    Some(e) => format!(
                        "{} (strength {}) · ",
                        if e.masked {
                            "inpainting"
                        } else {
                            "image-to-image"
                        },
                        e.strength().unwrap_or(f32::NAN)
                    ),
                };
                let caption = format!(
                    "{mode}“{}” · seed {seed} · {} steps · guidance {} · {} · {width}×{height} · {}",
                    s.prompt,
                    s.steps,
                    s.guidance,
                    s.scheduler,
                    seconds(millis)
                );
                self.generations += 1;
                let n = self.generations;
                fx.push(Effect::ShowImage {
                    generation: n,
                    caption,
                    alt: format!("Synthetic chest X-ray generated from “{}”", s.prompt),
                    thumb_alt: format!("Synthetic image {n}: {}", s.prompt),
                    thumb_caption: format!("seed {seed}"),
                    done: format!("Done in {}.", seconds(millis)),
                    file_name,
                });
                self.set_task(Task::Idle, fx);
            }
            Reply::Dicom { file_name } => fx.push(Effect::Dicom { file_name }),
            Reply::WordMaps {
                words,
                tokens,
                h,
                w,
                metadata,
            } => fx.push(Effect::WordMaps {
                words,
                tokens,
                h,
                w,
                metadata,
            }),
            Reply::Cancelled => {
                self.set_task(Task::Idle, fx);
                fx.push(Effect::ProgressText("Cancelled."));
                fx.push(Effect::HidePreview);
            }
            Reply::Memory(m) => fx.push(Effect::Memory(m)),
            Reply::Failed { kind, message } => self.on_failure(kind, &message, fx),
        }
    }

    fn on_failure(&mut self, kind: FailureKind, message: &str, fx: &mut Vec<Effect>) {
        let was = self.task;
        if kind != FailureKind::Busy {
            self.generate_after_load = false;
        }
        fx.push(error(failure_sentence(kind, message), Some(kind)));
        match kind {
            FailureKind::Busy => return,
            FailureKind::NoWebGpu => {
                self.model = None;
                fx.push(status(
                    "unavailable",
                    "WebGPU is not available: no model can run here.",
                ));
                // Stays "starting": nothing can be imported or generated.
                self.set_task(Task::Starting, fx);
            }
            FailureKind::DeviceLost => {
                if let Some(name) = self.model.take() {
                    self.lost_model = Some(name);
                }
                fx.push(status(
                    "lost",
                    "The GPU was lost: load the model again, or press Generate to load it and go on.",
                ));
                self.set_task(Task::Idle, fx);
                if self.lost_model.is_some() {
                    fx.push(Effect::OfferReload);
                }
            }
            _ => {
                if matches!(was, Task::Importing | Task::Loading) {
                    self.model = None;
                    fx.push(status("error", "No model loaded."));
                }
                self.set_task(Task::Idle, fx);
            }
        }
        if was == Task::Generating {
            fx.push(Effect::ProgressText("Stopped."));
        }
    }

    fn build_prompt(&mut self, form: PromptForm, fx: &mut Vec<Effect>) {
        // in the order ticked, those still checked
        let chosen: Vec<Finding> = self
            .workbench
            .ticked
            .iter()
            .filter_map(|&id| {
                let c = form.checked.iter().find(|c| c.id == id)?;
                let l = LABELS.iter().find(|l| l.id == id)?;
                Some(Finding {
                    label: id.into(),
                    side: if l.sided { side(&c.side) } else { None },
                    size: if l.sized { size(&c.size) } else { None },
                })
            })
            .collect();
        if chosen.is_empty() {
            fx.push(error("Tick at least one finding to build a prompt.", None));
            return;
        }
        let demo = if Style::of(self.workbench.family) == Style::Demographics {
            let age = match form.age.trim() {
                "" => None,
                a => match a.parse::<u32>() {
                    Ok(n) => Some(n),
                    Err(_) => {
                        fx.push(error(
                            format!("The age must be a whole number of years (got “{a}”)."),
                            None,
                        ));
                        return;
                    }
                },
            };
            Some(Demographics {
                age,
                sex: Some(form.sex),
                race: Some(form.race),
            })
        } else {
            None
        };
        match findings::prompt(&chosen, demo.as_ref()) {
            Ok(p) => {
                fx.push(Effect::ClearError);
                fx.push(Effect::SetPrompt(p));
                self.count_tokens(fx);
            }
            Err(e) => fx.push(error(sentence(e), None)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored(name: &str, complete: bool, url: Option<&str>) -> StoredModel {
        StoredModel {
            name: name.into(),
            bytes: 3_400_000,
            complete,
            format: "original".into(),
            source_url: url.map(Into::into),
            hub_repo: None,
            family: complete.then_some(Family::Sd1),
        }
    }

    fn reply(p: &mut PageState, reply: Reply) -> Vec<Effect> {
        let worker = p.worker;
        p.update(Event::Reply { worker, reply })
    }

    fn started(p: &mut PageState, models: Vec<StoredModel>) -> Vec<Effect> {
        reply(
            p,
            Reply::Started {
                adapter: "SwiftShader".into(),
                limits: "its limits".into(),
                kernels: "subgroup kernels, 4 lanes".into(),
                models,
            },
        )
    }

    fn ready(p: &mut PageState, name: &str) -> Vec<Effect> {
        reply(
            p,
            Reply::Ready {
                name: name.into(),
                millis: 1500.0,
                family: Some(Family::Sd1),
                scheduler: "pndm".into(),
                steps: 75,
                guidance: 4.0,
            },
        )
    }

    /// The engine up with `tiny-sd` loaded.
    fn ready_page() -> PageState {
        let mut p = PageState::new(None);
        let fx = started(&mut p, vec![stored("tiny-sd", true, None)]);
        assert!(fx.contains(&Effect::Post(Request::Load {
            name: "tiny-sd".into()
        })));
        // the page says which kernels run (data-testid="gpu-info")
        assert!(fx.contains(&Effect::GpuInfo(
            "WebGPU: SwiftShader; subgroup kernels, 4 lanes; running on its limits.".into()
        )));
        ready(&mut p, "tiny-sd");
        assert_eq!((p.task, p.model.as_deref()), (Task::Idle, Some("tiny-sd")));
        p
    }

    fn settings() -> Settings {
        Settings {
            prompt: "Small right pleural effusion.".into(),
            ..Settings::default()
        }
    }

    /// Generate pressed and the form read: the generation posted.
    fn generating(p: &mut PageState) {
        assert_eq!(p.update(Event::GenerateClicked), vec![Effect::ReadForm]);
        let fx = p.update(Event::Form(Ok(settings())));
        assert!(
            fx.contains(&Effect::Post(Request::Generate(settings()))),
            "{fx:?}"
        );
        assert_eq!(p.task, Task::Generating);
    }

    fn posts(fx: &[Effect]) -> Vec<&Request> {
        fx.iter()
            .filter_map(|e| match e {
                Effect::Post(r) | Effect::PostImport { request: r, .. } => Some(r),
                _ => None,
            })
            .collect()
    }

    fn error_text(fx: &[Effect]) -> Option<&str> {
        fx.iter().rev().find_map(|e| match e {
            Effect::Error { text, .. } => Some(text.as_str()),
            _ => None,
        })
    }

    fn status_of(fx: &[Effect]) -> Option<(&'static str, &str)> {
        fx.iter().rev().find_map(|e| match e {
            Effect::Status { state, text } => Some((*state, text.as_str())),
            _ => None,
        })
    }

    #[test]
    fn a_crash_during_generation_restarts_the_worker_says_so_and_reloads_the_model() {
        let mut p = ready_page();
        generating(&mut p);
        let fx = p.update(Event::WorkerError {
            worker: 0,
            message: "RuntimeError: unreachable".into(),
        });
        assert!(fx.contains(&Effect::RestartWorker { id: 1 }), "{fx:?}");
        let text = error_text(&fx).unwrap();
        assert!(
            text.starts_with("The engine stopped unexpectedly (RuntimeError: unreachable) and was restarted; the model is loaded again."),
            "{text}"
        );
        assert_eq!(status_of(&fx), Some(("starting", "Restarting the engine…")));
        assert!(fx.contains(&Effect::ProgressText("Stopped: the engine crashed.")));
        assert!(fx.contains(&Effect::HidePreview));
        assert_eq!((p.task, p.worker, p.started), (Task::Starting, 1, false));
        assert!(p.controls().generate_disabled);
        // the new engine loads the model used last, by itself
        let fx = started(
            &mut p,
            vec![stored("other", true, None), stored("tiny-sd", true, None)],
        );
        assert_eq!(
            posts(&fx),
            [&Request::Load {
                name: "tiny-sd".into()
            }]
        );
        ready(&mut p, "tiny-sd");
        generating(&mut p);
    }

    #[test]
    fn a_lost_device_loads_the_model_again_then_generates() {
        let mut p = ready_page();
        generating(&mut p);
        let fx = reply(
            &mut p,
            Reply::Failed {
                kind: FailureKind::DeviceLost,
                message: "destroyed".into(),
            },
        );
        assert!(
            error_text(&fx)
                .unwrap()
                .starts_with("The GPU device was lost")
        );
        assert!(fx.contains(&Effect::OfferReload));
        assert!(fx.contains(&Effect::ProgressText("Stopped.")));
        assert_eq!(status_of(&fx).unwrap().0, "lost");
        assert_eq!(
            (p.model.as_deref(), p.lost_model.as_deref()),
            (None, Some("tiny-sd"))
        );
        assert!(
            !p.controls().generate_disabled,
            "Generate loads the model again"
        );
        // Generate: the model first, then the generation
        let fx = p.update(Event::GenerateClicked);
        assert_eq!(
            posts(&fx),
            [&Request::Load {
                name: "tiny-sd".into()
            }]
        );
        assert!(!fx.contains(&Effect::ReadForm));
        assert_eq!((p.task, p.generate_after_load), (Task::Loading, true));
        let fx = ready(&mut p, "tiny-sd");
        assert_eq!(fx.last(), Some(&Effect::ReadForm), "{fx:?}");
        let fx = p.update(Event::Form(Ok(settings())));
        assert_eq!(posts(&fx), [&Request::Generate(settings())]);
        // lost while idle: "Load the model again" loads it, and nothing more
        reply(&mut p, Reply::Cancelled);
        reply(
            &mut p,
            Reply::Failed {
                kind: FailureKind::DeviceLost,
                message: "destroyed".into(),
            },
        );
        let fx = p.update(Event::ReloadLostClicked);
        assert_eq!(
            posts(&fx),
            [&Request::Load {
                name: "tiny-sd".into()
            }]
        );
        assert!(!ready(&mut p, "tiny-sd").contains(&Effect::ReadForm));
    }

    #[test]
    fn a_folder_picked_while_starting_is_imported_once_the_engine_is_up() {
        let mut p = PageState::new(Some("tiny-sd".into()));
        let folder = PickedFolder {
            id: 7,
            paths: vec!["tiny-sd/model_index.json".into(), "tiny-sd/unet/x".into()],
            format: "original".into(),
        };
        let fx = p.update(Event::FolderPicked(folder.clone()));
        assert!(posts(&fx).is_empty(), "{fx:?}");
        assert_eq!(
            status_of(&fx),
            Some((
                "importing",
                "The engine is starting; “tiny-sd” is imported as soon as it is ready…"
            ))
        );
        // the engine up: the folder is imported, nothing is loaded by itself
        let fx = started(&mut p, vec![stored("tiny-sd", true, None)]);
        assert_eq!(
            fx.iter()
                .filter(|e| matches!(e, Effect::PostImport { .. } | Effect::Post(_)))
                .collect::<Vec<_>>(),
            [&Effect::PostImport {
                folder: 7,
                request: Request::Import {
                    name: "tiny-sd".into(),
                    paths: folder.paths,
                    format: "original".into(),
                    resume: false,
                }
            }]
        );
        assert_eq!(p.task, Task::Importing);
        assert_eq!(p.pending_import, None);
        // an empty pick does nothing
        let before = p.clone();
        assert!(
            p.update(Event::FolderPicked(PickedFolder {
                id: 8,
                paths: vec![],
                format: "int8".into()
            }))
            .is_empty()
        );
        assert_eq!(p, before);
    }

    #[test]
    fn a_repeated_generate_is_refused_with_a_sentence() {
        let mut p = ready_page();
        generating(&mut p);
        for _ in 0..5 {
            let fx = p.update(Event::GenerateClicked);
            assert!(
                posts(&fx).is_empty() && !fx.contains(&Effect::ReadForm),
                "{fx:?}"
            );
            assert_eq!(
                p.busy_note.as_deref(),
                Some(
                    "Not started: an image is being generated. Wait for it to finish, or press Cancel."
                )
            );
        }
        // a form read late (never, but if) does not start a second one either
        assert!(posts(&p.update(Event::Form(Ok(settings())))).is_empty());
        assert!(p.controls().generate_disabled);
        // the image: the note goes, Generate works again
        let fx = reply(
            &mut p,
            Reply::Image {
                width: 128,
                height: 128,
                seed: 0,
                millis: 2500.0,
                file_name: "roentgen-seed0.png".into(),
            },
        );
        match &fx[0] {
            Effect::ShowImage {
                generation,
                caption,
                done,
                ..
            } => {
                assert_eq!(*generation, 1);
                assert_eq!(
                    caption,
                    "“Small right pleural effusion.” · seed 0 · 75 steps · guidance 4 · pndm · 128×128 · 2.5 s"
                );
                assert_eq!(done, "Done in 2.5 s.");
            }
            e => panic!("{e:?}"),
        }
        assert_eq!((p.task, p.busy_note.as_deref()), (Task::Idle, None));
        assert!(!p.controls().generate_disabled);
        // refused before a model is loaded, without "Cancel"
        let mut q = PageState::new(None);
        q.update(Event::GenerateClicked);
        assert_eq!(
            q.busy_note.as_deref(),
            Some("Not started: the engine is starting. Wait for it to finish.")
        );
    }

    #[test]
    fn cancel_stops_a_generation_after_its_step_and_a_load_by_restarting() {
        let mut p = ready_page();
        generating(&mut p);
        let fx = p.update(Event::CancelClicked);
        assert_eq!(posts(&fx), [&Request::Cancel]);
        assert!(fx.contains(&Effect::ProgressText("Cancelling after this step…")));
        assert!(p.controls().cancel_disabled);
        let fx = reply(&mut p, Reply::Cancelled);
        assert!(fx.contains(&Effect::ProgressText("Cancelled.")));
        assert!(fx.contains(&Effect::HidePreview));
        assert_eq!(p.task, Task::Idle);
        let c = p.controls();
        assert!(!c.generate_disabled && c.cancel_hidden && !c.cancel_disabled);
        // idle: Cancel does nothing
        assert!(p.update(Event::CancelClicked).is_empty());
        // during a load: the engine restarts, and loads nothing when it is up
        p.update(Event::LoadClicked("tiny-sd".into()));
        assert!(!p.controls().cancel_hidden);
        let fx = p.update(Event::CancelClicked);
        assert!(fx.contains(&Effect::RestartWorker { id: 1 }));
        assert_eq!(
            status_of(&fx),
            Some(("starting", "Loading cancelled; restarting the engine…"))
        );
        let fx = started(&mut p, vec![stored("tiny-sd", true, None)]);
        assert!(posts(&fx).is_empty(), "{fx:?}");
        assert_eq!(
            status_of(&fx),
            Some((
                "none",
                "Loading cancelled: no model loaded. Load one below."
            ))
        );
        assert!(p.controls().generate_disabled);
        // the next start loads again
        p.update(Event::RestartHook);
        assert_eq!(
            posts(&started(&mut p, vec![stored("tiny-sd", true, None)])).len(),
            1
        );
    }

    #[test]
    fn an_interrupted_import_offers_resume_which_continues_it() {
        let mut p = PageState::new(None);
        started(&mut p, vec![]);
        let folder = |id| PickedFolder {
            id,
            paths: vec!["tiny-sd/model_index.json".into()],
            format: "int8".into(),
        };
        p.update(Event::FolderPicked(folder(1)));
        assert_eq!(p.task, Task::Importing);
        let partial = StoredModel {
            format: "int4".into(),
            ..stored("tiny-sd", false, None)
        };
        reply(
            &mut p,
            Reply::Models {
                models: vec![partial.clone()],
            },
        );
        let fx = reply(
            &mut p,
            Reply::Failed {
                kind: FailureKind::Storage,
                message: "the quota is used up".into(),
            },
        );
        assert_eq!(error_text(&fx), Some("the quota is used up."));
        assert_eq!(status_of(&fx), Some(("error", "No model loaded.")));
        assert_eq!(p.task, Task::Idle);
        let rows = p.model_rows();
        assert_eq!(rows[0].label, "tiny-sd — import did not finish");
        assert_eq!(
            rows[0].resume,
            Some("Choose the same folder again: the files already stored are kept")
        );
        assert!(rows[0].enabled && !rows[0].load);
        // Resume asks for the folder; a closed dialog resumes nothing
        let fx = p.update(Event::ResumeClicked("tiny-sd".into()));
        assert!(fx.contains(&Effect::OpenFolderDialog));
        let fx = p.update(Event::FolderDialogCancelled);
        assert_eq!(
            status_of(&fx),
            Some(("none", "Resume cancelled: no folder was chosen."))
        );
        // chosen: the same name and format, resuming
        p.update(Event::ResumeClicked("tiny-sd".into()));
        let fx = p.update(Event::FolderPicked(PickedFolder {
            paths: vec!["renamed/model_index.json".into()],
            ..folder(2)
        }));
        assert_eq!(
            posts(&fx),
            [&Request::Import {
                name: "tiny-sd".into(),
                paths: vec!["renamed/model_index.json".into()],
                format: "int4".into(),
                resume: true,
            }]
        );
        // an unfinished download resumes from its address
        let mut p = PageState::new(None);
        let url = "https://intranet.example/models/tiny-sd/";
        started(&mut p, vec![stored("tiny-sd", false, Some(url))]);
        assert_eq!(
            p.model_rows()[0].resume,
            Some("Download the rest from the same address")
        );
        let fx = p.update(Event::ResumeClicked("tiny-sd".into()));
        assert!(fx.contains(&Effect::SetUrlInput(url.into())));
        assert_eq!(posts(&fx), [&Request::ImportUrl { url: url.into() }]);
    }

    #[test]
    fn a_replaced_workers_events_are_ignored() {
        let mut p = ready_page();
        generating(&mut p);
        p.update(Event::RestartHook);
        assert_eq!(p.worker, 1);
        let before = p.clone();
        for event in [
            Event::Reply {
                worker: 0,
                reply: Reply::Image {
                    width: 8,
                    height: 8,
                    seed: 0,
                    millis: 1.0,
                    file_name: "x.png".into(),
                },
            },
            Event::Reply {
                worker: 0,
                reply: Reply::Failed {
                    kind: FailureKind::DeviceLost,
                    message: "gone".into(),
                },
            },
            Event::WorkerError {
                worker: 0,
                message: "late".into(),
            },
            Event::Unreadable {
                worker: 0,
                error: "?".into(),
            },
        ] {
            assert!(p.update(event).is_empty());
            assert_eq!(p, before);
        }
        // the current one's are not
        assert!(!started(&mut p, vec![]).is_empty());
    }

    #[test]
    fn the_first_worker_failing_to_start_is_not_a_crash() {
        let mut p = PageState::new(None);
        let fx = p.update(Event::WorkerError {
            worker: 0,
            message: "SyntaxError".into(),
        });
        assert!(!fx.iter().any(|e| matches!(e, Effect::RestartWorker { .. })));
        assert!(
            error_text(&fx)
                .unwrap()
                .starts_with("The engine could not start (SyntaxError).")
        );
        assert_eq!(status_of(&fx), Some(("error", "No model loaded.")));
    }

    #[test]
    fn failures_leave_the_page_usable_or_say_why_not() {
        // no WebGPU: said, and nothing can start
        let mut p = PageState::new(None);
        let fx = reply(
            &mut p,
            Reply::Failed {
                kind: FailureKind::NoWebGpu,
                message: "no adapter".into(),
            },
        );
        assert!(error_text(&fx).unwrap().contains("enable-unsafe-webgpu"));
        assert_eq!(status_of(&fx).unwrap().0, "unavailable");
        assert!(p.controls().generate_disabled && p.controls().import_disabled);
        // Busy changes nothing but the sentence
        let mut p = ready_page();
        generating(&mut p);
        let before = p.clone();
        let fx = reply(
            &mut p,
            Reply::Failed {
                kind: FailureKind::Busy,
                message: "another task is still running".into(),
            },
        );
        assert_eq!(fx.len(), 1);
        assert_eq!(
            error_text(&fx),
            Some("Busy: another task is still running.")
        );
        assert_eq!(p, before);
        // a bad setting: said, the model kept
        let fx = reply(
            &mut p,
            Reply::Failed {
                kind: FailureKind::Input,
                message: "the mask is empty".into(),
            },
        );
        assert_eq!(error_text(&fx), Some("The mask is empty."));
        assert_eq!((p.task, p.model.as_deref()), (Task::Idle, Some("tiny-sd")));
        // a form refused: no generation
        let fx = p.update(Event::Form(Err(
            "Steps must be a whole number (got “x”).".into()
        )));
        assert!(posts(&fx).is_empty());
        assert_eq!(p.task, Task::Idle);
    }

    #[test]
    fn a_url_is_checked_before_anything_is_asked() {
        let mut p = PageState::new(None);
        started(&mut p, vec![]);
        let fx = p.update(Event::UrlSubmitted("roentgen".into()));
        assert!(posts(&fx).is_empty());
        assert!(error_text(&fx).unwrap().contains("is not a web address"));
        assert_eq!(p.task, Task::Idle);
        let fx = p.update(Event::UrlSubmitted(" https://h.example/m/roentgen ".into()));
        assert!(fx.contains(&Effect::RememberUrl("https://h.example/m/roentgen".into())));
        assert_eq!(
            status_of(&fx),
            Some(("importing", "Looking for “roentgen” on the server…"))
        );
        assert_eq!(p.task, Task::Importing);
    }

    #[test]
    fn a_hub_repo_is_checked_then_asked_for_with_the_token_in_the_request_only() {
        use crate::web::hub::Token;
        let mut p = PageState::new(None);
        started(&mut p, vec![]);
        let submit = |repo: &str, token: Option<&str>| Event::HubSubmitted {
            repo: repo.into(),
            endpoint: " http://127.0.0.1:9000/ ".into(),
            token: token.and_then(Token::typed),
            format: "int8".into(),
        };
        let fx = p.update(submit("roentgen", Some("hf_x")));
        assert!(posts(&fx).is_empty());
        assert!(error_text(&fx).unwrap().contains("ORG/NAME"), "{fx:?}");
        assert_eq!(p.task, Task::Idle);
        let fx = p.update(submit(" StanfordAIMI/roent-gen-v1-0 ", Some(" hf_secret ")));
        assert_eq!(
            posts(&fx),
            [&Request::ImportHub {
                repo: "StanfordAIMI/roent-gen-v1-0".into(),
                endpoint: "http://127.0.0.1:9000".into(),
                token: Some(Token("hf_secret".into())),
                format: "int8".into(),
            }]
        );
        // remembered: the repo and the endpoint, never the token
        assert!(fx.contains(&Effect::RememberHub {
            repo: "StanfordAIMI/roent-gen-v1-0".into(),
            endpoint: "http://127.0.0.1:9000".into()
        }));
        assert!(!format!("{fx:?}").contains("hf_secret"), "{fx:?}");
        assert_eq!(
            status_of(&fx),
            Some((
                "importing",
                "Asking http://127.0.0.1:9000 for StanfordAIMI/roent-gen-v1-0…"
            ))
        );
        assert_eq!(p.task, Task::Importing);
        let fx = reply(
            &mut p,
            Reply::Importing {
                file: "unet/diffusion_pytorch_model.safetensors".into(),
                done: 5_000_000,
                total: 20_000_000,
                left_ms: Some(12_000.0),
            },
        );
        assert_eq!(
            status_of(&fx).unwrap().1,
            "Storing in this browser: unet/diffusion_pytorch_model.safetensors (25 %, 5.0 MB of 20.0 MB, about 12 s left)"
        );
        // the gated sentence as the engine says it
        let fx = reply(
            &mut p,
            Reply::Failed {
                kind: FailureKind::Input,
                message: "the repo a/b is gated: accept its terms at https://huggingface.co/a/b and paste an access token".into(),
            },
        );
        assert_eq!(
            error_text(&fx),
            Some(
                "The repo a/b is gated: accept its terms at https://huggingface.co/a/b and paste an access token."
            )
        );
        assert_eq!(p.task, Task::Idle);
    }

    #[test]
    fn an_unfinished_hub_download_resumes_from_the_hub_form() {
        let mut p = PageState::new(None);
        let mut m = stored(
            "roent-gen-v1-0",
            false,
            Some("https://huggingface.co/a/b/resolve/abc/"),
        );
        m.hub_repo = Some("StanfordAIMI/roent-gen-v1-0".into());
        started(&mut p, vec![m]);
        let rows = p.model_rows();
        assert!(rows[0].resume.unwrap().contains("from the Hub"));
        let fx = p.update(Event::ResumeClicked("roent-gen-v1-0".into()));
        assert_eq!(
            fx,
            [Effect::SubmitHub("StanfordAIMI/roent-gen-v1-0".into())]
        );
    }

    #[test]
    fn deleting_the_loaded_model_unloads_it() {
        let mut p = ready_page();
        let fx = p.update(Event::DeleteConfirmed("tiny-sd".into()));
        assert_eq!(status_of(&fx), Some(("none", "No model loaded.")));
        assert_eq!(
            posts(&fx),
            [&Request::Delete {
                name: "tiny-sd".into()
            }]
        );
        assert_eq!(p.model, None);
        assert!(
            p.update(Event::PromptEdited).is_empty(),
            "no tokens to count"
        );
    }

    #[test]
    fn the_model_list_says_what_each_model_is() {
        let mut p = ready_page();
        reply(
            &mut p,
            Reply::Models {
                models: vec![
                    StoredModel {
                        format: "int8".into(),
                        ..stored("tiny-sd", true, None)
                    },
                    stored("other", true, None),
                ],
            },
        );
        let rows = p.model_rows();
        assert_eq!(rows[0].label, "tiny-sd — int8, 3.4 MB (loaded)");
        assert!(!rows[0].load && rows[1].load && rows[0].resume.is_none());
        assert_eq!(
            rows[1].delete_question,
            "Delete the model “other” (3.4 MB) from this browser? You can import it again later."
        );
        // each complete model's family and license line
        assert_eq!(
            rows[0].family.as_deref(),
            Some(
                "RoentGen v1 (SD 1.x) · PhysioNet credentialed access (MIMIC-CXR); research use, not for clinical use"
            )
        );
        assert_eq!(rows[1].family, rows[0].family);
        reply(
            &mut p,
            Reply::Models {
                models: vec![
                    StoredModel {
                        family: Some(Family::RadEdit),
                        ..stored("radedit", true, None)
                    },
                    StoredModel {
                        family: None,
                        ..stored("mystery", true, None)
                    },
                    stored("half", false, None),
                ],
            },
        );
        let rows = p.model_rows();
        let line = rows[0].family.as_deref().unwrap();
        assert!(
            line.starts_with("RadEdit (CXR-BERT) · Microsoft research license"),
            "{line}"
        );
        assert!(
            line.ends_with("research use, not for clinical use"),
            "{line}"
        );
        assert!(
            rows[1]
                .family
                .as_deref()
                .unwrap()
                .contains("No family this page knows")
        );
        assert_eq!(
            rows[2].family, None,
            "an unfinished import has no family yet"
        );
        generating(&mut p);
        assert!(p.model_rows().iter().all(|r| !r.enabled));
    }

    #[test]
    fn the_workbench_mode_follows_the_init_image_and_the_mask() {
        let mut p = ready_page();
        assert_eq!(p.workbench.mode(), Mode::TextToImage);
        let fx = p.update(Event::InitImage(Ok(())));
        assert!(fx.contains(&Effect::Mode(Mode::ImageToImage)));
        assert!(
            p.update(Event::MaskPainted)
                .contains(&Effect::Mode(Mode::Inpainting))
        );
        assert!(p.update(Event::MaskPainted).is_empty(), "said once");
        assert_eq!(Mode::Inpainting.strength_placeholder(), "1.0");
        assert!(
            p.update(Event::MaskCleared(Layer::Edit))
                .contains(&Effect::Mode(Mode::ImageToImage))
        );
        p.update(Event::MaskPainted);
        assert!(
            p.update(Event::InitRemoved)
                .contains(&Effect::Mode(Mode::TextToImage))
        );
        assert!(!p.workbench.painted);
        let fx = p.update(Event::InitImage(Err("broken.png is not a PNG.".into())));
        assert_eq!(error_text(&fx), Some("broken.png is not a PNG."));
        assert_eq!(p.workbench.mode(), Mode::TextToImage);
    }

    #[test]
    fn radedits_edit_has_an_edit_mask_and_a_keep_mask() {
        let mut p = ready_page();
        // the method is the user's, the image or not
        let fx = p.update(Event::EditMethodChosen(EditMethod::RadEdit));
        assert!(fx.contains(&Effect::SetScheduler("ddim")), "{fx:?}");
        assert!(fx.contains(&Effect::Mode(Mode::TextToImage)));
        let fx = p.update(Event::InitImage(Ok(())));
        assert!(fx.contains(&Effect::Mode(Mode::RadEdit)));
        assert!(fx.contains(&Effect::ClearMask(Layer::Edit)));
        assert!(fx.contains(&Effect::ClearMask(Layer::Keep)));
        // paint the edit mask, then the keep mask
        assert!(
            p.update(Event::MaskPainted)
                .contains(&Effect::Mode(Mode::RadEdit))
        );
        assert!((p.workbench.painted, p.workbench.keep_painted) == (true, false));
        assert_eq!(
            p.update(Event::LayerChosen(Layer::Keep)),
            [Effect::Layer(Layer::Keep)]
        );
        p.update(Event::MaskPainted);
        assert!(p.workbench.keep_painted);
        assert!(p.update(Event::MaskPainted).is_empty(), "said once");
        // each mask is cleared on its own
        let fx = p.update(Event::MaskCleared(Layer::Keep));
        assert!(fx.contains(&Effect::ClearMask(Layer::Keep)));
        assert!((p.workbench.painted, p.workbench.keep_painted) == (true, false));
        // a mask file goes to the layer it was read for
        p.update(Event::MaskLoaded {
            layer: Layer::Keep,
            result: Ok(()),
        });
        assert!(p.workbench.keep_painted);
        let fx = p.update(Event::MaskLoaded {
            layer: Layer::Edit,
            result: Err("mask.png is 64×64, but the image is 128×128.".into()),
        });
        assert_eq!(
            error_text(&fx),
            Some("mask.png is 64×64, but the image is 128×128.")
        );
        // back to image-to-image / inpainting: the mask is the edit mask, the layer too
        let fx = p.update(Event::EditMethodChosen(EditMethod::Sdedit));
        assert!(fx.contains(&Effect::Mode(Mode::Inpainting)), "{fx:?}");
        assert!(fx.contains(&Effect::Layer(Layer::Edit)));
        assert!(!fx.iter().any(|e| matches!(e, Effect::SetScheduler(_))));
        assert_eq!(
            p.update(Event::LayerChosen(Layer::Keep)),
            [Effect::Layer(Layer::Edit)],
            "no keep mask outside RadEdit's edit"
        );
        // a new image clears both masks
        p.update(Event::EditMethodChosen(EditMethod::RadEdit));
        p.update(Event::InitImage(Ok(())));
        assert!(!p.workbench.painted && !p.workbench.keep_painted);
        assert_eq!(EditMethod::from_name("radedit"), Some(EditMethod::RadEdit));
        assert_eq!(Layer::from_name(Layer::Keep.name()), Some(Layer::Keep));
        assert_eq!(Mode::RadEdit.name(), "radedit");

        // its fields: empty skip is RadEdit's 0.3; the masks' checks are the CLI's
        let e = parse_radedit("", "", true, false).unwrap();
        assert_eq!(
            e.radedit,
            Some(RadEditSettings {
                skip: 0.3,
                invert_prompt: String::new(),
                keep: false
            })
        );
        assert_eq!(e.strength, None);
        assert_eq!(
            parse_radedit("a third", "", true, false).unwrap_err(),
            "The skip ratio must be a number from 0 to below 1 (got “a third”)."
        );
        // the caption says what ran
        let s = Settings {
            edit: Some(parse_radedit("0.5", "Normal chest.", true, true).unwrap()),
            ..settings()
        };
        p.update(Event::GenerateClicked);
        p.update(Event::Form(Ok(s)));
        let fx = reply(
            &mut p,
            Reply::Image {
                width: 128,
                height: 128,
                seed: 0,
                millis: 1000.0,
                file_name: "x.png".into(),
            },
        );
        let caption = fx
            .iter()
            .find_map(|e| match e {
                Effect::ShowImage { caption, .. } => Some(caption.clone()),
                _ => None,
            })
            .unwrap();
        assert!(
            caption.starts_with(
                "RadEdit edit (skip 0.5, keep mask, inverted with “Normal chest.”) · “Small right"
            ),
            "{caption}"
        );
    }

    #[test]
    fn the_family_recipe_is_set_unless_the_user_changed_it() {
        let (v1, v2, radedit) = (
            FormRecipe::of(Family::Sd1),
            FormRecipe::of(Family::Sd2),
            FormRecipe::of(Family::RadEdit),
        );
        // the page opens with RoentGen v1's recipe; an SD 2.x model: its guidance
        let c = recipe_changes(&v1, &v2, "4", "75", "pndm");
        assert_eq!(
            c,
            RecipeChanges {
                guidance: Some("3".into()),
                ..Default::default()
            }
        );
        // RadEdit: DDIM, 100 steps, guidance 7.5, wherever the form holds the old recipe
        let c = recipe_changes(&v1, &radedit, "4", "75", "pndm");
        assert_eq!(
            (
                c.guidance.as_deref(),
                c.steps.as_deref(),
                c.scheduler.as_deref()
            ),
            (Some("7.5"), Some("100"), Some("ddim"))
        );
        // and back, from RadEdit's to v1's ("4.0" and " 100 " are the same numbers)
        let c = recipe_changes(&radedit, &v1, "7.5", " 100 ", "ddim");
        assert_eq!(
            (
                c.guidance.as_deref(),
                c.steps.as_deref(),
                c.scheduler.as_deref()
            ),
            (Some("4"), Some("75"), Some("pndm"))
        );
        // what the user changed stays: guidance 5, 20 steps, Euler ancestral
        assert_eq!(
            recipe_changes(&v1, &radedit, "5", "20", "euler-a"),
            RecipeChanges::default()
        );
        let c = recipe_changes(&v1, &radedit, "4.0", "20", "pndm");
        assert_eq!(
            (c.guidance.as_deref(), c.steps, c.scheduler.as_deref()),
            (Some("7.5"), None, Some("ddim"))
        );
        // an empty field takes the recipe's value
        assert_eq!(
            recipe_changes(&v1, &v1, "", "", "pndm"),
            RecipeChanges {
                guidance: Some("4".into()),
                steps: Some("75".into()),
                ..Default::default()
            }
        );
        // a model of no known family: the recipe the worker sent (its folder's scheduler)
        let other = FormRecipe {
            scheduler: "dpm++2m".into(),
            steps: 50,
            guidance: 7.5,
        };
        assert_eq!(
            recipe_changes(&v1, &other, "4", "75", "pndm"),
            RecipeChanges {
                guidance: Some("7.5".into()),
                steps: Some("50".into()),
                scheduler: Some("dpm++2m".into()),
            }
        );
        // the same family again: nothing to change
        assert_eq!(
            recipe_changes(&v2, &v2, "3", "75", "pndm"),
            RecipeChanges::default()
        );
        // Ready says which recipe the form was given before: the page's own (v1's) for
        // the first model, then the last one loaded
        let mut p = ready_page();
        let v2_ready = |p: &mut PageState| {
            reply(
                p,
                Reply::Ready {
                    name: "v2".into(),
                    millis: 1.0,
                    family: Some(Family::Sd2),
                    scheduler: "pndm".into(),
                    steps: 75,
                    guidance: 3.0,
                },
            )
        };
        let fx = v2_ready(&mut p);
        assert!(fx.contains(&Effect::Family {
            family: Some(Family::Sd2),
            previous: v1.clone(),
            recipe: v2.clone(),
        }));
        assert!(fx.contains(&Effect::RememberModel("v2".into())));
        let fx = reply(
            &mut p,
            Reply::Ready {
                name: "radedit".into(),
                millis: 1.0,
                family: Some(Family::RadEdit),
                scheduler: "ddim".into(),
                steps: 100,
                guidance: 7.5,
            },
        );
        assert!(fx.contains(&Effect::Family {
            family: Some(Family::RadEdit),
            previous: v2.clone(),
            recipe: radedit.clone(),
        }));
        assert_eq!(p.workbench.family, Some(Family::RadEdit));
        let mut fresh = PageState::new(None);
        started(&mut fresh, vec![]);
        let fx = v2_ready(&mut fresh);
        assert!(fx.contains(&Effect::Family {
            family: Some(Family::Sd2),
            previous: v1,
            recipe: v2,
        }));
    }

    #[test]
    fn the_prompt_builder_keeps_the_order_ticked_and_asks_sd2_for_demographics() {
        let mut p = ready_page();
        let form = PromptForm {
            checked: vec![
                CheckedFinding {
                    id: "cardiomegaly",
                    ..Default::default()
                },
                CheckedFinding {
                    id: "pleural_effusion",
                    side: "right".into(),
                    size: "small".into(),
                },
            ],
            age: "sixty".into(),
            sex: "female".into(),
            race: "".into(),
        };
        let fx = p.update(Event::BuildPrompt(form.clone()));
        assert_eq!(
            error_text(&fx),
            Some("Tick at least one finding to build a prompt.")
        );
        for id in ["pleural_effusion", "fracture", "cardiomegaly"] {
            p.update(Event::FindingTicked { id, on: true });
        }
        p.update(Event::FindingTicked {
            id: "fracture",
            on: false,
        });
        let fx = p.update(Event::BuildPrompt(form.clone()));
        assert!(fx.contains(&Effect::SetPrompt(
            "Small right pleural effusion. Cardiomegaly.".into()
        )));
        assert!(fx.contains(&Effect::CountTokens));
        // RadEdit: findings sentences alone, the demographics never read
        p.workbench.family = Some(Family::RadEdit);
        let fx = p.update(Event::BuildPrompt(form.clone()));
        assert!(fx.contains(&Effect::SetPrompt(
            "Small right pleural effusion. Cardiomegaly.".into()
        )));
        p.workbench.family = Some(Family::Sd2);
        let fx = p.update(Event::BuildPrompt(form.clone()));
        assert_eq!(
            error_text(&fx),
            Some("The age must be a whole number of years (got “sixty”).")
        );
        let fx = p.update(Event::BuildPrompt(PromptForm {
            age: "61".into(),
            ..form
        }));
        assert!(fx.contains(&Effect::SetPrompt(
            "61 year old female. Small right pleural effusion. Cardiomegaly.".into()
        )));
    }

    #[test]
    fn the_form_is_read_with_sentences() {
        let fields = FormFields {
            prompt: "Cardiomegaly.".into(),
            seed: " 42 ".into(),
            steps: "20".into(),
            guidance: "4".into(),
            scheduler: "pndm".into(),
            size: "128".into(),
            ..Default::default()
        };
        let s = parse_settings(&fields).unwrap();
        assert_eq!((s.seed, s.steps, s.guidance, s.size), (42, 20, 4.0, 128));
        let bad = |f: FormFields| parse_settings(&f).unwrap_err();
        assert_eq!(
            bad(FormFields {
                seed: "-1".into(),
                ..fields.clone()
            }),
            "The seed must be a whole number from 0 up (got “-1”)."
        );
        assert_eq!(
            bad(FormFields {
                steps: "2000".into(),
                ..fields.clone()
            }),
            // the sentence generation::check_steps gives the CLI (capitalised by
            // `sentence`)
            "Steps must be at most 1000 (the schedulers' training timesteps; RoentGen uses 75), not 2000."
        );
        assert_eq!(parse_edit("", true).unwrap().strength, None);
        assert_eq!(parse_edit(" 0.6 ", false).unwrap().strength, Some(0.6));
        assert!(
            parse_edit("1.5", false)
                .unwrap_err()
                .contains("greater than 0 and at most 1")
        );
        assert_eq!(
            parse_edit("lots", false).unwrap_err(),
            "The strength must be a number greater than 0 and at most 1 (got “lots”)."
        );
    }

    #[test]
    fn a_step_says_how_long_is_left() {
        let mut p = ready_page();
        generating(&mut p);
        let step = |p: &mut PageState, call| match reply(
            p,
            Reply::Step {
                call,
                calls: 11,
                elapsed_ms: 2000.0 * call as f64,
                width: 16,
                height: 16,
            },
        )
        .remove(0)
        {
            Effect::Step { text, .. } => text,
            e => panic!("{e:?}"),
        };
        assert_eq!(step(&mut p, 1), "Step 1 / 11 · about 20 s left");
        assert_eq!(step(&mut p, 11), "Step 11 / 11 · decoding the image…");
    }
}
