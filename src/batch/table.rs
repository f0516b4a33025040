//! Prompt tables: CSV with a header row (RFC 4180: quoted fields may hold commas,
//! doubled quotes and line breaks) or JSON Lines (one object per line), chosen by the
//! file name's extension. Bytes in, no filesystem: the page and the fuzzer use it too.
//!
//! Column `prompt` is required (unless a prompt template builds it); `negative_prompt`,
//! `seed` and `id` are optional; every other column is a label, carried into the
//! manifest unchanged (CSV cells as strings, JSONL values as they are).

use serde_json::Value;

use crate::error::{Error, Result};

/// The columns with a meaning of their own; every other column is a label.
pub const PROMPT: &str = "prompt";
pub const NEGATIVE_PROMPT: &str = "negative_prompt";
pub const SEED: &str = "seed";
pub const ID: &str = "id";

/// Rows beyond this are refused (a table of a million prompts is 10⁶ x images-per-prompt
/// images: years on one GPU; split it).
pub const MAX_ROWS: usize = 10_000_000;
/// The most columns (labels and all).
pub const MAX_COLUMNS: usize = 1000;
/// The longest cell accepted (a prompt is at most 77 CLIP tokens; labels are short).
pub const MAX_CELL: usize = 64 * 1024;

/// One data row: its line in the file (1-based, of the row's first line) and a value
/// per column.
#[derive(Clone, Debug, PartialEq)]
pub struct TableRow {
    pub line: usize,
    pub values: Vec<Value>,
}

/// A parsed prompt table.
#[derive(Clone, Debug, PartialEq)]
pub struct PromptTable {
    /// The file's name, for messages.
    pub name: String,
    pub columns: Vec<String>,
    pub rows: Vec<TableRow>,
}

/// CSV or JSONL, by the file name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TableFormat {
    Csv,
    Jsonl,
}

impl TableFormat {
    pub fn from_name(name: &str) -> Result<TableFormat> {
        let lower = name.to_ascii_lowercase();
        if lower.ends_with(".csv") {
            Ok(TableFormat::Csv)
        } else if lower.ends_with(".jsonl") || lower.ends_with(".ndjson") {
            Ok(TableFormat::Jsonl)
        } else {
            Err(Error::Input(format!(
                "{name}: a prompt table must be a .csv file (with a header row) or a .jsonl file (one JSON object per line)"
            )))
        }
    }
}

fn bad(name: &str, line: usize, message: impl std::fmt::Display) -> Error {
    Error::Config {
        file: format!("{name}, line {line}"),
        message: message.to_string(),
    }
}

impl PromptTable {
    /// Parses `bytes`, a CSV or JSONL table named `file_name`. Every problem is an error
    /// naming the file and line.
    pub fn parse(file_name: &str, bytes: &[u8]) -> Result<PromptTable> {
        let format = TableFormat::from_name(file_name)?;
        let text = std::str::from_utf8(bytes).map_err(|e| {
            let line = 1 + bytes[..e.valid_up_to()]
                .iter()
                .filter(|&&b| b == b'\n')
                .count();
            bad(file_name, line, "not UTF-8 text; save the table as UTF-8")
        })?;
        let text = text.strip_prefix('\u{feff}').unwrap_or(text); // a BOM from spreadsheets
        let table = match format {
            TableFormat::Csv => parse_csv(file_name, text)?,
            TableFormat::Jsonl => parse_jsonl(file_name, text)?,
        };
        if table.rows.is_empty() {
            return Err(Error::Config {
                file: file_name.into(),
                message: "the table has no rows; add one row per prompt".into(),
            });
        }
        Ok(table)
    }

    /// The index of a column.
    pub fn column(&self, name: &str) -> Option<usize> {
        self.columns.iter().position(|c| c == name)
    }

    /// The columns that are labels (carried into the manifest), in the table's order.
    pub fn label_columns(&self) -> Vec<usize> {
        (0..self.columns.len())
            .filter(|&i| ![PROMPT, NEGATIVE_PROMPT, SEED, ID].contains(&self.columns[i].as_str()))
            .collect()
    }

    /// The text of a cell: strings as they are, numbers and booleans as JSON writes them,
    /// null and absent cells as "".
    pub fn text(&self, row: &TableRow, column: usize) -> String {
        match row.values.get(column) {
            None | Some(Value::Null) => String::new(),
            Some(Value::String(s)) => s.clone(),
            Some(v) => v.to_string(),
        }
    }

    /// Checks that the table has what a batch run needs: a `prompt` column unless a
    /// template builds the prompt (whose `{column}`s must all exist), and no label named
    /// like one of the manifest's own fields.
    pub fn check_columns(&self, template: Option<&Template>) -> Result<()> {
        match template {
            Some(t) => {
                for c in t.columns() {
                    if self.column(c).is_none() {
                        return Err(Error::Config {
                            file: self.name.clone(),
                            message: format!(
                                "the prompt template uses {{{c}}} but the table has no column `{c}` (columns: {})",
                                self.columns.join(", ")
                            ),
                        });
                    }
                }
            }
            None => {
                if self.column(PROMPT).is_none() {
                    return Err(Error::Config {
                        file: self.name.clone(),
                        message: format!(
                            "the table has no `prompt` column (columns: {}); add one, or build prompts from columns with --prompt-template",
                            self.columns.join(", ")
                        ),
                    });
                }
            }
        }
        for &i in &self.label_columns() {
            let c = &self.columns[i];
            if super::manifest::FIXED_FIELDS.contains(&c.as_str())
                || super::manifest::RESERVED.contains(&c.as_str())
            {
                return Err(Error::Config {
                    file: self.name.clone(),
                    message: format!(
                        "the column `{c}` is also a column of the dataset this run writes (a manifest field, or `imagefolder`'s `file_name` and `image`); rename the column (e.g. `label_{c}`)"
                    ),
                });
            }
        }
        Ok(())
    }
}

fn check_header(name: &str, columns: &[String]) -> Result<()> {
    if columns.len() > MAX_COLUMNS {
        return Err(bad(
            name,
            1,
            format!("{} columns; at most {MAX_COLUMNS} are read", columns.len()),
        ));
    }
    let mut seen = std::collections::HashSet::new();
    for (i, c) in columns.iter().enumerate() {
        if c.is_empty() {
            return Err(bad(
                name,
                1,
                format!("column {} of the header has no name", i + 1),
            ));
        }
        if !seen.insert(c) {
            return Err(bad(
                name,
                1,
                format!("the column `{c}` appears twice in the header"),
            ));
        }
    }
    Ok(())
}

fn parse_csv(name: &str, text: &str) -> Result<PromptTable> {
    let mut records = CsvRecords::new(text);
    let Some(header) = records.next() else {
        return Err(Error::Config {
            file: name.into(),
            message: "the file is empty; a CSV prompt table starts with a header row such as `prompt,negative_prompt,seed`".into(),
        });
    };
    let (_, columns) = header.map_err(|(line, m)| bad(name, line, m))?;
    let columns: Vec<String> = columns.into_iter().map(|c| c.trim().to_string()).collect();
    check_header(name, &columns)?;
    let mut rows = Vec::new();
    for record in records {
        let (line, cells) = record.map_err(|(line, m)| bad(name, line, m))?;
        // a blank line (often the last) is no row
        if cells.len() == 1 && cells[0].is_empty() {
            continue;
        }
        if cells.len() != columns.len() {
            return Err(bad(
                name,
                line,
                format!(
                    "{} fields but the header has {} columns ({}); quote fields that hold commas",
                    cells.len(),
                    columns.len(),
                    columns.join(", ")
                ),
            ));
        }
        push_row(
            name,
            &mut rows,
            line,
            cells.into_iter().map(Value::String).collect(),
        )?;
    }
    Ok(PromptTable {
        name: name.into(),
        columns,
        rows,
    })
}

fn push_row(name: &str, rows: &mut Vec<TableRow>, line: usize, values: Vec<Value>) -> Result<()> {
    if rows.len() >= MAX_ROWS {
        return Err(bad(
            name,
            line,
            format!("more than {MAX_ROWS} rows; split the table into several runs"),
        ));
    }
    rows.push(TableRow { line, values });
    Ok(())
}

/// RFC 4180 records with the line each starts on; an error carries its line.
struct CsvRecords<'a> {
    rest: &'a str,
    line: usize,
}

impl<'a> CsvRecords<'a> {
    fn new(text: &'a str) -> Self {
        CsvRecords {
            rest: text,
            line: 1,
        }
    }
}

type Record = std::result::Result<(usize, Vec<String>), (usize, String)>;

impl Iterator for CsvRecords<'_> {
    type Item = Record;

    fn next(&mut self) -> Option<Record> {
        if self.rest.is_empty() {
            return None;
        }
        let start = self.line;
        let mut cells = Vec::new();
        let mut cell = String::new();
        let mut chars = self.rest.char_indices().peekable();
        let mut quoted = false; // inside a quoted field
        let mut was_quoted = false; // the current field was quoted (only spaces may follow)
        let mut end = self.rest.len();
        while let Some((i, c)) = chars.next() {
            if quoted {
                match c {
                    '"' if matches!(chars.peek(), Some((_, '"'))) => {
                        chars.next();
                        cell.push('"');
                    }
                    '"' => quoted = false,
                    _ => {
                        if c == '\n' {
                            self.line += 1;
                        }
                        cell.push(c);
                    }
                }
            } else {
                match c {
                    ',' => {
                        cells.push(std::mem::take(&mut cell));
                        was_quoted = false;
                    }
                    '\n' => {
                        end = i + 1;
                        break;
                    }
                    '\r' if matches!(chars.peek(), Some((_, '\n'))) => {}
                    '"' if cell.trim().is_empty() && !was_quoted => {
                        cell.clear();
                        quoted = true;
                        was_quoted = true;
                    }
                    '"' => {
                        self.rest = "";
                        return Some(Err((
                            start,
                            "a quote inside an unquoted field; quote the whole field and double the quotes inside (\"like \"\"this\"\"\")".into(),
                        )));
                    }
                    _ if was_quoted && !c.is_whitespace() => {
                        self.rest = "";
                        return Some(Err((
                            start,
                            format!(
                                "text after a quoted field's closing quote (`{c}`); put the whole field in quotes"
                            ),
                        )));
                    }
                    _ => {
                        if cell.len() >= MAX_CELL {
                            self.rest = "";
                            return Some(Err((
                                start,
                                format!("a field longer than {MAX_CELL} bytes"),
                            )));
                        }
                        if !was_quoted {
                            cell.push(c);
                        }
                    }
                }
            }
            if quoted && cell.len() > MAX_CELL {
                self.rest = "";
                return Some(Err((
                    start,
                    format!("a field longer than {MAX_CELL} bytes"),
                )));
            }
        }
        if quoted {
            self.rest = "";
            return Some(Err((
                start,
                "a quoted field is never closed (a missing `\"`)".into(),
            )));
        }
        cells.push(cell);
        self.rest = &self.rest[end..];
        self.line += 1;
        Some(Ok((start, cells)))
    }
}

fn parse_jsonl(name: &str, text: &str) -> Result<PromptTable> {
    let mut columns: Vec<String> = Vec::new();
    let mut known = std::collections::HashSet::new();
    let mut objects = Vec::new();
    for (k, raw) in text.split('\n').enumerate() {
        let line = k + 1;
        let raw = raw.trim();
        if raw.is_empty() {
            continue;
        }
        let object = match serde_json::from_str::<Value>(raw) {
            Ok(Value::Object(_)) => {
                serde_json::from_str::<OrderedObject>(raw)
                    .map_err(|e| bad(name, line, format!("not valid JSON ({e})")))?
                    .0
            }
            Ok(_) => {
                return Err(bad(
                    name,
                    line,
                    "not a JSON object; each line must be one object such as {\"prompt\": \"...\"}",
                ));
            }
            Err(e) => return Err(bad(name, line, format!("not valid JSON ({e})"))),
        };
        for (key, _) in &object {
            if !known.contains(key) {
                if key.is_empty() {
                    return Err(bad(name, line, "a key with no name"));
                }
                if columns.len() >= MAX_COLUMNS {
                    return Err(bad(
                        name,
                        line,
                        format!("more than {MAX_COLUMNS} distinct keys"),
                    ));
                }
                known.insert(key.clone());
                columns.push(key.clone());
            }
        }
        if objects.len() >= MAX_ROWS {
            return Err(bad(
                name,
                line,
                format!("more than {MAX_ROWS} rows; split the table into several runs"),
            ));
        }
        objects.push((line, object));
    }
    // Columns in order of first appearance; a key a row lacks is null there.
    let rows = objects
        .into_iter()
        .map(|(line, o)| {
            let mut o: std::collections::HashMap<String, Value> = o.into_iter().collect();
            TableRow {
                line,
                values: columns
                    .iter()
                    .map(|c| o.remove(c).unwrap_or(Value::Null))
                    .collect(),
            }
        })
        .collect();
    Ok(PromptTable {
        name: name.into(),
        columns,
        rows,
    })
}

/// A JSON object with its keys in the file's order (the columns keep the order the
/// table gives them); a repeated key keeps its last value, as JSON readers do.
struct OrderedObject(Vec<(String, Value)>);

impl<'de> serde::Deserialize<'de> for OrderedObject {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct Visit;
        impl<'de> serde::de::Visitor<'de> for Visit {
            type Value = OrderedObject;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> std::result::Result<OrderedObject, A::Error> {
                let mut out: Vec<(String, Value)> = Vec::new();
                let mut index = std::collections::HashMap::new();
                while let Some((k, v)) = map.next_entry::<String, Value>()? {
                    match index.get(&k) {
                        Some(&i) => out[i] = (k, v),
                        None => {
                            index.insert(k.clone(), out.len());
                            out.push((k, v));
                        }
                    }
                }
                Ok(OrderedObject(out))
            }
        }
        d.deserialize_map(Visit)
    }
}

/// A prompt template such as `"{age} year old {race} {sex}. {impression}"` (RoentGen
/// v2's form): `{column}` is replaced by the row's cell; `{{` and `}}` are literal braces.
#[derive(Clone, Debug, PartialEq)]
pub struct Template {
    parts: Vec<Part>,
}

#[derive(Clone, Debug, PartialEq)]
enum Part {
    Text(String),
    Column(String),
}

impl Template {
    pub fn parse(template: &str) -> Result<Template> {
        let err = |m: &str| Error::Input(format!("--prompt-template {template:?}: {m}"));
        let mut parts = Vec::new();
        let mut text = String::new();
        let mut chars = template.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '{' if chars.peek() == Some(&'{') => {
                    chars.next();
                    text.push('{');
                }
                '}' if chars.peek() == Some(&'}') => {
                    chars.next();
                    text.push('}');
                }
                '{' => {
                    let mut name = String::new();
                    loop {
                        match chars.next() {
                            Some('}') => break,
                            Some('{') | None => {
                                return Err(err(
                                    "a `{` without its `}` (write `{{` for a literal brace)",
                                ));
                            }
                            Some(c) => name.push(c),
                        }
                    }
                    let name = name.trim().to_string();
                    if name.is_empty() {
                        return Err(err("`{}` names no column"));
                    }
                    if !text.is_empty() {
                        parts.push(Part::Text(std::mem::take(&mut text)));
                    }
                    parts.push(Part::Column(name));
                }
                '}' => {
                    return Err(err(
                        "a `}` without its `{` (write `}}` for a literal brace)",
                    ));
                }
                c => text.push(c),
            }
        }
        if !text.is_empty() {
            parts.push(Part::Text(text));
        }
        if !parts.iter().any(|p| matches!(p, Part::Column(_))) {
            return Err(err("it uses no column; write the columns as {name}"));
        }
        Ok(Template { parts })
    }

    /// The columns the template reads.
    pub fn columns(&self) -> impl Iterator<Item = &str> {
        self.parts.iter().filter_map(|p| match p {
            Part::Column(c) => Some(c.as_str()),
            Part::Text(_) => None,
        })
    }

    /// The prompt of `row`: its cells in place of the `{column}`s, runs of spaces
    /// collapsed and the ends trimmed (so a blank cell leaves no double space).
    pub fn render(&self, table: &PromptTable, row: &TableRow) -> String {
        let mut out = String::new();
        for p in &self.parts {
            match p {
                Part::Text(t) => out.push_str(t),
                Part::Column(c) => {
                    if let Some(i) = table.column(c) {
                        out.push_str(&table.text(row, i));
                    }
                }
            }
        }
        out.split(' ')
            .filter(|w| !w.is_empty())
            .collect::<Vec<_>>()
            .join(" ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn csv(text: &str) -> Result<PromptTable> {
        PromptTable::parse("p.csv", text.as_bytes())
    }

    #[test]
    fn csv_with_quotes_commas_line_breaks_and_crlf() {
        let t = csv("id,prompt,Edema\r\na,\"Small, right-sided \"\"effusion\"\".\",1\r\nb,\"two\nlines\",\n\n").unwrap();
        assert_eq!(t.columns, ["id", "prompt", "Edema"]);
        assert_eq!(t.rows.len(), 2);
        assert_eq!(t.text(&t.rows[0], 1), "Small, right-sided \"effusion\".");
        assert_eq!(t.text(&t.rows[1], 1), "two\nlines");
        assert_eq!(t.text(&t.rows[1], 2), "");
        assert_eq!((t.rows[0].line, t.rows[1].line), (2, 3));
        assert_eq!(t.label_columns(), [2]);
    }

    #[test]
    fn csv_errors_name_the_line() {
        let e = csv("prompt,seed\na,1\nb,2,3\n").unwrap_err().to_string();
        assert!(e.contains("line 3") && e.contains("3 fields"), "{e}");
        let e = csv("prompt\n\"open\n").unwrap_err().to_string();
        assert!(e.contains("line 2") && e.contains("never closed"), "{e}");
        let e = csv("prompt\nab\"c\n").unwrap_err().to_string();
        assert!(e.contains("line 2") && e.contains("quote"), "{e}");
        let e = csv("prompt,prompt\na,b\n").unwrap_err().to_string();
        assert!(e.contains("twice"), "{e}");
        assert!(csv("").unwrap_err().to_string().contains("empty"));
        assert!(csv("prompt\n").unwrap_err().to_string().contains("no rows"));
        let e = PromptTable::parse("p.csv", b"prompt\n\xff\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("line 2") && e.contains("UTF-8"), "{e}");
        let e = PromptTable::parse("p.txt", b"prompt\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains(".csv") && e.contains(".jsonl"), "{e}");
    }

    #[test]
    fn jsonl_keeps_values_and_names_bad_lines() {
        let t = PromptTable::parse(
            "p.jsonl",
            b"{\"prompt\": \"a\", \"Edema\": 1}\n\n{\"prompt\": \"b\", \"seed\": 7, \"age\": \"60\"}\n",
        )
        .unwrap();
        assert_eq!(t.columns, ["prompt", "Edema", "seed", "age"]);
        assert_eq!(t.rows[0].values[1], Value::from(1));
        assert_eq!(t.rows[0].values[2], Value::Null);
        assert_eq!(t.rows[1].line, 3);
        let e = PromptTable::parse("p.jsonl", b"{\"prompt\": \"a\"}\n[1]\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("line 2") && e.contains("object"), "{e}");
        let e = PromptTable::parse("p.jsonl", b"{\"prompt\": \"a\"}\n{\"prompt\": \n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("line 2") && e.contains("JSON"), "{e}");
    }

    #[test]
    fn columns_are_checked_for_a_run() {
        let t = csv("impression,age\nx,60\n").unwrap();
        let e = t.check_columns(None).unwrap_err().to_string();
        assert!(
            e.contains("no `prompt` column") && e.contains("--prompt-template"),
            "{e}"
        );
        let tpl = Template::parse("{age} year old {sex}. {impression}").unwrap();
        let e = t.check_columns(Some(&tpl)).unwrap_err().to_string();
        assert!(e.contains("{sex}"), "{e}");
        let t = csv("prompt,steps\nx,3\n").unwrap();
        let e = t.check_columns(None).unwrap_err().to_string();
        assert!(e.contains("`steps`") && e.contains("rename"), "{e}");
        // imagefolder's picture column, and the index's new name
        for c in ["image", "image_index", "file_name"] {
            let t = csv(&format!("prompt,{c}\nx,3\n")).unwrap();
            let e = t.check_columns(None).unwrap_err().to_string();
            assert!(
                e.contains(&format!("`{c}`")) && e.contains("imagefolder"),
                "{e}"
            );
        }
    }

    #[test]
    fn templates_build_roentgen_v2_prompts() {
        let t = csv("age,race,sex,impression\n63,White,female,Small right-sided pleural effusion.\n,,male,Cardiomegaly.\n").unwrap();
        let tpl = Template::parse("{age} year old {race} {sex}. {impression}").unwrap();
        t.check_columns(Some(&tpl)).unwrap();
        assert_eq!(
            tpl.render(&t, &t.rows[0]),
            "63 year old White female. Small right-sided pleural effusion."
        );
        assert_eq!(tpl.render(&t, &t.rows[1]), "year old male. Cardiomegaly.");
        assert!(Template::parse("no columns").is_err());
        assert!(Template::parse("{open").is_err());
        assert!(Template::parse("close}").is_err());
        assert_eq!(
            Template::parse("{{literal}} {age}")
                .unwrap()
                .render(&t, &t.rows[0]),
            "{literal} 63"
        );
    }
}
