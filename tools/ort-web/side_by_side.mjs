// Our engine and onnxruntime-web (WebGPU EP) on the same UNet in the same headless Chromium
// (SwiftShader WebGPU), one browser, one run: for each latent, our page (dist/, ?bench)
// runs bench_unet(S, L, true, 'f32') as tests/browser/bench.mjs does, then ort.html runs
// the ONNX export of the same model (export_unet_onnx.py). Each engine gets its own
// browser context, closed before the next starts, so GPU memory is freed in between.
// Prints one JSON line per engine and a ratio line (ORT warm / ours warm).
//   node tools/ort-web/side_by_side.mjs [--latent N ...] [--width-scale S] [--only ours|ort]
//                                       [--bundle webgpu|jsep] [--placements]
// --placements: ORT only creates the session with verbose logging and prints where its
// nodes went (every node on the WebGPU EP, or which fell back to the CPU); no timing.
// Defaults: --latent 32 --width-scale 0.5 --bundle webgpu. Needs dist/ (`trunk build
// --release`), tests/browser's and this folder's `npm ci`, and the export for (S, L).
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const HARNESS = path.join(HERE, '../../tests/browser');
if (!fs.existsSync(path.join(HARNESS, 'node_modules/playwright-core'))) {
  console.error(`tests/browser/harness.mjs resolves playwright-core from its own folder: run \`npm ci\` in ${HARNESS}`);
  process.exit(2);
}
const { serve, launch } = await import('../../tests/browser/harness.mjs');

function parseArgs(argv) {
  const o = { latents: [], widthScale: 0.5, only: null, bundle: 'webgpu', placements: false };
  for (let i = 0; i < argv.length; i++) {
    const [k, v] = [argv[i], argv[i + 1]];
    if (k === '--latent') { o.latents.push(Number(v)); i++; }
    else if (k === '--width-scale') { o.widthScale = Number(v); i++; }
    else if (k === '--only' && ['ours', 'ort'].includes(v)) { o.only = v; i++; }
    else if (k === '--placements') o.placements = true;
    else if (k === '--bundle' && ['webgpu', 'jsep'].includes(v)) { o.bundle = v; i++; }
    else { console.error(`unknown argument ${k}\n${fs.readFileSync(fileURLToPath(import.meta.url), 'utf8').split('\n').slice(6, 8).join('\n')}`); process.exit(2); }
  }
  if (!o.latents.length) o.latents.push(32);
  return o;
}

const opts = parseArgs(process.argv.slice(2));
// Named as export_unet_onnx.py names it (Python's `{:g}` and JS's String agree on these).
const stem = (s, l) => `unet_w${String(s)}_l${l}`;

async function ours(browser, server, latent) {
  const context = await browser.newContext();
  const t0 = Date.now();
  try {
    const page = await context.newPage();
    page.on('console', (m) => { if (m.type() === 'error') console.error(`[ours] ${m.text()}`); });
    await page.goto(`${server.url}?bench`);
    await page.waitForFunction(() => window.wasmBindings?.bench_unet, null, { timeout: 120_000 });
    const r = JSON.parse(await page.evaluate(([s, l]) => {
      window.roentgenNoSubgroups = false; // the engine's own kernel choice, as bench.mjs
      window.roentgenSubgroupKernels = false;
      return window.wasmBindings.bench_unet(s, l, true, 'f32');
    }, [opts.widthScale, latent]));
    return { engine: 'roentgen-web', first_ms: Math.round(r.call_ms[0]), warm_ms: Math.round(r.call_ms[1]), ...r };
  } catch (e) {
    return { engine: 'roentgen-web', width_scale: opts.widthScale, latent, error: String(e), after_ms: Date.now() - t0 };
  } finally {
    await context.close();
  }
}

async function ort(browser, server, latent) {
  const manifest = `model/${stem(opts.widthScale, latent)}.json`;
  if (!fs.existsSync(path.join(HERE, manifest))) {
    return { engine: 'onnxruntime-web', width_scale: opts.widthScale, latent,
      error: `${manifest} is missing: run .venv-ref/bin/python tools/ort-web/export_unet_onnx.py --width-scale ${opts.widthScale} --latent ${latent}` };
  }
  const context = await browser.newContext();
  const warnings = [];
  const placements = [];
  let inPlacements = false;
  const t0 = Date.now();
  try {
    const page = await context.newPage();
    page.on('console', (m) => {
      const text = m.text();
      if (opts.placements) { // ORT's verbose log comes as console errors: keep the placements only
        if (text.includes('Node placements')) inPlacements = true;
        else if (text.includes('SaveMLValueNameIndexMapping')) inPlacements = false;
        else if (inPlacements && placements.length < 60) placements.push(text.replace(/^.*?\] ?/, '').trim());
        return;
      }
      if (m.type() === 'error') console.error(`[ort] ${text}`);
      if (m.type() === 'warning' || m.type() === 'error') warnings.push(text.slice(0, 300));
    });
    page.on('crash', () => console.error('[ort] the page crashed'));
    await page.goto(`${server.url}ort/ort.html`);
    await page.waitForFunction(() => window.ortBench, null, { timeout: 60_000 });
    const r = JSON.parse(await page.evaluate((a) => window.ortBench(a),
      { manifest, bundle: opts.bundle, ...(opts.placements ? { verbose: true, runs: 0 } : {}) }));
    if (opts.placements) return { ...r, placements };
    return { ...r, console_warnings: warnings.length, first_warnings: warnings.slice(0, 5) };
  } catch (e) {
    return { engine: 'onnxruntime-web', width_scale: opts.widthScale, latent, error: String(e), after_ms: Date.now() - t0, first_warnings: warnings.slice(0, 5) };
  } finally {
    await context.close();
  }
}

const server = await serve(undefined, { mounts: { '/ort/': HERE + path.sep } });
const browser = await launch();
try {
  console.log(JSON.stringify({ chromium: browser.version(), cpus: os.cpus().length, width_scale: opts.widthScale, latents: opts.latents, only: opts.only, bundle: opts.bundle, date: new Date().toISOString() }));
  for (const latent of opts.latents) {
    // The 1-minute load average before and after each engine: other work on the same cores
    // (SwiftShader runs on the CPU) shows up here, and the figures are not comparable then.
    const load = () => Number(os.loadavg()[0].toFixed(2));
    const timed = async (f) => { const l0 = load(); const r = await f(); return { ...r, loadavg_1m: [l0, load()] }; };
    const a = opts.only === 'ort' || opts.placements ? null : await timed(() => ours(browser, server, latent));
    if (a) console.log(JSON.stringify(a));
    const b = opts.only === 'ours' ? null : await timed(() => ort(browser, server, latent));
    if (b) console.log(JSON.stringify(b));
    if (a?.warm_ms && b?.warm_ms) {
      console.log(JSON.stringify({ latent, width_scale: opts.widthScale, ours_warm_ms: a.warm_ms, ort_warm_ms: b.warm_ms,
        ratio_ort_over_ours: Number((b.warm_ms / a.warm_ms).toFixed(2)),
        ratio_first: Number((b.first_ms / a.first_ms).toFixed(2)) }));
    }
  }
} finally {
  await browser.close();
  server.close();
}
