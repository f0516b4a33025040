// The browser benchmark's page (tests/browser/bench.mjs, BENCHMARKS.md) keeps loading:
// with `?bench` the page hands the engine's bench_* exports to the benchmark, without it
// the page exposes no global. A tiny kernel timing runs to show the exports work; the
// benchmark's real shapes take minutes and stay out of the tests.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { serve, launch } from './harness.mjs';
import { SLOW, modelState } from './page.mjs';

test('the benchmark page loads and its exports run; the ordinary page exposes none', { timeout: SLOW }, async () => {
  const server = await serve();
  const browser = await launch();
  try {
    const page = await browser.newPage();
    await page.goto(server.url);
    await modelState(page, ['none', 'unavailable']);
    assert.equal(await page.evaluate(() => typeof window.wasmBindings), 'undefined');
    await page.goto(`${server.url}?bench`);
    await page.waitForFunction(() => window.wasmBindings?.bench_unet, null, { timeout: 120_000 });
    assert.equal(await page.evaluate(() => typeof window.wasmBindings.bench_kernels), 'function');
    // the smallest kernel table: latent 8, base width 32, one repetition, f32
    const rows = JSON.parse(await page.evaluate(() => window.wasmBindings.bench_kernels(8, 32, 1, 'f32')));
    assert.ok(rows.length > 0, 'no kernel timed');
    for (const r of rows) assert.ok(Number.isFinite(r.median_ms) && r.median_ms >= 0, JSON.stringify(r));
  } finally {
    await browser.close();
    server.close();
  }
});
