//! The page: wires `www/index.html`'s controls to the engine worker. The engine's state
//! lives in the worker; what the page decides by is [`PageState`] (`page_state.rs`, a
//! pure reducer tested natively), and this file turns clicks and the worker's messages
//! into its events and its effects into DOM calls.

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

use super::page_state::{Effect, Event, FormFields, PageState, PickedFolder, parse_settings};
use super::protocol::{FailureKind, MemoryFigures, Reply, Request, Settings};
use super::store::{js_error, query, walk};

mod workbench;

/// The page's DOM side: the elements, the worker, the data too bulky or too
/// JavaScript-bound for the state (picked `File`s, the form's image bytes, the
/// workbench's pixels and URLs). Every decision is [`PageState::update`]'s: events go
/// in through [`Page::dispatch`], effects come out and are carried out here.
struct Page {
    doc: Document,
    /// The engine's worker; replaced when it crashes or a load is cancelled.
    worker: RefCell<Worker>,
    state: RefCell<PageState>,
    /// Picked folders' files by [`PickedFolder::id`], until their import is posted.
    folders: RefCell<Vec<(u32, Vec<File>)>>,
    next_folder: Cell<u32>,
    /// The init image and mask read with the form, for the `Generate` being posted.
    form_parts: RefCell<Vec<JsValue>>,
    bench: workbench::Workbench,
}

fn el<T: JsCast>(doc: &Document, id: &str) -> T {
    doc.get_element_by_id(id)
        .unwrap_or_else(|| panic!("index.html has no #{id}"))
        .unchecked_into()
}

impl Page {
    fn el<T: JsCast>(&self, id: &str) -> T {
        el(&self.doc, id)
    }

    fn dispatch(&self, event: Event) {
        self.dispatch_with(event, None);
    }

    /// Runs an event through the state, then its effects; `bytes` are the bulk part of
    /// the worker's message, if the event is one. (The state is not borrowed while the
    /// effects run, so an effect may dispatch again.)
    fn dispatch_with(&self, event: Event, bytes: Option<&Uint8Array>) {
        let effects = self.state.borrow_mut().update(event);
        for e in effects {
            self.apply(e, bytes);
        }
    }

    fn apply(&self, effect: Effect, bytes: Option<&Uint8Array>) {
        match effect {
            Effect::Post(req) => {
                let parts = match req {
                    Request::Generate(_) => std::mem::take(&mut *self.form_parts.borrow_mut()),
                    _ => vec![],
                };
                self.send_parts(&req, parts);
            }
            Effect::PostImport { folder, request } => {
                let blobs = Array::new();
                for f in self.take_folder(folder) {
                    blobs.push(&f);
                }
                self.send_parts(&request, vec![blobs.into()]);
            }
            Effect::RestartWorker { id } => self.restart_worker(id),
            Effect::Status { state, text } => self.status(state, &text),
            Effect::Error { text, kind } => self.show_error(&text, kind),
            Effect::OfferReload => self.el::<HtmlElement>("error-action").set_hidden(false),
            Effect::ClearError => self.el::<HtmlElement>("error").set_hidden(true),
            Effect::Controls => self.render_controls(),
            Effect::Models => self.render_models(),
            Effect::ReadForm => {
                let form = self.read_form();
                self.dispatch(Event::Form(form));
            }
            Effect::CountTokens => {
                let text = self.el::<HtmlTextAreaElement>("prompt").value();
                self.send_parts(&Request::CountTokens { text }, vec![]);
            }
            Effect::GpuInfo(text) => self
                .el::<HtmlElement>("gpu-info")
                .set_text_content(Some(&text)),
            Effect::RememberModel(name) => local_set("roentgen.model", &name),
            Effect::RememberUrl(url) => local_set("roentgen.model-url", &url),
            Effect::SetUrlInput(url) => self.el::<HtmlInputElement>("model-url").set_value(&url),
            // The repo and the endpoint only: the token is never kept (it stays in its
            // field for this page's life, and in the worker for one download).
            Effect::RememberHub { repo, endpoint } => {
                local_set("roentgen.hub-repo", &repo);
                local_set("roentgen.hub-endpoint", &endpoint);
            }
            Effect::SubmitHub(repo) => {
                self.el::<HtmlInputElement>("hub-repo").set_value(&repo);
                self.submit_hub();
            }
            Effect::OpenFolderDialog => self.el::<HtmlInputElement>("model-folder").click(),
            Effect::ProgressStart => {
                self.el::<HtmlElement>("progress-box").set_hidden(false);
                self.el::<HtmlProgressElement>("progress").set_value(0.0);
                self.progress_text("Encoding the prompt…");
            }
            Effect::ProgressText(text) => self.progress_text(text),
            Effect::Step {
                call,
                calls,
                text,
                width,
                height,
            } => {
                let bar: HtmlProgressElement = self.el("progress");
                bar.set_max(calls as f64);
                bar.set_value(call as f64);
                self.progress_text(&text);
                if let Some(rgba) = bytes {
                    self.draw_preview(&rgba.to_vec(), width, height);
                }
            }
            Effect::HidePreview => self.el::<HtmlElement>("preview").set_hidden(true),
            Effect::ShowImage {
                generation,
                caption,
                alt,
                thumb_alt,
                thumb_caption,
                done,
                file_name,
            } => {
                if let Some(png) = bytes {
                    self.show_image(
                        png,
                        generation,
                        &caption,
                        &alt,
                        &thumb_alt,
                        &thumb_caption,
                        &done,
                        &file_name,
                    );
                }
            }
            Effect::Dicom { file_name } => {
                if let Some(b) = bytes {
                    self.workbench_dicom(&b.to_vec(), &file_name);
                }
            }
            Effect::WordMaps {
                words,
                tokens,
                h,
                w,
                metadata,
            } => {
                if let Some(b) = bytes {
                    self.workbench_maps(words, tokens, h, w, metadata, &b.to_vec());
                }
            }
            Effect::Memory(m) => self.show_memory(&m),
            Effect::Tokens { text, over } => {
                let c: HtmlElement = self.el("token-count");
                c.set_text_content(Some(&text));
                c.set_class_name(if over { "count over" } else { "count" });
            }
            Effect::Family {
                family,
                previous,
                recipe,
            } => self.workbench_family(family, &previous, &recipe),
            Effect::Mode(mode) => self.show_mode(mode),
            Effect::Layer(layer) => self.show_layer(layer),
            Effect::SetScheduler(name) => self.el::<HtmlSelectElement>("scheduler").set_value(name),
            Effect::ClearMask(layer) => self.clear_mask(layer),
            Effect::DrawInit => self.draw_init(),
            Effect::SetPrompt(p) => self.el::<HtmlTextAreaElement>("prompt").set_value(&p),
        }
    }

    /// The files of picked folder `id`; those picked before it are dropped (a newer
    /// pick replaced them).
    fn take_folder(&self, id: u32) -> Vec<File> {
        let mut folders = self.folders.borrow_mut();
        let files = folders
            .iter()
            .position(|(i, _)| *i == id)
            .map(|k| folders.remove(k).1)
            .unwrap_or_default();
        folders.retain(|(i, _)| *i > id);
        files
    }

    /// A folder picked (the input, the directory picker): its files stay here.
    fn pick(&self, files: Vec<(String, File)>) {
        let id = self.next_folder.get() + 1;
        self.next_folder.set(id);
        let paths = files.iter().map(|(p, _)| p.clone()).collect();
        self.folders
            .borrow_mut()
            .push((id, files.into_iter().map(|(_, f)| f).collect()));
        let format = self.el::<HtmlSelectElement>("import-format").value();
        self.dispatch(Event::FolderPicked(PickedFolder { id, paths, format }));
    }

    /// A request with its bulk parts beside it (the worker reads them as `extra[1..]`).
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

    fn progress_text(&self, text: &str) {
        self.el::<HtmlElement>("progress-text")
            .set_text_content(Some(text));
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

    /// The buttons and inputs as the state has them, the busy note, the model list.
    fn render_controls(&self) {
        let (c, note) = {
            let s = self.state.borrow();
            (s.controls(), s.busy_note.clone())
        };
        self.el::<HtmlButtonElement>("generate")
            .set_disabled(c.generate_disabled);
        let cancel: HtmlButtonElement = self.el("cancel");
        cancel.set_hidden(c.cancel_hidden);
        cancel.set_disabled(c.cancel_disabled);
        self.el::<HtmlInputElement>("model-folder")
            .set_disabled(c.import_disabled);
        self.el::<HtmlButtonElement>("pick-folder")
            .set_disabled(c.import_disabled);
        self.el::<HtmlButtonElement>("model-url-go")
            .set_disabled(c.import_disabled);
        self.el::<HtmlButtonElement>("hub-download")
            .set_disabled(c.import_disabled);
        let busy: HtmlElement = self.el("busy-note");
        match note {
            Some(text) => {
                busy.set_text_content(Some(&text));
                busy.set_hidden(false);
            }
            None => busy.set_hidden(true),
        }
        self.render_models();
    }

    fn render_models(&self) {
        let list: Element = self.el("models");
        list.set_inner_html("");
        let rows = self.state.borrow().model_rows();
        if rows.is_empty() {
            let li = self.doc.create_element("li").unwrap();
            li.set_class_name("empty");
            li.set_text_content(Some("No model stored yet."));
            let _ = list.append_child(&li);
        }
        for row in rows {
            let li = self.doc.create_element("li").unwrap();
            let label = self.doc.create_element("span").unwrap();
            label.set_text_content(Some(&row.label));
            let _ = li.append_child(&label);
            if let Some(family) = &row.family {
                let line = self.doc.create_element("small").unwrap();
                line.set_class_name("family");
                let _ = line.set_attribute("data-testid", "model-family");
                line.set_text_content(Some(family));
                let _ = li.append_child(&line);
            }
            if row.load {
                let b = self.button(&format!("Load {}", row.name), "Load");
                b.set_disabled(!row.enabled);
                let name = row.name.clone();
                on_click(&b, move |p| p.dispatch(Event::LoadClicked(name.clone())));
                let _ = li.append_child(&b);
            }
            if let Some(title) = row.resume {
                let b = self.button(&format!("Resume {}", row.name), "Resume");
                b.set_disabled(!row.enabled);
                let _ = b.set_attribute("title", title);
                let name = row.name.clone();
                on_click(&b, move |p| p.dispatch(Event::ResumeClicked(name.clone())));
                let _ = li.append_child(&b);
            }
            let b = self.button(&format!("Delete {}", row.name), "Delete");
            b.set_disabled(!row.enabled);
            let (name, question) = (row.name.clone(), row.delete_question.clone());
            on_click(&b, move |p| {
                let ok = web_sys::window()
                    .and_then(|w| w.confirm_with_message(&question).ok())
                    .unwrap_or(false);
                if ok {
                    p.dispatch(Event::DeleteConfirmed(name.clone()));
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

    /// The form's settings with the workbench's edit and maps choice; the image and
    /// mask that go with them wait in `form_parts` for the `Generate` request.
    fn read_form(&self) -> Result<Settings, String> {
        let value = |id: &str| self.el::<HtmlInputElement>(id).value();
        let select = |id: &str| self.el::<HtmlSelectElement>(id).value();
        let mut s = parse_settings(&FormFields {
            prompt: self.el::<HtmlTextAreaElement>("prompt").value(),
            negative_prompt: value("negative-prompt"),
            seed: value("seed"),
            steps: value("steps"),
            guidance: value("guidance"),
            scheduler: select("scheduler"),
            size: select("size"),
        })?;
        let parts = self.workbench_settings(&mut s)?;
        *self.form_parts.borrow_mut() = parts;
        Ok(s)
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

    /// Replaces the engine's worker with worker `id` (after a crash, or to stop a
    /// load): the old one is terminated; the state ignores its late events.
    fn restart_worker(&self, id: u32) {
        self.worker.borrow().terminate();
        match spawn_worker(id) {
            Ok(w) => *self.worker.borrow_mut() = w,
            Err(m) => self.show_error(&m, Some(FailureKind::Other)),
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

    #[allow(clippy::too_many_arguments)]
    fn show_image(
        &self,
        png: &Uint8Array,
        n: u32,
        caption: &str,
        alt: &str,
        thumb_alt: &str,
        thumb_caption: &str,
        done: &str,
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
        let img: HtmlImageElement = self.el("result");
        img.set_src(&url);
        img.set_alt(alt);
        let _ = img.set_attribute("data-generation", &n.to_string());
        img.set_hidden(false);
        self.el::<HtmlElement>("preview").set_hidden(true);
        self.el::<HtmlElement>("result-text")
            .set_text_content(Some(caption));
        let a: HtmlAnchorElement = self.el("download");
        a.set_href(&url);
        a.set_download(file_name);
        a.set_hidden(false);
        self.progress_text(done);
        let bar: HtmlProgressElement = self.el("progress");
        bar.set_value(bar.max());
        // The gallery: newest first; a click shows the image again.
        let gallery: Element = self.el("gallery");
        let li = self.doc.create_element("li").unwrap();
        let thumb: HtmlImageElement = self.doc.create_element("img").unwrap().unchecked_into();
        thumb.set_src(&url);
        thumb.set_alt(thumb_alt);
        let b = self.button(&format!("Show image {n}"), "");
        let _ = b.append_child(&thumb);
        let cap = self.doc.create_element("span").unwrap();
        cap.set_text_content(Some(thumb_caption));
        let _ = b.append_child(&cap);
        let (url2, caption2, name2) = (url.clone(), caption.to_string(), file_name.to_string());
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
        self.workbench_image(&png.to_vec(), &url, caption);
    }
}

thread_local! {
    static PAGE: RefCell<Option<Rc<Page>>> = const { RefCell::new(None) };
}

fn page() -> Rc<Page> {
    PAGE.with(|p| p.borrow().clone())
        .expect("the page is set up")
}

impl Page {
    /// The Hub form as typed, with the import format chosen.
    fn submit_hub(&self) {
        let value = |id: &str| self.el::<HtmlInputElement>(id).value();
        let event = Event::HubSubmitted {
            repo: value("hub-repo"),
            endpoint: value("hub-endpoint"),
            token: super::hub::Token::typed(&value("hub-token")),
            format: self.el::<HtmlSelectElement>("import-format").value(),
        };
        self.dispatch(event);
    }
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

/// Starts the engine in a module Web Worker; its events go to the state marked with
/// `id` (the state ignores those of a worker it replaced). With `?test-hooks` on the
/// page, the worker gets it too.
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
    EventListener::new(&worker, "message", move |ev| {
        let ev: &MessageEvent = ev.unchecked_ref();
        let data: Array = ev.data().unchecked_into();
        let Some(json) = data.get(0).as_string() else {
            return;
        };
        let bytes = data.get(1).dyn_into::<Uint8Array>().ok();
        match serde_json::from_str::<Reply>(&json) {
            Ok(reply) => page().dispatch_with(Event::Reply { worker: id, reply }, bytes.as_ref()),
            Err(e) => page().dispatch(Event::Unreadable {
                worker: id,
                error: e.to_string(),
            }),
        }
    })
    .forget();
    EventListener::new(&worker, "error", move |ev| {
        let message = Reflect::get(ev, &"message".into())
            .ok()
            .and_then(|m| m.as_string())
            .unwrap_or_default();
        page().dispatch(Event::WorkerError {
            worker: id,
            message,
        });
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
    let crash = Closure::<dyn Fn()>::new(|| page().dispatch(Event::RestartHook));
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
        state: RefCell::new(PageState::new(local_get("roentgen.model"))),
        folders: RefCell::new(vec![]),
        next_folder: Cell::new(0),
        form_parts: RefCell::new(vec![]),
        bench: workbench::Workbench::default(),
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
                Ok(files) => page().pick(files),
                Err(e) if e.contains("AbortError") => {}
                Err(e) => page().dispatch(Event::FolderUnreadable(e)),
            }
        })
    });
    let input: HtmlInputElement = el(&doc, "model-folder");
    EventListener::new(&input, "change", |ev| {
        let input: HtmlInputElement = ev.target().unwrap().unchecked_into();
        let files = input_files(&input);
        page().pick(files);
        input.set_value("");
    })
    .forget();
    // The dialog Resume opened was closed without a folder: the next import is a new one.
    EventListener::new(&input, "cancel", |_| {
        page().dispatch(Event::FolderDialogCancelled)
    })
    .forget();
    // A folder chosen before this script ran (the input is disabled in the HTML, but a
    // dialog opened earlier can still deliver): take it too.
    if input.files().is_some_and(|f| f.length() > 0) {
        let files = input_files(&input);
        p.pick(files);
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
            let p = page();
            let url = p.el::<HtmlInputElement>("model-url").value();
            p.dispatch(Event::UrlSubmitted(url));
        },
    )
    .forget();
    // The Hub form: the repo and the endpoint setting as last used (never the token).
    if let Some(repo) = local_get("roentgen.hub-repo") {
        el::<HtmlInputElement>(&doc, "hub-repo").set_value(&repo);
    }
    el::<HtmlInputElement>(&doc, "hub-endpoint").set_value(
        &local_get("roentgen.hub-endpoint")
            .unwrap_or_else(|| super::hub::DEFAULT_ENDPOINT.to_string()),
    );
    let list: HtmlElement = el(&doc, "hub-known");
    for (repo, label) in super::hub::KNOWN_REPOS {
        if let Ok(o) = doc.create_element("option") {
            o.set_attribute("value", repo).ok();
            o.set_attribute("label", label).ok();
            list.append_child(&o).ok();
        }
    }
    EventListener::new_with_options(
        &el::<HtmlElement>(&doc, "hub-form"),
        "submit",
        EventListenerOptions::enable_prevent_default(),
        |ev| {
            ev.prevent_default();
            page().submit_hub();
        },
    )
    .forget();
    on_click(&el(&doc, "error-action"), |p| {
        p.dispatch(Event::ReloadLostClicked)
    });

    // The form.
    let form: HtmlElement = el(&doc, "form");
    EventListener::new_with_options(
        &form,
        "submit",
        gloo_events::EventListenerOptions::enable_prevent_default(),
        |ev| {
            ev.prevent_default();
            page().dispatch(Event::GenerateClicked);
        },
    )
    .forget();
    on_click(&el(&doc, "cancel"), |p| p.dispatch(Event::CancelClicked));
    let prompt: HtmlElement = el(&doc, "prompt");
    EventListener::new(&prompt, "input", |_| page().dispatch(Event::PromptEdited)).forget();
    EventListener::new(&prompt, "keydown", |ev| {
        let k: &web_sys::KeyboardEvent = ev.unchecked_ref();
        if k.key() == "Enter" && (k.ctrl_key() || k.meta_key()) {
            k.prevent_default();
            page().dispatch(Event::GenerateClicked);
        }
    })
    .forget();
    on_click(&el(&doc, "dice"), |p| {
        let seed = (js_sys::Math::random() * 4_294_967_296.0).floor() as u64;
        p.el::<HtmlInputElement>("seed")
            .set_value(&seed.to_string());
    });
    p.render_controls();
}
