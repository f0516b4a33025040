//! The jobs of a batch run: one per (row, image j), each with its own id, file, seed
//! and prompt, and the shard that makes it. Nothing here depends on how many shards
//! there are, in what order jobs run or how many share a UNet batch, except which
//! shard takes a job: an image is a function of its row, j and the run's settings.
//!
//! - **Ids.** A row's id is its `id` cell, or `row{N}` (N: the row's 1-based position
//!   among the data rows) when the table has no id or the cell is blank. Image j of
//!   row `R` is `R-j` and is written to `images/R-j.png` (`.dcm` with `--format dcm`).
//! - **Seeds.** Image j of a row with a `seed` cell uses `seed + j`. Otherwise its
//!   seed is [`derived_seed`]`(--seed, row id, j)`: SplitMix64 over the FNV-1a hash of
//!   the id, kept to 53 bits so that every JSON reader holds it exactly.
//! - **Shards.** Jobs are numbered in table order, row by row, j within a row: job
//!   `g = row_index * images_per_prompt + j`. Shard `K` of `N` takes the jobs with
//!   `g % N == K`: every job is in exactly one shard, and shards differ by at most one job.

use crate::error::{Error, Result};

use super::table::{ID, NEGATIVE_PROMPT, PROMPT, PromptTable, SEED, Template};

/// The most images per row.
pub const MAX_IMAGES_PER_PROMPT: usize = 10_000;
/// The longest id (it names a file).
pub const MAX_ID: usize = 100;

/// One image to make.
#[derive(Clone, Debug, PartialEq)]
pub struct Job {
    /// Index of the row in the table's data rows.
    pub row: usize,
    /// The row's line in the file.
    pub line: usize,
    pub row_id: String,
    /// Which image of the row (0-based).
    pub image: usize,
    /// `row_id-image`.
    pub id: String,
    /// Relative to the output folder, `/`-separated.
    pub file: String,
    pub prompt: String,
    pub negative_prompt: String,
    pub seed: u64,
}

/// A share of the jobs: `index` of `count`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shard {
    pub index: usize,
    pub count: usize,
}

impl Shard {
    pub const ALL: Shard = Shard { index: 0, count: 1 };

    /// `K/N` as `--shard` takes it.
    pub fn parse(text: &str) -> Result<Shard> {
        let err = |m: String| Error::Input(format!("--shard {text}: {m}"));
        let (k, n) = text
            .split_once('/')
            .ok_or_else(|| err("write it as K/N, e.g. 0/4 for the first of four shards".into()))?;
        let k: usize = k
            .trim()
            .parse()
            .map_err(|_| err(format!("`{k}` is not a shard number")))?;
        let n: usize = n
            .trim()
            .parse()
            .map_err(|_| err(format!("`{n}` is not a shard count")))?;
        Shard::new(k, n).map_err(|e| err(e.to_string()))
    }

    pub fn new(index: usize, count: usize) -> Result<Shard> {
        if count == 0 {
            return Err(Error::Input("the shard count must be at least 1".into()));
        }
        if index >= count {
            return Err(Error::Input(format!(
                "shard {index} of {count} does not exist: shards are numbered from 0 to {}",
                count - 1
            )));
        }
        Ok(Shard { index, count })
    }

    /// The shard a cluster's job array gives this process, when `--shard` is not given:
    /// Slurm job arrays (`SLURM_ARRAY_TASK_ID` minus `SLURM_ARRAY_TASK_MIN`, of
    /// `SLURM_ARRAY_TASK_COUNT`: submit with `--array=0-(N-1)`), or Kubernetes Indexed
    /// Jobs (`JOB_COMPLETION_INDEX`, of `shards`, which `--shards N` gives). `None` when
    /// neither is set (then the run is one shard). `env` reads a variable.
    pub fn from_env(
        env: &dyn Fn(&str) -> Option<String>,
        shards: Option<usize>,
    ) -> Result<Option<(Shard, &'static str)>> {
        let number = |name: &str| -> Result<Option<usize>> {
            match env(name) {
                None => Ok(None),
                Some(v) if v.trim().is_empty() => Ok(None),
                Some(v) => v.trim().parse().map(Some).map_err(|_| {
                    Error::Input(format!(
                        "the environment variable {name}={v:?} is not a number"
                    ))
                }),
            }
        };
        if let Some(id) = number("SLURM_ARRAY_TASK_ID")? {
            let min = number("SLURM_ARRAY_TASK_MIN")?.unwrap_or(0);
            let count = match number("SLURM_ARRAY_TASK_COUNT")? {
                Some(c) => c,
                None => shards.ok_or_else(|| {
                    Error::Input(
                        "SLURM_ARRAY_TASK_ID is set but SLURM_ARRAY_TASK_COUNT is not; give --shards N or --shard K/N".into(),
                    )
                })?,
            };
            if let Some(n) = shards
                && n != count
            {
                return Err(Error::Input(format!(
                    "--shards {n} disagrees with SLURM_ARRAY_TASK_COUNT={count}"
                )));
            }
            let index = id.checked_sub(min).ok_or_else(|| {
                Error::Input(format!(
                    "SLURM_ARRAY_TASK_ID={id} is below SLURM_ARRAY_TASK_MIN={min}"
                ))
            })?;
            let shard = Shard::new(index, count).map_err(|e| {
                Error::Input(format!(
                    "the Slurm array task {id} is not a shard ({e}); submit the array as --array=0-{}",
                    count.saturating_sub(1)
                ))
            })?;
            return Ok(Some((shard, "Slurm job array")));
        }
        if let Some(index) = number("JOB_COMPLETION_INDEX")? {
            let count = shards.ok_or_else(|| {
                Error::Input(
                    "JOB_COMPLETION_INDEX is set (a Kubernetes Indexed Job): give --shards N, N being the Job's completions".into(),
                )
            })?;
            let shard = Shard::new(index, count)
                .map_err(|e| Error::Input(format!("JOB_COMPLETION_INDEX={index}: {e}")))?;
            return Ok(Some((shard, "Kubernetes Indexed Job")));
        }
        Ok(None)
    }

    /// Whether job `g` is this shard's.
    pub fn takes(&self, g: usize) -> bool {
        g % self.count == self.index
    }

    /// The manifest this shard appends to.
    pub fn manifest_name(&self) -> String {
        format!("shard-{}-of-{}.jsonl", self.index, self.count)
    }
}

impl std::fmt::Display for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

fn splitmix64(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// The seed of image `j` of the row `row_id` when the row has no seed of its own:
/// `splitmix64(splitmix64(splitmix64(base) ^ fnv1a64(row_id)) ^ j) >> 11`.
pub fn derived_seed(base: u64, row_id: &str, j: usize) -> u64 {
    splitmix64(splitmix64(splitmix64(base) ^ fnv1a64(row_id.as_bytes())) ^ j as u64) >> 11
}

/// What shapes the plan.
pub struct PlanOptions<'a> {
    pub images_per_prompt: usize,
    pub seed: u64,
    pub template: Option<&'a Template>,
    /// The images' file extension: `png` or `dcm`.
    pub extension: &'a str,
}

fn row_error(table: &PromptTable, line: usize, message: String) -> Error {
    Error::Config {
        file: format!("{}, line {line}", table.name),
        message,
    }
}

/// Every job of the table, in job order (see the module). Checks the columns, the ids
/// (unique, usable as file names) and the seeds (whole numbers) first.
pub fn plan(table: &PromptTable, o: &PlanOptions) -> Result<Vec<Job>> {
    if o.images_per_prompt == 0 || o.images_per_prompt > MAX_IMAGES_PER_PROMPT {
        return Err(Error::Input(format!(
            "--images-per-prompt must be from 1 to {MAX_IMAGES_PER_PROMPT}, not {}",
            o.images_per_prompt
        )));
    }
    table.check_columns(o.template)?;
    let (id_col, seed_col) = (table.column(ID), table.column(SEED));
    let (prompt_col, neg_col) = (table.column(PROMPT), table.column(NEGATIVE_PROMPT));
    let mut seen: std::collections::HashMap<String, usize> = Default::default();
    let mut jobs = Vec::with_capacity(table.rows.len() * o.images_per_prompt);
    for (r, row) in table.rows.iter().enumerate() {
        let cell = |c: Option<usize>| c.map(|c| table.text(row, c)).unwrap_or_default();
        let mut row_id = cell(id_col).trim().to_string();
        if row_id.is_empty() {
            row_id = format!("row{}", r + 1);
        }
        if row_id.len() > MAX_ID
            || row_id.starts_with('.')
            || !row_id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        {
            return Err(row_error(
                table,
                row.line,
                format!(
                    "the id {row_id:?} names the image file, so it may hold only letters, digits, '.', '_' and '-' (at most {MAX_ID}, not starting with '.')"
                ),
            ));
        }
        if let Some(first) = seen.insert(row_id.clone(), row.line) {
            return Err(row_error(
                table,
                row.line,
                format!("the id {row_id:?} is already the id of line {first}; ids must be unique"),
            ));
        }
        let seed = cell(seed_col);
        let seed = seed.trim();
        let own_seed = if seed.is_empty() {
            None
        } else {
            Some(seed.parse::<u64>().map_err(|_| {
                row_error(
                    table,
                    row.line,
                    format!(
                        "the seed {seed:?} is not a whole number from 0 to {}",
                        u64::MAX
                    ),
                )
            })?)
        };
        let prompt = match o.template {
            Some(t) => t.render(table, row),
            None => cell(prompt_col),
        };
        if prompt.trim().is_empty() {
            return Err(row_error(
                table,
                row.line,
                "the prompt is empty; write one (an empty prompt would make an unconditioned image)".into(),
            ));
        }
        let negative_prompt = cell(neg_col);
        for j in 0..o.images_per_prompt {
            let seed = match own_seed {
                Some(s) => s.checked_add(j as u64).ok_or_else(|| {
                    row_error(
                        table,
                        row.line,
                        format!("the seed {s} + image {j} overflows; use a smaller seed"),
                    )
                })?,
                None => derived_seed(o.seed, &row_id, j),
            };
            let id = format!("{row_id}-{j}");
            jobs.push(Job {
                row: r,
                line: row.line,
                row_id: row_id.clone(),
                image: j,
                file: format!("images/{id}.{}", o.extension),
                id,
                prompt: prompt.clone(),
                negative_prompt: negative_prompt.clone(),
                seed,
            });
        }
    }
    // Image ids are unique: `row_id-j` splits at its last '-' (j is digits only).
    Ok(jobs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(text: &str) -> PromptTable {
        PromptTable::parse("p.csv", text.as_bytes()).unwrap()
    }

    fn opts(n: usize) -> PlanOptions<'static> {
        PlanOptions {
            images_per_prompt: n,
            seed: 42,
            template: None,
            extension: "png",
        }
    }

    #[test]
    fn shards_cover_every_job_once() {
        for n in 1..7 {
            let mut taken = vec![0; 23];
            for k in 0..n {
                let s = Shard::new(k, n).unwrap();
                for (g, t) in taken.iter_mut().enumerate() {
                    if s.takes(g) {
                        *t += 1;
                    }
                }
            }
            assert!(taken.iter().all(|&t| t == 1), "{n} shards: {taken:?}");
        }
        assert_eq!(Shard::parse("2/3").unwrap(), Shard { index: 2, count: 3 });
        for bad in ["3/3", "0/0", "1", "a/2", "-1/2"] {
            assert!(Shard::parse(bad).is_err(), "{bad}");
        }
        assert!(
            Shard::parse("3/3")
                .unwrap_err()
                .to_string()
                .contains("0 to 2")
        );
    }

    #[test]
    fn shards_from_slurm_and_kubernetes() {
        let env = |vars: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                vars.iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| v.to_string())
            }
        };
        let none: &[(&str, &str)] = &[];
        assert_eq!(Shard::from_env(&env(none), None).unwrap(), None);
        let slurm = [
            ("SLURM_ARRAY_TASK_ID", "5"),
            ("SLURM_ARRAY_TASK_MIN", "4"),
            ("SLURM_ARRAY_TASK_COUNT", "3"),
        ];
        let (s, _) = Shard::from_env(&env(Box::leak(Box::new(slurm))), None)
            .unwrap()
            .unwrap();
        assert_eq!(s, Shard { index: 1, count: 3 });
        let k8s: &'static [(&str, &str)] = &[("JOB_COMPLETION_INDEX", "2")];
        assert!(
            Shard::from_env(&env(k8s), None)
                .unwrap_err()
                .to_string()
                .contains("--shards")
        );
        assert_eq!(
            Shard::from_env(&env(k8s), Some(4)).unwrap().unwrap().0,
            Shard { index: 2, count: 4 }
        );
        assert!(Shard::from_env(&env(k8s), Some(2)).is_err());
        let bad: &'static [(&str, &str)] = &[("SLURM_ARRAY_TASK_ID", "x")];
        assert!(
            Shard::from_env(&env(bad), Some(2))
                .unwrap_err()
                .to_string()
                .contains("not a number")
        );
    }

    #[test]
    fn seeds_ids_and_files() {
        let t = table("id,prompt,seed,negative_prompt\na,one,7,\n,two,,blurry\n");
        let jobs = plan(&t, &opts(2)).unwrap();
        let seeds: Vec<u64> = jobs.iter().map(|j| j.seed).collect();
        assert_eq!(&seeds[..2], &[7, 8]);
        assert_eq!(seeds[2], derived_seed(42, "row2", 0));
        assert_eq!(seeds[3], derived_seed(42, "row2", 1));
        assert_ne!(seeds[2], seeds[3]);
        assert!(seeds[2] < 1 << 53);
        assert_eq!(jobs[3].file, "images/row2-1.png");
        assert_eq!(jobs[3].negative_prompt, "blurry");
        // a derived seed depends on the base seed, the id and j only
        assert_ne!(derived_seed(43, "row2", 0), seeds[2]);
        assert_ne!(derived_seed(42, "row3", 0), seeds[2]);
        // the same rows planned with more images per prompt keep their first images
        assert_eq!(plan(&t, &opts(5)).unwrap()[5..7], jobs[2..4]);
    }

    #[test]
    fn bad_rows_name_their_line() {
        let cases = [
            ("id,prompt\na,x\na,y\n", "line 3"),
            ("id,prompt\n../etc,x\n", "letters, digits"),
            ("prompt,seed\nx,1.5\n", "whole number"),
            ("prompt,seed\nx,-1\n", "whole number"),
            ("prompt,seed\nx,18446744073709551615\n", "overflows"),
            ("prompt\n  \n", "empty"),
        ];
        for (text, want) in cases {
            let e = plan(&table(text), &opts(2)).unwrap_err().to_string();
            assert!(e.contains(want), "{text:?}: {e}");
        }
        assert!(plan(&table("prompt\nx\n"), &opts(0)).is_err());
    }
}
