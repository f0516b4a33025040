//! Models in the browser: the Origin Private File System (OPFS) as the store, and
//! `Blob`s (picked files or stored ones) as a [`FileSource`] read tensor by tensor.
//!
//! Layout: `models/<name>/<checkpoint paths>` plus `models/<name>/roentgen-model.json`,
//! written last, which marks a complete import and records its size. Copying goes
//! `File` → `FileSystemWritableFileStream` in slices, so no byte of a 3.4 GB UNet passes
//! through wasm memory; loading reads one tensor at a time with `FileReaderSync`
//! (synchronous, allowed in dedicated workers), straight into a GPU buffer.

use std::collections::BTreeMap;

use js_sys::{Array, AsyncIterator, Promise, Reflect, Uint8Array};
use serde::{Deserialize, Serialize};
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;
use web_sys::{
    Blob, FileReaderSync, FileSystemCreateWritableOptions, FileSystemDirectoryHandle,
    FileSystemFileHandle, FileSystemGetDirectoryOptions, FileSystemGetFileOptions,
    FileSystemRemoveOptions, FileSystemWritableFileStream, Headers, ReadableStreamDefaultReader,
    RequestCache, RequestInit,
};

use super::hub::{HubSource, origin};
use super::protocol::StoredModel;
use crate::checkpoint::FileSource;
use crate::error::{Error, Result};
use crate::loader::{RangeRead, WeightFile};

const MANIFEST: &str = "roentgen-model.json";
/// Written when an import or download starts, removed once the manifest is: what the
/// unfinished model was asked to be (its format, the URL it comes from), so Resume can
/// go on with the same.
const PENDING: &str = "roentgen-import.json";
/// Bytes per write while copying (progress granularity; never held in wasm memory).
const COPY_SLICE: f64 = (32 << 20) as f64;

/// A JS exception as a sentence.
pub fn js_error(v: &JsValue) -> String {
    let field = |k: &str| {
        Reflect::get(v, &JsValue::from_str(k))
            .ok()
            .and_then(|x| x.as_string())
    };
    match (field("name"), field("message")) {
        (Some(n), Some(m)) if !m.is_empty() => format!("{n}: {m}"),
        _ => v.as_string().unwrap_or_else(|| format!("{v:?}")),
    }
}

fn storage_err(what: &str) -> impl Fn(JsValue) -> Error + '_ {
    move |e| {
        let msg = js_error(&e);
        let hint = if msg.contains("QuotaExceeded") {
            " (the browser's storage quota is full: delete a stored model or free disk space)"
        } else if msg.contains("Security") || msg.contains("NotAllowed") {
            " (private windows and some settings block site storage: use a normal window)"
        } else {
            ""
        };
        Error::Storage(format!("{what}: {msg}{hint}"))
    }
}

async fn wait(p: Promise, what: &str) -> Result<JsValue> {
    JsFuture::from(p).await.map_err(storage_err(what))
}

/// `navigator.storage.getDirectory()`, from a window or a worker.
async fn opfs_root() -> Result<FileSystemDirectoryHandle> {
    let global = js_sys::global();
    let navigator = Reflect::get(&global, &"navigator".into())
        .map_err(|_| Error::Storage("no navigator".into()))?;
    let storage = Reflect::get(&navigator, &"storage".into())
        .ok()
        .filter(|s| !s.is_undefined())
        .ok_or_else(|| {
            Error::Storage(
                "this browser has no storage manager (navigator.storage); use a current Chrome, Edge, Firefox or Safari over https or localhost".into(),
            )
        })?;
    let storage: web_sys::StorageManager = storage.unchecked_into();
    Ok(wait(
        storage.get_directory(),
        "opening the origin private file system",
    )
    .await?
    .unchecked_into())
}

async fn subdir(
    dir: &FileSystemDirectoryHandle,
    name: &str,
    create: bool,
) -> Result<FileSystemDirectoryHandle> {
    let opts = FileSystemGetDirectoryOptions::new();
    opts.set_create(create);
    Ok(wait(
        dir.get_directory_handle_with_options(name, &opts),
        &format!("opening folder {name}"),
    )
    .await?
    .unchecked_into())
}

async fn models_dir() -> Result<FileSystemDirectoryHandle> {
    subdir(&opfs_root().await?, "models", true).await
}

/// The entries of a folder: (name, handle, is a folder).
async fn entries(dir: &FileSystemDirectoryHandle) -> Result<Vec<(String, JsValue, bool)>> {
    let it: AsyncIterator = dir.entries();
    let mut out = Vec::new();
    loop {
        let next = it.next().map_err(storage_err("listing a folder"))?;
        let step = wait(next, "listing a folder").await?;
        if Reflect::get(&step, &"done".into())
            .map(|d| d.is_truthy())
            .unwrap_or(true)
        {
            break;
        }
        let pair: Array = Reflect::get(&step, &"value".into())
            .map_err(storage_err("listing a folder"))?
            .unchecked_into();
        let name = pair.get(0).as_string().unwrap_or_default();
        let handle = pair.get(1);
        let kind = Reflect::get(&handle, &"kind".into())
            .ok()
            .and_then(|k| k.as_string())
            .unwrap_or_default();
        out.push((name, handle, kind == "directory"));
    }
    Ok(out)
}

/// Every file under `dir`, as (relative path, `File`).
pub async fn walk(dir: &FileSystemDirectoryHandle, prefix: &str) -> Result<Vec<(String, Blob)>> {
    let mut out = Vec::new();
    let mut stack = vec![(dir.clone(), prefix.to_string())];
    while let Some((d, prefix)) = stack.pop() {
        for (name, handle, is_dir) in entries(&d).await? {
            let path = format!("{prefix}{name}");
            if is_dir {
                stack.push((handle.unchecked_into(), format!("{path}/")));
            } else {
                let h: FileSystemFileHandle = handle.unchecked_into();
                let file: Blob = wait(h.get_file(), &format!("reading {path}"))
                    .await?
                    .unchecked_into();
                out.push((path, file));
            }
        }
    }
    Ok(out)
}

#[derive(Serialize, Deserialize)]
struct Manifest {
    name: String,
    bytes: u64,
    files: Vec<String>,
    /// `int8`, `int4`, `f16` or `original` (manifests before quantization: original).
    #[serde(default = "original")]
    format: String,
}

fn original() -> String {
    "original".into()
}

/// What an unfinished import was started as (see [`PENDING`]).
#[derive(Serialize, Deserialize, PartialEq)]
struct Pending {
    /// `original`, `int8`, `int4`, `f16`: what the import was asked to store.
    format: String,
    /// The folder URL of a download; none for a picked folder.
    #[serde(default)]
    url: Option<String>,
    /// A Hub download's endpoint, repo and commit (never its token).
    #[serde(default)]
    hub: Option<HubSource>,
}

async fn read_json<T: serde::de::DeserializeOwned>(
    dir: &FileSystemDirectoryHandle,
    file: &str,
) -> Result<Option<T>> {
    let Ok(h) = JsFuture::from(dir.get_file_handle(file)).await else {
        return Ok(None);
    };
    let h: FileSystemFileHandle = h.unchecked_into();
    let blob: Blob = wait(h.get_file(), &format!("reading {file}"))
        .await?
        .unchecked_into();
    Ok(serde_json::from_str(&read_text(&blob).await?).ok())
}

async fn write_json<T: Serialize>(
    dir: &FileSystemDirectoryHandle,
    file: &str,
    value: &T,
) -> Result<()> {
    let stream = writer(&new_file(dir, file).await?, file, false).await?;
    let json = serde_json::to_string(value).unwrap_or_default();
    wait(
        stream
            .write_with_str(&json)
            .map_err(storage_err(&format!("writing {file}")))?,
        &format!("writing {file}"),
    )
    .await?;
    wait(stream.close(), &format!("writing {file}")).await?;
    Ok(())
}

/// Test hook: with `test-hooks` and `KEY=MS` in the worker's URL, the step KEY names
/// takes MS longer (`slow-import`: every file an import copies; `slow-load`: loading a
/// model), so that a test can interrupt it halfway.
pub fn test_delay_ms(key: &str) -> Option<i32> {
    let search = query();
    if !search.contains("test-hooks") {
        return None;
    }
    search
        .trim_start_matches('?')
        .split('&')
        .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
        .and_then(|v| v.parse().ok())
}

/// The query string of this global's URL (`location.search`, page or worker).
pub fn query() -> String {
    Reflect::get(&js_sys::global(), &"location".into())
        .and_then(|l| Reflect::get(&l, &"search".into()))
        .ok()
        .and_then(|s| s.as_string())
        .unwrap_or_default()
}

/// Resolves after `ms` milliseconds (a worker's `setTimeout`).
pub async fn sleep_ms(ms: i32) {
    let p = Promise::new(&mut |ok, _| {
        let scope: web_sys::WorkerGlobalScope = js_sys::global().unchecked_into();
        let _ = scope.set_timeout_with_callback_and_timeout_and_arguments_0(&ok, ms);
    });
    let _ = JsFuture::from(p).await;
}

async fn read_text(blob: &Blob) -> Result<String> {
    let text = wait(blob.text(), "reading a file").await?;
    Ok(text.as_string().unwrap_or_default())
}

/// The stored models, complete ones with their size.
pub async fn list() -> Result<Vec<StoredModel>> {
    let dir = models_dir().await?;
    let mut out = Vec::new();
    for (name, handle, is_dir) in entries(&dir).await? {
        if !is_dir {
            continue;
        }
        let d: FileSystemDirectoryHandle = handle.unchecked_into();
        let manifest = read_json::<Manifest>(&d, MANIFEST).await?;
        let pending = match manifest {
            Some(_) => None,
            None => read_json::<Pending>(&d, PENDING).await?,
        };
        let family = match manifest {
            Some(_) => family_of(&name).await,
            None => None,
        };
        out.push(StoredModel {
            family,
            name,
            bytes: manifest.as_ref().map_or(0, |m| m.bytes),
            complete: manifest.is_some(),
            format: match (&manifest, &pending) {
                (Some(m), _) => m.format.clone(),
                (None, Some(p)) => p.format.clone(),
                _ => String::new(),
            },
            hub_repo: pending
                .as_ref()
                .and_then(|p| p.hub.as_ref().map(|h| h.repo.clone())),
            source_url: pending.and_then(|p| p.url),
        });
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// The family a stored model's configs say, for the model list; `None` for no family
/// we know, or configs that do not read (the list still shows the model, and loading it
/// says what is wrong).
async fn family_of(name: &str) -> Option<crate::generation::Family> {
    let source = open(name).await.ok()?;
    let ck = crate::checkpoint::Checkpoint::new(source, Default::default()).ok()?;
    ck.family().await.ok().flatten()
}

pub async fn delete(name: &str) -> Result<()> {
    let dir = models_dir().await?;
    let opts = FileSystemRemoveOptions::new();
    opts.set_recursive(true);
    match JsFuture::from(dir.remove_entry_with_options(name, &opts)).await {
        Ok(_) => Ok(()),
        Err(e) if js_error(&e).contains("NotFound") => Ok(()),
        Err(e) => Err(storage_err("deleting the model")(e)),
    }
}

/// Bytes the origin may still store, if the browser says.
async fn free_bytes() -> Option<f64> {
    let global = js_sys::global();
    let storage = Reflect::get(
        &Reflect::get(&global, &"navigator".into()).ok()?,
        &"storage".into(),
    )
    .ok()?;
    let storage: web_sys::StorageManager = storage.unchecked_into();
    let est = JsFuture::from(storage.estimate().ok()?).await.ok()?;
    let quota = Reflect::get(&est, &"quota".into()).ok()?.as_f64()?;
    let usage = Reflect::get(&est, &"usage".into()).ok()?.as_f64()?;
    Some(quota - usage)
}

/// A weight file converted while it is copied: its reader, component and plan.
struct Conversion {
    file: WeightFile,
    component: String,
    plan: crate::convert::ComponentPlan,
}

/// Copies `files` (picked-folder path, checkpoint path, `File`) into `models/<name>/`,
/// replacing a model of that name. With a `target`, each f32/f16 weight file is
/// converted tensor by tensor on the way (one tensor in wasm memory at a time) and only
/// the converted file is stored; a folder that is already converted is copied as it
/// is. `on_progress(file, done, total)` hears every slice or tensor; `total` is the
/// bytes stored.
///
/// A failure after the first byte is written (storage full, a file that went away)
/// deletes the partial model, so it holds no space, and says so; other stored models are
/// never touched. Running out of space says how much the model needs and how much more
/// must be freed.
///
/// With `resume`, an unfinished import of `name` started with the same `target` goes
/// on: every file it stored whole (the size this import would write) is kept, the
/// others are written again (OPFS keeps a file's bytes only once its stream closes, so
/// a file cut off by a closed tab is empty or missing, never half there). Without it,
/// or when the unfinished one was started for another format, it starts afresh.
/// Returns the model and how many files were kept.
pub async fn import(
    name: &str,
    files: &[(String, String, Blob)],
    target: Option<crate::convert::Target>,
    resume: bool,
    on_progress: &mut dyn FnMut(&str, u64, u64),
) -> Result<(StoredModel, usize)> {
    // (bytes written, bytes in all; None until writing starts)
    let written = std::cell::Cell::new(None::<(f64, f64)>);
    let r = import_inner(name, files, target, resume, &mut |f, done, total| {
        written.set(Some((done as f64, total as f64)));
        on_progress(f, done, total)
    })
    .await;
    let Err(e) = r else { return r };
    let Some((done, total)) = written.get() else {
        return Err(e); // refused before writing: nothing to clean up
    };
    let _ = delete(name).await;
    let msg = e.to_string();
    Err(if msg.contains("QuotaExceeded") {
        Error::Storage(format!(
            "storage ran out while importing “{name}”: it needs {} and {} were written, so free at least {} more (delete a stored model or free disk space) and import it again; the partial copy was removed and the other stored models are untouched",
            size_text(total),
            size_text(done),
            size_text((total - done).max(0.0))
        ))
    } else {
        Error::Storage(format!(
            "importing “{name}” stopped ({msg}); the partial copy was removed and the other stored models are untouched"
        ))
    })
}

/// Writes conversion `c` of weight file `path` to `out` under `root`, tensor by tensor
/// (one in wasm memory at a time); `on_bytes` hears the bytes written so far.
async fn write_conversion(
    root: &FileSystemDirectoryHandle,
    out: &str,
    c: &Conversion,
    path: &str,
    on_bytes: &mut dyn FnMut(u64),
) -> Result<()> {
    let stream = writer(&new_file(root, out).await?, out, false).await?;
    let put = |bytes: &[u8]| -> Result<js_sys::Promise> {
        // a copy in JS memory: the write completes after wasm memory may move
        stream
            .write_with_js_u8_array(&Uint8Array::from(bytes))
            .map_err(storage_err("writing"))
    };
    wait(put(&c.plan.header)?, &format!("writing {out}")).await?;
    let mut done = c.plan.header.len() as u64;
    for step in &c.plan.steps {
        let (info, data) = c.file.tensor_data(&step.name)?;
        for piece in crate::convert::convert_tensor(step, &info, &data, path)? {
            wait(put(&piece)?, &format!("writing {out}")).await?;
            done += piece.len() as u64;
        }
        on_bytes(done);
    }
    wait(stream.close(), &format!("writing {out}")).await?;
    Ok(())
}

/// `12.3 MB` / `1.85 GB`.
fn size_text(bytes: f64) -> String {
    if bytes >= 1e9 {
        format!("{:.2} GB", bytes / 1e9)
    } else {
        format!("{:.1} MB", bytes / 1e6)
    }
}

async fn import_inner(
    name: &str,
    files: &[(String, String, Blob)],
    target: Option<crate::convert::Target>,
    resume: bool,
    on_progress: &mut dyn FnMut(&str, u64, u64),
) -> Result<(StoredModel, usize)> {
    // Plan every conversion first (headers only): the stored size is known before a
    // byte is written.
    let mut conversions: Vec<Option<Conversion>> = Vec::new();
    let mut converted_any = false;
    for (_, path, blob) in files {
        let is_weights = path.ends_with(".safetensors") || path.ends_with(".bin");
        let c = match target {
            Some(t) if is_weights => {
                let file = WeightFile::open(path, Box::new(BlobRange::new(blob, path)?))?;
                if file.index.metadata.contains_key(crate::quant::meta::FORMAT) {
                    None // already converted: stored as it is
                } else {
                    let component = path.split('/').next().unwrap_or_default().to_string();
                    let plan = crate::convert::plan(&component, &file.index, t)?;
                    converted_any = true;
                    Some(Conversion {
                        file,
                        component,
                        plan,
                    })
                }
            }
            _ => None,
        };
        conversions.push(c);
    }
    let total: f64 = files
        .iter()
        .zip(&conversions)
        .map(|((_, _, b), c)| c.as_ref().map_or(b.size(), |c| c.plan.total_bytes as f64))
        .sum();
    if let Some(free) = free_bytes().await
        && free < total
    {
        return Err(Error::Storage(format!(
            "the model needs {} but this site may store only {} more: free at least {} (delete a stored model or free disk space); nothing was stored",
            size_text(total),
            size_text(free.max(0.0)),
            size_text(total - free.max(0.0))
        )));
    }
    let pending = Pending {
        format: target.map_or_else(original, |t| t.name().to_string()),
        url: None,
        hub: None,
    };
    let unfinished = match subdir(&models_dir().await?, name, false).await {
        Ok(dir) if read_json::<Manifest>(&dir, MANIFEST).await?.is_none() => {
            read_json::<Pending>(&dir, PENDING).await?
        }
        _ => None,
    };
    let resume = resume && unfinished.as_ref() == Some(&pending);
    if !resume {
        delete(name).await?;
    }
    // from here on a failure removes the partial model (see `import`)
    on_progress(name, 0, total as u64);
    let root = subdir(&models_dir().await?, name, true).await?;
    write_json(&root, PENDING, &pending).await?;
    let delay = test_delay_ms("slow-import");
    let mut done = 0f64;
    let mut stored = Vec::new();
    let mut kept = 0;
    for ((_, path, blob), conversion) in files.iter().zip(conversions) {
        let (out, size) = match &conversion {
            Some(c) => (
                crate::convert::output_name(&c.component),
                c.plan.total_bytes as f64,
            ),
            None => (path.clone(), blob.size()),
        };
        if resume && stored_size(&root, &out).await? as f64 == size {
            kept += 1;
            done += size;
            stored.push(out.clone());
            on_progress(&out, done as u64, total as u64);
            continue;
        }
        if let Some(ms) = delay {
            sleep_ms(ms).await;
        }
        if let Some(c) = conversion {
            let out = crate::convert::output_name(&c.component);
            let start = done;
            write_conversion(&root, &out, &c, path, &mut |n| {
                on_progress(&out, (start + n as f64) as u64, total as u64)
            })
            .await?;
            done += c.plan.total_bytes as f64;
            stored.push(out);
            continue;
        }
        let stream = writer(&new_file(&root, path).await?, path, false).await?;
        let size = blob.size();
        let mut at = 0f64;
        while at < size {
            let end = (at + COPY_SLICE).min(size);
            let slice = blob
                .slice_with_f64_and_f64(at, end)
                .map_err(storage_err("slicing a file"))?;
            let p = stream
                .write_with_blob(&slice)
                .map_err(storage_err("writing"))?;
            wait(p, &format!("writing {path}")).await?;
            at = end;
            on_progress(path, (done + at) as u64, total as u64);
        }
        wait(stream.close(), &format!("writing {path}")).await?;
        done += size;
        stored.push(path.clone());
    }
    let format = match target {
        Some(t) if converted_any => t.name().to_string(),
        _ => original(),
    };
    Ok((
        finish(&root, name, total as u64, stored, format).await?,
        kept,
    ))
}

/// The handle of `path` under `root`: created with its folders (`create`), or only if it
/// is there (`None` when it is not).
async fn file_handle(
    root: &FileSystemDirectoryHandle,
    path: &str,
    create: bool,
) -> Result<Option<FileSystemFileHandle>> {
    let mut dir = root.clone();
    let mut parts: Vec<&str> = path.split('/').collect();
    let file_name = parts.pop().unwrap_or_default();
    for p in parts {
        if create {
            dir = subdir(&dir, p, true).await?;
        } else {
            match JsFuture::from(dir.get_directory_handle(p)).await {
                Ok(d) => dir = d.unchecked_into(),
                Err(_) => return Ok(None),
            }
        }
    }
    let opts = FileSystemGetFileOptions::new();
    opts.set_create(create);
    match JsFuture::from(dir.get_file_handle_with_options(file_name, &opts)).await {
        Ok(h) => Ok(Some(h.unchecked_into())),
        Err(_) if !create => Ok(None),
        Err(e) => Err(storage_err(&format!("creating {path}"))(e)),
    }
}

/// [`file_handle`] creating the file.
async fn new_file(root: &FileSystemDirectoryHandle, path: &str) -> Result<FileSystemFileHandle> {
    Ok(file_handle(root, path, true)
        .await?
        .expect("a created file has a handle"))
}

/// A writable stream on a file: emptied, or keeping what it holds (to append to).
async fn writer(
    handle: &FileSystemFileHandle,
    path: &str,
    keep: bool,
) -> Result<FileSystemWritableFileStream> {
    let opts = FileSystemCreateWritableOptions::new();
    opts.set_keep_existing_data(keep);
    Ok(wait(
        handle.create_writable_with_options(&opts),
        &format!("writing {path}"),
    )
    .await?
    .unchecked_into())
}

/// Writes the manifest, which marks the model complete.
async fn finish(
    root: &FileSystemDirectoryHandle,
    name: &str,
    bytes: u64,
    files: Vec<String>,
    format: String,
) -> Result<StoredModel> {
    let manifest = Manifest {
        name: name.into(),
        bytes,
        files,
        format: format.clone(),
    };
    let stream = writer(&new_file(root, MANIFEST).await?, MANIFEST, false).await?;
    let json = serde_json::to_string(&manifest).unwrap_or_default();
    wait(
        stream
            .write_with_str(&json)
            .map_err(storage_err("writing the manifest"))?,
        "writing the manifest",
    )
    .await?;
    wait(stream.close(), "writing the manifest").await?;
    let _ = JsFuture::from(root.remove_entry(PENDING)).await;
    Ok(StoredModel {
        name: name.into(),
        bytes,
        complete: true,
        format,
        source_url: None,
        hub_repo: None,
        family: None,
    })
}

/// Where a download comes from: a folder URL (`base`, ending in `/`), and for a Hub repo
/// the `Authorization` header (sent only to `base`'s origin), what the resume records
/// and how the Hub's refusals read.
pub struct Remote<'a> {
    pub base: &'a str,
    /// `Bearer …`: lives as long as this download.
    pub auth: Option<String>,
    pub hub: Option<HubSource>,
    /// A refused file (status, `X-Error-Code`, path) as the error to report; `None`
    /// gives the plain web server's sentence.
    pub refuse: &'a Refuse<'a>,
}

/// See [`Remote::refuse`].
pub type Refuse<'a> = dyn Fn(u16, Option<String>, &str) -> Option<Error> + 'a;

/// Where a weight file to convert waits while it downloads: a folder of its own, so
/// the checkpoint never sees it, with the file's own name (its extension says its
/// format). Removed once converted; the whole folder once the model is complete.
const PARTIAL: &str = "partial";

/// Downloads `files` (checkpoint path, size if the server said) from `remote` into
/// `models/<name>/`, streaming each response body into OPFS (never whole in memory)
/// and resuming an earlier, interrupted download of the same model from the same
/// source in the same format: a file already stored at its full size is kept, a
/// shorter one continues with a `Range` request where the server honours it (206) and
/// starts over where it does not. A complete model of that name, or an unfinished one
/// from elsewhere or in another format, is replaced. The space the download needs is
/// checked before its first byte.
///
/// With a `target` (int8, int4), each f32/f16 weight file is downloaded under
/// [`PARTIAL`] (resumable like any file), converted tensor by tensor into its stored
/// name as soon as it is whole, and removed: storage ends up holding only the small
/// model, and at most one original weight file at a time on the way. (Quantizing the
/// bytes as they arrive, with nothing original stored, would make a resume restart the
/// file: a cut 3.4 GB UNet would start over. The space check counts the original sizes,
/// an upper bound of what is stored at any moment.) `on_progress(file, done, total)`
/// hears every chunk (bytes downloaded of all files' sizes).
///
/// Storage running out on the way (`QuotaExceededError`: the browser's estimate may not
/// show a quota an origin is held to) says how much the model needs; what was stored is
/// kept for the resume and other stored models are untouched.
pub async fn download(
    name: &str,
    remote: &Remote<'_>,
    files: &[(String, Option<u64>)],
    target: Option<crate::convert::Target>,
    on_progress: &mut dyn FnMut(&str, u64, u64),
) -> Result<StoredModel> {
    let done = std::cell::Cell::new(0u64);
    let r = download_inner(name, remote, files, target, &mut |f, d, t| {
        done.set(d);
        on_progress(f, d, t)
    })
    .await;
    match r {
        Err(e) if e.to_string().contains("QuotaExceeded") => {
            let total: u64 = files.iter().map(|(_, n)| n.unwrap_or(0)).sum();
            Err(Error::Storage(format!(
                "storage ran out while downloading “{name}”: it needs up to {} (the files as the server has them) and {} were downloaded, so free at least {} more (delete a stored model or free disk space) and press Download again: what was stored is kept for the resume, and the other stored models are untouched",
                size_text(total as f64),
                size_text(done.get() as f64),
                size_text(total.saturating_sub(done.get()) as f64)
            )))
        }
        r => r,
    }
}

async fn download_inner(
    name: &str,
    remote: &Remote<'_>,
    files: &[(String, Option<u64>)],
    target: Option<crate::convert::Target>,
    on_progress: &mut dyn FnMut(&str, u64, u64),
) -> Result<StoredModel> {
    let base = remote.base;
    let pending = Pending {
        format: target.map_or_else(original, |t| t.name().to_string()),
        url: Some(base.into()),
        hub: remote.hub.clone(),
    };
    // An unfinished download of the same source and format goes on; anything else of
    // that name is replaced.
    let existing = match subdir(&models_dir().await?, name, false).await {
        Ok(dir) => {
            let same = read_json::<Manifest>(&dir, MANIFEST).await?.is_none()
                && read_json::<Pending>(&dir, PENDING).await?.as_ref() == Some(&pending);
            Some((dir, same))
        }
        Err(_) => None,
    };
    let kept_dir = match existing {
        Some((dir, true)) => Some(dir),
        Some((_, false)) => {
            delete(name).await?;
            None
        }
        None => None,
    };
    // What each file has stored so far: (bytes of the download, whole and converted).
    let converting =
        |path: &str| target.is_some() && (path.ends_with(".safetensors") || path.ends_with(".bin"));
    let mut have = Vec::with_capacity(files.len());
    for (path, _) in files {
        let state = match &kept_dir {
            None => (0, None),
            Some(dir) if converting(path) => {
                let partial = stored_size(dir, &format!("{PARTIAL}/{path}")).await?;
                let component = path.split('/').next().unwrap_or_default();
                let out = crate::convert::output_name(component);
                let stored = stored_size(dir, &out).await?;
                if partial == 0 && stored > 0 {
                    (0, Some((out, stored)))
                } else {
                    (partial, None)
                }
            }
            Some(dir) => (stored_size(dir, path).await?, None),
        };
        have.push(state);
    }
    let total: u64 = files.iter().map(|(_, n)| n.unwrap_or(0)).sum();
    let missing: u64 = files
        .iter()
        .zip(&have)
        .filter(|(_, (_, whole))| whole.is_none())
        .map(|((_, n), (h, _))| n.unwrap_or(0).saturating_sub(*h))
        .sum();
    if let Some(free) = free_bytes().await
        && free < missing as f64
    {
        return Err(Error::Storage(format!(
            "the model needs {} more but this site may store only {} more: free at least {} (delete a stored model or free disk space) and download again; nothing more was stored",
            size_text(missing as f64),
            size_text(free.max(0.0)),
            size_text(missing as f64 - free.max(0.0))
        )));
    }
    let root = subdir(&models_dir().await?, name, true).await?;
    write_json(&root, PENDING, &pending).await?;
    let mut done = 0u64;
    let mut sizes = 0u64;
    let mut stored_files = Vec::with_capacity(files.len());
    let mut converted_any = false;
    for ((path, size), (stored, whole)) in files.iter().zip(have) {
        let url = format!("{base}{path}");
        let fail = |message: String| Error::Download {
            url: url.clone(),
            message,
        };
        if let Some((out, bytes)) = whole {
            // converted on an earlier try
            done += size.unwrap_or(0);
            sizes += bytes;
            stored_files.push(out);
            converted_any = true;
            on_progress(path, done, total);
            continue;
        }
        let convert = converting(path);
        let into = if convert {
            format!("{PARTIAL}/{path}")
        } else {
            path.clone()
        };
        if !size.is_some_and(|n| n == stored) {
            let resume = if size.is_some_and(|n| stored < n) {
                stored
            } else {
                0
            };
            let auth = remote
                .auth
                .as_deref()
                .filter(|_| origin(&url) == origin(base));
            let response = get(&url, resume, auth).await?;
            let status = response.status();
            if !(status == 200 || status == 206 && resume > 0) {
                let code = response.headers().get("x-error-code").ok().flatten();
                if let Some(e) = (remote.refuse)(status, code, path) {
                    return Err(e);
                }
                return Err(fail(format!(
                    "the server answered {status} {}{}",
                    response.status_text(),
                    if status == 404 {
                        " (is the file on the server?)"
                    } else {
                        ""
                    }
                )));
            }
            // 206: the server sends the rest, appended; 200: the whole file, from scratch.
            let appending = status == 206;
            let stream = writer(&new_file(&root, &into).await?, &into, appending).await?;
            let mut at = 0;
            if appending {
                at = resume;
                wait(
                    stream
                        .seek_with_f64(resume as f64)
                        .map_err(storage_err("seeking"))?,
                    &format!("writing {path}"),
                )
                .await?;
            }
            done += at;
            let body = response
                .body()
                .ok_or_else(|| fail("the server sent no body".into()))?;
            let reader: ReadableStreamDefaultReader = body.get_reader().unchecked_into();
            let outcome: Result<()> = async {
                loop {
                    let step = JsFuture::from(reader.read()).await.map_err(|e| {
                        fail(format!(
                            "the connection broke after {} of {} ({}); download again to resume",
                            mb(at),
                            size.map_or("?".into(), mb),
                            js_error(&e)
                        ))
                    })?;
                    if Reflect::get(&step, &"done".into()).is_ok_and(|d| d.is_truthy()) {
                        return Ok(());
                    }
                    let chunk: Uint8Array = Reflect::get(&step, &"value".into())
                        .map_err(storage_err("reading a download"))?
                        .unchecked_into();
                    let p = stream
                        .write_with_js_u8_array(&chunk)
                        .map_err(storage_err("writing"))?;
                    wait(p, &format!("writing {path}")).await?;
                    at += chunk.length() as u64;
                    done += chunk.length() as u64;
                    on_progress(path, done, total);
                }
            }
            .await;
            // Close even after a failure: OPFS keeps written bytes only once the stream
            // closes, and they are what the next try resumes from. (A stream a write
            // failed on cannot close: the write's error is the one to report.)
            let closed = wait(stream.close(), &format!("writing {path}")).await;
            outcome?;
            closed?;
            // A body that ends normally is whole: a connection closed before
            // Content-Length is a read error above. (Sizes are not compared: where a
            // server compresses text files, HEAD's Content-Length is the compressed
            // size. A truncated weight file would still fail to load, naming the
            // missing bytes.)
            if !convert {
                sizes += at;
            }
        } else {
            done += stored;
            on_progress(path, done, total);
            if !convert {
                sizes += stored;
            }
        }
        if !convert {
            stored_files.push(path.clone());
            continue;
        }
        // The weight file is whole under PARTIAL: convert it into its stored name.
        let handle = file_handle(&root, &into, false)
            .await?
            .ok_or_else(|| Error::Storage(format!("{into} vanished from the storage")))?;
        let blob: Blob = wait(handle.get_file(), &format!("reading {into}"))
            .await?
            .unchecked_into();
        let file = WeightFile::open(path, Box::new(BlobRange::new(&blob, path)?))?;
        let component = path.split('/').next().unwrap_or_default().to_string();
        let t = target.expect("converting implies a target");
        if file.index.metadata.contains_key(crate::quant::meta::FORMAT) {
            // already converted upstream: stored as it is
            let stream = writer(&new_file(&root, path).await?, path, false).await?;
            wait(
                stream
                    .write_with_blob(&blob)
                    .map_err(storage_err("writing"))?,
                &format!("writing {path}"),
            )
            .await?;
            wait(stream.close(), &format!("writing {path}")).await?;
            sizes += blob.size() as u64;
            stored_files.push(path.clone());
        } else {
            let plan = crate::convert::plan(&component, &file.index, t)?;
            let out = crate::convert::output_name(&component);
            let c = Conversion {
                file,
                component,
                plan,
            };
            let at = done;
            write_conversion(&root, &out, &c, path, &mut |_| on_progress(&out, at, total)).await?;
            sizes += c.plan.total_bytes;
            stored_files.push(out);
            converted_any = true;
        }
        remove_file(&root, &into).await?;
    }
    let _ = remove_file(&root, PARTIAL).await;
    let format = match target {
        Some(t) if converted_any => t.name().to_string(),
        _ => original(),
    };
    finish(&root, name, sizes, stored_files, format).await
}

/// Removes `path` (a file, or a folder with what it holds) under `root`; absent is fine.
async fn remove_file(root: &FileSystemDirectoryHandle, path: &str) -> Result<()> {
    let mut dir = root.clone();
    let mut parts: Vec<&str> = path.split('/').collect();
    let last = parts.pop().unwrap_or_default();
    for p in parts {
        match JsFuture::from(dir.get_directory_handle(p)).await {
            Ok(d) => dir = d.unchecked_into(),
            Err(_) => return Ok(()),
        }
    }
    let opts = FileSystemRemoveOptions::new();
    opts.set_recursive(true);
    match JsFuture::from(dir.remove_entry_with_options(last, &opts)).await {
        Ok(_) => Ok(()),
        Err(e) if js_error(&e).contains("NotFound") => Ok(()),
        Err(e) => Err(storage_err(&format!("removing {path}"))(e)),
    }
}

fn mb(bytes: u64) -> String {
    format!("{:.1} MB", bytes as f64 / 1e6)
}

/// The size of `path` under `root` as stored so far (0 if absent).
async fn stored_size(root: &FileSystemDirectoryHandle, path: &str) -> Result<u64> {
    let Some(h) = file_handle(root, path, false).await? else {
        return Ok(0);
    };
    let file: Blob = wait(h.get_file(), &format!("reading {path}"))
        .await?
        .unchecked_into();
    Ok(file.size() as u64)
}

/// A GET of the whole file, or from byte `from` on.
/// With `auth`, the `Authorization` header's value: the caller sends it only to the
/// endpoint's origin, and the browser drops it when a redirect leaves that origin (the
/// Hub's 302 to its file CDN), as the Fetch standard requires.
pub async fn get(url: &str, from: u64, auth: Option<&str>) -> Result<web_sys::Response> {
    let init = RequestInit::new();
    init.set_method("GET");
    // Never a cached copy: a cache would be a second, multi-gigabyte copy of the model.
    init.set_cache(RequestCache::NoStore);
    if from > 0 || auth.is_some() {
        let headers = Headers::new().map_err(storage_err("making a request"))?;
        if from > 0 {
            headers
                .set("Range", &format!("bytes={from}-"))
                .map_err(storage_err("making a request"))?;
        }
        if let Some(a) = auth {
            headers
                .set("Authorization", a)
                .map_err(storage_err("making a request"))?;
        }
        init.set_headers_headers(&headers);
    }
    fetch(url, &init).await
}

/// The size the server gives for `url` (`HEAD`), `None` when it has no such file.
pub async fn head(url: &str) -> Result<Option<Option<u64>>> {
    let init = RequestInit::new();
    init.set_method("HEAD");
    init.set_cache(RequestCache::NoStore);
    let r = fetch(url, &init).await?;
    if !r.ok() {
        return Ok(None);
    }
    let len = r
        .headers()
        .get("content-length")
        .ok()
        .flatten()
        .and_then(|v| v.parse().ok());
    Ok(Some(len))
}

/// `fetch` in the engine's worker (downloads run there, never in the page).
async fn fetch(url: &str, init: &RequestInit) -> Result<web_sys::Response> {
    let scope: web_sys::WorkerGlobalScope = js_sys::global().unchecked_into();
    let promise = scope.fetch_with_str_and_init(url, init);
    Ok(JsFuture::from(promise)
        .await
        .map_err(|e| Error::Download {
            url: url.into(),
            message: format!(
                "the server cannot be reached ({}): check the address and the network; a server on another site must allow this page (Access-Control-Allow-Origin), and this page's Content-Security-Policy must name it (connect-src: this site and the Hugging Face Hub's origins; see README)",
                js_error(&e)
            ),
        })?
        .unchecked_into())
}

/// A stored model as a [`FileSource`].
pub async fn open(name: &str) -> Result<BlobSource> {
    let dir = subdir(&models_dir().await?, name, false)
        .await
        .map_err(|_| Error::Storage(format!("no stored model named `{name}`; import it again")))?;
    let files = walk(&dir, "").await?;
    if !files.iter().any(|(p, _)| p == MANIFEST) {
        return Err(Error::Storage(format!(
            "the import of `{name}` did not finish; delete it and import the folder again"
        )));
    }
    Ok(BlobSource {
        files: files.into_iter().collect(),
    })
}

/// Files as `Blob`s: stored (`getFile()`) or picked.
#[derive(Clone)]
pub struct BlobSource {
    files: BTreeMap<String, Blob>,
}

impl BlobSource {
    fn blob(&self, path: &str) -> Result<&Blob> {
        self.files.get(path).ok_or_else(|| Error::MissingFile {
            path: path.into(),
            hint: "the stored model is incomplete; import the folder again".into(),
        })
    }
}

impl FileSource for BlobSource {
    fn list(&self) -> Vec<String> {
        self.files.keys().cloned().collect()
    }

    async fn read(&self, path: &str) -> Result<Vec<u8>> {
        let buf = wait(self.blob(path)?.array_buffer(), &format!("reading {path}")).await?;
        Ok(Uint8Array::new(&buf).to_vec())
    }

    fn open(&self, path: &str) -> Result<Box<dyn RangeRead>> {
        Ok(Box::new(BlobRange::new(self.blob(path)?, path)?))
    }
}

impl BlobRange {
    fn new(blob: &Blob, path: &str) -> Result<BlobRange> {
        let reader = FileReaderSync::new().map_err(|e| {
            Error::Storage(format!(
                "FileReaderSync is unavailable ({}); models load in a Web Worker",
                js_error(&e)
            ))
        })?;
        Ok(BlobRange {
            blob: blob.clone(),
            reader,
            path: path.into(),
        })
    }
}

/// One `Blob` read at offsets, synchronously (worker only).
struct BlobRange {
    blob: Blob,
    reader: FileReaderSync,
    path: String,
}

impl RangeRead for BlobRange {
    fn len(&self) -> u64 {
        self.blob.size() as u64
    }

    fn read_at(&self, offset: u64, len: usize) -> Result<Vec<u8>> {
        let end = offset + len as u64;
        if end > self.len() {
            return Err(Error::MissingFile {
                path: self.path.clone(),
                hint: format!(
                    "it ends at byte {} but bytes up to {end} are needed: the file is truncated; import the folder again",
                    self.len()
                ),
            });
        }
        let slice = self
            .blob
            .slice_with_f64_and_f64(offset as f64, end as f64)
            .map_err(storage_err("slicing a file"))?;
        let buf = self
            .reader
            .read_as_array_buffer(&slice)
            .map_err(storage_err(&format!("reading {}", self.path)))?;
        Ok(Uint8Array::new(&buf).to_vec())
    }
}
