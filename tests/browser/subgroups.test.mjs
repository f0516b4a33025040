// Subgroups in the browser (issue 23): Chromium's SwiftShader adapter offers WebGPU's
// `subgroups` with 4 lanes. www/subgroups.js requests it (wgpu 30 cannot), the engine
// takes its subgroup kernels, and every kernel meets its CPU reference
// (src/kernel_check.rs: linear and conv GEMMs in f32/f16/int8/int4, LayerNorm,
// attention; outputs poisoned first); so do the engine's own choice there (the CPU form
// with 4-lane broadcasts) and, with `roentgenNoSubgroups` set before the device is made,
// the portable kernels without subgroups. The page itself runs the CPU form (4-lane
// subgroup kernels lose to it on SwiftShader) and says so.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { serve, launch } from './harness.mjs';

test('the kernels meet their references with 4-lane subgroups and without', { timeout: 600_000 }, async () => {
  const server = await serve();
  const browser = await launch();
  try {
    const page = await browser.newPage();
    await page.goto(`${server.url}?bench`);
    await page.waitForFunction(() => window.wasmBindings?.check_kernels, null, { timeout: 120_000 });
    // the page says which kernels its engine (the worker) runs
    const app = await browser.newPage();
    await app.goto(server.url);
    await app.waitForFunction(() => document.querySelector('[data-testid="gpu-info"]')?.textContent.includes('kernels'), null, { timeout: 120_000 });
    const info = await app.textContent('[data-testid="gpu-info"]');
    // SwiftShader's 4 lanes lose to its register-tiled CPU kernels (BENCHMARKS.md): the
    // page runs those, with the lanes sharing the GEMM's loads by broadcasts, and says so
    const broadcast = 'portable kernels, CPU form with 4-lane subgroup broadcasts (its subgroup kernels are slower here)';
    assert.ok(info.includes(broadcast), info);
    await app.close();
    for (const [mode, want] of [['subgroup', 'subgroup kernels, 4 lanes'], ['engine', broadcast], ['portable', 'portable kernels (no subgroups)']]) {
      const r = JSON.parse(await page.evaluate(async (m) => {
        window.roentgenNoSubgroups = m === 'portable';
        window.roentgenSubgroupKernels = m === 'subgroup'; // the subgroup kernels even where slower
        return window.wasmBindings.check_kernels(11);
      }, mode));
      assert.equal(r.path, want, JSON.stringify(r.path));
      assert.ok(r.checks.length >= 15, `${r.checks.length} checks`);
      for (const c of r.checks) {
        assert.ok(c.rel_l2 <= r.bar, `${c.kernel}: rel L2 ${c.rel_l2} > ${r.bar}`);
      }
      console.log(`${want}: ${r.checks.length} checks, worst rel L2 ${Math.max(...r.checks.map((c) => c.rel_l2)).toExponential(2)}`);
    }
  } finally {
    await browser.close();
    server.close();
  }
});
