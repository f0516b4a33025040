//! A minimal zip reader, just enough for `torch.save` archives.
//!
//! torch writes every entry STORED (uncompressed) and aligned to 64 bytes through padding
//! in the local header's extra field, and switches to zip64 records for archives or
//! entries above 4 GiB (PKWARE APPNOTE 6.3.x, sections 4.3.14-4.3.16 and 4.5.3).
//!
//! Reading order, all through [`ByteSource`] so a streaming reader can supply ranges:
//! 1. the end of the file: end-of-central-directory record (and the zip64 locator and
//!    record before it) → where the central directory is ([`locate_central_directory`]);
//! 2. the central directory → entries with their sizes and local header offsets
//!    ([`parse_central_directory`]);
//! 3. per entry actually needed, its 30-byte local header (+ name and extra lengths) →
//!    where its data starts ([`entry_data_range`]).

use std::ops::Range;

use super::{ByteSource, WeightError, read_range};

const EOCD_SIG: u32 = 0x0605_4b50;
const EOCD_LEN: usize = 22;
const ZIP64_LOCATOR_SIG: u32 = 0x0706_4b50;
const ZIP64_LOCATOR_LEN: usize = 20;
const ZIP64_EOCD_SIG: u32 = 0x0606_4b50;
const ZIP64_EOCD_LEN: usize = 56;
const CENTRAL_SIG: u32 = 0x0201_4b50;
const CENTRAL_LEN: usize = 46;
const LOCAL_SIG: u32 = 0x0403_4b50;
/// Fixed part of a local file header; the name and extra field follow it.
pub const LOCAL_HEADER_LEN: usize = 30;
/// The end of the file that can hold the end-of-central-directory record: the record,
/// a comment of up to 65,535 bytes, and the zip64 locator before it.
pub const MAX_TAIL_LEN: usize = EOCD_LEN + 65_535 + ZIP64_LOCATOR_LEN;

/// Compression method of a STORED (uncompressed) entry.
pub const METHOD_STORED: u16 = 0;

/// Where the central directory is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CentralDirectory {
    pub offset: usize,
    pub size: usize,
    pub entries: u64,
}

/// One file of the archive, from the central directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ZipEntry {
    pub name: String,
    /// 0 = stored, 8 = deflate, ...
    pub method: u16,
    pub flags: u16,
    pub compressed_size: usize,
    pub uncompressed_size: usize,
    pub local_header_offset: usize,
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(at..at + 2)?.try_into().ok()?))
}
fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}
fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

/// Whether an entry name points outside the archive: absolute (`/x`, `\\x`, `C:x`),
/// or with a `..` component. We never extract entries to disk, but a reader that
/// accepts such names is one careless change away from writing outside a folder.
pub fn escapes_archive(name: &str) -> bool {
    let b = name.as_bytes();
    name.starts_with(['/', '\\'])
        || (b.len() >= 2 && b[1] == b':' && b[0].is_ascii_alphabetic())
        || name.split(['/', '\\']).any(|c| c == "..")
}

fn corrupt(file: &str, detail: impl Into<String>) -> WeightError {
    WeightError::Corrupt {
        file: file.to_owned(),
        detail: detail.into(),
    }
}

fn to_usize(file: &str, v: u64, what: &str) -> Result<usize, WeightError> {
    usize::try_from(v).map_err(|_| {
        corrupt(
            file,
            format!("{what} is {v}, beyond what this platform can address"),
        )
    })
}

/// Finds the central directory from the end of the file.
pub fn locate_central_directory<S: ByteSource + ?Sized>(
    file: &str,
    src: &S,
) -> Result<CentralDirectory, WeightError> {
    let file_len = src.file_len();
    // Most archives (torch's included) have no comment: then the end record, the zip64
    // locator and the zip64 end record are the last 98 bytes, and a streaming reader
    // needs nothing more. Otherwise search the largest possible tail.
    let short_len = file_len.min(EOCD_LEN + ZIP64_LOCATOR_LEN + ZIP64_EOCD_LEN);
    let short = read_range(
        src,
        file,
        || "the zip end record".into(),
        file_len - short_len,
        short_len,
    )?;
    let (tail, p) = match find_end_record(short) {
        Some((p, true)) => (short, p),
        _ => {
            let tail_len = file_len.min(MAX_TAIL_LEN);
            let tail = read_range(
                src,
                file,
                || "the zip directory at the end".into(),
                file_len - tail_len,
                tail_len,
            )?;
            match find_end_record(tail) {
                Some((p, _)) => (tail, p),
                None => {
                    return Err(corrupt(
                        file,
                        "it starts like a zip archive but has no end-of-central-directory record, so the file is truncated (an interrupted download?)",
                    ));
                }
            }
        }
    };
    let eocd = &tail[p..];
    let field16 = |at| u64::from(u16_at(eocd, at).unwrap_or(0));
    let field32 = |at| u64::from(u32_at(eocd, at).unwrap_or(0));
    let (disk, cd_disk) = (field16(4), field16(6));
    let mut entries = field16(10);
    let mut size = field32(12);
    let mut offset = field32(16);

    // zip64: a locator right before the record points at the zip64 end record.
    let locator = p
        .checked_sub(ZIP64_LOCATOR_LEN)
        .filter(|&l| u32_at(tail, l) == Some(ZIP64_LOCATOR_SIG));
    if let Some(l) = locator {
        let rec_offset = u64_at(tail, l + 8).unwrap_or(u64::MAX);
        let rec_offset = to_usize(file, rec_offset, "the zip64 end record offset")?;
        let rec = read_range(
            src,
            file,
            || "the zip64 end record".into(),
            rec_offset,
            ZIP64_EOCD_LEN,
        )?;
        if u32_at(rec, 0) != Some(ZIP64_EOCD_SIG) {
            return Err(corrupt(
                file,
                "the zip64 locator points at something that is not a zip64 end record",
            ));
        }
        entries = u64_at(rec, 32).unwrap_or(0);
        size = u64_at(rec, 40).unwrap_or(0);
        offset = u64_at(rec, 48).unwrap_or(0);
    } else if size == 0xffff_ffff || offset == 0xffff_ffff {
        // zip64 sentinels without zip64 records: the locator was cut off or damaged.
        return Err(corrupt(
            file,
            "the zip directory needs zip64 records but they are missing",
        ));
    }
    if locator.is_none() && (disk != 0 || cd_disk != 0) {
        return Err(WeightError::Unsupported {
            file: file.to_owned(),
            what: "a multi-part (split) zip archive".into(),
            hint: "join the parts into one file".into(),
        });
    }
    let offset = to_usize(file, offset, "the central directory offset")?;
    let size = to_usize(file, size, "the central directory size")?;
    if offset.checked_add(size).is_none_or(|end| end > file_len) {
        return Err(WeightError::Truncated {
            file: file.to_owned(),
            what: "the zip central directory".into(),
            needed: offset..offset.saturating_add(size),
            file_len,
        });
    }
    Ok(CentralDirectory {
        offset,
        size,
        entries,
    })
}

/// The position of the end-of-central-directory record in `tail`, and whether its
/// comment runs exactly to the end (a signature found elsewhere, e.g. inside a comment,
/// is only a fallback).
fn find_end_record(tail: &[u8]) -> Option<(usize, bool)> {
    let mut fallback = None;
    let mut pos = tail.len().checked_sub(EOCD_LEN);
    while let Some(p) = pos {
        if u32_at(tail, p) == Some(EOCD_SIG) {
            let comment_len = usize::from(u16_at(tail, p + 20).unwrap_or(0));
            if p + EOCD_LEN + comment_len == tail.len() {
                return Some((p, true));
            }
            fallback.get_or_insert(p);
        }
        pos = p.checked_sub(1);
    }
    fallback.map(|p| (p, false))
}

/// Parses the central directory bytes `cd` (located by [`locate_central_directory`]).
pub fn parse_central_directory(
    file: &str,
    cd: &[u8],
    dir: &CentralDirectory,
) -> Result<Vec<ZipEntry>, WeightError> {
    let mut out = Vec::new();
    let mut at = 0usize;
    for i in 0..dir.entries {
        let bad = |what: &str| corrupt(file, format!("zip directory entry {i} {what}"));
        if u32_at(cd, at) != Some(CENTRAL_SIG) {
            return Err(bad("is missing or damaged"));
        }
        let h = cd
            .get(at..at + CENTRAL_LEN)
            .ok_or_else(|| bad("is cut short"))?;
        let field16 = |o| u16_at(h, o).unwrap_or(0);
        let field32 = |o| u32_at(h, o).unwrap_or(0);
        let flags = field16(8);
        let method = field16(10);
        let mut compressed = u64::from(field32(20));
        let mut uncompressed = u64::from(field32(24));
        let name_len = usize::from(field16(28));
        let extra_len = usize::from(field16(30));
        let comment_len = usize::from(field16(32));
        let mut local = u64::from(field32(42));

        let name_start = at + CENTRAL_LEN;
        let extra_start = name_start + name_len;
        let next = extra_start + extra_len + comment_len;
        let name = cd
            .get(name_start..extra_start)
            .ok_or_else(|| bad("has a name running past the directory"))?;
        let name = String::from_utf8_lossy(name).into_owned();
        if escapes_archive(&name) {
            return Err(bad(&format!(
                "is named {name:?}, a path outside the archive (an absolute path or `..`); torch never writes one, so the file is refused"
            )));
        }
        let extra = cd
            .get(extra_start..extra_start + extra_len)
            .ok_or_else(|| bad("has an extra field running past the directory"))?;

        // zip64 extended information (id 0x0001) holds, in this order, only the fields
        // whose 32-bit value is the 0xffffffff sentinel.
        let mut e = 0usize;
        while e + 4 <= extra.len() {
            let id = u16_at(extra, e).unwrap_or(0);
            let len = usize::from(u16_at(extra, e + 2).unwrap_or(0));
            let body = extra
                .get(e + 4..e + 4 + len)
                .ok_or_else(|| bad("has a malformed extra field"))?;
            if id == 0x0001 {
                let mut b = 0usize;
                let mut take = |v: &mut u64| -> Result<(), WeightError> {
                    if *v == 0xffff_ffff {
                        *v = u64_at(body, b).ok_or_else(|| bad("has a short zip64 extra field"))?;
                        b += 8;
                    }
                    Ok(())
                };
                take(&mut uncompressed)?;
                take(&mut compressed)?;
                take(&mut local)?;
            }
            e += 4 + len;
        }
        out.push(ZipEntry {
            name,
            method,
            flags,
            compressed_size: to_usize(file, compressed, "a zip entry size")?,
            uncompressed_size: to_usize(file, uncompressed, "a zip entry size")?,
            local_header_offset: to_usize(file, local, "a zip entry offset")?,
        });
        at = next;
    }
    Ok(out)
}

/// Reads the whole directory: [`locate_central_directory`] + [`parse_central_directory`].
pub fn read_directory<S: ByteSource + ?Sized>(
    file: &str,
    src: &S,
) -> Result<Vec<ZipEntry>, WeightError> {
    let dir = locate_central_directory(file, src)?;
    let cd = read_range(
        src,
        file,
        || "the zip central directory".into(),
        dir.offset,
        dir.size,
    )?;
    parse_central_directory(file, cd, &dir)
}

/// The absolute byte range of a STORED entry's data, from its local header.
///
/// A compressed or encrypted entry is an error saying so (torch never writes them).
pub fn entry_data_range<S: ByteSource + ?Sized>(
    file: &str,
    src: &S,
    entry: &ZipEntry,
) -> Result<Range<usize>, WeightError> {
    if entry.flags & 1 != 0 {
        return Err(WeightError::Unsupported {
            file: file.to_owned(),
            what: format!("an encrypted zip entry (`{}`)", entry.name),
            hint: "re-save the checkpoint with torch.save".into(),
        });
    }
    if entry.method != METHOD_STORED {
        return Err(WeightError::Unsupported {
            file: file.to_owned(),
            what: format!(
                "a compressed zip entry (`{}`, method {}); torch.save never compresses, so the archive was probably re-zipped",
                entry.name, entry.method
            ),
            hint: "re-save it with torch.save, or re-zip it with `zip -0` (store only)".into(),
        });
    }
    if entry.compressed_size != entry.uncompressed_size {
        return Err(corrupt(
            file,
            format!(
                "stored zip entry `{}` claims {} stored bytes but {} uncompressed bytes",
                entry.name, entry.compressed_size, entry.uncompressed_size
            ),
        ));
    }
    let h = read_range(
        src,
        file,
        || format!("the zip header of `{}`", entry.name),
        entry.local_header_offset,
        LOCAL_HEADER_LEN,
    )?;
    if u32_at(h, 0) != Some(LOCAL_SIG) {
        return Err(corrupt(
            file,
            format!(
                "the local zip header of `{}` is missing or damaged",
                entry.name
            ),
        ));
    }
    let name_len = usize::from(u16_at(h, 26).unwrap_or(0));
    let extra_len = usize::from(u16_at(h, 28).unwrap_or(0));
    let start = entry.local_header_offset + LOCAL_HEADER_LEN + name_len + extra_len;
    let end = start.checked_add(entry.uncompressed_size).ok_or_else(|| {
        corrupt(
            file,
            format!("zip entry `{}` has an impossible size", entry.name),
        )
    })?;
    if end > src.file_len() {
        return Err(WeightError::Truncated {
            file: file.to_owned(),
            what: format!("zip entry `{}`", entry.name),
            needed: start..end,
            file_len: src.file_len(),
        });
    }
    Ok(start..end)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A one-entry STORED archive whose central directory uses zip64 sentinels and an
    /// extra field for the sizes and the offset, behind a zip64 end record and locator,
    /// as torch writes archives above 4 GiB (APPNOTE 4.3.14-4.3.16, 4.5.3).
    fn zip64_archive(name: &str, data: &[u8], lead: usize) -> Vec<u8> {
        let mut z = vec![0xAAu8; lead]; // junk before the entry moves its offset
        let local = z.len() as u64;
        z.extend(LOCAL_SIG.to_le_bytes());
        z.extend([45, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]); // version, flags, method, time, date, crc
        z.extend(0xffff_ffffu32.to_le_bytes()); // sizes in the local zip64 extra
        z.extend(0xffff_ffffu32.to_le_bytes());
        z.extend((name.len() as u16).to_le_bytes());
        z.extend(20u16.to_le_bytes());
        z.extend(name.as_bytes());
        z.extend(1u16.to_le_bytes());
        z.extend(16u16.to_le_bytes());
        z.extend((data.len() as u64).to_le_bytes());
        z.extend((data.len() as u64).to_le_bytes());
        z.extend(data);

        let cd_offset = z.len() as u64;
        z.extend(CENTRAL_SIG.to_le_bytes());
        z.extend([45, 3, 45, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]); // made, needed, flags, method, time, date, crc
        z.extend(0xffff_ffffu32.to_le_bytes());
        z.extend(0xffff_ffffu32.to_le_bytes());
        z.extend((name.len() as u16).to_le_bytes());
        z.extend(28u16.to_le_bytes()); // extra length
        z.extend([0, 0, 0, 0, 0, 0, 0, 0, 0, 0]); // comment len, disk, attrs
        z.extend(0xffff_ffffu32.to_le_bytes()); // local header offset → extra
        z.extend(name.as_bytes());
        z.extend(1u16.to_le_bytes());
        z.extend(24u16.to_le_bytes());
        z.extend((data.len() as u64).to_le_bytes()); // uncompressed
        z.extend((data.len() as u64).to_le_bytes()); // compressed
        z.extend(local.to_le_bytes());
        let cd_size = z.len() as u64 - cd_offset;

        let zip64_eocd = z.len() as u64;
        z.extend(ZIP64_EOCD_SIG.to_le_bytes());
        z.extend(44u64.to_le_bytes());
        z.extend([45, 3, 45, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        z.extend(1u64.to_le_bytes());
        z.extend(1u64.to_le_bytes());
        z.extend(cd_size.to_le_bytes());
        z.extend(cd_offset.to_le_bytes());
        z.extend(ZIP64_LOCATOR_SIG.to_le_bytes());
        z.extend(0u32.to_le_bytes());
        z.extend(zip64_eocd.to_le_bytes());
        z.extend(1u32.to_le_bytes());
        z.extend(EOCD_SIG.to_le_bytes());
        z.extend([0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff]);
        z.extend(0xffff_ffffu32.to_le_bytes());
        z.extend(0xffff_ffffu32.to_le_bytes());
        z.extend(0u16.to_le_bytes());
        z
    }

    #[test]
    fn zip64_extra_fields_and_end_records() {
        let data = b"hello tensor bytes";
        let z = zip64_archive("archive/data/0", data, 37);
        let entries = read_directory("t.bin", z.as_slice()).unwrap();
        assert_eq!(entries.len(), 1);
        let e = &entries[0];
        assert_eq!(e.name, "archive/data/0");
        assert_eq!(e.uncompressed_size, data.len());
        assert_eq!(e.local_header_offset, 37);
        let r = entry_data_range("t.bin", z.as_slice(), e).unwrap();
        assert_eq!(&z[r], data);
    }

    #[test]
    fn entry_names_outside_the_archive_are_refused() {
        for name in [
            "../evil",
            "archive/../../etc/passwd",
            "/etc/passwd",
            "\\\\server\\x",
            "C:\\x",
            "a\\..\\b",
        ] {
            let z = zip64_archive(name, b"abc", 0);
            let e = read_directory("t.bin", z.as_slice())
                .unwrap_err()
                .to_string();
            assert!(
                e.contains("outside the archive") && e.contains("t.bin"),
                "{name}: {e}"
            );
        }
        for name in ["archive/data/0", "archive/..data", "x..y"] {
            assert!(!escapes_archive(name), "{name}");
        }
    }

    #[test]
    fn comment_after_end_record_is_found() {
        let mut z = zip64_archive("x", b"abc", 0);
        // Give the end record a 300-byte comment (beyond the short tail read first).
        let n = z.len();
        z[n - 2..].copy_from_slice(&300u16.to_le_bytes());
        z.extend(std::iter::repeat_n(b'c', 300));
        let entries = read_directory("t.bin", z.as_slice()).unwrap();
        assert_eq!(entries[0].name, "x");
    }
}
