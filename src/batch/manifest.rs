//! Manifests: one JSON line per finished image, appended by its shard only once the
//! image is whole on disk. A manifest is read back tolerantly (a line torn by a killed
//! process is skipped and reported), and [`merge`] joins the shards' manifests into
//! Hugging Face `imagefolder`'s `metadata.jsonl` (a `file_name` column) and a CSV.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error::{Error, Result};

/// The merged outputs' names (never read as shard manifests).
pub const METADATA: &str = "metadata.jsonl";
pub const MANIFEST_CSV: &str = "manifest.csv";

/// The fields of a [`ManifestRow`] before its labels, in order (the merged CSV's
/// columns after `file_name`; a label may not take one of these names).
pub const FIXED_FIELDS: &[&str] = &[
    "id",
    "row_id",
    "image",
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
    /// Which image of the row (0-based).
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

/// `metadata.jsonl` (every field, `file_name` first, as `imagefolder` reads it) and
/// `manifest.csv` (the same columns; labels after the fixed fields, in first-seen
/// order) for the rows.
pub fn merged_outputs(rows: &[ManifestRow]) -> Result<(String, String)> {
    let mut jsonl = String::new();
    let mut columns: Vec<String> = Vec::new();
    let mut objects = Vec::with_capacity(rows.len());
    for r in rows {
        let Value::Object(mut o) =
            serde_json::to_value(r).map_err(|e| Error::Unsupported(e.to_string()))?
        else {
            unreachable!("a row serializes to an object")
        };
        let mut line = String::from("{\"file_name\":");
        line.push_str(&Value::String(r.file.clone()).to_string());
        o.remove("file_name");
        for (k, v) in &o {
            line.push(',');
            line.push_str(&Value::String(k.clone()).to_string());
            line.push(':');
            line.push_str(&v.to_string());
        }
        line.push('}');
        jsonl.push_str(&line);
        jsonl.push('\n');
        objects.push(o);
    }
    // CSV columns: file_name, the fixed fields in struct order, then labels

    columns.push("file_name".into());
    columns.extend(FIXED_FIELDS.iter().map(|s| s.to_string()));
    for r in rows {
        for k in r.labels.keys() {
            if !columns.contains(k) {
                columns.push(k.clone());
            }
        }
    }
    let mut csv = columns
        .iter()
        .map(|c| csv_field(c))
        .collect::<Vec<_>>()
        .join(",");
    csv.push('\n');
    for (r, o) in rows.iter().zip(&objects) {
        let cells: Vec<String> = columns
            .iter()
            .map(|c| {
                let v = if c == "file_name" {
                    Some(Value::String(r.file.clone()))
                } else {
                    o.get(c).cloned()
                };
                match v {
                    None | Some(Value::Null) => String::new(),
                    Some(Value::String(s)) => csv_field(&s),
                    Some(v) => csv_field(&v.to_string()),
                }
            })
            .collect();
        csv.push_str(&cells.join(","));
        csv.push('\n');
    }
    Ok((jsonl, csv))
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
        let (jsonl, csv) = merged_outputs(&rows).unwrap();
        let first: Value = serde_json::from_str(jsonl.lines().next().unwrap()).unwrap();
        assert_eq!(first["file_name"], "images/a-0.png");
        assert_eq!(first["Edema"], "1");
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
