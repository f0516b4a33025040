//! Manifests: one JSON line per finished image, appended by its shard only once the
//! image is whole on disk. A manifest is read back tolerantly (a line torn by a killed
//! process is skipped and reported), and [`merged_outputs`] joins the shards' rows into
//! Hugging Face `imagefolder`'s `metadata.jsonl` (a `file_name` column, CheXpert labels as
//! numbers), a CSV of every column, and the CSV CheXGenBench's fidelity scripts read.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error::{Error, Result};

/// The merged outputs' names (never read as shard manifests).
pub const METADATA: &str = "metadata.jsonl";
pub const MANIFEST_CSV: &str = "manifest.csv";
pub const CHEXGENBENCH_CSV: &str = "chexgenbench.csv";

/// Names a label column may not take besides [`FIXED_FIELDS`]: `imagefolder`'s own
/// columns (`file_name` points at the image; `image` is where it puts the picture, and
/// what manifests before `image_index` called the image's index within its row).
pub const RESERVED: &[&str] = &["file_name", "image"];

/// The fields of a [`ManifestRow`] before its labels, in order (the merged CSV's
/// columns after `file_name`; a label may not take one of these names).
pub const FIXED_FIELDS: &[&str] = &[
    "id",
    "row_id",
    "image_index",
    "row",
    "file",
    "prompt",
    "negative_prompt",
    "seed",
    "model",
    "weights_sha256",
    "scheduler",
    "steps",
    "guidance",
    "width",
    "height",
    "sha256",
    "shard",
    "software",
];

/// One image of a dataset: everything needed to make it again and to check it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ManifestRow {
    /// `row_id-image`.
    pub id: String,
    pub row_id: String,
    /// Which image of the row (0-based). Written `image_index`: `image` is the column
    /// `imagefolder` fills with the picture. Manifests written before the rename said
    /// `image`, and still read (a run resumes in an old folder).
    #[serde(rename = "image_index", alias = "image")]
    pub image: usize,
    /// The row's line in the prompt table.
    pub row: usize,
    /// The image file, relative to the output folder.
    pub file: String,
    pub prompt: String,
    pub negative_prompt: String,
    pub seed: u64,
    pub model: String,
    /// SHA-256 over the weight files (see [`weights_digest`]).
    pub weights_sha256: String,
    pub scheduler: String,
    pub steps: usize,
    pub guidance: f32,
    pub width: usize,
    pub height: usize,
    /// SHA-256 of the image file's bytes.
    pub sha256: String,
    /// `K/N`: the shard that made it.
    pub shard: String,
    pub software: String,
    /// The table's label columns, unchanged.
    #[serde(flatten)]
    pub labels: Map<String, Value>,
}

impl ManifestRow {
    /// Whether `other` describes the same image (all the settings that shape its pixels).
    pub fn same_settings(&self, other: &ManifestRow) -> bool {
        self.settings() == other.settings()
    }

    fn settings(&self) -> impl PartialEq + '_ {
        (
            (&self.file, &self.prompt, &self.negative_prompt, self.seed),
            (&self.weights_sha256, &self.scheduler, self.steps),
            (self.guidance.to_bits(), self.width, self.height),
        )
    }

    /// What differs from `other`'s settings, for a message.
    pub fn differences(&self, other: &ManifestRow) -> String {
        let mut d = Vec::new();
        let mut cmp = |name: &str, a: String, b: String| {
            if a != b {
                d.push(format!("{name} {a} (now {b})"));
            }
        };
        cmp(
            "prompt",
            format!("{:?}", self.prompt),
            format!("{:?}", other.prompt),
        );
        cmp(
            "negative prompt",
            format!("{:?}", self.negative_prompt),
            format!("{:?}", other.negative_prompt),
        );
        cmp("seed", self.seed.to_string(), other.seed.to_string());
        cmp(
            "weights",
            self.weights_sha256.clone(),
            other.weights_sha256.clone(),
        );
        cmp("scheduler", self.scheduler.clone(), other.scheduler.clone());
        cmp("steps", self.steps.to_string(), other.steps.to_string());
        cmp(
            "guidance",
            self.guidance.to_string(),
            other.guidance.to_string(),
        );
        cmp(
            "size",
            format!("{}x{}", self.width, self.height),
            format!("{}x{}", other.width, other.height),
        );
        d.join(", ")
    }

    /// The manifest line (no newline).
    pub fn to_line(&self) -> String {
        serde_json::to_string(self).expect("a manifest row is always JSON")
    }
}

/// A manifest read back: its rows, and the lines that were not rows (a torn last line
/// after a kill, or damage), as `(line, why)`.
#[derive(Debug, Default)]
pub struct ReadManifest {
    pub rows: Vec<ManifestRow>,
    pub skipped: Vec<(usize, String)>,
}

/// Reads a manifest's text; never fails (what cannot be read is skipped and listed).
pub fn read(text: &str) -> ReadManifest {
    let mut out = ReadManifest::default();
    for (k, line) in text.split('\n').enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<ManifestRow>(line) {
            Ok(r) => out.rows.push(r),
            Err(e) => out.skipped.push((k + 1, e.to_string())),
        }
    }
    out
}

/// The SHA-256 of a dataset's weights, from `(path, sha256 of the file)` of every
/// weight file the model loads: the SHA-256 of the lines `"<hex>  <path>\n"` sorted by
/// path, which is what `sha256sum` prints, so `(cd MODEL && sha256sum unet/x text_encoder/y
/// vae/z | sort -k2 | sha256sum)` gives the same digest.
pub fn weights_digest(files: &[(String, String)]) -> String {
    use sha2::Digest;
    let mut files = files.to_vec();
    files.sort_by(|a, b| a.0.cmp(&b.0));
    let mut h = sha2::Sha256::new();
    for (path, hex) in files {
        h.update(format!("{hex}  {path}\n").as_bytes());
    }
    hex(&h.finalize())
}

/// Lowercase hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// SHA-256 of bytes, as hex.
pub fn sha256(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex(&sha2::Sha256::digest(bytes))
}

/// The rows that stand, from every manifest's rows in reading order: the last row of
/// each id (an image made again after it was found missing or altered appends a new
/// row).
pub fn latest(rows: impl IntoIterator<Item = ManifestRow>) -> Vec<ManifestRow> {
    let mut order: Vec<String> = Vec::new();
    let mut by_id: std::collections::HashMap<String, ManifestRow> = Default::default();
    for r in rows {
        if !by_id.contains_key(&r.id) {
            order.push(r.id.clone());
        }
        by_id.insert(r.id.clone(), r);
    }
    order
        .into_iter()
        .filter_map(|id| by_id.remove(&id))
        .collect()
}

/// What `--merge` writes: the files' texts, and what it found worth saying.
#[derive(Debug)]
pub struct MergedOutputs {
    /// [`METADATA`]: every column, `file_name` first, one JSON object per image.
    pub metadata: String,
    /// [`MANIFEST_CSV`]: the same columns and values.
    pub manifest_csv: String,
    /// [`CHEXGENBENCH_CSV`]: `img_savename,prompt,annotated_prompt,synthetic_filename`.
    pub chexgenbench_csv: String,
    /// Label columns left as text although named like a CheXpert finding, and the like.
    pub warnings: Vec<String>,
}

impl MergedOutputs {
    /// `(file name, text)` of each output, in the order they are written.
    pub fn files(self) -> [(&'static str, String); 3] {
        [
            (METADATA, self.metadata),
            (MANIFEST_CSV, self.manifest_csv),
            (CHEXGENBENCH_CSV, self.chexgenbench_csv),
        ]
    }
}

/// The CheXpert label a column is named after: one of [`crate::findings::LABELS`]'
/// names, in any case, with spaces or underscores ("Pleural Effusion",
/// "pleural_effusion", "PLEURAL EFFUSION").
pub fn chexpert_column(name: &str) -> Option<&'static str> {
    let key = name.trim().to_lowercase().replace(' ', "_");
    crate::findings::LABELS
        .iter()
        .find(|l| l.id == key)
        .map(|l| l.name)
}

/// A CheXpert cell as a JSON value: 1 (positive), 0 (negative), -1 (uncertain) as
/// numbers, in any of the forms tables write them ("1", "1.0", "-1.0", 1, -1.0), and a
/// blank or absent cell as null (not mentioned). `None`: not a CheXpert value.
fn chexpert_value(v: Option<&Value>) -> Option<Value> {
    let x = match v {
        None | Some(Value::Null) => return Some(Value::Null),
        Some(Value::String(s)) if s.trim().is_empty() => return Some(Value::Null),
        Some(Value::String(s)) => s.trim().parse::<f64>().ok()?,
        Some(Value::Number(n)) => n.as_f64()?,
        Some(_) => return None,
    };
    [1i64, 0, -1]
        .into_iter()
        .find(|&c| x == c as f64)
        .map(Value::from)
}

/// A label column's cells, one per row, with one JSON type for the whole column (what
/// `datasets` needs): a column named like a CheXpert finding whose every cell is a
/// CheXpert value becomes numbers and nulls; any other column stays as the table had
/// it (CSV cells are strings), except that a JSONL column mixing kinds is written as
/// text, and one mixing whole and fractional numbers as fractional numbers.
fn label_column(
    name: &str,
    ids: &[&str],
    cells: &[Option<&Value>],
    warnings: &mut Vec<String>,
) -> Vec<Value> {
    if let Some(label) = chexpert_column(name) {
        let typed: Vec<Option<Value>> = cells.iter().map(|c| chexpert_value(*c)).collect();
        if typed.iter().all(Option::is_some) {
            return typed.into_iter().flatten().collect();
        }
        let (k, bad) = cells
            .iter()
            .enumerate()
            .find(|(_, c)| chexpert_value(**c).is_none())
            .map(|(k, c)| (ids[k], c.map(Value::to_string).unwrap_or_default()))
            .unwrap_or_default();
        warnings.push(format!(
            "label `{name}` is named like the CheXpert finding {label:?} but holds {bad} (image {k}), not 1, 0, -1 or blank; written as the table had it"
        ));
    }
    let kind = |v: &Value| match v {
        Value::Null => 0,
        Value::String(_) => 1,
        Value::Number(_) => 2,
        Value::Bool(_) => 3,
        Value::Array(_) | Value::Object(_) => 4,
    };
    let kinds: std::collections::BTreeSet<u8> = cells
        .iter()
        .flatten()
        .map(|v| kind(v))
        .filter(|&k| k != 0)
        .collect();
    let cell = |c: &Option<&Value>| c.cloned().unwrap_or(Value::Null);
    if kinds.len() > 1 {
        warnings.push(format!(
            "label `{name}` mixes text, numbers or other kinds across rows; written as text so that the column has one type"
        ));
        return cells
            .iter()
            .map(|c| match cell(c) {
                Value::Null => Value::Null,
                Value::String(s) => Value::String(s),
                v => Value::String(v.to_string()),
            })
            .collect();
    }
    let numbers = || cells.iter().flatten().filter_map(|v| v.as_number());
    if kinds.contains(&2) && numbers().any(|n| !n.is_i64() && !n.is_u64()) {
        return cells
            .iter()
            .map(|c| match cell(c) {
                Value::Number(n) => n
                    .as_f64()
                    .and_then(serde_json::Number::from_f64)
                    .map_or(Value::Null, Value::Number),
                v => v,
            })
            .collect();
    }
    cells.iter().map(cell).collect()
}

/// The merged outputs of the rows (see [`MergedOutputs`]). Columns: `file_name`, the
/// fixed fields in order, then the labels in first-seen order; a row without a label
/// has it null. Label values are typed per column by [`label_column`].
pub fn merged_outputs(rows: &[ManifestRow]) -> Result<MergedOutputs> {
    let mut warnings = Vec::new();
    let mut labels: Vec<&str> = Vec::new();
    for r in rows {
        for k in r.labels.keys() {
            if !labels.contains(&k.as_str()) {
                labels.push(k);
            }
        }
    }
    // one column at a time, so that each has one type across the rows
    let ids: Vec<&str> = rows.iter().map(|r| r.id.as_str()).collect();
    let typed: Vec<Vec<Value>> = labels
        .iter()
        .map(|&name| {
            let cells: Vec<Option<&Value>> = rows.iter().map(|r| r.labels.get(name)).collect();
            label_column(name, &ids, &cells, &mut warnings)
        })
        .collect();
    let columns: Vec<&str> = std::iter::once("file_name")
        .chain(FIXED_FIELDS.iter().copied())
        .chain(labels.iter().copied())
        .collect();

    let mut metadata = String::new();
    let mut manifest_csv = columns
        .iter()
        .map(|c| csv_field(c))
        .collect::<Vec<_>>()
        .join(",");
    manifest_csv.push('\n');
    let mut chexgenbench_csv =
        String::from("img_savename,prompt,annotated_prompt,synthetic_filename\n");
    for (i, r) in rows.iter().enumerate() {
        let Value::Object(fixed) =
            serde_json::to_value(r).map_err(|e| Error::Input(e.to_string()))?
        else {
            unreachable!("a row serializes to an object")
        };
        let values: Vec<Value> = std::iter::once(Value::String(r.file.clone()))
            .chain(
                FIXED_FIELDS
                    .iter()
                    .map(|f| fixed.get(*f).cloned().unwrap_or(Value::Null)),
            )
            .chain(typed.iter().map(|col| col[i].clone()))
            .collect();
        // JSON by hand: `file_name` first and the columns in the CSV's order, whatever
        // order serde_json's map keeps
        let fields: Vec<String> = columns
            .iter()
            .zip(&values)
            .map(|(c, v)| format!("{}:{v}", Value::String(c.to_string())))
            .collect();
        metadata.push('{');
        metadata.push_str(&fields.join(","));
        metadata.push_str("}\n");
        let cells: Vec<String> = values
            .iter()
            .map(|v| match v {
                Value::Null => String::new(),
                Value::String(s) => csv_field(s),
                v => csv_field(&v.to_string()),
            })
            .collect();
        manifest_csv.push_str(&cells.join(","));
        manifest_csv.push('\n');
        // CheXGenBench joins `img_savename` to its --synthetic_img_dir (OUT/images/);
        // `annotated_prompt` and `synthetic_filename` are the names its scripts read
        // by default (metrics/fid.py, metrics/img_text_alignment_scores.py)
        let name = std::path::Path::new(&r.file)
            .file_name()
            .map_or(r.file.clone(), |n| n.to_string_lossy().into_owned());
        let (name, prompt) = (csv_field(&name), csv_field(&r.prompt));
        chexgenbench_csv.push_str(&format!("{name},{prompt},{prompt},{name}\n"));
    }
    Ok(MergedOutputs {
        metadata,
        manifest_csv,
        chexgenbench_csv,
        warnings,
    })
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) || s.starts_with(' ') || s.ends_with(' ') {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(id: &str, seed: u64) -> ManifestRow {
        let mut labels = Map::new();
        labels.insert("Edema".into(), Value::String("1".into()));
        ManifestRow {
            id: id.into(),
            row_id: id.split('-').next().unwrap().into(),
            image: 0,
            row: 2,
            file: format!("images/{id}.png"),
            prompt: "Small, right-sided \"effusion\".".into(),
            negative_prompt: String::new(),
            seed,
            model: "m".into(),
            weights_sha256: "ab".into(),
            scheduler: "pndm".into(),
            steps: 3,
            guidance: 4.0,
            width: 64,
            height: 64,
            sha256: "cd".into(),
            shard: "0/1".into(),
            software: "roentgen-web".into(),
            labels,
        }
    }

    #[test]
    fn rows_round_trip_and_torn_lines_are_skipped() {
        let a = row("a-0", 1);
        let text = format!(
            "{}\n{}\n{}",
            a.to_line(),
            row("b-0", 2).to_line(),
            &a.to_line()[..20]
        );
        let m = read(&text);
        assert_eq!(m.rows, vec![a.clone(), row("b-0", 2)]);
        assert_eq!(m.skipped.len(), 1);
        assert_eq!(m.skipped[0].0, 3);
        assert_eq!(m.rows[0].labels["Edema"], "1");
    }

    #[test]
    fn the_last_row_of_an_id_stands_and_merging_keeps_labels() {
        let rows = latest([row("a-0", 1), row("b-0", 2), row("a-0", 9)]);
        assert_eq!(rows.iter().map(|r| r.seed).collect::<Vec<_>>(), [9, 2]);
        let out = merged_outputs(&rows).unwrap();
        let (jsonl, csv) = (out.metadata, out.manifest_csv);
        let first: Value = serde_json::from_str(jsonl.lines().next().unwrap()).unwrap();
        assert_eq!(first["file_name"], "images/a-0.png");
        assert_eq!(first["Edema"], 1, "a CheXpert label, as a number");
        assert!(jsonl.starts_with("{\"file_name\":"));
        let header = csv.lines().next().unwrap();
        assert!(
            header.starts_with("file_name,id,") && header.ends_with(",Edema"),
            "{header}"
        );
        assert!(
            csv.contains("\"Small, right-sided \"\"effusion\"\".\""),
            "{csv}"
        );
        // the CSV reads back with the table reader, as many rows and columns
        let t = crate::batch::PromptTable::parse("m.csv", csv.as_bytes()).unwrap();
        assert_eq!(t.rows.len(), 2);
        assert_eq!(
            t.text(&t.rows[0], t.column("prompt").unwrap()),
            rows[0].prompt
        );
    }

    #[test]
    fn manifests_written_before_image_index_still_read() {
        let a = row("a-0", 1);
        let old = a.to_line().replace("\"image_index\":", "\"image\":");
        assert!(
            old.contains("\"image\":0") && !old.contains("image_index"),
            "{old}"
        );
        let m = read(&old);
        assert_eq!(m.rows, vec![a], "{:?}", m.skipped);
    }

    /// Rows `a-0`, `b-0`, `c-0` with the labels of `cells` (`None`: the row lacks it).
    fn labelled(column: &str, cells: [Option<Value>; 3]) -> Vec<ManifestRow> {
        ["a-0", "b-0", "c-0"]
            .into_iter()
            .zip(cells)
            .map(|(id, v)| {
                let mut r = row(id, 1);
                r.labels.clear();
                if let Some(v) = v {
                    r.labels.insert(column.into(), v);
                }
                r
            })
            .collect()
    }

    fn merged_column(rows: &[ManifestRow], column: &str) -> (Vec<Value>, Vec<String>) {
        let out = merged_outputs(rows).unwrap();
        let values = out
            .metadata
            .lines()
            .map(|l| serde_json::from_str::<Value>(l).unwrap()[column].clone())
            .collect();
        (values, out.warnings)
    }

    #[test]
    fn the_merged_outputs_name_the_index_image_index_and_leave_image_to_imagefolder() {
        let out = merged_outputs(&[row("a-0", 1)]).unwrap();
        let line: Value = serde_json::from_str(out.metadata.lines().next().unwrap()).unwrap();
        assert!(line.get("image").is_none(), "{line}");
        assert_eq!(line["image_index"], 0);
        assert_eq!(line["file_name"], "images/a-0.png");
        let header = out.manifest_csv.lines().next().unwrap();
        assert!(
            header.starts_with("file_name,id,row_id,image_index,row,file,"),
            "{header}"
        );
        assert!(!header.split(',').any(|c| c == "image"), "{header}");
    }

    #[test]
    fn chexpert_labels_are_numbers_or_null_in_every_form_tables_write_them() {
        let s = |x: &str| Some(Value::String(x.into()));
        let rows = labelled("Pleural Effusion", [s("1.0"), s(""), s("-1.0")]);
        assert_eq!(
            merged_column(&rows, "Pleural Effusion"),
            (vec![1.into(), Value::Null, (-1).into()], vec![])
        );
        // names in any case, with underscores; absent and JSON null are blank
        let rows = labelled("pleural_effusion", [s(" 0 "), None, Some(Value::Null)]);
        assert_eq!(
            merged_column(&rows, "pleural_effusion").0,
            [Value::from(0), Value::Null, Value::Null]
        );
        let rows = labelled("NO FINDING", [Some((-1.0).into()), Some(1.into()), s("-0")]);
        assert_eq!(
            merged_column(&rows, "NO FINDING").0,
            [Value::from(-1), 1.into(), 0.into()]
        );
        // the CSV holds the same values
        let out = merged_outputs(&rows).unwrap();
        let cells: Vec<&str> = out
            .manifest_csv
            .lines()
            .skip(1)
            .map(|l| l.rsplit(',').next().unwrap())
            .collect();
        assert_eq!(cells, ["-1", "1", "0"]);
    }

    #[test]
    fn other_labels_stay_as_the_table_had_them_with_one_type_per_column() {
        let s = |x: &str| Some(Value::String(x.into()));
        // 1/0 in a column not named like a finding: text, as the CSV had it
        let rows = labelled("flag", [s("1"), s("0"), s("")]);
        assert_eq!(merged_column(&rows, "flag").0, ["1", "0", ""]);
        // a finding's name holding something else: text for the whole column, and said
        let rows = labelled("Edema", [s("1"), s("yes"), s("0")]);
        let (values, warnings) = merged_column(&rows, "Edema");
        assert_eq!(values, ["1", "yes", "0"]);
        assert!(
            warnings.len() == 1 && warnings[0].contains("\"yes\" (image b-0)"),
            "{warnings:?}"
        );
        // JSONL: whole and fractional numbers become fractional; kinds mixed become text
        let rows = labelled("age", [Some(63.into()), Some(63.5.into()), None]);
        let (values, _) = merged_column(&rows, "age");
        assert_eq!(values, [Value::from(63.0), 63.5.into(), Value::Null]);
        let line = merged_outputs(&rows).unwrap().metadata;
        assert!(line.contains("\"age\":63.0"), "{line}");
        let rows = labelled("age", [Some(63.into()), s("unknown"), None]);
        let (values, warnings) = merged_column(&rows, "age");
        assert_eq!(values, [Value::from("63"), "unknown".into(), Value::Null]);
        assert!(warnings[0].contains("one type"), "{warnings:?}");
        let rows = labelled("age", [Some(63.into()), s("unknown"), Some(true.into())]);
        assert_eq!(merged_column(&rows, "age").0, ["63", "unknown", "true"]);
    }

    #[test]
    fn the_chexgenbench_csv_names_each_image_and_its_prompt() {
        let out = merged_outputs(&[row("a-0", 1), row("b-0", 2)]).unwrap();
        let mut lines = out.chexgenbench_csv.lines();
        assert_eq!(
            lines.next(),
            Some("img_savename,prompt,annotated_prompt,synthetic_filename")
        );
        let prompt = "\"Small, right-sided \"\"effusion\"\".\"";
        assert_eq!(
            lines.next(),
            Some(format!("a-0.png,{prompt},{prompt},a-0.png").as_str())
        );
        assert_eq!(lines.count(), 1);
        // read by the table reader, as pandas would: the prompt comes back whole
        let t = crate::batch::PromptTable::parse("c.csv", out.chexgenbench_csv.as_bytes()).unwrap();
        assert_eq!(
            t.text(&t.rows[1], t.column("prompt").unwrap()),
            row("b-0", 2).prompt
        );
    }

    #[test]
    fn the_fixed_fields_are_the_rows_fields_in_order() {
        let Value::Object(o) = serde_json::to_value(row("a-0", 1)).unwrap() else {
            unreachable!()
        };
        let mut keys: Vec<&str> = o
            .keys()
            .map(String::as_str)
            .filter(|k| *k != "Edema")
            .collect();
        let mut fixed = FIXED_FIELDS.to_vec();
        keys.sort();
        fixed.sort();
        assert_eq!(keys, fixed);
    }

    #[test]
    fn the_weights_digest_is_sha256sums_output_hashed() {
        // `printf 'x' | sha256sum` = 2d71...; the digest of the sorted listing
        let files = [
            ("vae/w".to_string(), sha256(b"x")),
            ("unet/w".to_string(), sha256(b"y")),
        ];
        let listing = format!("{}  unet/w\n{}  vae/w\n", sha256(b"y"), sha256(b"x"));
        assert_eq!(weights_digest(&files), sha256(listing.as_bytes()));
        assert_eq!(
            sha256(b"x"),
            "2d711642b726b04401627ca9fbac32f5c8530fb1903cc4db02258717921a4881"
        );
    }
}
