// The browser benchmark (BENCHMARKS.md): one guided UNet call (batch 2) of SD 1.x's UNet
// at half width, random f32 weights, in headless Chromium on SwiftShader WebGPU, at
// 32x32 latents (first call with kernel compilation, then a second) and at 64x64.
// Also the release build's wasm size. Needs `trunk build --release` first.
//   node tests/browser/bench.mjs [--format f32|f16|int8|int4 ...] [--kernels MODES] [latent ...]
//   node tests/browser/bench.mjs kernels LATENT BASE [--format F ...] [--reps N]   (kernel timings, bench::unet_cases)
// Several --format flags run one after the other in the same page (ratios side by side);
// --kernels runs each in several modes in the same page: `engine` (its own choice),
// `subgroup` (the subgroup kernels forced, even where the engine would not pick them),
// `portable` (no subgroups: `roentgenNoSubgroups`, www/subgroups.js), `nobroadcast` (the
// CPU form without its subgroup broadcasts); `both` = subgroup,portable.
import fs from 'node:fs';
import path from 'node:path';
import zlib from 'node:zlib';
import { DIST, serve, launch } from './harness.mjs';

const wasm = fs.readFileSync(path.join(DIST, 'roentgen-web_bg.wasm'));
console.log(JSON.stringify({
  wasm_bytes: wasm.length,
  wasm_gzip_bytes: zlib.gzipSync(wasm, { level: 9 }).length,
}));

const args = process.argv.slice(2);
const formats = [];
for (let i = args.indexOf('--format'); i >= 0; i = args.indexOf('--format')) {
  formats.push(args[i + 1]);
  args.splice(i, 2);
}
if (!formats.length) formats.push('f32');
const r = args.indexOf('--reps'); // kernel timings: reps per kernel (median)
const reps = r >= 0 ? Number(args[r + 1]) : 1;
if (r >= 0) args.splice(r, 2);
const k = args.indexOf('--kernels');
// --kernels MODE[,MODE...]: engine (its own choice), subgroup (the subgroup kernels
// forced), portable (no subgroups at all), nobroadcast (the CPU form without its
// subgroup broadcasts); `both` = subgroup,portable
const MODES = ['engine', 'subgroup', 'portable', 'nobroadcast'];
const kernelModes = k < 0 ? ['engine'] : args[k + 1] === 'both' ? ['subgroup', 'portable'] : args[k + 1].split(',');
if (kernelModes.some((m) => !MODES.includes(m))) throw new Error(`--kernels: ${MODES.join(', ')} or both`);
if (k >= 0) args.splice(k, 2);
const kernels = args[0] === 'kernels';
const latents = args.slice(kernels ? 1 : 0).map(Number);
const server = await serve();
const browser = await launch();
try {
  const page = await browser.newPage();
  page.on('console', (m) => { if (m.type() === 'error') console.error(m.text()); });
  await page.goto(`${server.url}?bench`);
  await page.waitForFunction(() => window.wasmBindings?.bench_unet, null, { timeout: 120_000 });
  if (kernels) {
    const [latent, base] = latents;
    for (const f of formats) {
      const rows = JSON.parse(await page.evaluate(([l, b, f, n]) => window.wasmBindings.bench_kernels(l, b, n, f), [latent, base, f, reps]));
      for (const r of rows) console.log(`| ${f} | ${r.kernel} | ${r.median_ms.toFixed(0)} ms | ${r.gflops.toFixed(2)} |`);
    }
    process.exit(0);
  }
  for (const latent of latents.length ? latents : [32, 64]) for (const f of formats) for (const mode of kernelModes) {
    const t0 = Date.now();
    try {
      const r = await page.evaluate(([l, f, m]) => {
        window.roentgenNoSubgroups = m === 'portable';
        window.roentgenSubgroupKernels = m === 'subgroup'; // the subgroup kernels even where slower
        window.roentgenNoBroadcast = m === 'nobroadcast';
        return window.wasmBindings.bench_unet(0.5, l, l <= 32, f);
      }, [latent, f, mode]);
      console.log(JSON.stringify({ mode, ...JSON.parse(r) }));
    } catch (e) {
      console.log(JSON.stringify({ latent, format: f, error: String(e), after_ms: Date.now() - t0 }));
    }
  }
} finally {
  await browser.close();
  server.close();
}
