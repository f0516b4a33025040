// Page helpers shared by the browser tests: the fixture and its diffusers golden, the
// model status, the error box, one generation with the golden's settings, PSNR.
import assert from 'node:assert/strict';
import path from 'node:path';
import { ROOT, readSafetensors } from './harness.mjs';

export const FIXTURE = path.join(ROOT, 'tests/fixtures/tiny-sd');
// diffusers' StableDiffusionPipeline on tiny-sd (tools/make_fixtures.py): PNDM, 10 steps,
// guidance 4, 128x128, seed 0, this prompt, negative prompt "".
export const GOLDEN = readSafetensors(path.join(ROOT, 'tests/fixtures/golden/tiny-sd.safetensors'))['pipe.pndm.image'];
export const PROMPT = 'Small right-sided pleural effusion.';
// The bar, as in the native test. The page's PNG is 8-bit grayscale: rounding
// alone costs ~59 dB, so 40 dB leaves room only for real differences of ~1 %.
export const MIN_PSNR_DB = 40;
// SwiftShader runs WebGPU on the CPU: generous, but a hang still fails.
export const SLOW = 300_000;

export const byId = (id) => `[data-testid="${id}"]`;

export async function modelState(page, states, timeout = SLOW) {
  await page.waitForFunction(
    ([sel, states]) => states.includes(document.querySelector(sel)?.dataset.state),
    [byId('model-status'), states], { timeout },
  );
  return page.$eval(byId('model-status'), (e) => e.dataset.state);
}

export async function errorText(page) {
  return page.$eval(byId('error'), (e) => (e.hidden ? '' : e.textContent.trim()));
}

/** Fills the form with the golden's settings (`steps` other than 10 leave the golden). */
export async function fillGolden(page, { steps = 10 } = {}) {
  await page.fill(byId('prompt'), PROMPT);
  await page.fill(byId('negative-prompt'), '');
  await page.fill(byId('seed'), '0');
  await page.fill(byId('steps'), String(steps));
  await page.fill(byId('guidance'), '4');
  await page.selectOption(byId('scheduler'), 'pndm');
  await page.selectOption(byId('size'), '128');
}

/** The result image's generation counter (undefined before the first). */
export const generation = (page) => page.getAttribute(byId('result'), 'data-generation');

/** Waits for an image newer than generation `before`, returns its gray levels and PNG. */
export async function waitForImage(page, before) {
  await page.waitForFunction(([sel, before, err]) => {
    const img = document.querySelector(sel);
    const done = img.dataset.generation !== undefined && img.dataset.generation !== before
      && img.complete && img.naturalWidth > 0;
    return done || !document.querySelector(err).hidden;
  }, [byId('result'), before ?? undefined, byId('error')], { timeout: SLOW });
  assert.equal(await errorText(page), '', 'generation failed');
  assert.equal(await page.$eval(byId('progress'), (p) => p.value === p.max), true, 'progress bar not full');
  return page.$eval(byId('result'), async (img) => {
    const c = document.createElement('canvas');
    c.width = img.naturalWidth; c.height = img.naturalHeight;
    const ctx = c.getContext('2d');
    ctx.drawImage(img, 0, 0);
    const rgba = ctx.getImageData(0, 0, c.width, c.height).data;
    const gray = [];
    for (let i = 0; i < rgba.length; i += 4) gray.push(rgba[i]);
    const png = new Uint8Array(await (await fetch(img.src)).arrayBuffer());
    return { width: c.width, height: c.height, gray, png: new TextDecoder('latin1').decode(png) };
  });
}

/** Fills the form with the golden's settings, generates, returns the image's gray levels. */
export async function generate(page, opts) {
  await fillGolden(page, opts);
  const before = await generation(page);
  await page.click(byId('generate'));
  return waitForImage(page, before);
}

/** PSNR in dB of 8-bit gray levels against the reference RGB in [0, 1], by BT.601 luma
 * (what the page's grayscale PNG holds, as the CLI's). */
export function psnrAgainstGolden(image, golden = GOLDEN) {
  const [, h, w, c] = golden.shape;
  assert.deepEqual([image.height, image.width, c], [h, w, 3]);
  let se = 0;
  for (let i = 0; i < h * w; i++) {
    const [r, g, b] = golden.data.subarray(3 * i, 3 * i + 3);
    const ref = (0.299 * r + 0.587 * g + 0.114 * b) * 255;
    se += (image.gray[i] - ref) ** 2;
  }
  return 10 * Math.log10(255 ** 2 / (se / (h * w)));
}

