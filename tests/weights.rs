//! Weight-file parsing against real files written by torch and safetensors.
//!
//! The files in tests/data/ come from tests/data/make_weight_files.py (torch 2.15.0,
//! safetensors 0.8.0; see its docstring and weights_manifest.json). Tolerance: none.
//! Parsing and f16/bf16 → f32 widening are exact, so every comparison is bit for bit.

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::{Path, PathBuf};

use roentgen_web::weights::{
    ByteSource, DType, FileFormat, WeightError, WeightIndex, bf16_to_f32, f16_to_f32, f32_to_f16,
    pick_weight_file, safetensors_header_len, to_f32,
};

fn data_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data")
}

fn read(name: &str) -> Vec<u8> {
    let p = data_dir().join(name);
    std::fs::read(&p)
        .unwrap_or_else(|e| panic!("{}: {e} (run tests/data/make_weight_files.py)", p.display()))
}

fn manifest() -> serde_json::Value {
    serde_json::from_slice(&read("weights_manifest.json")).unwrap()
}

fn torch_dtype(name: &str) -> DType {
    DType::from_torch_dtype(name).unwrap_or_else(|| panic!("unknown torch dtype {name}"))
}

// ---------------------------------------------------------------------------------------
// Real files: both formats, agreement, conversion
// ---------------------------------------------------------------------------------------

#[test]
fn both_formats_parse_and_agree_bit_exactly() {
    let st_bytes = read("weights.safetensors");
    let bin_bytes = read("weights.bin");
    let st = WeightIndex::parse("weights.safetensors", &st_bytes).unwrap();
    let bin = WeightIndex::parse("weights.bin", &bin_bytes).unwrap();
    assert_eq!(st.format, FileFormat::SafeTensors);
    assert_eq!(bin.format, FileFormat::PyTorchZip);
    let st_names: Vec<&String> = st.tensors.keys().collect();
    let bin_names: Vec<&String> = bin.tensors.keys().collect();
    assert_eq!(
        st_names, bin_names,
        "the two files hold different tensor names"
    );
    for (name, a) in &st.tensors {
        let b = &bin.tensors[name];
        assert_eq!(
            (a.dtype, &a.shape),
            (b.dtype, &b.shape),
            "`{name}` differs in dtype/shape"
        );
        let (_, da) = st.tensor_bytes(&st_bytes, name).unwrap();
        let (_, db) = bin.tensor_bytes(&bin_bytes, name).unwrap();
        assert_eq!(
            da, db,
            "`{name}`: bytes differ between safetensors and torch.save"
        );
        assert_eq!(da.len(), a.numel() * a.dtype.size_bytes(), "`{name}`");
    }
    // Views of one storage: both ranges lie inside the same zip entry, 8 elements apart
    // (`shared.head` = base[0:4], `shared.tail` = base[8:12]).
    let head = &bin.tensors["shared.head"];
    let tail = &bin.tensors["shared.tail"];
    assert_eq!(tail.range.start - head.range.start, 8 * 4);
    println!("{} tensors agree bit for bit", st.tensors.len());
}

#[test]
fn index_matches_what_torch_wrote() {
    let m = manifest();
    let tensors = m["tensors"].as_object().unwrap();
    for file in ["weights.safetensors", "weights.bin"] {
        let idx = WeightIndex::parse(file, &read(file)).unwrap();
        assert_eq!(idx.tensors.len(), tensors.len(), "{file}");
        for (name, t) in tensors {
            let info = idx.get(name).unwrap();
            let shape: Vec<usize> = t["shape"]
                .as_array()
                .unwrap()
                .iter()
                .map(|d| d.as_u64().unwrap() as usize)
                .collect();
            assert_eq!(info.shape, shape, "{file}: `{name}`");
            assert_eq!(
                info.dtype,
                torch_dtype(t["dtype"].as_str().unwrap()),
                "{file}: `{name}`"
            );
        }
    }
    // The scalar has shape [] and one element.
    let idx = WeightIndex::parse("weights.bin", &read("weights.bin")).unwrap();
    assert_eq!(idx.get("scalar").unwrap().shape, Vec::<usize>::new());
    assert_eq!(
        idx.read_f32(&read("weights.bin"), "scalar", &[]).unwrap(),
        vec![3.25]
    );
    assert_eq!(idx.get("empty").unwrap().byte_len(), 0);
    let facts = &m["torch_save"];
    println!(
        "torch {} pickle protocol {} globals {}",
        m["versions"]["torch"], facts["pickle_protocol"], facts["pickle_globals"]
    );
}

#[test]
fn parse_dispatches_on_content_not_name() {
    // A .bin that is really safetensors, and a .safetensors that is really a torch zip.
    let a = WeightIndex::parse("model.bin", &read("weights.safetensors")).unwrap();
    assert_eq!(a.format, FileFormat::SafeTensors);
    let b = WeightIndex::parse("model.safetensors", &read("weights.bin")).unwrap();
    assert_eq!(b.format, FileFormat::PyTorchZip);
    assert_eq!(a.tensors.len(), b.tensors.len());
}

#[test]
fn float_tensors_convert_like_torch_float() {
    // weights_expected_f32.safetensors holds `t.float()` of every floating tensor.
    let exp_bytes = read("weights_expected_f32.safetensors");
    let expected = WeightIndex::parse("weights_expected_f32.safetensors", &exp_bytes).unwrap();
    for file in ["weights.safetensors", "weights.bin"] {
        let bytes = read(file);
        let idx = WeightIndex::parse(file, &bytes).unwrap();
        let mut checked = BTreeMap::new();
        for (name, info) in &expected.tensors {
            let want = expected.read_f32(&exp_bytes, name, &info.shape).unwrap();
            let got = idx.read_f32(&bytes, name, &info.shape).unwrap();
            assert_eq!(got.len(), want.len());
            for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                // NaN payloads: torch keeps them, and so do we; compare bits throughout.
                assert_eq!(
                    g.to_bits(),
                    w.to_bits(),
                    "{file}: `{name}`[{i}]: {g} vs torch {w}"
                );
            }
            checked.insert(name.clone(), idx.get(name).unwrap().dtype);
        }
        for d in [DType::F16, DType::BF16, DType::F64, DType::F32] {
            assert!(
                checked.values().any(|&x| x == d),
                "{file}: no {d} tensor was checked"
            );
        }
    }
}

// ---------------------------------------------------------------------------------------
// f16 / bf16 conversions, exhaustively
// ---------------------------------------------------------------------------------------

/// binary16 by its definition, in f64.
fn f16_reference(h: u16) -> f64 {
    let s = if h & 0x8000 != 0 { -1.0 } else { 1.0 };
    let e = i32::from((h >> 10) & 0x1f);
    let m = f64::from(h & 0x3ff);
    match e {
        0 => s * m * 2f64.powi(-24),
        31 if m == 0.0 => s * f64::INFINITY,
        31 => f64::NAN,
        _ => s * (1.0 + m / 1024.0) * 2f64.powi(e - 15),
    }
}

/// bfloat16 by its definition (8 exponent bits, 7 mantissa bits), in f64.
fn bf16_reference(b: u16) -> f64 {
    let s = if b & 0x8000 != 0 { -1.0 } else { 1.0 };
    let e = i32::from((b >> 7) & 0xff);
    let m = f64::from(b & 0x7f);
    match e {
        0 => s * m / 128.0 * 2f64.powi(-126),
        255 if m == 0.0 => s * f64::INFINITY,
        255 => f64::NAN,
        _ => s * (1.0 + m / 128.0) * 2f64.powi(e - 127),
    }
}

#[test]
fn f16_to_f32_all_65536_patterns() {
    for h in 0..=u16::MAX {
        let got = f16_to_f32(h);
        let want = f16_reference(h);
        if want.is_nan() {
            assert!(got.is_nan(), "{h:#06x}: {got}");
            assert_eq!(
                got.is_sign_negative(),
                h & 0x8000 != 0,
                "{h:#06x}: NaN sign"
            );
            // The payload survives; a signalling NaN comes back quiet (the `half` crate
            // sets the quiet bit, as hardware conversions do).
            assert_eq!(
                ((got.to_bits() >> 13) & 0x3ff) | 0x200,
                u32::from(h & 0x3ff) | 0x200,
                "{h:#06x}: NaN payload"
            );
        } else {
            // Exact, including the sign of zero.
            assert_eq!(
                f64::from(got).to_bits(),
                want.to_bits(),
                "{h:#06x}: {got} vs {want}"
            );
        }
    }
    // The bulk converter agrees with the scalar one.
    let bytes: Vec<u8> = (0..=u16::MAX).flat_map(u16::to_le_bytes).collect();
    let all = to_f32(DType::F16, &bytes).unwrap();
    for (h, v) in all.iter().enumerate() {
        assert_eq!(v.to_bits(), f16_to_f32(h as u16).to_bits());
    }
}

#[test]
fn bf16_to_f32_all_65536_patterns() {
    let bytes: Vec<u8> = (0..=u16::MAX).flat_map(u16::to_le_bytes).collect();
    let all = to_f32(DType::BF16, &bytes).unwrap();
    for b in 0..=u16::MAX {
        let got = bf16_to_f32(b);
        assert_eq!(got.to_bits(), all[usize::from(b)].to_bits());
        let want = bf16_reference(b);
        if want.is_nan() {
            assert!(got.is_nan(), "{b:#06x}");
        } else {
            assert_eq!(
                f64::from(got).to_bits(),
                want.to_bits(),
                "{b:#06x}: {got} vs {want}"
            );
        }
    }
}

#[test]
fn f32_to_f16_round_trips_and_ties_to_even() {
    for h in 0..=u16::MAX {
        let x = f16_to_f32(h);
        let back = f32_to_f16(x);
        if x.is_nan() {
            assert!(
                f16_to_f32(back).is_nan() && back & 0x0200 != 0,
                "{h:#06x} → {back:#06x}"
            );
        } else {
            assert_eq!(back, h, "{h:#06x} → {x} → {back:#06x}");
        }
    }
    // Between consecutive finite f16 values: the exact midpoint goes to the even one,
    // anything off it to the nearer one. Midpoints need 12 significant bits: exact in f32.
    for h in 0u16..0x7bff {
        let (a, b) = (f16_to_f32(h), f16_to_f32(h + 1));
        let mid = ((f64::from(a) + f64::from(b)) / 2.0) as f32;
        assert_eq!(f64::from(mid), (f64::from(a) + f64::from(b)) / 2.0);
        let even = if h % 2 == 0 { h } else { h + 1 };
        assert_eq!(f32_to_f16(mid), even, "midpoint of {h:#06x}");
        assert_eq!(f32_to_f16(-mid), even | 0x8000, "midpoint of -{h:#06x}");
        assert_eq!(
            f32_to_f16(f32::from_bits(mid.to_bits() - 1)),
            h,
            "below midpoint of {h:#06x}"
        );
        assert_eq!(
            f32_to_f16(f32::from_bits(mid.to_bits() + 1)),
            h + 1,
            "above midpoint of {h:#06x}"
        );
    }
    assert_eq!(f32_to_f16(65519.996), 0x7bff);
    assert_eq!(
        f32_to_f16(65520.0),
        0x7c00,
        "ties away from 65504 (odd) to inf"
    );
    assert_eq!(f32_to_f16(1e10), 0x7c00);
    assert_eq!(f32_to_f16(-1e10), 0xfc00);
    assert_eq!(
        f32_to_f16(2f32.powi(-25)),
        0,
        "half the smallest subnormal ties to 0"
    );
    assert_eq!(f32_to_f16(f32::from_bits(2f32.powi(-25).to_bits() + 1)), 1);
    assert_eq!(
        f32_to_f16(f32::from_bits(1)),
        0,
        "f32 subnormals flush to 0"
    );
    assert_eq!(f32_to_f16(-0.0), 0x8000);
}

// ---------------------------------------------------------------------------------------
// Errors a user sees
// ---------------------------------------------------------------------------------------

#[test]
fn missing_tensor_names_tensor_and_file_and_suggests() {
    let bytes = read("weights.bin");
    let idx = WeightIndex::parse("unet/diffusion_pytorch_model.bin", &bytes).unwrap();
    let err = idx
        .read_f32(&bytes, "conv.weights", &[4, 3, 3, 3])
        .unwrap_err();
    let msg = err.to_string();
    println!("{msg}");
    assert!(matches!(&err, WeightError::MissingTensor { tensor, .. } if tensor == "conv.weights"));
    assert!(msg.contains("`conv.weights`"), "{msg}");
    assert!(msg.contains("unet/diffusion_pytorch_model.bin"), "{msg}");
    assert!(msg.contains("did you mean `conv.weight`"), "{msg}");
    // Nothing close: no suggestion clause.
    let msg = idx
        .get("text_model.embeddings.position_ids")
        .unwrap_err()
        .to_string();
    assert!(!msg.contains("did you mean"), "{msg}");
}

#[test]
fn wrong_shape_names_both_shapes() {
    let bytes = read("weights.safetensors");
    let idx = WeightIndex::parse("vae/diffusion_pytorch_model.safetensors", &bytes).unwrap();
    let err = idx
        .read_f32(&bytes, "conv.weight", &[4, 3, 1, 1])
        .unwrap_err();
    let msg = err.to_string();
    println!("{msg}");
    assert_eq!(
        err,
        WeightError::ShapeMismatch {
            file: "vae/diffusion_pytorch_model.safetensors".into(),
            tensor: "conv.weight".into(),
            expected: vec![4, 3, 1, 1],
            found: vec![4, 3, 3, 3],
        }
    );
    assert!(
        msg.contains("[4, 3, 3, 3]") && msg.contains("[4, 3, 1, 1]"),
        "{msg}"
    );
}

#[test]
fn integer_tensors_are_not_read_as_f32() {
    let bytes = read("weights.bin");
    let idx = WeightIndex::parse("weights.bin", &bytes).unwrap();
    let err = idx.read_f32(&bytes, "ids", &[4]).unwrap_err();
    assert!(
        matches!(
            err,
            WeightError::DTypeNotConvertible {
                dtype: DType::I64,
                ..
            }
        ),
        "{err}"
    );
    // ... but their bytes are there, bit-exact.
    let (info, raw) = idx.tensor_bytes(&bytes, "ids").unwrap();
    assert_eq!(info.dtype, DType::I64);
    let ids: Vec<i64> = raw
        .chunks_exact(8)
        .map(|c| i64::from_le_bytes(c.try_into().unwrap()))
        .collect();
    assert_eq!(ids, vec![0, -1, 1 << 40, 7]);
    let (_, raw) = idx.tensor_bytes(&bytes, "u16").unwrap();
    assert_eq!(raw, [0, 0, 1, 0, 0xff, 0xff]);
    let (_, raw) = idx.tensor_bytes(&bytes, "flags").unwrap();
    assert_eq!(raw, [1, 0, 1]);
}

#[test]
fn truncated_files_say_so_at_every_length() {
    for file in ["weights.safetensors", "weights.bin"] {
        let bytes = read(file);
        for len in 0..bytes.len() {
            let err = match WeightIndex::parse(file, &bytes[..len]) {
                Ok(idx) => panic!(
                    "{file} cut at {len} parsed with {} tensors",
                    idx.tensors.len()
                ),
                Err(e) => e,
            };
            let msg = err.to_string();
            assert!(msg.contains("truncated"), "{file} cut at {len}: {msg}");
            assert!(msg.contains(file), "{file} cut at {len}: {msg}");
            if len == bytes.len() / 2 {
                println!("cut at {len}: {msg}");
            }
        }
    }
    // The whole-file tensor read also checks the range.
    let bytes = read("weights.safetensors");
    let idx = WeightIndex::parse("weights.safetensors", &bytes).unwrap();
    let last = idx.tensors.values().map(|t| t.range.end).max().unwrap();
    let name = idx
        .tensors
        .iter()
        .find(|(_, t)| t.range.end == last && !t.range.is_empty())
        .unwrap()
        .0;
    let err = idx.tensor_bytes(&bytes[..last - 1], name).unwrap_err();
    assert!(matches!(err, WeightError::Truncated { .. }), "{err}");
}

#[test]
fn flipped_bytes_never_panic() {
    for file in ["weights.safetensors", "weights.bin"] {
        let bytes = read(file);
        let (mut ok, mut err) = (0, 0);
        for pos in 0..bytes.len() {
            for mask in [0xffu8, 0x01, 0x80] {
                let mut b = bytes.clone();
                b[pos] ^= mask;
                match WeightIndex::parse(file, &b) {
                    Ok(idx) => {
                        ok += 1;
                        // Whatever parsed must be readable without going out of bounds.
                        for (name, info) in &idx.tensors {
                            let (_, data) = idx.tensor_bytes(&b, name).unwrap();
                            assert_eq!(data.len(), info.numel() * info.dtype.size_bytes());
                            if info.dtype.is_float() {
                                idx.read_f32(&b, name, &info.shape).unwrap();
                            }
                        }
                    }
                    Err(e) => {
                        err += 1;
                        assert!(e.to_string().contains(file), "{e}");
                    }
                }
            }
        }
        println!("{file}: {ok} flipped copies parse, {err} are refused");
    }
}

fn safetensors_file(header: &str, data_len: usize) -> Vec<u8> {
    let mut v = (header.len() as u64).to_le_bytes().to_vec();
    v.extend(header.as_bytes());
    v.resize(v.len() + data_len, 0);
    v
}

#[test]
fn corrupt_safetensors_headers() {
    let parse = |bytes: &[u8]| WeightIndex::parse_safetensors("x.safetensors", bytes);
    let err_of = |bytes: &[u8]| parse(bytes).unwrap_err().to_string();

    // Fine: metadata, overlapping tensors, a scalar.
    let ok = safetensors_file(
        r#"{"__metadata__":{"format":"pt"},"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F16","shape":[4],"data_offsets":[0,8]},"s":{"dtype":"BF16","shape":[],"data_offsets":[8,10]}}"#,
        10,
    );
    let idx = parse(&ok).unwrap();
    assert_eq!(idx.tensors.len(), 3);
    let header_len = safetensors_header_len("x.safetensors", &ok[..8]).unwrap();
    assert_eq!(
        idx.get("a").unwrap().range,
        8 + header_len..8 + header_len + 8
    );

    let msg = err_of(&safetensors_file("this is not json", 0));
    assert!(
        msg.contains("corrupt") && msg.contains("does not parse"),
        "{msg}"
    );

    let mut huge = ok.clone();
    huge[..8].copy_from_slice(&u64::MAX.to_le_bytes());
    let msg = err_of(&huge);
    assert!(msg.contains("100 MB"), "{msg}");

    let mut long = ok.clone();
    long[..8].copy_from_slice(&(ok.len() as u64).to_le_bytes());
    let msg = err_of(&long);
    assert!(
        msg.contains("truncated") && msg.contains("JSON header"),
        "{msg}"
    );

    let header = r#"{"w":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}}"#;
    let err = parse(&safetensors_file(header, 8)).unwrap_err();
    let msg = err.to_string();
    println!("{msg}");
    let h = 8 + header.len();
    assert_eq!(
        err,
        WeightError::Truncated {
            file: "x.safetensors".into(),
            what: "tensor `w`".into(),
            needed: h..h + 16,
            file_len: h + 8,
        }
    );
    assert!(
        msg.contains(&format!(
            "needs bytes {h}..{} but the file has {} bytes",
            h + 16,
            h + 8
        )),
        "{msg}"
    );

    let msg = err_of(&safetensors_file(
        r#"{"w":{"dtype":"F32","shape":[3],"data_offsets":[0,16]}}"#,
        16,
    ));
    assert!(
        msg.contains("`w`") && msg.contains("should take 12 bytes") && msg.contains("gives it 16"),
        "{msg}"
    );

    let msg = err_of(&safetensors_file(
        r#"{"w":{"dtype":"F32","shape":[1],"data_offsets":[8,4]}}"#,
        16,
    ));
    assert!(msg.contains("backwards"), "{msg}");

    let msg = err_of(&safetensors_file(
        r#"{"w":{"dtype":"F4","shape":[1],"data_offsets":[0,1]}}"#,
        16,
    ));
    assert!(
        msg.contains("does not support") && msg.contains("`F4`"),
        "{msg}"
    );

    let msg = err_of(&safetensors_file(
        r#"{"w":{"dtype":"F32","shape":[1]}}"#,
        16,
    ));
    assert!(msg.contains("`w`") && msg.contains("data_offsets"), "{msg}");

    let msg = err_of(&safetensors_file(
        r#"{"w":{"dtype":"F32","shape":[1099511627776,1099511627776,1099511627776],"data_offsets":[0,4]}}"#,
        4,
    ));
    assert!(msg.contains("impossibly large shape"), "{msg}");

    let msg = err_of(&safetensors_file(
        r#"{"w":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}}"#,
        4,
    ));
    assert!(msg.contains("`w`"), "{msg}");

    let msg = err_of(&[1, 2, 3]);
    assert!(
        msg.contains("truncated") && msg.contains("needs bytes 0..8"),
        "{msg}"
    );
}

#[test]
fn wrong_content_is_recognised() {
    let lfs = b"version https://git-lfs.github.com/spec/v1\noid sha256:abc\nsize 3438167534\n";
    let msg = WeightIndex::parse("unet/diffusion_pytorch_model.bin", lfs)
        .unwrap_err()
        .to_string();
    assert!(msg.contains("Git LFS pointer"), "{msg}");
    let html = b"<!DOCTYPE html><html><body>Access to model is restricted</body></html>";
    let msg = WeightIndex::parse("unet/diffusion_pytorch_model.safetensors", html)
        .unwrap_err()
        .to_string();
    assert!(msg.contains("HTML page"), "{msg}");
    let msg = WeightIndex::parse("legacy.bin", &read("legacy.bin"))
        .unwrap_err()
        .to_string();
    println!("{msg}");
    assert!(
        msg.contains("legacy") && msg.contains("PyTorch < 1.6"),
        "{msg}"
    );
}

#[test]
fn non_contiguous_tensor_is_refused_by_name() {
    let err = WeightIndex::parse("noncontig.bin", &read("noncontig.bin")).unwrap_err();
    let msg = err.to_string();
    println!("{msg}");
    assert_eq!(
        err,
        WeightError::NonContiguous {
            file: "noncontig.bin".into(),
            tensor: "transposed".into(),
            shape: vec![3, 2],
            stride: vec![1, 3],
            expected: vec![2, 1],
        }
    );
}

#[test]
fn compressed_zip_entries_are_refused() {
    let msg = WeightIndex::parse("deflated.bin", &read("deflated.bin"))
        .unwrap_err()
        .to_string();
    println!("{msg}");
    assert!(
        msg.contains("compressed zip entry") && msg.contains("torch.save never compresses"),
        "{msg}"
    );
}

/// A streaming reader's view: only some byte ranges are loaded.
struct Partial<'a> {
    full: &'a [u8],
    loaded: Vec<Range<usize>>,
}

impl ByteSource for Partial<'_> {
    fn file_len(&self) -> usize {
        self.full.len()
    }
    fn bytes(&self, r: Range<usize>) -> Option<&[u8]> {
        self.loaded
            .iter()
            .any(|l| l.start <= r.start && r.end <= l.end)
            .then(|| &self.full[r])
    }
}

#[test]
fn index_needs_only_metadata_bytes() {
    for file in ["weights.safetensors", "weights.bin"] {
        let full = read(file);
        let want = WeightIndex::parse(file, &full).unwrap();
        let mut src = Partial {
            full: &full,
            loaded: Vec::new(),
        };
        let mut rounds = 0;
        let got = loop {
            rounds += 1;
            assert!(rounds < 200, "{file}: too many rounds");
            match WeightIndex::parse_source(file, &src) {
                Ok(idx) => break idx,
                Err(WeightError::NotLoaded { needed, .. }) => src.loaded.push(needed),
                Err(e) => panic!("{file}: {e}"),
            }
        };
        assert_eq!(got, want);
        // No tensor data was needed to build the index.
        for (name, t) in &want.tensors {
            for l in &src.loaded {
                let overlap = l.start < t.range.end && t.range.start < l.end;
                assert!(
                    !overlap,
                    "{file}: reading `{name}`'s data {:?} was needed ({l:?})",
                    t.range
                );
            }
        }
        let total: usize = src.loaded.iter().map(|r| r.len()).sum();
        println!(
            "{file}: index built from {} ranges, {total} of {} bytes",
            src.loaded.len(),
            full.len()
        );
    }
}

// ---------------------------------------------------------------------------------------
// Choosing a component's file
// ---------------------------------------------------------------------------------------

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

#[test]
fn pick_weight_file_cases() {
    let sd14 = strings(&[
        "model_index.json",
        "unet/config.json",
        "unet/diffusion_pytorch_model.bin",
        "unet/diffusion_pytorch_model.fp16.bin",
        "unet/diffusion_pytorch_model.fp16.safetensors",
        "unet/diffusion_pytorch_model.non_ema.bin",
        "unet/diffusion_pytorch_model.non_ema.safetensors",
        "unet/diffusion_pytorch_model.safetensors",
        "text_encoder/config.json",
        "text_encoder/model.fp16.safetensors",
        "text_encoder/model.safetensors",
        "text_encoder/pytorch_model.bin",
        "text_encoder/pytorch_model.fp16.bin",
        "vae/diffusion_pytorch_model.bin",
    ]);
    let pick = |c: &str, files: &[String], f16: bool| pick_weight_file(c, files, f16);
    assert_eq!(
        pick("unet", &sd14, false).unwrap(),
        "unet/diffusion_pytorch_model.safetensors"
    );
    assert_eq!(
        pick("unet", &sd14, true).unwrap(),
        "unet/diffusion_pytorch_model.fp16.safetensors"
    );
    assert_eq!(
        pick("text_encoder", &sd14, false).unwrap(),
        "text_encoder/model.safetensors"
    );
    assert_eq!(
        pick("text_encoder", &sd14, true).unwrap(),
        "text_encoder/model.fp16.safetensors"
    );
    assert_eq!(
        pick("vae/", &sd14, true).unwrap(),
        "vae/diffusion_pytorch_model.bin"
    );

    // Only .bin files (RoentGen-era): the variant decides.
    let bins = strings(&[
        "unet/diffusion_pytorch_model.bin",
        "unet/diffusion_pytorch_model.fp16.bin",
        "text_encoder/pytorch_model.bin",
    ]);
    assert_eq!(
        pick("unet", &bins, false).unwrap(),
        "unet/diffusion_pytorch_model.bin"
    );
    assert_eq!(
        pick("unet", &bins, true).unwrap(),
        "unet/diffusion_pytorch_model.fp16.bin"
    );
    assert_eq!(
        pick("text_encoder", &bins, true).unwrap(),
        "text_encoder/pytorch_model.bin"
    );

    // Format beats variant: fp32 safetensors over fp16 .bin even when fp16 is preferred.
    let mixed = strings(&[
        "./unet/diffusion_pytorch_model.safetensors",
        "unet/diffusion_pytorch_model.fp16.bin",
    ]);
    assert_eq!(
        pick("unet", &mixed, true).unwrap(),
        "./unet/diffusion_pytorch_model.safetensors"
    );
    // Only the other variant, or only an unusual one: take it.
    let only16 = strings(&["unet/diffusion_pytorch_model.fp16.bin"]);
    assert_eq!(
        pick("unet", &only16, false).unwrap(),
        "unet/diffusion_pytorch_model.fp16.bin"
    );
    let ema = strings(&["unet/diffusion_pytorch_model.non_ema.bin"]);
    assert_eq!(
        pick("unet", &ema, true).unwrap(),
        "unet/diffusion_pytorch_model.non_ema.bin"
    );
    // Files of a nested folder or another component do not count.
    let nested = strings(&[
        "unet/old/diffusion_pytorch_model.bin",
        "unet2/diffusion_pytorch_model.bin",
    ]);
    let err = pick("unet", &nested, false).unwrap_err();
    assert!(matches!(err, WeightError::MissingFile { .. }), "{err}");

    // Missing: says what was looked for and what is there.
    let msg = pick(
        "unet",
        &strings(&["unet/config.json", "vae/diffusion_pytorch_model.bin"]),
        false,
    )
    .unwrap_err()
    .to_string();
    println!("{msg}");
    assert!(
        msg.contains("unet/diffusion_pytorch_model[.fp16].safetensors"),
        "{msg}"
    );
    assert!(
        msg.contains("unet/diffusion_pytorch_model[.fp16].bin"),
        "{msg}"
    );
    assert!(msg.contains("holds config.json"), "{msg}");
    let msg = pick("safety_checker", &sd14, false)
        .unwrap_err()
        .to_string();
    assert!(msg.contains("holds nothing"), "{msg}");

    // Sharded.
    let sharded = strings(&[
        "unet/diffusion_pytorch_model.safetensors.index.json",
        "unet/diffusion_pytorch_model-00001-of-00002.safetensors",
        "unet/diffusion_pytorch_model-00002-of-00002.safetensors",
    ]);
    let err = pick("unet", &sharded, false).unwrap_err();
    println!("{err}");
    assert!(matches!(&err, WeightError::Sharded { index_file, .. }
        if index_file == "unet/diffusion_pytorch_model.safetensors.index.json"));
    assert!(err.to_string().contains("not supported yet"));
    // An index next to a whole file: the whole file.
    let mut both = sharded.clone();
    both.push("unet/diffusion_pytorch_model.fp16.safetensors".into());
    assert_eq!(
        pick("unet", &both, false).unwrap(),
        "unet/diffusion_pytorch_model.fp16.safetensors"
    );
}

// ---------------------------------------------------------------------------------------
// A diffusers checkpoint saved as .bin (made by another fixture script)
// ---------------------------------------------------------------------------------------

fn files_under(root: &Path, dir: &Path, out: &mut Vec<String>) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        let p = e.path();
        if p.is_dir() {
            files_under(root, &p, out);
        } else if let Ok(rel) = p.strip_prefix(root) {
            out.push(rel.to_string_lossy().replace('\\', "/"));
        }
    }
}

#[test]
fn tiny_sd_bin_fixture_tensors_lie_inside_their_files() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny-sd-bin");
    if !root.join("unet/diffusion_pytorch_model.bin").exists() {
        println!(
            "skipped: {} is absent (made by the fixture script)",
            root.display()
        );
        return;
    }
    let mut files = Vec::new();
    files_under(&root, &root, &mut files);
    files.sort();
    let mut parsed = 0;
    for component in ["unet", "text_encoder", "vae"] {
        let Ok(rel) = pick_weight_file(component, &files, false) else {
            println!("{component}: no weight file");
            continue;
        };
        let bytes = std::fs::read(root.join(&rel)).unwrap();
        let idx = WeightIndex::parse(&rel, &bytes).unwrap_or_else(|e| panic!("{e}"));
        assert!(!idx.tensors.is_empty(), "{rel} holds no tensors");
        let mut total = 0;
        for (name, t) in &idx.tensors {
            assert!(
                t.range.end <= bytes.len(),
                "{rel}: `{name}` {:?} beyond {}",
                t.range,
                bytes.len()
            );
            assert_eq!(
                t.byte_len(),
                t.numel() * t.dtype.size_bytes(),
                "{rel}: `{name}`"
            );
            total += t.byte_len();
        }
        // Every float tensor converts.
        for (name, t) in idx.tensors.iter().filter(|(_, t)| t.dtype.is_float()) {
            idx.read_f32(&bytes, name, &t.shape).unwrap();
        }
        println!(
            "{rel}: {:?}, {} tensors, {total} bytes of data",
            idx.format,
            idx.tensors.len()
        );
        parsed += 1;
    }
    assert!(parsed > 0);
}
