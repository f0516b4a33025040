//! `--model` as a folder, a Hub repo, a known model or a recipe file; `roentgen download`
//! and `roentgen models`. The library's [`roentgen_web::hub`] does the work; this file
//! shows its progress (one bar of bytes on a terminal, plain lines in logs).

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use roentgen_web::hub::recipe::{self, Recipe};
use roentgen_web::hub::{Event, Hub, RepoRef, select, select_combined};

#[derive(clap::Args)]
pub struct DownloadArgs {
    /// ORG/NAME[@REVISION], a known model (`roentgen models`) or a recipe .json.
    model: String,
    /// Fetch the fp16 weight variant where a repo has one.
    #[arg(long)]
    f16: bool,
    /// Also fetch RoentGen v2's text_encoder_and_tokenizer/ where the repo has one.
    #[arg(long)]
    text_encoder_and_tokenizer: bool,
}

/// Progress of a download: bytes in total, the current file in the message.
struct Shown {
    bar: Option<ProgressBar>,
    start: Instant,
    total: u64,
    done: u64,
    last_logged: u64,
}

impl Shown {
    fn new() -> Shown {
        Shown {
            bar: None,
            start: Instant::now(),
            total: 0,
            done: 0,
            last_logged: 0,
        }
    }

    fn event(&mut self, e: Event) {
        match e {
            Event::Plan {
                repo,
                files,
                total,
                done,
                cached,
            } => {
                if files.is_empty() {
                    eprintln!("{repo}: all {cached} files needed are in the cache");
                    return;
                }
                eprintln!(
                    "{repo}: downloading {} files, {:.1} MB{}{}",
                    files.len(),
                    total as f64 / 1e6,
                    if done > 0 {
                        format!(" ({:.1} MB already here, resumed)", done as f64 / 1e6)
                    } else {
                        String::new()
                    },
                    if cached > 0 {
                        format!("; {cached} files already in the cache")
                    } else {
                        String::new()
                    },
                );
                self.total = total;
                self.done = done;
                self.last_logged = done;
                self.start = Instant::now();
                if let Some(b) = self.bar.take() {
                    b.finish_and_clear();
                }
                self.bar = std::io::stderr().is_terminal().then(|| {
                    let bar = ProgressBar::with_draw_target(
                        Some(total),
                        ProgressDrawTarget::stderr(),
                    )
                    .with_style(
                        ProgressStyle::with_template(
                            "[{bar:30}] {bytes}/{total_bytes} {bytes_per_sec}, {eta} left {msg}",
                        )
                        .expect("a valid template")
                        .progress_chars("#>."),
                    )
                    .with_position(done);
                    bar.reset_eta();
                    bar.enable_steady_tick(Duration::from_millis(500));
                    bar
                });
            }
            Event::File { path, size, done } => {
                let line = format!(
                    "{path} ({:.1} MB{})",
                    size as f64 / 1e6,
                    if done > 0 {
                        format!(", resuming at {:.1} MB", done as f64 / 1e6)
                    } else {
                        String::new()
                    }
                );
                match &self.bar {
                    Some(b) => b.set_message(line),
                    None => eprintln!("  {line}"),
                }
            }
            Event::Bytes(n) => {
                self.done += n;
                match &self.bar {
                    Some(b) => b.set_position(self.done),
                    None => {
                        if self.done >= self.last_logged + (self.total / 10).max(1)
                            || self.done == self.total
                        {
                            self.last_logged = self.done;
                            let el = self.start.elapsed().as_secs_f64().max(1e-9);
                            eprintln!(
                                "  {:.1}/{:.1} MB, {:.1} MB/s",
                                self.done as f64 / 1e6,
                                self.total as f64 / 1e6,
                                self.done as f64 / 1e6 / el
                            );
                        }
                    }
                }
            }
        }
    }

    fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}

/// What `--model` names, other than a folder.
enum Named {
    Repo(RepoRef),
    Recipe(Recipe),
}

fn named(model: &str) -> Result<Named> {
    if model.ends_with(".json") && Path::new(model).is_file() {
        let json = std::fs::read_to_string(model).with_context(|| format!("reading {model}"))?;
        return Ok(Named::Recipe(Recipe::from_json(model, &json)?));
    }
    if let Some(r) = recipe::find_known(model) {
        // A known model that is one whole repo is fetched as that repo.
        return Ok(match &r.repo {
            Some(s) => Named::Repo(RepoRef::parse(&format!("{}@{}", s.repo, s.revision))?),
            None => Named::Recipe(r),
        });
    }
    Ok(Named::Repo(RepoRef::parse(model)?))
}

/// `combined`: also RoentGen v2's `text_encoder_and_tokenizer/` where the repo has one.
fn fetch(model: &str, prefer_f16: bool, combined: bool) -> Result<PathBuf> {
    let hub = Hub::from_env();
    let mut shown = Shown::new();
    let choose = |files: &[String]| {
        let mut chosen = select(files, prefer_f16)?;
        if combined {
            chosen.extend(select_combined(files, prefer_f16)?);
        }
        Ok(chosen)
    };
    let out = match named(model)? {
        Named::Repo(r) => hub
            .snapshot(&r, &choose, &mut |e| shown.event(e))
            .map(|s| s.dir),
        Named::Recipe(rec) => rec.materialize(&hub, prefer_f16, &mut |e| shown.event(e)),
    };
    shown.finish();
    Ok(out?)
}

/// The folder `--model` names: an existing folder as it is (it wins, as in diffusers),
/// else a Hub repo's snapshot, a known model or a recipe, downloaded into the cache
/// first where needed.
pub fn model_dir(model: &Path, prefer_f16: bool) -> Result<PathBuf> {
    model_dir_with(model, prefer_f16, false)
}

/// [`model_dir`], also fetching RoentGen v2's `text_encoder_and_tokenizer/` if
/// `combined` (`generate --text-encoder text_encoder_and_tokenizer`).
pub fn model_dir_with(model: &Path, prefer_f16: bool, combined: bool) -> Result<PathBuf> {
    if model.is_dir() {
        return Ok(model.to_path_buf());
    }
    let s = model.to_string_lossy();
    fetch(&s, prefer_f16, combined)
}

pub fn download(a: DownloadArgs) -> Result<()> {
    let dir = fetch(&a.model, a.f16, a.text_encoder_and_tokenizer)?;
    eprintln!("{} is in {}", a.model, dir.display());
    println!("{}", dir.display());
    Ok(())
}

pub fn models() -> Result<()> {
    println!(
        "{:<12} {:<58} defaults",
        "name", "components (repo[/subfolder]@revision)"
    );
    for r in recipe::known() {
        let parts: Vec<String> = match &r.repo {
            Some(s) => vec![format!("{}@{}", s.repo, s.revision)],
            None => r
                .components
                .iter()
                .map(|(k, s)| {
                    let sub = if s.subfolder.is_empty() {
                        String::new()
                    } else {
                        format!("/{}", s.subfolder)
                    };
                    format!("{k}: {}{sub}@{}", s.repo, s.revision)
                })
                .collect(),
        };
        let d = &r.defaults;
        let mut defaults = format!(
            "{} steps, guidance {}, {}x{}",
            d.steps.unwrap_or(50),
            d.guidance.unwrap_or(7.5),
            d.size.unwrap_or(512),
            d.size.unwrap_or(512)
        );
        if let Some(c) = &r.scheduler_config {
            defaults.push_str(&format!(
                ", {} (in the recipe)",
                c["_class_name"].as_str().unwrap_or("?")
            ));
        }
        for (i, p) in parts.iter().enumerate() {
            if i == 0 {
                println!("{:<12} {:<58} {}", r.name, p, defaults);
            } else {
                println!("{:<12} {:<58}", "", p);
            }
        }
        println!("{:<12} {}", "", r.description);
        println!("{:<12} source: {}", "", r.cite.join(", "));
    }
    println!(
        "\n--model takes these names, ORG/NAME[@REVISION], a recipe .json of the same form (`roentgen models --json`), or a folder (docs/MODELS.md)."
    );
    Ok(())
}

pub fn models_json() -> Result<()> {
    println!("{}", serde_json::to_string_pretty(&recipe::known())?);
    Ok(())
}
