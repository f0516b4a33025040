// Long run in the page (issue 13; not part of `npm test`): imports the tiny fixture,
// then generates N images in a row (default 10; `node longrun.mjs 25`) and records after
// each the engine's memory as the page shows it (GPU buffers allocated, in use, peak,
// weights; the worker's WebAssembly memory) and the page's JS heap
// (performance.memory). Prints one JSON line per image and a summary; a leak shows as
// figures that grow with the count. `trunk build --release` first.
import path from 'node:path';
import { ROOT, serve, launch } from './harness.mjs';
import { FIXTURE, byId, modelState, errorText, generate, psnrAgainstGolden } from './page.mjs';

const N = Number(process.argv[2] ?? 10);
const MiB = 1 << 20;
const server = await serve(undefined, { mounts: { '/remote/': path.join(ROOT, 'tests/fixtures') } });
const browser = await launch();
try {
  const page = await browser.newPage();
  await page.goto(server.url);
  await modelState(page, ['none']);
  await page.selectOption(byId('import-format'), 'original');
  await page.setInputFiles(byId('model-folder'), FIXTURE);
  if ((await modelState(page, ['ready', 'error'])) !== 'ready') throw new Error(await errorText(page));
  const rows = [];
  for (let i = 1; i <= N; i++) {
    const t0 = Date.now();
    const image = await generate(page);
    const m = await page.$eval(byId('memory'), (e) => ({ ...e.dataset }));
    const heap = await page.evaluate(() => performance.memory?.usedJSHeapSize ?? null);
    const row = {
      image: i,
      seconds: +((Date.now() - t0) / 1000).toFixed(1),
      psnr_db: +psnrAgainstGolden(image).toFixed(2),
      gpu_allocated_mib: +(m.gpuAllocated / MiB).toFixed(2),
      gpu_in_use_mib: +(m.gpuInUse / MiB).toFixed(2),
      gpu_peak_mib: +(m.gpuPeak / MiB).toFixed(2),
      gpu_weights_mib: +(m.gpuWeights / MiB).toFixed(2),
      wasm_mib: +(m.wasm / MiB).toFixed(1),
      page_js_heap_mib: heap == null ? null : +(heap / MiB).toFixed(1),
      gallery: await page.$$eval('#gallery li', (l) => l.length),
    };
    rows.push(row);
    console.log(JSON.stringify(row));
  }
  const grow = (k) => +(rows.at(-1)[k] - rows[0][k]).toFixed(2);
  console.log(JSON.stringify({
    images: N,
    growth_first_to_last: Object.fromEntries(['gpu_allocated_mib', 'gpu_in_use_mib', 'gpu_peak_mib', 'wasm_mib', 'page_js_heap_mib'].map((k) => [k, grow(k)])),
    seconds_per_image: +(rows.reduce((s, r) => s + r.seconds, 0) / N).toFixed(1),
  }));
} finally {
  await browser.close();
  server.close();
}
