//! The browser app. One wasm module serves both sides: on a page (a `Window` exists)
//! [`start`] runs the UI, which starts the engine in a module Web Worker
//! (`www/worker.js`), where `worker_main` takes requests. [`protocol`] is the typed
//! message set between them and builds everywhere (tested natively), as does
//! [`page_state`], the page's state and its transitions.

pub mod hub;
pub mod page_state;
pub mod protocol;

#[cfg(target_arch = "wasm32")]
mod page;
#[cfg(target_arch = "wasm32")]
mod store;
#[cfg(target_arch = "wasm32")]
mod worker;

#[cfg(target_arch = "wasm32")]
use wasm_bindgen::prelude::*;

/// Panics and `log` records go to the browser console.
#[cfg(target_arch = "wasm32")]
fn init_logging() {
    std::panic::set_hook(Box::new(|info| {
        web_sys::console::error_1(&format!("roentgen-web panicked: {info}").into());
    }));
    struct Console;
    impl log::Log for Console {
        fn enabled(&self, m: &log::Metadata) -> bool {
            m.level() <= log::Level::Info
        }
        fn log(&self, r: &log::Record) {
            if self.enabled(r.metadata()) {
                let msg = format!("{}: {}", r.target(), r.args()).into();
                match r.level() {
                    log::Level::Error => web_sys::console::error_1(&msg),
                    log::Level::Warn => web_sys::console::warn_1(&msg),
                    _ => web_sys::console::log_1(&msg),
                }
            }
        }
        fn flush(&self) {}
    }
    static CONSOLE: Console = Console;
    if log::set_logger(&CONSOLE).is_ok() {
        log::set_max_level(log::LevelFilter::Info);
    }
}

/// Runs when the module is instantiated: the UI on a page, nothing in the worker (which
/// calls `worker_main`).
#[cfg(target_arch = "wasm32")]
#[wasm_bindgen(start)]
pub fn start() {
    if web_sys::window().is_some() {
        init_logging();
        page::main();
    }
}

/// The browser benchmark (`tests/browser/bench.mjs` calls it on the page): one guided
/// UNet call (batch 2) on SD 1.x's UNet with its widths scaled by `width_scale`, random
/// f32 weights, `latent`x`latent` latents. The first call includes compiling the
/// kernels; the second is timed alone when `repeat`. Returns JSON.
#[cfg(target_arch = "wasm32")]
#[wasm_bindgen]
pub async fn bench_unet(
    width_scale: f64,
    latent: usize,
    repeat: bool,
    format: String,
) -> Result<String, JsValue> {
    use crate::gpu::{Gpu, WeightFormat};
    use crate::loader::{Loader, MatrixFormat};
    use crate::models::config::presets;
    use crate::models::{UNet2DConditionModel, UNetConfig};
    let run = async {
        let gpu = Gpu::new().await?;
        let mut cfg = UNetConfig::from_json("unet/config.json", presets::SD14_UNET)?;
        cfg.block_out_channels = cfg
            .block_out_channels
            .iter()
            .map(|&c| (c as f64 * width_scale).round() as usize)
            .collect();
        let (lc, ctx_dim) = (cfg.in_channels, cfg.cross_attention_dim);
        // f32 | f16 | int8 | int4 (int8/int4 by the converter's policy)
        let wf = WeightFormat::from_name(&format).ok_or_else(|| {
            crate::Error::Input(format!("format {format}: use f32, f16, int8 or int4"))
        })?;
        let matrix = MatrixFormat::for_format(wf);
        let unet =
            UNet2DConditionModel::load(&Loader::random(&gpu, 2, matrix).component("unet"), cfg)?;
        let weights = gpu.memory().weights;
        gpu.sync().await?;
        let n = 2 * latent * latent * lc;
        let sample = gpu.upload(
            &(0..n)
                .map(|i| ((i * 37 % 101) as f32 / 50.0) - 1.0)
                .collect::<Vec<_>>(),
            &[2, latent, latent, lc],
        )?;
        let ctx = gpu.upload(
            &(0..2 * 77 * ctx_dim)
                .map(|i| ((i * 13 % 97) as f32 / 48.0) - 1.0)
                .collect::<Vec<_>>(),
            &[2, 77, ctx_dim],
        )?;
        let mut times = Vec::new();
        for _ in 0..if repeat { 2 } else { 1 } {
            let t0 = js_sys::Date::now();
            let out = unet.forward(&gpu, &sample, 801.0, &ctx)?;
            let v = gpu.read(&out).await?;
            times.push(js_sys::Date::now() - t0);
            if !v.iter().all(|x| x.is_finite()) {
                return Err(crate::Error::Gpu("the UNet gave non-finite values".into()));
            }
        }
        // The host's share alone (issue 23's 15 µs target): the same call recorded and
        // dropped unsubmitted, three times, the median per dispatch. (performance.now
        // is coarsened in browsers: a whole call of ~500 dispatches is timed.)
        gpu.take_dispatches();
        gpu.set_record_only(true);
        let mut alone = Vec::new();
        for _ in 0..3 {
            let t0 = js_sys::Date::now();
            let out = unet.forward(&gpu, &sample, 801.0, &ctx)?;
            gpu.flush();
            let n = gpu.take_dispatches().max(1);
            alone.push((js_sys::Date::now() - t0) * 1e3 / n as f64);
            drop(out);
        }
        gpu.set_record_only(false);
        let dispatches = {
            let out = unet.forward(&gpu, &sample, 801.0, &ctx)?;
            gpu.read(&out).await?;
            gpu.take_dispatches()
        };
        alone.sort_by(f64::total_cmp);
        Ok::<_, crate::Error>(
            serde_json::json!({
                "adapter": gpu.info.adapter_name,
                "subgroups": gpu.info.subgroup_size,
                "max_storage_binding_mib": gpu.info.max_storage_binding >> 20,
                "width_scale": width_scale,
                "latent": latent,
                "format": format,
                "call_ms": times,
                "kernels": crate::web::gpu_info_text(&gpu.info),
                "dispatches": dispatches,
                "recording_alone_us_per_dispatch": alone[1],
                "weights_mib": weights >> 20,
                "peak_gpu_mib": gpu.memory().peak >> 20,
            })
            .to_string(),
        )
    };
    run.await.map_err(|e| JsValue::from_str(&e.to_string()))
}

/// The kernels against CPU references on this browser's adapter
/// (src/kernel_check.rs; tests/browser/subgroups.test.mjs runs it on SwiftShader with
/// and without subgroups). Returns JSON: the kernel path and every check's error.
#[cfg(target_arch = "wasm32")]
#[wasm_bindgen]
pub async fn check_kernels(seed: u32) -> Result<String, JsValue> {
    let run = async {
        let gpu = crate::gpu::Gpu::new().await?;
        let rows = crate::kernel_check::check_kernels(&gpu, seed as u64).await?;
        Ok::<_, crate::Error>(
            serde_json::json!({
                "path": crate::web::gpu_info_text(&gpu.info),
                "subgroup_size": gpu.info.subgroup_size,
                "bar": crate::kernel_check::REL_L2_BAR,
                "checks": rows,
            })
            .to_string(),
        )
    };
    run.await.map_err(|e| JsValue::from_str(&e.to_string()))
}

/// What the page says of the kernels that run (`data-testid="gpu-info"`):
/// "subgroup kernels, 4 lanes" or "portable kernels (no subgroups)".
pub fn gpu_info_text(info: &crate::gpu::GpuInfo) -> String {
    match (info.path, info.subgroups, info.subgroup_size) {
        (crate::gpu::KernelPath::Subgroup(sg), ..) => format!("subgroup kernels, {sg} lanes"),
        (_, true, None) => "portable kernels (subgroups of varying size)".into(),
        (_, true, Some(sg)) if info.cpu_broadcast().is_some() => format!(
            "portable kernels, CPU form with {sg}-lane subgroup broadcasts (its subgroup kernels are slower here)"
        ),
        (_, true, Some(sg)) if info.software => format!(
            "portable kernels ({sg}-lane subgroups left unused: this CPU driver's own kernels are faster)"
        ),
        (_, true, Some(sg)) => format!("portable kernels ({sg}-lane subgroups)"),
        (_, false, _) => "portable kernels (no subgroups)".into(),
    }
}

/// Kernel timings in the browser at a UNet's shapes (`bench::unet_cases`): JSON rows of
/// name, median milliseconds and GFLOP/s, each run read back.
#[cfg(target_arch = "wasm32")]
#[wasm_bindgen]
pub async fn bench_kernels(
    latent: usize,
    base: usize,
    reps: usize,
    format: String,
) -> Result<String, JsValue> {
    use crate::bench::{PreparedCase, time_case, unet_cases};
    use crate::gpu::{Gpu, WeightFormat};
    let run = async {
        let gpu = Gpu::new().await?;
        let now = || js_sys::Date::now() / 1e3;
        let mut rows = Vec::new();
        for case in unet_cases(latent, base) {
            let wf = WeightFormat::from_name(&format).ok_or_else(|| {
                crate::Error::Input(format!("format {format}: use f32, f16, int8 or int4"))
            })?;
            let p = PreparedCase::new(&gpu, case, wf)?;
            let t = time_case(&gpu, &p, reps.max(1), &now).await?;
            let med = t[t.len() / 2];
            rows.push(serde_json::json!({
                "kernel": case.name(),
                "median_ms": med * 1e3,
                "gflops": case.flops() / med / 1e9,
            }));
        }
        Ok::<_, crate::Error>(serde_json::Value::Array(rows).to_string())
    };
    run.await.map_err(|e| JsValue::from_str(&e.to_string()))
}
