//! Running one shard (native): images written whole under a temporary name and renamed,
//! each image's manifest row appended only after, a rerun skipping what is done.
//!
//! - A job is done when the manifests hold a row for its file with the same settings
//!   and the file's SHA-256 is the recorded one. A file that is missing, truncated or
//!   altered, or has no row (the process died between the rename and the append), is
//!   made again and a new row appended; the last row of an image stands.
//! - A row for the file with other settings (another prompt, seed, steps, model...)
//!   stops the run before anything is written: the folder holds another dataset.
//! - The shard's manifest is locked (`flock`) while the run goes on: a second process
//!   given the same shard is refused with a sentence; the lock goes with the process,
//!   so a killed run never leaves a stale lock. A manifest whose last line was torn by
//!   a kill is cut back to its last whole line.
//! - Part files (`NAME.png.part-PID`) a killed run of the shard left are removed when
//!   the shard starts again.
//! - `stop` (Ctrl-C, SIGTERM) is looked at between UNet batches: the images in flight
//!   are finished and written first.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use serde_json::{Map, Value};

use crate::checkpoint::{Checkpoint, FileSource};
use crate::error::{Error, Result};
use crate::generation::{BatchItem, Plan, Prompts};
use crate::gpu::Gpu;
use crate::output::write_atomically;
use crate::pipeline::{Control, Pipeline};

use super::manifest::{self, METADATA, ManifestRow};
use super::plan::{Job, Shard};
use super::table::PromptTable;

/// The settings every image of the run shares.
pub struct RunSettings {
    pub out: PathBuf,
    pub shard: Shard,
    /// The settings every image shares, checked against the model ([`Pipeline::plan`];
    /// its prompts are replaced by each UNet batch's jobs).
    pub plan: Plan,
    /// Images through the UNet together.
    pub batch_size: usize,
    /// As `roentgen generate` names it in the PNG's text chunks.
    pub model_name: String,
    pub weights_sha256: String,
    /// DICOM files instead of PNGs: the caller brings the randomness of their UIDs and
    /// the clock ([`crate::pipeline::Outcome::dicom`]).
    pub dicom: Option<Entropy>,
}

/// 384 random bits for a DICOM file's three UIDs, and the time in Unix seconds.
pub type Entropy = fn() -> ([u128; 3], u64);

/// What the run reports as it goes.
pub enum Event<'a> {
    /// The shard's jobs: `done` already finished by an earlier run, `total` in all.
    Planned {
        total: usize,
        done: usize,
    },
    /// A UNet call of the batch in flight.
    Step {
        call: usize,
        calls: usize,
    },
    /// An image was written and its row appended.
    Image {
        job: &'a Job,
        done: usize,
        total: usize,
    },
    Warning(String),
}

/// How a run ended.
#[derive(Debug, PartialEq, Eq)]
pub struct Summary {
    pub total: usize,
    /// Already finished before this run.
    pub skipped: usize,
    pub made: usize,
    /// Stopped by `stop` before the shard was complete.
    pub stopped: bool,
}

fn io(path: &Path, what: &str, e: std::io::Error) -> Error {
    Error::Input(format!("{what} {}: {e}", path.display()))
}

/// SHA-256 of a file, streamed.
pub fn hash_file(path: &Path) -> std::io::Result<String> {
    use sha2::Digest;
    let mut f = File::open(path)?;
    let mut h = sha2::Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(manifest::hex(&h.finalize()))
}

/// The weights' digest of a checkpoint folder at `root` ([`manifest::weights_digest`]).
pub fn weights_sha256<S: FileSource>(ck: &Checkpoint<S>, root: &Path) -> Result<String> {
    let mut files = Vec::new();
    for rel in ck.weight_files()? {
        let path = root.join(&rel);
        let hex = hash_file(&path).map_err(|e| io(&path, "reading", e))?;
        files.push((rel, hex));
    }
    Ok(manifest::weights_digest(&files))
}

/// Every row of the manifests in `out` (all shards, all shard counts; not the merged
/// `metadata.jsonl`), in file-name order, with warnings for lines that are not rows.
pub fn read_manifests(out: &Path) -> Result<(Vec<ManifestRow>, Vec<String>)> {
    let mut names: Vec<PathBuf> = match std::fs::read_dir(out) {
        Ok(entries) => entries
            .flatten()
            .map(|e| e.path())
            .filter(|p| {
                p.extension().is_some_and(|e| e == "jsonl")
                    && p.file_name().is_some_and(|n| n != METADATA)
                    && p.is_file()
            })
            .collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => vec![],
        Err(e) => return Err(io(out, "reading the folder", e)),
    };
    names.sort();
    let (mut rows, mut warnings) = (Vec::new(), Vec::new());
    for p in names {
        let text = std::fs::read(&p).map_err(|e| io(&p, "reading", e))?;
        let m = manifest::read(&String::from_utf8_lossy(&text));
        for (line, why) in m.skipped {
            warnings.push(format!(
                "{}, line {line}: not a manifest row, ignored ({why})",
                p.display()
            ));
        }
        rows.extend(m.rows);
    }
    Ok((rows, warnings))
}

/// Opens and locks the shard's manifest for appending, cutting a torn last line.
fn open_manifest(out: &Path, shard: Shard, warn: &mut dyn FnMut(String)) -> Result<File> {
    let path = out.join(shard.manifest_name());
    let mut f = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(|e| io(&path, "cannot write the manifest", e))?;
    match f.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            return Err(Error::Input(format!(
                "another `roentgen batch` is writing shard {shard} into {} (it holds {}); wait for it to finish, or run another --shard",
                out.display(),
                path.display()
            )));
        }
        Err(std::fs::TryLockError::Error(e)) => return Err(io(&path, "cannot lock", e)),
    }
    let mut text = Vec::new();
    f.read_to_end(&mut text)
        .map_err(|e| io(&path, "reading", e))?;
    if !text.is_empty() && !text.ends_with(b"\n") {
        let keep = text.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        warn(format!(
            "{}: its last line was cut short (a run was killed while writing it); removed it, the image is made again",
            path.display()
        ));
        f.set_len(keep as u64)
            .map_err(|e| io(&path, "repairing", e))?;
    }
    f.seek(SeekFrom::End(0))
        .map_err(|e| io(&path, "reading", e))?;
    Ok(f)
}

/// The labels of a row, as the manifest carries them.
fn labels(table: &PromptTable, row: usize) -> Map<String, Value> {
    let r = &table.rows[row];
    table
        .label_columns()
        .into_iter()
        .map(|c| (table.columns[c].clone(), r.values[c].clone()))
        .collect()
}

fn row_for(job: &Job, table: &PromptTable, s: &RunSettings) -> ManifestRow {
    ManifestRow {
        id: job.id.clone(),
        row_id: job.row_id.clone(),
        image: job.image,
        row: job.line,
        file: job.file.clone(),
        prompt: job.prompt.clone(),
        negative_prompt: job.negative_prompt.clone(),
        seed: job.seed,
        model: s.model_name.clone(),
        weights_sha256: s.weights_sha256.clone(),
        scheduler: s.plan.settings.scheduler.name().into(),
        steps: s.plan.settings.steps,
        guidance: s.plan.settings.guidance,
        width: s.plan.settings.width,
        height: s.plan.settings.height,
        sha256: String::new(),
        shard: s.shard.to_string(),
        software: format!("roentgen-web {}", env!("CARGO_PKG_VERSION")),
        labels: labels(table, job.row),
    }
}

/// Makes the shard's images that are not done yet (see the module). `jobs` is the
/// whole plan; the shard's share is taken here.
#[allow(clippy::too_many_arguments)]
pub async fn run_shard(
    gpu: &Gpu,
    pipe: &Pipeline,
    table: &PromptTable,
    jobs: &[Job],
    s: &RunSettings,
    stop: &AtomicBool,
    on_event: &mut dyn FnMut(Event),
) -> Result<Summary> {
    if s.batch_size == 0 {
        return Err(Error::Input("--batch-size must be at least 1".into()));
    }
    let images = s.out.join("images");
    std::fs::create_dir_all(&images).map_err(|e| {
        Error::Input(format!(
            "cannot create the output folder {}: {e}; choose a folder you can write to with --output-dir",
            images.display()
        ))
    })?;
    let mut manifest_file = open_manifest(&s.out, s.shard, &mut |w| on_event(Event::Warning(w)))?;
    let (rows, warnings) = read_manifests(&s.out)?;
    for w in warnings {
        on_event(Event::Warning(w));
    }
    let recorded: std::collections::HashMap<String, ManifestRow> = manifest::latest(rows)
        .into_iter()
        .map(|r| (r.file.clone(), r))
        .collect();

    // What is done, what is to make; a clash of settings stops everything here.
    let mine: Vec<&Job> = jobs
        .iter()
        .enumerate()
        .filter(|(g, _)| s.shard.takes(*g))
        .map(|(_, j)| j)
        .collect();
    let mut todo = Vec::new();
    for job in &mine {
        let want = row_for(job, table, s);
        match recorded.get(&job.file) {
            Some(have) if !have.same_settings(&want) => {
                return Err(Error::Input(format!(
                    "{} in {} was made with other settings: {}; write this dataset to another --output-dir, or delete the old one",
                    job.file,
                    s.out.display(),
                    have.differences(&want)
                )));
            }
            Some(have) => match hash_file(&s.out.join(&job.file)) {
                Ok(h) if h == have.sha256 => {}
                Ok(_) => {
                    on_event(Event::Warning(format!(
                        "{}: its SHA-256 is not the recorded one (truncated or altered); making it again",
                        job.file
                    )));
                    todo.push(*job);
                }
                Err(_) => todo.push(*job),
            },
            None => todo.push(*job),
        }
    }
    let total = mine.len();
    let skipped = total - todo.len();
    on_event(Event::Planned {
        total,
        done: skipped,
    });

    // Part files of this shard's images were left by a killed run of this shard (the
    // lock says no other process is writing them): remove them.
    let todo_files: std::collections::HashSet<&str> = todo
        .iter()
        .filter_map(|j| j.file.strip_prefix("images/"))
        .collect();
    if let Ok(entries) = std::fs::read_dir(&images) {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if let Some((file, _pid)) = name.rsplit_once(".part-")
                && todo_files.contains(file)
            {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }

    let manifest_path = s.out.join(s.shard.manifest_name());
    let mut made = 0;
    for chunk in todo.chunks(s.batch_size) {
        if stop.load(Ordering::SeqCst) {
            return Ok(Summary {
                total,
                skipped,
                made,
                stopped: true,
            });
        }
        let items: Vec<BatchItem> = chunk
            .iter()
            .map(|j| BatchItem {
                prompt: j.prompt.clone(),
                negative_prompt: j.negative_prompt.clone(),
                seed: j.seed,
            })
            .collect();
        let plan = Plan {
            prompts: Prompts::Batch(items),
            ..s.plan.clone()
        };
        let outcome = pipe
            .generate(gpu, &plan, &mut |p| {
                on_event(Event::Step {
                    call: p.call,
                    calls: p.calls,
                });
                Control::Continue
            })
            .await?;
        for (k, job) in chunk.iter().enumerate() {
            let bytes = match s.dicom {
                Some(entropy) => {
                    let (bits, now) = entropy();
                    outcome.dicom(k, bits, now)?
                }
                None => outcome.png(k, false)?,
            };
            let path = s.out.join(&job.file);
            write_atomically(&path, &bytes).map_err(|e| io(&path, "writing", e))?;
            let mut row = row_for(job, table, s);
            row.sha256 = manifest::sha256(&bytes);
            let mut line = row.to_line();
            line.push('\n');
            // one write of a whole line, flushed: a kill leaves at most a torn last
            // line, which the next run cuts
            manifest_file
                .write_all(line.as_bytes())
                .and_then(|_| manifest_file.sync_data())
                .map_err(|e| io(&manifest_path, "appending to", e))?;
            made += 1;
            on_event(Event::Image {
                job,
                done: skipped + made,
                total,
            });
        }
    }
    Ok(Summary {
        total,
        skipped,
        made,
        stopped: false,
    })
}

/// What [`merge`] did: images in the merged files, shards seen, and what it left out.
pub struct Merged {
    pub images: usize,
    pub manifests: usize,
    pub warnings: Vec<String>,
}

/// `roentgen batch --merge OUT`: the rows that stand, from every shard's manifest,
/// written to `OUT/metadata.jsonl` and `OUT/manifest.csv` (each whole or not at all).
/// Rows whose image is missing are left out and reported.
pub fn merge(out: &Path) -> Result<Merged> {
    if !out.is_dir() {
        return Err(Error::Input(format!(
            "{} is not a folder; give the --output-dir of the batch run",
            out.display()
        )));
    }
    let (rows, mut warnings) = read_manifests(out)?;
    let mut shards: std::collections::BTreeMap<usize, std::collections::BTreeSet<usize>> =
        Default::default();
    let mut manifests = std::collections::BTreeSet::new();
    for r in &rows {
        if let Some((k, n)) = r.shard.split_once('/')
            && let (Ok(k), Ok(n)) = (k.parse::<usize>(), n.parse::<usize>())
        {
            shards.entry(n).or_default().insert(k);
            manifests.insert((k, n));
        }
    }
    for (n, ks) in &shards {
        let missing: Vec<String> = (0..*n)
            .filter(|k| !ks.contains(k))
            .map(|k| format!("{k}/{n}"))
            .collect();
        if !missing.is_empty() {
            warnings.push(format!(
                "no image yet from shard(s) {}: has every shard run?",
                missing.join(", ")
            ));
        }
    }
    if rows.is_empty() {
        return Err(Error::Input(format!(
            "{} holds no manifest rows (shard-K-of-N.jsonl); run `roentgen batch` into it first",
            out.display()
        )));
    }
    let mut kept = Vec::new();
    for r in manifest::latest(rows) {
        if out.join(&r.file).is_file() {
            kept.push(r);
        } else {
            warnings.push(format!(
                "{}: in the manifest but missing; left out (rerun its shard to make it)",
                r.file
            ));
        }
    }
    let outputs = manifest::merged_outputs(&kept)?;
    warnings.extend(outputs.warnings.iter().cloned());
    for (name, text) in outputs.files() {
        let p = out.join(name);
        write_atomically(&p, text.as_bytes()).map_err(|e| io(&p, "writing", e))?;
    }
    Ok(Merged {
        images: kept.len(),
        manifests: manifests.len(),
        warnings,
    })
}
