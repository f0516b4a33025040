// onnxruntime-web (WebGPU execution provider) on the UNet export_unet_onnx.py wrote: one
// session, a first run (shader compilation included) and a second, warm run, each read
// back to the CPU, the output compared with PyTorch's. side_by_side.mjs calls
// window.ortBench({ manifest, bundle }); it resolves to one JSON string, or to one with an
// `error` field (out of memory, unsupported op, ...). Served by tests/browser/harness.mjs's
// serve() with this folder mounted at /ort/.

const BUNDLES = {
  // ORT 1.30's WebGPU bundle: the C++ WebGPU EP compiled to wasm (asyncify build)
  webgpu: './node_modules/onnxruntime-web/dist/ort.webgpu.min.mjs',
  // the default bundle: its 'webgpu' EP is the older JavaScript one (JSEP build)
  jsep: './node_modules/onnxruntime-web/dist/ort.min.mjs',
};

const status = (s) => { document.getElementById('status').textContent = s; };

// The same formulas as bench_unet (src/web/mod.rs) and export_unet_onnx.py's inputs().
function inputs(ort, m) {
  const fill = (shape, f) => {
    const n = shape.reduce((a, b) => a * b, 1);
    const d = new Float32Array(n);
    for (let i = 0; i < n; i++) d[i] = f(i);
    return new ort.Tensor('float32', d, shape);
  };
  return {
    sample: fill(m.inputs.sample, (i) => ((i * 37) % 101) / 50 - 1),
    timestep: new ort.Tensor('float32', Float32Array.of(m.timestep), [1]),
    encoder_hidden_states: fill(m.inputs.encoder_hidden_states, (i) => ((i * 13) % 97) / 48 - 1),
  };
}

async function fetchBytes(url) {
  const res = await fetch(url);
  if (!res.ok) throw new Error(`${url}: HTTP ${res.status}`);
  return new Uint8Array(await res.arrayBuffer());
}

function compare(out, expected) {
  let finite = true, num = 0, den = 0, maxAbs = 0;
  for (let i = 0; i < out.length; i++) {
    const v = out[i];
    if (!Number.isFinite(v)) { finite = false; continue; }
    const d = v - expected[i];
    num += d * d;
    den += expected[i] * expected[i];
    maxAbs = Math.max(maxAbs, Math.abs(d));
  }
  return { finite, rel_l2_vs_torch: Math.sqrt(num / den), max_abs_diff_vs_torch: maxAbs };
}

window.ortBench = async ({ manifest, bundle = 'webgpu', runs = 2, verbose = false } = {}) => {
  const r = { engine: 'onnxruntime-web', bundle, manifest };
  const t = (t0) => Math.round(performance.now() - t0);
  let session;
  try {
    let t0 = performance.now();
    status(`importing ${BUNDLES[bundle]}`);
    const ort = await import(BUNDLES[bundle]);
    if (verbose) ort.env.logLevel = 'verbose';
    r.version = ort.env.versions?.web ?? ort.env.versions?.common;
    r.import_ms = t(t0);
    r.cross_origin_isolated = self.crossOriginIsolated;
    const adapter = await navigator.gpu?.requestAdapter();
    r.adapter = adapter ? [adapter.info?.vendor, adapter.info?.architecture, adapter.info?.description]
      .filter(Boolean).join(' / ') : 'no WebGPU adapter';
    if (adapter) r.max_buffer_mib = adapter.limits.maxBufferSize / 2 ** 20;

    const m = await (await fetch(manifest)).json();
    const dir = manifest.slice(0, manifest.lastIndexOf('/') + 1);
    Object.assign(r, { width_scale: m.width_scale, latent: m.latent, widths: m.widths, params: m.params, model_bytes: m.bytes });
    t0 = performance.now();
    status(`fetching ${m.model}`);
    const model = await fetchBytes(dir + m.model);
    const externalData = m.external_data
      ? [{ path: m.external_data, data: await fetchBytes(dir + m.external_data) }] : undefined;
    const expected = new Float32Array((await fetchBytes(dir + m.expected)).buffer);
    r.fetch_ms = t(t0);

    t0 = performance.now();
    status('creating the session');
    session = await ort.InferenceSession.create(model, {
      executionProviders: ['webgpu'],
      graphOptimizationLevel: 'all',
      // warnings (e.g. nodes left to the CPU EP) reach the console; verbose: node placements
      logSeverityLevel: verbose ? 0 : 2,
      ...(externalData ? { externalData } : {}),
    });
    r.create_ms = t(t0);
    r.num_threads = ort.env.wasm.numThreads;

    const feeds = inputs(ort, m);
    r.run_ms = [];
    for (let i = 0; i < runs; i++) {
      status(`run ${i + 1}`);
      t0 = performance.now();
      const outs = await session.run(feeds);
      const out = outs[m.output.name];
      const data = await out.getData(); // on the CPU: the GPU's work is done and read back
      r.run_ms.push(t(t0));
      r.output_shape = out.dims;
      Object.assign(r, compare(data, expected));
      for (const o of Object.values(outs)) o.dispose();
    }
    [r.first_ms, r.warm_ms] = r.run_ms;
    if (r.output_shape) r.shape_ok = JSON.stringify(r.output_shape) === JSON.stringify(m.output.shape);
    status('done');
  } catch (e) {
    r.error = String(e?.message ?? e);
    status(`error: ${r.error}`);
  } finally {
    try { await session?.release(); } catch { /* the session may not exist */ }
  }
  return JSON.stringify(r);
};
status('ready');
