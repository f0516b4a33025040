//! The engine's side: a dedicated Web Worker (`www/worker.js` starts it) that owns the
//! GPU, the stored models and the loaded pipeline. Requests arrive as messages; long
//! ones (import, load, generate) run one at a time, while `cancel` and token counts are
//! answered at once (they arrive while a generation awaits the GPU).

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::{Arc, Mutex};

use js_sys::{Array, Uint8Array};
use wasm_bindgen::prelude::*;
use web_sys::{Blob, DedicatedWorkerGlobalScope, MessageEvent};

use super::hub::{self, HubSource, RepoId, Token};
use super::protocol::{
    FailureKind, MemoryFigures, Reply, Request, Settings, import_target, model_url,
};
use super::store;
use crate::checkpoint::{Checkpoint, LoadOptions, plan_import, remote_candidates};
use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::pipeline::{Control, Pipeline, Progress};
use wasm_bindgen_futures::JsFuture;

fn scope() -> DedicatedWorkerGlobalScope {
    js_sys::global().unchecked_into()
}

fn now_ms() -> f64 {
    js_sys::Date::now()
}

/// Posts a reply, with bytes beside it (transferred, not copied).
fn post(reply: &Reply, bytes: Option<&[u8]>) {
    let json = serde_json::to_string(reply).unwrap_or_default();
    let msg = Array::of1(&JsValue::from_str(&json));
    let transfer = Array::new();
    if let Some(b) = bytes {
        let data = Uint8Array::from(b);
        transfer.push(&data.buffer());
        msg.push(&data);
    }
    if let Err(e) = scope().post_message_with_transfer(&msg, &transfer) {
        log::error!("posting to the page failed: {}", store::js_error(&e));
    }
}

/// Import progress for the page, at most every 100 ms (and at the end), with the time
/// left at the speed since the first report (a resume's kept bytes do not count as
/// speed), once a second has passed.
fn progress() -> impl FnMut(&str, u64, u64) {
    let mut last = 0f64;
    let mut first: Option<(f64, u64)> = None;
    move |file, done, total| {
        let t = now_ms();
        let (t0, done0) = *first.get_or_insert((t, done));
        if t - last > 100.0 || done == total {
            last = t;
            let left_ms = (t - t0 > 1000.0 && done > done0)
                .then(|| (total.saturating_sub(done)) as f64 * (t - t0) / (done - done0) as f64);
            post(
                &Reply::Importing {
                    file: file.into(),
                    done,
                    total,
                    left_ms,
                },
                None,
            );
        }
    }
}

/// Whether the worker's URL carries `test-hooks` (the page passes its own on).
fn test_hooks() -> bool {
    store::query().contains("test-hooks")
}

/// The engine's memory now.
fn memory(gpu: &Gpu) -> MemoryFigures {
    let m = gpu.memory();
    let wasm = wasm_bindgen::memory()
        .unchecked_into::<js_sys::WebAssembly::Memory>()
        .buffer()
        .unchecked_into::<js_sys::ArrayBuffer>()
        .byte_length() as u64;
    MemoryFigures {
        gpu_allocated: m.allocated,
        gpu_in_use: m.in_use,
        gpu_peak: m.peak,
        gpu_weights: m.weights,
        wasm,
    }
}

/// A device loss as the browser reported it, whatever the reason. The engine's own
/// callback (src/gpu) ignores the reason `destroyed`, which wgpu gives for a device
/// dropped on purpose; on the web nothing here destroys a device but a test, and a
/// browser that takes the GPU away says `unknown`, so here every loss counts.
type Lost = Arc<Mutex<Option<String>>>;

#[derive(Default)]
struct Engine {
    gpu: RefCell<Option<(Rc<Gpu>, Lost)>>,
    /// The loaded model: its name, its pipeline and the checkpoint it came from (the
    /// lean memory plan reloads the UNet from it before each generation).
    model: RefCell<Option<(String, Rc<Pipeline>, Rc<Checkpoint<store::BlobSource>>)>>,
    busy: Cell<bool>,
    cancel: Cell<bool>,
}

impl Engine {
    async fn gpu(&self) -> Result<Rc<Gpu>> {
        if let Some((g, _)) = self.gpu.borrow().clone() {
            return Ok(g);
        }
        let gpu = Rc::new(Gpu::new().await?);
        let lost = Lost::default();
        let slot = lost.clone();
        // On the web a second callback is added (a `then` on `device.lost`), not swapped in.
        gpu.device.set_device_lost_callback(move |_, message| {
            let message = if message.is_empty() {
                "the browser gave no reason".into()
            } else {
                message
            };
            *slot.lock().unwrap() = Some(message);
        });
        *self.gpu.borrow_mut() = Some((gpu.clone(), lost));
        Ok(gpu)
    }

    /// The device loss the browser reported for the current GPU, if any.
    fn lost(&self) -> Option<String> {
        let gpu = self.gpu.borrow();
        let (_, lost) = gpu.as_ref()?;
        lost.lock().unwrap().clone()
    }

    /// What a failed task's error was: a device loss when the browser reported one (a
    /// read from a lost device fails as a plain GPU error, sometimes before the loss
    /// itself is announced, so an error waits a moment for it).
    async fn explain(&self, e: Error) -> Error {
        if matches!(e, Error::DeviceLost(_)) || self.gpu.borrow().is_none() {
            return e;
        }
        if self.lost().is_none() && matches!(e, Error::Gpu(_) | Error::OutOfMemory(_)) {
            store::sleep_ms(100).await;
        }
        match self.lost() {
            Some(m) => Error::DeviceLost(m),
            None => e,
        }
    }

    /// After a device loss everything on the GPU is gone: start afresh next time.
    fn forget_gpu_on(&self, e: &Error) {
        if matches!(e, Error::DeviceLost(_)) {
            self.model.borrow_mut().take();
            self.gpu.borrow_mut().take();
        }
    }

    /// A device already lost (while idle) fails the next task at once.
    fn check_device(&self) -> Result<()> {
        match self.lost() {
            Some(m) => Err(Error::DeviceLost(m)),
            None => Ok(()),
        }
    }

    async fn start(&self) -> Result<Reply> {
        let gpu = self.gpu().await?;
        let models = store::list().await?;
        Ok(Reply::Started {
            // Browsers hide the adapter's name unless asked by flags.
            adapter: match (gpu.info.adapter_name.as_str(), gpu.info.software) {
                ("", true) => "the browser's CPU fallback adapter (slow)".into(),
                ("", false) => "the browser's GPU adapter".into(),
                (name, _) => name.into(),
            },
            limits: format!(
                "{} MiB per storage binding, {} MiB per buffer",
                gpu.info.max_storage_binding >> 20,
                gpu.info.max_buffer_size >> 20
            ),
            kernels: crate::web::gpu_info_text(&gpu.info),
            models,
        })
    }

    async fn load(&self, name: &str) -> Result<Reply> {
        let t0 = now_ms();
        // Free the old model's GPU memory before loading the next.
        self.model.borrow_mut().take();
        let gpu = self.gpu().await?;
        post(
            &Reply::Loading {
                part: "files".into(),
            },
            None,
        );
        if let Some(ms) = store::test_delay_ms("slow-load") {
            store::sleep_ms(ms).await;
        }
        let ck = Checkpoint::new(store::open(name).await?, LoadOptions::default())?;
        let pipeline = Pipeline::load(&gpu, &ck, &mut |part| {
            post(&Reply::Loading { part: part.into() }, None)
        })
        .await?
        .named_or(name);
        // Surface errors the GPU reported while the weights were uploaded.
        gpu.sync().await?;
        *self.model.borrow_mut() = Some((name.to_string(), Rc::new(pipeline), Rc::new(ck)));
        post(&Reply::Memory(memory(&gpu)), None);
        let recipe = self
            .model
            .borrow()
            .as_ref()
            .map(|m| m.1.recipe())
            .ok_or_else(|| Error::Internal("the model was unloaded while loading".into()))?;
        Ok(Reply::Ready {
            name: name.into(),
            millis: now_ms() - t0,
            family: recipe.family,
            scheduler: recipe.scheduler.name().into(),
            steps: recipe.steps,
            guidance: recipe.guidance,
        })
    }

    async fn import(
        &self,
        name: &str,
        paths: Vec<String>,
        format: &str,
        resume: bool,
        files: Array,
    ) -> Result<Reply> {
        if paths.len() != files.length() as usize {
            return Err(Error::Input(format!(
                "{} paths but {} files arrived",
                paths.len(),
                files.length()
            )));
        }
        let plan = plan_import(&paths, false)?;
        let chosen: Vec<(String, String, Blob)> = plan
            .into_iter()
            .map(|(picked, path)| {
                let i = paths.iter().position(|p| *p == picked).unwrap_or(0);
                (picked, path, files.get(i as u32).unchecked_into())
            })
            .collect();
        let target = import_target(format)?;
        let (_, kept) = store::import(name, &chosen, target, resume, &mut progress()).await?;
        if resume {
            log::info!("resumed the import of {name}: {kept} files were already stored");
            post(
                &Reply::Loading {
                    part: format!("{kept} of {} files were already stored", chosen.len()),
                },
                None,
            );
        }
        self.load_stored(name).await
    }

    /// Downloads a diffusers folder from a URL into the store (resuming an interrupted
    /// download of the same folder), then loads it. HTTP lists no folder, so the files a
    /// checkpoint may hold are asked for one by one (`HEAD`) and the import plan is made
    /// from those the server has, exactly as for a picked folder.
    async fn import_url(&self, url: &str) -> Result<Reply> {
        let (base, name) = model_url(url)?;
        let mut found = Vec::new();
        for path in remote_candidates() {
            if let Some(size) = store::head(&format!("{base}{path}")).await? {
                found.push((path, size));
            }
        }
        if !found.iter().any(|(p, _)| p == "model_index.json") {
            return Err(Error::Download {
                url: format!("{base}model_index.json"),
                message: "the server has no such file: give the URL of the diffusers folder itself (the one holding model_index.json, unet/, vae/, text_encoder/, tokenizer/)".into(),
            });
        }
        let paths: Vec<String> = found.iter().map(|(p, _)| p.clone()).collect();
        let files: Vec<(String, Option<u64>)> = plan_import(&paths, false)?
            .into_iter()
            .map(|(_, path)| {
                let size = found.iter().find(|(p, _)| *p == path).and_then(|(_, s)| *s);
                (path, size)
            })
            .collect();
        let remote = store::Remote {
            base: &base,
            auth: None,
            hub: None,
            refuse: &|_, _, _| None,
        };
        // a download stores the folder as the server has it
        if let Err(e) = store::download(&name, &remote, &files, None, &mut progress()).await {
            // The page lists the unfinished model (Download again resumes it).
            post(
                &Reply::Models {
                    models: store::list().await.unwrap_or_default(),
                },
                None,
            );
            return Err(e);
        }
        self.load_stored(&name).await
    }

    /// Downloads a diffusers model from a Hugging Face Hub repo (src/web/hub.rs): the
    /// commit of the revision, its files, those the pipeline reads, each streamed into
    /// the store as `format` (resuming an unfinished download of the same commit), then
    /// loads it. `token` is dropped when this returns: it is never stored or logged,
    /// and goes only to the endpoint's origin.
    async fn import_hub(
        &self,
        repo: &str,
        endpoint: &str,
        token: Option<Token>,
        format: &str,
    ) -> Result<Reply> {
        let id = RepoId::parse(repo)?;
        let endpoint = hub::endpoint(endpoint)?;
        let target = import_target(format)?;
        let auth = token.as_ref().map(Token::bearer);
        let had_token = token.is_some();
        drop(token);
        let refuse = |status: u16, code: Option<String>, file: Option<&str>, url: &str| {
            hub::refusal(
                status,
                code.as_deref(),
                &endpoint,
                &id,
                had_token,
                file,
                url,
            )
        };
        // The API's answers (small JSON), each refused with the Hub's sentence.
        let api = |url: String| {
            let auth = auth.clone();
            let refuse = &refuse;
            async move {
                let r = store::get(&url, 0, auth.as_deref()).await?;
                if !r.ok() {
                    let code = r.headers().get("x-error-code").ok().flatten();
                    return Err(refuse(r.status(), code, None, &url));
                }
                let text = JsFuture::from(r.text().map_err(|e| Error::Download {
                    url: url.clone(),
                    message: store::js_error(&e),
                })?)
                .await
                .map_err(|e| Error::Download {
                    url: url.clone(),
                    message: format!("the answer broke off ({})", store::js_error(&e)),
                })?;
                Ok(text.as_string().unwrap_or_default())
            }
        };
        let commit = hub::parse_revision(&api(hub::revision_url(&endpoint, &id)).await?)?;
        let listing = hub::parse_tree(&api(hub::tree_url(&endpoint, &id, &commit)).await?)?;
        let files = hub::choose(&listing)?;
        let base = hub::resolve_base(&endpoint, &id, &commit);
        // A gated repo lists its files to anyone: ask for the first file before
        // anything is stored, so a refusal leaves no unfinished model behind.
        let probe = format!("{base}model_index.json");
        let r = store::get(&probe, 0, auth.as_deref()).await?;
        if !r.ok() {
            let code = r.headers().get("x-error-code").ok().flatten();
            return Err(refuse(r.status(), code, Some("model_index.json"), &probe));
        }
        let name = id.model_name();
        let remote = store::Remote {
            base: &base,
            auth,
            hub: Some(HubSource {
                endpoint: endpoint.clone(),
                repo: id.id(),
                commit,
            }),
            refuse: &|status, code, path| {
                Some(refuse(status, code, Some(path), &format!("{base}{path}")))
            },
        };
        let r = store::download(&name, &remote, &files, target, &mut progress()).await;
        drop(remote);
        if let Err(e) = r {
            // The page lists the unfinished model (Download again resumes it).
            post(
                &Reply::Models {
                    models: store::list().await.unwrap_or_default(),
                },
                None,
            );
            return Err(e);
        }
        log::info!("downloaded {} from {endpoint} as {name}", id.id());
        self.load_stored(&name).await
    }

    /// After an import: the new list of stored models, then the model loaded.
    async fn load_stored(&self, name: &str) -> Result<Reply> {
        post(
            &Reply::Models {
                models: store::list().await?,
            },
            None,
        );
        match self.load(name).await {
            Ok(r) => Ok(r),
            Err(e) => {
                // A stored copy that cannot load is of no use; keep it only when the
                // fault is the GPU's, not the files'.
                if FailureKind::of(&e) == FailureKind::Model {
                    let _ = store::delete(name).await;
                    post(
                        &Reply::Models {
                            models: store::list().await.unwrap_or_default(),
                        },
                        None,
                    );
                }
                Err(e)
            }
        }
    }

    async fn delete(&self, name: &str) -> Result<Reply> {
        let loaded = self
            .model
            .borrow()
            .as_ref()
            .is_some_and(|(n, _, _)| n == name);
        if loaded {
            self.model.borrow_mut().take();
        }
        store::delete(name).await?;
        Ok(Reply::Models {
            models: store::list().await?,
        })
    }

    fn count_tokens(&self, text: &str) -> Option<Reply> {
        let model = self.model.borrow();
        let (_, p, _) = model.as_ref()?;
        let enc = p.tokenizer.encode(text).ok()?;
        Some(Reply::Tokens {
            count: enc.tokens_used,
            max: p.tokenizer.max_length(),
            dropped: enc.dropped,
        })
    }

    async fn generate(&self, settings: &Settings, extra: &Array) -> Result<Reply> {
        // The request and the edit's pixels, checked before the GPU is touched, with
        // the sentences the CLI gives for the same values.
        let parts: Vec<Vec<u8>> = (1..extra.length())
            .map(|i| {
                extra
                    .get(i)
                    .dyn_ref::<Uint8Array>()
                    .map_or_else(Vec::new, |a| a.to_vec())
            })
            .collect();
        let req = settings.request(settings.edit_bytes(&parts))?;
        let pipeline = self
            .model
            .borrow()
            .as_ref()
            .map(|m| m.1.clone())
            .ok_or_else(|| {
                Error::Input("no model is loaded: import a model folder first".into())
            })?;
        let plan = pipeline.plan(req)?;
        let gpu = self.gpu().await?;
        self.check_device()?;
        gpu.reset_peak_memory();
        self.cancel.set(false);
        let t0 = now_ms();
        // The lean memory plan released the UNet after the last generation: the
        // pipeline reads it back from OPFS (a few seconds; the VAE decode never shares
        // the GPU with it), and the VAE's encoder the first time an edit needs it.
        let mut on_call = |p: Progress| {
            let rgba: Vec<u8> = p
                .preview
                .rgb
                .chunks_exact(3)
                .flat_map(|c| [c[0], c[1], c[2], 255])
                .collect();
            post(
                &Reply::Step {
                    call: p.call,
                    calls: p.calls,
                    elapsed_ms: now_ms() - t0,
                    width: p.preview.width,
                    height: p.preview.height,
                },
                Some(&rgba),
            );
            if self.cancel.get() {
                Control::Cancel
            } else {
                Control::Continue
            }
        };
        let outcome = pipeline.generate(&gpu, &plan, &mut on_call).await?;
        post(&Reply::Memory(memory(&gpu)), None);
        // A cancel that arrived during the decode drops the image.
        if outcome.cancelled() || self.cancel.get() {
            return Ok(Reply::Cancelled);
        }
        let img = &outcome.images[0];
        let stem = outcome.file_stem(0);
        post(
            &Reply::Image {
                width: img.width,
                height: img.height,
                seed: outcome.prompts[0].2,
                millis: now_ms() - t0,
                file_name: format!("{stem}.png"),
            },
            Some(&outcome.png(0, false)?),
        );
        // The same pixels as DICOM: fresh UIDs from the browser's CSPRNG, the time now.
        let mut entropy = [0u8; 48];
        scope()
            .crypto()
            .and_then(|c| c.get_random_values_with_u8_array(&mut entropy).map(|_| ()))
            .map_err(|e| {
                Error::Internal(format!(
                    "no random numbers for the DICOM UIDs: {}",
                    store::js_error(&e)
                ))
            })?;
        let mut words = [0u128; 3];
        for (w, chunk) in words.iter_mut().zip(entropy.chunks_exact(16)) {
            let mut b = [0u8; 16];
            b.copy_from_slice(chunk);
            *w = u128::from_le_bytes(b);
        }
        let dcm = outcome.dicom(0, words, (js_sys::Date::now() / 1000.0) as u64)?;
        post(
            &Reply::Dicom {
                file_name: format!("{stem}.dcm"),
            },
            Some(&dcm),
        );
        if let Some(m) = &outcome.word_maps {
            let bytes: Vec<u8> = m.maps.iter().flat_map(|v| v.to_le_bytes()).collect();
            post(
                &Reply::WordMaps {
                    words: m.words.clone(),
                    tokens: m.token_ids.len(),
                    h: m.h,
                    w: m.w,
                    metadata: outcome.metadata(0),
                },
                Some(&bytes),
            );
        }
        Ok(Reply::Models {
            models: store::list().await?,
        })
    }
}

/// Runs a long request, one at a time.
async fn run(engine: Rc<Engine>, req: Request, extra: Array) {
    if engine.busy.replace(true) {
        post(
            &Reply::Failed {
                kind: FailureKind::Busy,
                message: "another task is still running; wait for it or cancel it".into(),
            },
            None,
        );
        return;
    }
    let result = match &req {
        Request::Import {
            name,
            paths,
            format,
            resume,
        } => {
            engine
                .import(
                    name,
                    paths.clone(),
                    format,
                    *resume,
                    extra.get(1).unchecked_into(),
                )
                .await
        }
        Request::ImportUrl { url } => engine.import_url(url).await,
        Request::ImportHub {
            repo,
            endpoint,
            token,
            format,
        } => {
            engine
                .import_hub(repo, endpoint, token.clone(), format)
                .await
        }
        Request::Load { name } => engine.load(name).await,
        Request::Delete { name } => engine.delete(name).await,
        Request::Generate(s) => engine.generate(s, &extra).await,
        Request::Cancel
        | Request::CountTokens { .. }
        | Request::TestLoseDevice
        | Request::TestCrash => unreachable!("answered at once"),
    };
    let result = match result {
        Ok(r) => Ok(r),
        Err(e) => Err(engine.explain(e).await),
    };
    engine.busy.set(false);
    match result {
        Ok(reply) => post(&reply, None),
        Err(e) => {
            engine.forget_gpu_on(&e);
            post(&Reply::failed(&e), None);
        }
    }
}

/// The worker's entry point (called by `www/worker.js` once the wasm is instantiated).
#[wasm_bindgen]
pub fn worker_main() {
    super::init_logging();
    let engine = Rc::new(Engine::default());
    let e = engine.clone();
    let on_message = Closure::<dyn FnMut(MessageEvent)>::new(move |ev: MessageEvent| {
        let data: Array = ev.data().unchecked_into();
        let json = data.get(0).as_string().unwrap_or_default();
        let req: Request = match serde_json::from_str(&json) {
            Ok(r) => r,
            Err(err) => {
                post(
                    &Reply::Failed {
                        kind: FailureKind::Other,
                        message: format!(
                            "the page sent a message the engine does not understand ({err})"
                        ),
                    },
                    None,
                );
                return;
            }
        };
        match req {
            Request::Cancel => e.cancel.set(true),
            Request::TestLoseDevice | Request::TestCrash if !test_hooks() => post(
                &Reply::Failed {
                    kind: FailureKind::Input,
                    message: "test hooks are off (open the page with ?test-hooks)".into(),
                },
                None,
            ),
            Request::TestLoseDevice => {
                if let Some((gpu, _)) = e.gpu.borrow().as_ref() {
                    log::warn!("test hook: destroying the GPU device");
                    gpu.device.destroy();
                }
            }
            Request::TestCrash => panic!("test hook: the engine crashes on purpose"),
            Request::CountTokens { text } => {
                if let Some(r) = e.count_tokens(&text) {
                    post(&r, None);
                }
            }
            req => wasm_bindgen_futures::spawn_local(run(e.clone(), req, data)),
        }
    });
    scope().set_onmessage(Some(on_message.as_ref().unchecked_ref()));
    on_message.forget();
    wasm_bindgen_futures::spawn_local(async move {
        engine.busy.set(true);
        let r = engine.start().await;
        engine.busy.set(false);
        match r {
            Ok(reply) => post(&reply, None),
            Err(e) => post(&Reply::failed(&e), None),
        }
    });
}
