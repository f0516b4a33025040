//! The page: wires `www/index.html`'s controls to the engine worker. All state that
//! matters lives in the worker; the page keeps what it shows (busy state, the gallery).

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use gloo_events::{EventListener, EventListenerOptions};
use js_sys::{Array, Reflect, Uint8Array};
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::JsFuture;
use web_sys::{
    Blob, BlobPropertyBag, CanvasRenderingContext2d, Document, Element, File,
    FileSystemDirectoryHandle, HtmlAnchorElement, HtmlButtonElement, HtmlCanvasElement,
    HtmlElement, HtmlImageElement, HtmlInputElement, HtmlProgressElement, HtmlSelectElement,
    HtmlTextAreaElement, ImageData, MessageEvent, Url, Worker, WorkerOptions, WorkerType,
};

use super::protocol::{
    FailureKind, MemoryFigures, Reply, Request, Settings, StoredModel, model_name, model_url,
};
use super::store::{js_error, query, walk};

mod workbench;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Task {
    Idle,
    Starting,
    Importing,
    Loading,
    Generating,
}

struct Page {
    doc: Document,
    /// The engine's worker; replaced when it crashes or a load is cancelled.
    worker: RefCell<Worker>,
    /// Which worker is current: events of one that was replaced are ignored.
    worker_id: Cell<u32>,
    task: Cell<Task>,
    model: RefCell<Option<String>>,
    models: RefCell<Vec<StoredModel>>,
    /// The settings of the running generation (for the caption and the gallery).
    settings: RefCell<Option<Settings>>,
    generations: Cell<u32>,
    /// The model that was loaded when the GPU device was lost.
    lost_model: RefCell<Option<String>>,
    /// The engine has said it is ready (`Reply::Started`).
    started: Cell<bool>,
    /// A folder chosen before the engine was ready: imported once it is (it used to
    /// be refused as "Busy" and lost).
    pending_import: RefCell<Option<Vec<(String, File)>>>,
    /// Generate once the model is loaded again (after a device loss).
    generate_after_load: Cell<bool>,
    /// Load no model when the restarted engine is up (the user cancelled a load).
    skip_autoload: Cell<bool>,
    /// The unfinished import that the next picked folder resumes.
    resume_into: RefCell<Option<(String, String)>>,
}

fn el<T: JsCast>(doc: &Document, id: &str) -> T {
    doc.get_element_by_id(id)
        .unwrap_or_else(|| panic!("index.html has no #{id}"))
        .unchecked_into()
}

fn human_bytes(b: u64) -> String {
    let b = b as f64;
    if b >= 1e9 {
        format!("{:.2} GB", b / 1e9)
    } else if b >= 1e6 {
        format!("{:.1} MB", b / 1e6)
    } else {
        format!("{:.0} kB", b / 1e3)
    }
}

fn seconds(ms: f64) -> String {
    let s = ms / 1000.0;
    if s < 10.0 {
        format!("{s:.1} s")
    } else if s < 120.0 {
        format!("{s:.0} s")
    } else {
        format!("{:.0} min {:.0} s", (s / 60.0).floor(), s % 60.0)
    }
}

impl Page {
    fn el<T: JsCast>(&self, id: &str) -> T {
        el(&self.doc, id)
    }

    fn send(&self, req: &Request, extra: Option<&JsValue>) {
        self.send_parts(req, extra.into_iter().cloned().collect());
    }

    /// A request with several bulk parts beside it (the worker reads them as `extra[1..]`).
    fn send_parts(&self, req: &Request, parts: Vec<JsValue>) {
        let msg = Array::of1(&JsValue::from_str(
            &serde_json::to_string(req).unwrap_or_default(),
        ));
        for x in &parts {
            msg.push(x);
        }
        if let Err(e) = self.worker.borrow().post_message(&msg) {
            self.show_error(
                &format!("The engine did not take the request: {}", js_error(&e)),
                None,
            );
        }
    }

    fn status(&self, state: &str, text: &str) {
        let s: HtmlElement = self.el("model-status");
        s.set_text_content(Some(text));
        let _ = s.set_attribute("data-state", state);
    }

    fn show_error(&self, text: &str, kind: Option<FailureKind>) {
        let box_: HtmlElement = self.el("error");
        self.el::<HtmlElement>("error-text")
            .set_text_content(Some(text));
        // `devicelost`, `network`, ...; empty when no kind applies
        let kind = kind.map_or_else(String::new, |k| format!("{k:?}").to_lowercase());
        let _ = box_.set_attribute("data-kind", &kind);
        box_.set_hidden(false);
        self.el::<HtmlElement>("error-action").set_hidden(true);
    }

    fn clear_error(&self) {
        self.el::<HtmlElement>("error").set_hidden(true);
    }

    fn set_task(&self, t: Task) {
        self.task.set(t);
        let button: HtmlButtonElement = self.el("generate");
        let generating = t == Task::Generating;
        // a model loaded, or one to load again after a device loss
        let ready = self.model.borrow().is_some() || self.lost_model.borrow().is_some();
        button.set_disabled(!(t == Task::Idle && ready));
        let cancel: HtmlButtonElement = self.el("cancel");
        cancel.set_hidden(!matches!(t, Task::Generating | Task::Loading));
        cancel.set_disabled(false);
        if t == Task::Idle {
            self.el::<HtmlElement>("busy-note").set_hidden(true);
        }
        let busy = matches!(t, Task::Importing | Task::Loading | Task::Starting);
        self.el::<HtmlInputElement>("model-folder")
            .set_disabled(busy || generating);
        self.el::<HtmlButtonElement>("pick-folder")
            .set_disabled(busy || generating);
        self.el::<HtmlButtonElement>("model-url-go")
            .set_disabled(busy || generating);
        self.render_models();
    }

    fn render_models(&self) {
        let list: Element = self.el("models");
        list.set_inner_html("");
        let models = self.models.borrow();
        if models.is_empty() {
            let li = self.doc.create_element("li").unwrap();
            li.set_class_name("empty");
            li.set_text_content(Some("No model stored yet."));
            let _ = list.append_child(&li);
        }
        let idle = self.task.get() == Task::Idle;
        let current = self.model.borrow().clone();
        for m in models.iter() {
            let li = self.doc.create_element("li").unwrap();
            let label = self.doc.create_element("span").unwrap();
            let size = if m.complete {
                format!("{}, {}", m.format, human_bytes(m.bytes))
            } else {
                "import did not finish".into()
            };
            let loaded = current.as_deref() == Some(m.name.as_str());
            label.set_text_content(Some(&format!(
                "{} — {size}{}",
                m.name,
                if loaded { " (loaded)" } else { "" }
            )));
            let _ = li.append_child(&label);
            if m.complete && !loaded {
                let b = self.button(&format!("Load {}", m.name), "Load");
                b.set_disabled(!idle);
                let name = m.name.clone();
                on_click(&b, move |p| p.load(&name));
                let _ = li.append_child(&b);
            }
            if !m.complete {
                let b = self.button(&format!("Resume {}", m.name), "Resume");
                b.set_disabled(!idle);
                let _ = b.set_attribute(
                    "title",
                    if m.source_url.is_some() {
                        "Download the rest from the same address"
                    } else {
                        "Choose the same folder again: the files already stored are kept"
                    },
                );
                let (name, url, format) = (m.name.clone(), m.source_url.clone(), m.format.clone());
                on_click(&b, move |p| p.resume(&name, url.as_deref(), &format));
                let _ = li.append_child(&b);
            }
            let b = self.button(&format!("Delete {}", m.name), "Delete");
            b.set_disabled(!idle);
            let (name, bytes) = (m.name.clone(), m.bytes);
            on_click(&b, move |p| {
                let ok = web_sys::window()
                    .and_then(|w| {
                        w.confirm_with_message(&format!(
                            "Delete the model “{name}” ({}) from this browser? You can import it again later.",
                            human_bytes(bytes)
                        ))
                        .ok()
                    })
                    .unwrap_or(false);
                if ok {
                    if p.model.borrow().as_deref() == Some(name.as_str()) {
                        p.model.borrow_mut().take();
                        p.status("none", "No model loaded.");
                    }
                    p.send(&Request::Delete { name: name.clone() }, None);
                }
            });
            let _ = li.append_child(&b);
            let _ = list.append_child(&li);
        }
    }

    fn button(&self, aria: &str, text: &str) -> HtmlButtonElement {
        let b: HtmlButtonElement = self.doc.create_element("button").unwrap().unchecked_into();
        b.set_type("button");
        b.set_text_content(Some(text));
        let _ = b.set_attribute("aria-label", aria);
        b
    }

    fn load(&self, name: &str) {
        self.clear_error();
        self.set_task(Task::Loading);
        self.status("loading", &format!("Loading “{name}”…"));
        self.send(&Request::Load { name: name.into() }, None);
    }

    fn import(&self, files: Vec<(String, File)>) {
        if files.is_empty() {
            return;
        }
        self.clear_error();
        let folder = files[0].0.split('/').next().unwrap_or("model").to_string();
        let resume = self.resume_into.borrow_mut().take();
        let name = match &resume {
            Some((name, _)) => name.clone(),
            None => model_name(&folder),
        };
        if !self.started.get() {
            // Chosen while the engine starts (the inputs are disabled then, but a file
            // dialog opened before may still deliver): import it once the engine is ready.
            self.status(
                "importing",
                &format!("The engine is starting; “{name}” is imported as soon as it is ready…"),
            );
            *self.pending_import.borrow_mut() = Some(files);
            return;
        }
        let paths: Vec<String> = files.iter().map(|(p, _)| p.clone()).collect();
        let blobs = Array::new();
        for (_, f) in &files {
            blobs.push(f);
        }
        self.model.borrow_mut().take();
        self.set_task(Task::Importing);
        self.status(
            "importing",
            &if resume.is_some() {
                format!("Resuming “{name}”: checking which files are stored already…")
            } else {
                format!("Checking “{name}”…")
            },
        );
        let format = match &resume {
            Some((_, f)) if !f.is_empty() => f.clone(),
            _ => self.el::<HtmlSelectElement>("import-format").value(),
        };
        self.send(
            &Request::Import {
                name,
                paths,
                format,
                resume: resume.is_some(),
            },
            Some(&blobs),
        );
    }

    /// Resume an unfinished import: a download from where it stopped; a folder by
    /// choosing it again (a page cannot reopen a folder without the user).
    fn resume(&self, name: &str, url: Option<&str>, format: &str) {
        if let Some(url) = url {
            self.el::<HtmlInputElement>("model-url").set_value(url);
            self.import_url();
            return;
        }
        *self.resume_into.borrow_mut() = Some((name.into(), format.into()));
        self.status(
            "none",
            &format!(
                "Choose the folder “{name}” was imported from: the files already stored are kept."
            ),
        );
        self.el::<HtmlInputElement>("model-folder").click();
    }

    fn import_url(&self) {
        self.clear_error();
        let url = self.el::<HtmlInputElement>("model-url").value();
        let name = match model_url(&url) {
            Ok((_, name)) => name,
            Err(e) => {
                self.show_error(&format!("{e}."), Some(FailureKind::Input));
                return;
            }
        };
        local_set("roentgen.model-url", url.trim());
        self.model.borrow_mut().take();
        self.set_task(Task::Importing);
        self.status("importing", &format!("Looking for “{name}” on the server…"));
        self.send(&Request::ImportUrl { url }, None);
    }

    fn settings(&self) -> Result<Settings, String> {
        let num = |id: &str| self.el::<HtmlInputElement>(id).value().trim().to_string();
        let seed = num("seed");
        let seed: u64 = seed
            .parse()
            .map_err(|_| format!("The seed must be a whole number from 0 up (got “{seed}”)."))?;
        let steps = num("steps");
        let steps: usize = steps
            .parse()
            .map_err(|_| format!("Steps must be a whole number (got “{steps}”)."))?;
        let guidance = num("guidance");
        let guidance: f32 = guidance
            .parse()
            .map_err(|_| format!("Guidance must be a number (got “{guidance}”)."))?;
        let s = Settings {
            prompt: self.el::<HtmlTextAreaElement>("prompt").value(),
            negative_prompt: self.el::<HtmlInputElement>("negative-prompt").value(),
            seed,
            steps,
            guidance,
            scheduler: self.el::<HtmlSelectElement>("scheduler").value(),
            size: self
                .el::<HtmlSelectElement>("size")
                .value()
                .parse()
                .unwrap_or(512),
            edit: None,
            attention_maps: false,
        };
        s.request((None, None)).map_err(workbench::sentence)?;
        Ok(s)
    }

    /// The Cancel button: a generation stops after its step (or drops the image being
    /// decoded); a load cannot stop halfway inside the engine, so the engine is
    /// restarted without it.
    fn cancel(self: &Rc<Self>) {
        match self.task.get() {
            Task::Generating => {
                self.send(&Request::Cancel, None);
                self.el::<HtmlButtonElement>("cancel").set_disabled(true);
                self.el::<HtmlElement>("progress-text")
                    .set_text_content(Some("Cancelling after this step…"));
            }
            Task::Loading => {
                self.generate_after_load.set(false);
                self.skip_autoload.set(true);
                self.restart_worker();
                self.status("starting", "Loading cancelled; restarting the engine…");
            }
            _ => {}
        }
    }

    /// A Generate while something runs is refused, with a sentence (never a second
    /// generation at once).
    fn refuse_busy(&self) {
        let what = match self.task.get() {
            Task::Generating => "an image is being generated",
            Task::Loading => "the model is loading",
            Task::Importing => "a model is being imported",
            Task::Starting => "the engine is starting",
            Task::Idle => "no model is loaded yet",
        };
        let note: HtmlElement = self.el("busy-note");
        note.set_text_content(Some(&format!(
            "Not started: {what}. Wait for it to finish{}.",
            if matches!(self.task.get(), Task::Generating | Task::Loading) {
                ", or press Cancel"
            } else {
                ""
            }
        )));
        note.set_hidden(false);
    }

    fn generate(self: &Rc<Self>) {
        let lost = if self.task.get() == Task::Idle && self.model.borrow().is_none() {
            self.lost_model.borrow_mut().take()
        } else {
            None
        };
        if let Some(name) = lost {
            // After a device loss: load the model again, then generate.
            self.generate_after_load.set(true);
            self.load(&name);
            return;
        }
        match self.task.get() {
            Task::Idle if self.model.borrow().is_some() => {
                match self.settings().and_then(|mut s| {
                    let parts = self.workbench_settings(&mut s)?;
                    Ok((s, parts))
                }) {
                    Ok((s, parts)) => {
                        self.clear_error();
                        *self.settings.borrow_mut() = Some(s.clone());
                        self.set_task(Task::Generating);
                        self.el::<HtmlElement>("progress-box").set_hidden(false);
                        let bar: HtmlProgressElement = self.el("progress");
                        bar.set_value(0.0);
                        self.el::<HtmlElement>("progress-text")
                            .set_text_content(Some("Encoding the prompt…"));
                        self.send_parts(&Request::Generate(s), parts);
                    }
                    Err(m) => self.show_error(&m, Some(FailureKind::Input)),
                }
            }
            _ => self.refuse_busy(),
        }
    }

    fn count_tokens(&self) {
        if self.model.borrow().is_some() {
            let text = self.el::<HtmlTextAreaElement>("prompt").value();
            self.send(&Request::CountTokens { text }, None);
        }
    }

    fn on_reply(self: &Rc<Self>, reply: Reply, bytes: Option<Uint8Array>) {
        match reply {
            Reply::Started {
                adapter,
                limits,
                models,
            } => {
                self.el::<HtmlElement>("gpu-info")
                    .set_text_content(Some(&format!("WebGPU: {adapter}; running on {limits}.")));
                *self.models.borrow_mut() = models;
                self.started.set(true);
                self.set_task(Task::Idle);
                let pending = self.pending_import.borrow_mut().take();
                if let Some(files) = pending {
                    self.import(files);
                    return;
                }
                if self.skip_autoload.replace(false) {
                    self.status(
                        "none",
                        "Loading cancelled: no model loaded. Load one below.",
                    );
                    return;
                }
                // Load the model used last time, or the only one stored.
                let last = local_get("roentgen.model");
                let models = self.models.borrow().clone();
                let pick = models
                    .iter()
                    .filter(|m| m.complete)
                    .find(|m| Some(&m.name) == last.as_ref())
                    .or_else(|| models.iter().find(|m| m.complete))
                    .map(|m| m.name.clone());
                match pick {
                    Some(name) => self.load(&name),
                    None => self.status("none", "No model yet: import a RoentGen folder below."),
                }
            }
            Reply::Models { models } => {
                *self.models.borrow_mut() = models;
                self.render_models();
            }
            Reply::Importing { file, done, total } => {
                self.status(
                    "importing",
                    &format!(
                        "Storing in this browser: {file} ({:.0} %, {} of {})",
                        100.0 * done as f64 / total.max(1) as f64,
                        human_bytes(done),
                        human_bytes(total)
                    ),
                );
            }
            Reply::Loading { part } => {
                self.set_task(Task::Loading);
                self.status("loading", &format!("Loading the model: {part}…"));
            }
            Reply::Ready {
                name,
                millis,
                family,
                scheduler,
                steps,
                guidance,
            } => {
                local_set("roentgen.model", &name);
                self.workbench_family(family, (&scheduler, steps, guidance));
                *self.model.borrow_mut() = Some(name.clone());
                self.set_task(Task::Idle);
                self.status(
                    "ready",
                    &format!("Model “{name}” ready (loaded in {}).", seconds(millis)),
                );
                self.count_tokens();
                if self.generate_after_load.replace(false) {
                    self.generate();
                }
            }
            Reply::Tokens {
                count,
                max,
                dropped,
            } => {
                let c: HtmlElement = self.el("token-count");
                match dropped {
                    Some(d) => {
                        c.set_text_content(Some(&format!(
                            "{count} / {max} tokens: “{d}” does not fit and is ignored"
                        )));
                        c.set_class_name("count over");
                    }
                    None => {
                        c.set_text_content(Some(&format!("{count} / {max} tokens")));
                        c.set_class_name("count");
                    }
                }
            }
            Reply::Step {
                call,
                calls,
                elapsed_ms,
                width,
                height,
            } => {
                let bar: HtmlProgressElement = self.el("progress");
                bar.set_max(calls as f64);
                bar.set_value(call as f64);
                let left = elapsed_ms / call as f64 * (calls - call) as f64;
                let text = if call == calls {
                    format!("Step {call} / {calls} · decoding the image…")
                } else {
                    format!("Step {call} / {calls} · about {} left", seconds(left))
                };
                self.el::<HtmlElement>("progress-text")
                    .set_text_content(Some(&text));
                if let Some(rgba) = bytes {
                    self.draw_preview(&rgba.to_vec(), width, height);
                }
            }
            Reply::Image {
                width,
                height,
                seed,
                millis,
                file_name,
            } => {
                if let Some(png) = bytes {
                    self.show_image(&png, width, height, seed, millis, &file_name);
                }
            }
            Reply::Dicom { file_name } => {
                if let Some(b) = bytes {
                    self.workbench_dicom(&b.to_vec(), &file_name);
                }
            }
            Reply::WordMaps {
                words,
                tokens,
                h,
                w,
            } => {
                if let Some(b) = bytes {
                    self.workbench_maps(words, tokens, h, w, &b.to_vec());
                }
            }
            Reply::Cancelled => {
                self.set_task(Task::Idle);
                self.el::<HtmlElement>("progress-text")
                    .set_text_content(Some("Cancelled."));
                self.el::<HtmlElement>("preview").set_hidden(true);
            }
            Reply::Memory(m) => self.show_memory(&m),
            Reply::Failed { kind, message } => self.on_failure(kind, &message),
        }
    }

    fn show_memory(&self, m: &MemoryFigures) {
        let mib = |b: u64| format!("{:.1}", b as f64 / (1u64 << 20) as f64);
        let p: HtmlElement = self.el("memory");
        p.set_text_content(Some(&format!(
            "Engine memory: GPU {} MiB in buffers ({} MiB weights, peak {} MiB in the last task); WebAssembly {} MiB.",
            mib(m.gpu_allocated),
            mib(m.gpu_weights),
            mib(m.gpu_peak),
            mib(m.wasm)
        )));
        for (k, v) in [
            ("gpu-allocated", m.gpu_allocated),
            ("gpu-in-use", m.gpu_in_use),
            ("gpu-peak", m.gpu_peak),
            ("gpu-weights", m.gpu_weights),
            ("wasm", m.wasm),
        ] {
            let _ = p.set_attribute(&format!("data-{k}"), &v.to_string());
        }
    }

    /// Replaces the engine's worker with a fresh one (after a crash, or to stop a
    /// load): the old one is terminated and its late events ignored.
    fn restart_worker(self: &Rc<Self>) {
        self.worker.borrow().terminate();
        match spawn_worker(self.worker_id.get() + 1) {
            Ok(w) => {
                *self.worker.borrow_mut() = w;
                self.worker_id.set(self.worker_id.get() + 1);
                self.model.borrow_mut().take();
                self.started.set(false);
                self.set_task(Task::Starting);
            }
            Err(m) => self.show_error(&m, Some(FailureKind::Other)),
        }
    }

    /// The worker threw (a panic in the engine, out of memory): say so, start a new
    /// one, and load the model again.
    fn on_worker_crash(self: &Rc<Self>, msg: &str) {
        let was = self.task.get();
        let lost = self.model.borrow().clone();
        self.generate_after_load.set(false);
        self.restart_worker();
        self.show_error(
            &format!(
                "The engine stopped unexpectedly ({}) and was restarted{}. If it happens again, reload the page.",
                if msg.is_empty() { "no reason given" } else { msg },
                if lost.is_some() { "; the model is loaded again" } else { "" }
            ),
            Some(FailureKind::Other),
        );
        self.status("starting", "Restarting the engine…");
        if was == Task::Generating {
            self.el::<HtmlElement>("progress-text")
                .set_text_content(Some("Stopped: the engine crashed."));
            self.el::<HtmlElement>("preview").set_hidden(true);
        }
    }

    fn on_failure(&self, kind: FailureKind, message: &str) {
        let was = self.task.get();
        if kind != FailureKind::Busy {
            self.generate_after_load.set(false);
        }
        let text = match kind {
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
        };
        self.show_error(&text, Some(kind));
        match kind {
            FailureKind::Busy => return,
            FailureKind::NoWebGpu => {
                self.model.borrow_mut().take();
                self.status(
                    "unavailable",
                    "WebGPU is not available: no model can run here.",
                );
                // Stays "starting": nothing can be imported or generated.
                self.set_task(Task::Starting);
            }
            FailureKind::DeviceLost => {
                if let Some(name) = self.model.borrow_mut().take() {
                    *self.lost_model.borrow_mut() = Some(name);
                }
                self.generate_after_load.set(false);
                self.status(
                    "lost",
                    "The GPU was lost: load the model again, or press Generate to load it and go on.",
                );
                self.set_task(Task::Idle);
                self.el::<HtmlElement>("error-action")
                    .set_hidden(self.lost_model.borrow().is_none());
            }
            _ => {
                if matches!(was, Task::Importing | Task::Loading) {
                    self.model.borrow_mut().take();
                    self.status("error", "No model loaded.");
                }
                self.set_task(Task::Idle);
            }
        }
        if was == Task::Generating {
            self.el::<HtmlElement>("progress-text")
                .set_text_content(Some("Stopped."));
        }
    }

    fn draw_preview(&self, rgba: &[u8], width: usize, height: usize) {
        let canvas: HtmlCanvasElement = self.el("preview");
        canvas.set_width(width as u32);
        canvas.set_height(height as u32);
        canvas.set_hidden(false);
        let Ok(Some(ctx)) = canvas.get_context("2d") else {
            return;
        };
        let ctx: CanvasRenderingContext2d = ctx.unchecked_into();
        if let Ok(img) = ImageData::new_with_u8_clamped_array_and_sh(
            wasm_bindgen::Clamped(rgba),
            width as u32,
            height as u32,
        ) {
            let _ = ctx.put_image_data(&img, 0.0, 0.0);
        }
    }

    fn show_image(
        &self,
        png: &Uint8Array,
        width: usize,
        height: usize,
        seed: u64,
        millis: f64,
        file_name: &str,
    ) {
        let parts = Array::of1(png);
        let opts = BlobPropertyBag::new();
        opts.set_type("image/png");
        let Ok(blob) = Blob::new_with_u8_array_sequence_and_options(&parts, &opts) else {
            return;
        };
        let Ok(url) = Url::create_object_url_with_blob(&blob) else {
            return;
        };
        let s = self.settings.borrow().clone().unwrap_or_default();
        let mode = match &s.edit {
            None => String::new(),
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
        let n = self.generations.get() + 1;
        self.generations.set(n);
        let img: HtmlImageElement = self.el("result");
        img.set_src(&url);
        img.set_alt(&format!(
            "Synthetic chest X-ray generated from “{}”",
            s.prompt
        ));
        let _ = img.set_attribute("data-generation", &n.to_string());
        img.set_hidden(false);
        self.el::<HtmlElement>("preview").set_hidden(true);
        self.el::<HtmlElement>("result-text")
            .set_text_content(Some(&caption));
        let a: HtmlAnchorElement = self.el("download");
        a.set_href(&url);
        a.set_download(file_name);
        a.set_hidden(false);
        self.el::<HtmlElement>("progress-text")
            .set_text_content(Some(&format!("Done in {}.", seconds(millis))));
        let bar: HtmlProgressElement = self.el("progress");
        bar.set_value(bar.max());
        // The gallery: newest first; a click shows the image again.
        let gallery: Element = self.el("gallery");
        let li = self.doc.create_element("li").unwrap();
        let thumb: HtmlImageElement = self.doc.create_element("img").unwrap().unchecked_into();
        thumb.set_src(&url);
        thumb.set_alt(&format!("Synthetic image {n}: {}", s.prompt));
        let b = self.button(&format!("Show image {n}"), "");
        let _ = b.append_child(&thumb);
        let cap = self.doc.create_element("span").unwrap();
        cap.set_text_content(Some(&format!("seed {seed}")));
        let _ = b.append_child(&cap);
        let (url2, caption2, name2) = (url.clone(), caption.clone(), file_name.to_string());
        on_click(&b, move |p| {
            let img: HtmlImageElement = p.el("result");
            img.set_src(&url2);
            p.el::<HtmlElement>("result-text")
                .set_text_content(Some(&caption2));
            let a: HtmlAnchorElement = p.el("download");
            a.set_href(&url2);
            a.set_download(&name2);
        });
        let _ = li.append_child(&b);
        let _ = gallery.prepend_with_node_1(&li);
        self.workbench_image(&png.to_vec(), &url, &caption);
        self.set_task(Task::Idle);
    }
}

thread_local! {
    static PAGE: RefCell<Option<Rc<Page>>> = const { RefCell::new(None) };
}

fn page() -> Rc<Page> {
    PAGE.with(|p| p.borrow().clone())
        .expect("the page is set up")
}

fn on_click(target: &HtmlElement, f: impl Fn(&Rc<Page>) + 'static) {
    EventListener::new(target, "click", move |_| f(&page())).forget();
}

fn local_get(key: &str) -> Option<String> {
    web_sys::window()?
        .local_storage()
        .ok()??
        .get_item(key)
        .ok()?
}

fn local_set(key: &str, value: &str) {
    if let Some(s) = web_sys::window().and_then(|w| w.local_storage().ok().flatten()) {
        let _ = s.set_item(key, value);
    }
}

/// The files of an `<input webkitdirectory>`, with their paths in the picked folder.
fn input_files(input: &HtmlInputElement) -> Vec<(String, File)> {
    let Some(list) = input.files() else {
        return vec![];
    };
    (0..list.length())
        .filter_map(|i| list.get(i))
        .map(|f| {
            let rel = Reflect::get(&f, &"webkitRelativePath".into())
                .ok()
                .and_then(|v| v.as_string())
                .filter(|s| !s.is_empty())
                .unwrap_or_else(|| f.name());
            (rel, f)
        })
        .collect()
}

/// `showDirectoryPicker()` and the files under the chosen folder.
async fn pick_folder() -> Result<Vec<(String, File)>, String> {
    let window = web_sys::window().ok_or("no window")?;
    let picker = Reflect::get(&window, &"showDirectoryPicker".into()).map_err(|e| js_error(&e))?;
    let picker: js_sys::Function = picker
        .dyn_into()
        .map_err(|_| "no directory picker".to_string())?;
    let promise: js_sys::Promise = picker
        .call0(&window)
        .map_err(|e| js_error(&e))?
        .unchecked_into();
    let handle: FileSystemDirectoryHandle = JsFuture::from(promise)
        .await
        .map_err(|e| js_error(&e))?
        .unchecked_into();
    let files = walk(&handle, &format!("{}/", handle.name()))
        .await
        .map_err(|e| e.to_string())?;
    Ok(files
        .into_iter()
        .map(|(p, b)| (p, b.unchecked_into()))
        .collect())
}

/// Starts the engine in a module Web Worker; its events reach the page while it is
/// the current one (`id`). With `?test-hooks` on the page, the worker gets it too.
fn spawn_worker(id: u32) -> Result<Worker, String> {
    let opts = WorkerOptions::new();
    opts.set_type(WorkerType::Module);
    let q = query();
    let url = if q.contains("test-hooks") {
        format!("worker.js{q}")
    } else {
        "worker.js".into()
    };
    let worker = Worker::new_with_options(&url, &opts).map_err(|e| {
        format!(
            "The engine could not start in a Web Worker: {}. Use a current Chrome, Edge, Firefox or Safari.",
            js_error(&e)
        )
    })?;
    let current = move || page().worker_id.get() == id;
    EventListener::new(&worker, "message", move |ev| {
        if !current() {
            return;
        }
        let ev: &MessageEvent = ev.unchecked_ref();
        let data: Array = ev.data().unchecked_into();
        let Some(json) = data.get(0).as_string() else {
            return;
        };
        let bytes = data.get(1).dyn_into::<Uint8Array>().ok();
        match serde_json::from_str::<Reply>(&json) {
            Ok(r) => page().on_reply(r, bytes),
            Err(e) => page().show_error(
                &format!("The engine sent an unreadable message ({e})."),
                None,
            ),
        }
    })
    .forget();
    EventListener::new(&worker, "error", move |ev| {
        if !current() {
            return;
        }
        let msg = Reflect::get(ev, &"message".into())
            .ok()
            .and_then(|m| m.as_string())
            .unwrap_or_default();
        let p = page();
        if !p.started.get() && p.worker_id.get() == 0 {
            // The first worker never came up: no WebAssembly or module workers here.
            p.show_error(
                &format!("The engine could not start ({msg}). Reload the page; if it happens again, this browser may lack WebAssembly or module workers."),
                Some(FailureKind::Other),
            );
            p.status("error", "No model loaded.");
            return;
        }
        p.on_worker_crash(&msg);
    })
    .forget();
    Ok(worker)
}

/// `window.roentgenTest` (only with `?test-hooks`): `send(json)` posts a raw request
/// to the engine (the test hooks `test_lose_device`, `test_crash`), `restart()`
/// terminates the engine and starts a new one as after a crash.
fn expose_test_hooks(window: &web_sys::Window) {
    let hooks = js_sys::Object::new();
    let send = Closure::<dyn Fn(String)>::new(|json: String| {
        let msg = Array::of1(&JsValue::from_str(&json));
        let _ = page().worker.borrow().post_message(&msg);
    });
    let _ = Reflect::set(&hooks, &"send".into(), send.as_ref());
    send.forget();
    let crash = Closure::<dyn Fn()>::new(|| page().on_worker_crash("terminated by the page"));
    let _ = Reflect::set(&hooks, &"restart".into(), crash.as_ref());
    crash.forget();
    let _ = Reflect::set(window, &"roentgenTest".into(), &hooks);
}

fn register_service_worker() {
    let Some(window) = web_sys::window() else {
        return;
    };
    let nav = window.navigator();
    if Reflect::has(&nav, &"serviceWorker".into()).unwrap_or(false) {
        let _ = nav.service_worker().register("sw.js");
    }
    // Ask the browser not to evict stored models under storage pressure.
    if let Ok(p) = nav.storage().persist() {
        let _ = p;
    }
}

pub fn main() {
    let window = web_sys::window().expect("a window");
    let doc = window.document().expect("a document");
    register_service_worker();

    let worker = match spawn_worker(0) {
        Ok(w) => w,
        Err(m) => {
            let b: HtmlElement = el(&doc, "error");
            el::<HtmlElement>(&doc, "error-text").set_text_content(Some(&m));
            b.set_hidden(false);
            return;
        }
    };
    let p = Rc::new(Page {
        doc: doc.clone(),
        worker: RefCell::new(worker),
        worker_id: Cell::new(0),
        task: Cell::new(Task::Starting),
        model: RefCell::new(None),
        models: RefCell::new(vec![]),
        settings: RefCell::new(None),
        generations: Cell::new(0),
        lost_model: RefCell::new(None),
        started: Cell::new(false),
        pending_import: RefCell::new(None),
        generate_after_load: Cell::new(false),
        skip_autoload: Cell::new(false),
        resume_into: RefCell::new(None),
    });
    PAGE.with(|slot| *slot.borrow_mut() = Some(p.clone()));
    workbench::setup(&p);
    if query().contains("test-hooks") {
        expose_test_hooks(&window);
    }

    // Model import: the directory picker where the browser has one, the folder input always.
    let pick: HtmlButtonElement = el(&doc, "pick-folder");
    if Reflect::has(&window, &"showDirectoryPicker".into()).unwrap_or(false) {
        pick.set_hidden(false);
        el::<HtmlElement>(&doc, "folder-label").set_text_content(Some("or select the folder here"));
    }
    on_click(&pick, |_| {
        wasm_bindgen_futures::spawn_local(async {
            match pick_folder().await {
                Ok(files) => page().import(files),
                Err(e) if e.contains("AbortError") => {}
                Err(e) => page().show_error(&format!("The folder could not be read: {e}."), None),
            }
        })
    });
    let input: HtmlInputElement = el(&doc, "model-folder");
    EventListener::new(&input, "change", |ev| {
        let input: HtmlInputElement = ev.target().unwrap().unchecked_into();
        let files = input_files(&input);
        page().import(files);
        input.set_value("");
    })
    .forget();
    // The dialog Resume opened was closed without a folder: the next import is a new one.
    EventListener::new(&input, "cancel", |_| {
        let p = page();
        if p.resume_into.borrow_mut().take().is_some() && p.task.get() == Task::Idle {
            p.status("none", "Resume cancelled: no folder was chosen.");
        }
    })
    .forget();
    // A folder chosen before this script ran (the input is disabled in the HTML, but a
    // dialog opened earlier can still deliver): take it too.
    if input.files().is_some_and(|f| f.length() > 0) {
        let files = input_files(&input);
        p.import(files);
        input.set_value("");
    }
    let url_form: HtmlElement = el(&doc, "url-form");
    if let Some(url) = local_get("roentgen.model-url") {
        el::<HtmlInputElement>(&doc, "model-url").set_value(&url);
    }
    // Not passive: the submit's default (a page reload) must be prevented.
    EventListener::new_with_options(
        &url_form,
        "submit",
        EventListenerOptions::enable_prevent_default(),
        |ev| {
            ev.prevent_default();
            page().import_url();
        },
    )
    .forget();
    on_click(&el(&doc, "error-action"), |p| {
        let name = p.lost_model.borrow_mut().take();
        if let Some(name) = name {
            p.load(&name);
        }
    });

    // The form.
    let form: HtmlElement = el(&doc, "form");
    EventListener::new_with_options(
        &form,
        "submit",
        gloo_events::EventListenerOptions::enable_prevent_default(),
        |ev| {
            ev.prevent_default();
            page().generate();
        },
    )
    .forget();
    on_click(&el(&doc, "cancel"), |p| p.cancel());
    let prompt: HtmlElement = el(&doc, "prompt");
    EventListener::new(&prompt, "input", |_| page().count_tokens()).forget();
    EventListener::new(&prompt, "keydown", |ev| {
        let k: &web_sys::KeyboardEvent = ev.unchecked_ref();
        if k.key() == "Enter" && (k.ctrl_key() || k.meta_key()) {
            k.prevent_default();
            page().generate();
        }
    })
    .forget();
    on_click(&el(&doc, "dice"), |p| {
        let seed = (js_sys::Math::random() * 4_294_967_296.0).floor() as u64;
        p.el::<HtmlInputElement>("seed")
            .set_value(&seed.to_string());
    });
    p.set_task(Task::Starting);
}
