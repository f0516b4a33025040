//! Kernel contracts: every kernel's WGSL, exactly as the ops hand it to wgpu (prelude,
//! specialisation constants and generated text included), reflected with naga and
//! compared with the Rust side (`roentgen_web::ops::kernel_contracts`):
//!
//! - the `repr(C)` mirror of the WGSL `Params` block: the same size (naga's
//!   `Layouter`), and member for member the same name, offset and scalar type;
//! - the bind-group layout `Gpu::pipeline` builds from its own line reading of the WGSL
//!   (group 0: binding, uniform / storage read / storage read_write) against naga's
//!   global variables;
//! - the bind group `Gpu::dispatch` builds (the params block at binding 0, the call
//!   site's buffers at 1 ..= n) against the bindings the shader declares, and the params
//!   block fits the bytes bound for it.
//!
//! Runs without a GPU: nothing is compiled for a device.

use naga::proc::Layouter;
use naga::{AddressSpace, Module, ScalarKind, StorageAccess, Type, TypeInner};
use roentgen_web::ops::contract::{BindingSpace, KernelContract};
use roentgen_web::ops::kernel_contracts;

/// A type as WGSL spells it, for the messages (scalars and vectors; others as naga
/// debug-prints them).
fn wgsl_type(module: &Module, ty: naga::Handle<Type>) -> String {
    let scalar = |s: naga::Scalar| {
        let kind = match s.kind {
            ScalarKind::Uint => "u",
            ScalarKind::Sint => "i",
            ScalarKind::Float => "f",
            ScalarKind::Bool => return "bool".to_string(),
            other => return format!("{other:?}"),
        };
        format!("{kind}{}", s.width as u32 * 8)
    };
    match &module.types[ty].inner {
        TypeInner::Scalar(s) => scalar(*s),
        TypeInner::Vector { size, scalar: s } => format!("vec{}<{}>", *size as u8, scalar(*s)),
        other => format!("{other:?}"),
    }
}

/// Everything wrong with one contract, each a sentence naming the kernel.
fn check(c: &KernelContract) -> Vec<String> {
    let at = format!("shader `{}` (entry `{}`)", c.label, c.entry);
    let mut errors = Vec::new();
    let module = match naga::front::wgsl::parse_str(&c.source) {
        Ok(m) => m,
        Err(e) => {
            return vec![format!(
                "{at}: naga cannot parse it:\n{}",
                e.emit_to_string(&c.source)
            )];
        }
    };
    // Valid for some device: wgpu validates again (with the device's capabilities) when
    // it builds the pipeline; here every path is checked, not only the test adapter's.
    if let Err(e) = naga::valid::Validator::new(
        naga::valid::ValidationFlags::all(),
        naga::valid::Capabilities::all(),
    )
    .validate(&module)
    {
        errors.push(format!(
            "{at}: naga's validator refuses it:\n{}",
            e.emit_to_string(&c.source)
        ));
    }
    if !module
        .entry_points
        .iter()
        .any(|e| e.name == c.entry && e.stage == naga::ShaderStage::Compute)
    {
        errors.push(format!("{at}: no compute entry point `{}`", c.entry));
    }

    // 1. the Params block: the struct of the uniform at binding 0
    let params_var = module.global_variables.iter().map(|(_, v)| v).find(|v| {
        v.binding
            .as_ref()
            .is_some_and(|b| (b.group, b.binding) == (0, 0))
    });
    match params_var {
        None => errors.push(format!(
            "{at}: nothing at @group(0) @binding(0), where the params block is bound"
        )),
        Some(v) => {
            let ty = &module.types[v.ty];
            if ty.name.as_deref() != Some(c.wgsl_struct) {
                errors.push(format!(
                    "{at}: binding 0 is of type {:?}, not the struct {}",
                    ty.name, c.wgsl_struct
                ));
            }
            if v.space != AddressSpace::Uniform {
                errors.push(format!("{at}: binding 0 is in {:?}, not uniform", v.space));
            }
            errors.extend(check_params(c, &at, &module, v.ty));
        }
    }

    // 2. the bind-group layout Gpu::pipeline builds against naga's globals
    let mut declared: Vec<(u32, BindingSpace)> = Vec::new();
    for (_, v) in module.global_variables.iter() {
        let Some(b) = &v.binding else { continue };
        let name = v.name.as_deref().unwrap_or("?");
        if b.group != 0 {
            errors.push(format!(
                "{at}: `{name}` is in @group({}); the engine builds one bind group, group 0",
                b.group
            ));
        }
        let space = match v.space {
            AddressSpace::Uniform => BindingSpace::Uniform,
            AddressSpace::Storage { access } if access.contains(StorageAccess::STORE) => {
                BindingSpace::StorageReadWrite
            }
            AddressSpace::Storage { .. } => BindingSpace::StorageRead,
            other => {
                errors.push(format!("{at}: `{name}` at binding {} is a {other:?} resource; the engine binds buffers only", b.binding));
                continue;
            }
        };
        declared.push((b.binding, space));
    }
    declared.sort_by_key(|d| d.0);
    if declared != c.layout {
        errors.push(format!(
            "{at}: the bind-group layout the engine builds is {:?}, naga reads the shader's bindings as {:?}",
            c.layout, declared
        ));
    }

    // 3. the bind group Gpu::dispatch builds: binding 0 the params, 1..=n the buffers
    let numbers: Vec<u32> = declared.iter().map(|d| d.0).collect();
    let entries = c.bind_group_entries();
    if numbers != entries {
        errors.push(format!(
            "{at}: a dispatch binds {} buffer(s) at bindings {:?} (params at 0), the shader declares bindings {:?}",
            c.storage_buffers, entries, numbers
        ));
    }
    if let Some((b, s)) = declared
        .iter()
        .find(|&&(b, s)| (b == 0) != (s == BindingSpace::Uniform))
    {
        errors.push(format!(
            "{at}: binding {b} is {s:?}; the engine binds the uniform params at 0 and storage buffers after it"
        ));
    }
    errors
}

/// The WGSL struct `ty` against the Rust mirror: size, then member by member (the Rust
/// fields in offset order) name, offset and type.
fn check_params(
    c: &KernelContract,
    at: &str,
    module: &Module,
    ty: naga::Handle<Type>,
) -> Vec<String> {
    let rust = &c.params;
    let at = format!("{at}, struct {} (Rust {})", c.wgsl_struct, rust.rust_type);
    let mut errors = Vec::new();
    let TypeInner::Struct { members, .. } = &module.types[ty].inner else {
        return vec![format!("{at}: not a struct")];
    };
    let mut layouter = Layouter::default();
    if let Err(e) = layouter.update(module.to_ctx()) {
        return vec![format!("{at}: naga cannot lay the types out: {e}")];
    }
    let wgsl_size = layouter[ty].size as usize;
    if wgsl_size != rust.size {
        errors.push(format!(
            "{at}: WGSL size {wgsl_size} bytes, Rust size_of {} bytes",
            rust.size
        ));
    }
    if wgsl_size as u64 > c.params_bytes || rust.size as u64 > c.params_bytes {
        errors.push(format!(
            "{at}: {wgsl_size} bytes (Rust {}) do not fit the {} bytes bound for the params",
            rust.size, c.params_bytes
        ));
    }
    let mut fields: Vec<_> = rust.fields.iter().collect();
    fields.sort_by_key(|f| f.offset);
    for i in 0..members.len().max(fields.len()) {
        match (members.get(i), fields.get(i)) {
            (Some(m), Some(f)) => {
                let name = m.name.as_deref().unwrap_or("?");
                let ty = wgsl_type(module, m.ty);
                let size = layouter[m.ty].size as usize;
                if name != f.wgsl_name
                    || m.offset as usize != f.offset
                    || ty != f.ty
                    || size != f.size
                {
                    errors.push(format!(
                        "{at}: field {i}: WGSL `{name}: {ty}` at offset {} ({size} bytes), Rust `{}: {}` at offset {} ({} bytes){}",
                        m.offset,
                        f.rust_name,
                        f.ty,
                        f.offset,
                        f.size,
                        if f.wgsl_name != f.rust_name {
                            format!(" mirroring `{}`", f.wgsl_name)
                        } else {
                            String::new()
                        }
                    ));
                }
            }
            (Some(m), None) => errors.push(format!(
                "{at}: field {i}: WGSL `{}` at offset {} has no Rust field",
                m.name.as_deref().unwrap_or("?"),
                m.offset
            )),
            (None, Some(f)) => errors.push(format!(
                "{at}: field {i}: Rust `{}` at offset {} has no WGSL member",
                f.rust_name, f.offset
            )),
            (None, None) => unreachable!(),
        }
    }
    errors
}

#[test]
fn every_kernel_matches_its_rust_contract() {
    let contracts = kernel_contracts();
    let mut failures = Vec::new();
    for c in &contracts {
        failures.extend(check(c));
    }
    let mut families: Vec<&str> = contracts.iter().map(|c| c.params.rust_type).collect();
    families.sort();
    families.dedup();
    let bindings: usize = contracts.iter().map(|c| c.layout.len()).sum();
    eprintln!(
        "{} kernel texts, {} Params mirrors ({}), {} bindings checked",
        contracts.len(),
        families.len(),
        families.join(", "),
        bindings
    );
    assert!(
        failures.is_empty(),
        "{} contract mismatch(es):\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// Every file under `shaders/` is in some contract's text (all its function signatures,
/// which no generator rewrites), and each of its entry points has a contract there: a
/// new kernel family or entry point without one fails here.
#[test]
fn contracts_cover_every_shader() {
    let contracts = kernel_contracts();
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/shaders");
    let mut files = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        let signatures: Vec<&str> = lines
            .iter()
            .copied()
            .filter(|l| l.starts_with("fn "))
            .collect();
        assert!(!signatures.is_empty(), "{}: no functions", path.display());
        let users: Vec<&KernelContract> = contracts
            .iter()
            .filter(|c| signatures.iter().all(|s| c.source.contains(s)))
            .collect();
        assert!(
            !users.is_empty(),
            "{}: no kernel contract's text holds it",
            path.display()
        );
        for pair in lines.windows(2) {
            if pair[0].starts_with("@compute")
                && let Some(name) = pair[1]
                    .strip_prefix("fn ")
                    .and_then(|r| r.split('(').next())
            {
                assert!(
                    users.iter().any(|c| c.entry == name),
                    "{}: entry point `{name}` has no contract",
                    path.display()
                );
            }
        }
        files += 1;
    }
    eprintln!("{files} shader files, each in a contract");
}
