// The browser benchmark (BENCHMARKS.md): one guided UNet call (batch 2) of SD 1.x's UNet
// at half width, random f32 weights, in headless Chromium on SwiftShader WebGPU, at
// 32x32 latents (first call with kernel compilation, then a second) and at 64x64.
// Also the release build's wasm size. Needs `trunk build --release` first.
//   node tests/browser/bench.mjs [latent ...]
//   node tests/browser/bench.mjs kernels LATENT BASE   (kernel timings, bench::unet_cases)
import fs from 'node:fs';
import path from 'node:path';
import zlib from 'node:zlib';
import { DIST, serve, launch } from './harness.mjs';

const wasm = fs.readFileSync(path.join(DIST, 'roentgen-web_bg.wasm'));
console.log(JSON.stringify({
  wasm_bytes: wasm.length,
  wasm_gzip_bytes: zlib.gzipSync(wasm, { level: 9 }).length,
}));

const kernels = process.argv[2] === 'kernels';
const latents = process.argv.slice(kernels ? 3 : 2).map(Number);
const server = await serve();
const browser = await launch();
try {
  const page = await browser.newPage();
  page.on('console', (m) => { if (m.type() === 'error') console.error(m.text()); });
  await page.goto(server.url);
  await page.waitForFunction(() => window.wasmBindings?.bench_unet, null, { timeout: 120_000 });
  if (kernels) {
    const [latent, base] = latents;
    const rows = JSON.parse(await page.evaluate(([l, b]) => window.wasmBindings.bench_kernels(l, b, 1), [latent, base]));
    for (const r of rows) console.log(`| ${r.kernel} | ${r.median_ms.toFixed(0)} ms | ${r.gflops.toFixed(2)} |`);
    process.exit(0);
  }
  for (const latent of latents.length ? latents : [32, 64]) {
    const t0 = Date.now();
    try {
      const r = await page.evaluate(([l]) => window.wasmBindings.bench_unet(0.5, l, l <= 32), [latent]);
      console.log(r);
    } catch (e) {
      console.log(JSON.stringify({ latent, error: String(e), after_ms: Date.now() - t0 }));
    }
  }
} finally {
  await browser.close();
  server.close();
}
