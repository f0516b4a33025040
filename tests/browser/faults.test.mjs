// Faults in the page (issue 13), in headless Chromium on SwiftShader WebGPU, with the
// page's test hooks (`?test-hooks`: `window.roentgenTest`, honoured by the worker only
// with the same flag):
//   1. the GPU device lost in the middle of a generation (the worker's device destroyed):
//      the page says so, the next Generate loads the model again and matches diffusers;
//      lost while idle, "Load the model again" brings it back;
//   2. Cancel during a step, during the decode and during the model load: each leaves
//      the page usable and the next generation works;
//   3. the worker crashing (a panic in the engine) mid-generation: the page says so,
//      restarts it, loads the model again, and the next generation works;
//   4. many Generate requests in a row: one runs, the others are refused with a
//      sentence, never two at once;
//   5. an import interrupted by reloading the page resumes from the same folder,
//      keeping the files stored whole.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { serve, launch } from './harness.mjs';
import {
  FIXTURE, MIN_PSNR_DB, SLOW, byId, modelState, errorText, generate, fillGolden, generation,
  waitForImage, psnrAgainstGolden,
} from './page.mjs';

let server;
before(async () => { server = await serve(); });
after(() => server?.close());

/** A page with the test hooks and the fixture imported as it is, ready. */
async function readyPage(browser, query = '') {
  const page = await browser.newPage();
  const logs = [];
  page.on('console', (m) => logs.push(m.text()));
  page.on('pageerror', (e) => logs.push(String(e)));
  page.logs = logs;
  await page.goto(`${server.url}?test-hooks${query}`);
  assert.equal(await modelState(page, ['none', 'unavailable', 'error']), 'none', await errorText(page));
  await page.selectOption(byId('import-format'), 'original');
  await page.setInputFiles(byId('model-folder'), FIXTURE);
  assert.equal(await modelState(page, ['ready', 'error']), 'ready', await errorText(page));
  return page;
}

const hook = (page, type) => page.evaluate((t) => window.roentgenTest.send(JSON.stringify({ type: t })), type);
const progressAt = (page, n) => page.waitForFunction(
  ([sel, n]) => document.querySelector(sel).value >= n, [byId('progress'), n], { timeout: SLOW },
);
const progressText = (page) => page.textContent('#progress-text');

async function withBrowser(f) {
  const browser = await launch();
  let page;
  try {
    await f(browser, (p) => { page = p; });
  } catch (e) {
    if (page) console.log(page.logs.join('\n'));
    throw e;
  } finally {
    await browser.close();
  }
}

test('a GPU device lost mid-generation: the page says so, reloads the model, the next image is right', { timeout: 4 * SLOW }, () => withBrowser(async (browser, track) => {
  const page = await readyPage(browser);
  track(page);
  await fillGolden(page, { steps: 20 });
  await page.click(byId('generate'));
  await progressAt(page, 2);
  await hook(page, 'test_lose_device');
  await page.waitForSelector(`${byId('error')}:not([hidden])`, { timeout: SLOW });
  const text = await errorText(page);
  assert.match(text, /GPU device was lost/, text);
  assert.equal(await page.$eval(byId('error'), (e) => e.dataset.kind), 'devicelost');
  assert.equal(await page.isVisible('#error-action'), true, 'no "Load the model again" button');
  assert.equal(await modelState(page, ['lost']), 'lost');
  assert.match(await progressText(page), /Stopped/);
  // the next Generate loads the model on a new device and generates
  const first = await generate(page);
  const psnr = psnrAgainstGolden(first);
  assert.ok(psnr >= MIN_PSNR_DB, `after the loss: PSNR ${psnr.toFixed(2)} dB`);
  assert.equal(await modelState(page, ['ready']), 'ready');
  // lost while idle: the next Generate says so; the button loads the model again
  await hook(page, 'test_lose_device');
  await page.click(byId('generate'));
  await page.waitForSelector(`${byId('error')}:not([hidden])`, { timeout: SLOW });
  assert.match(await errorText(page), /GPU device was lost/);
  await page.click('#error-action');
  assert.equal(await modelState(page, ['ready', 'error']), 'ready', await errorText(page));
  const second = psnrAgainstGolden(await generate(page));
  assert.ok(second >= MIN_PSNR_DB, `after "Load the model again": PSNR ${second.toFixed(2)} dB`);
  console.log(JSON.stringify({ device_lost_message: text, psnr_db: [psnr, second].map((p) => +p.toFixed(2)) }));
}));

test('Cancel during a step, during the decode and during the model load leaves the page usable', { timeout: 4 * SLOW }, () => withBrowser(async (browser, track) => {
  const page = await readyPage(browser, '&slow-load=3000');
  track(page);
  // during a step
  const before = await generation(page);
  await fillGolden(page, { steps: 30 });
  await page.click(byId('generate'));
  await progressAt(page, 2);
  await page.click(byId('cancel'));
  await page.waitForFunction(() => document.querySelector('#progress-text').textContent === 'Cancelled.', null, { timeout: SLOW });
  assert.equal(await page.isDisabled(byId('generate')), false);
  assert.equal(await generation(page), before, 'a cancelled generation showed an image');
  // during the decode: the image being decoded is dropped
  await fillGolden(page, { steps: 3 });
  await page.click(byId('generate'));
  await page.waitForFunction(() => /decoding/.test(document.querySelector('#progress-text').textContent), null, { timeout: SLOW });
  await page.click(byId('cancel'));
  await page.waitForFunction(([sel, before]) => document.querySelector('#progress-text').textContent === 'Cancelled.'
    || document.querySelector(sel).dataset.generation !== before, [byId('result'), before ?? undefined], { timeout: SLOW });
  const decodeCancelled = (await progressText(page)) === 'Cancelled.';
  assert.equal(await page.isDisabled(byId('generate')), false);
  assert.equal(await errorText(page), '');
  // the next generation works
  const image = await generate(page);
  assert.ok(psnrAgainstGolden(image) >= MIN_PSNR_DB);
  // during the model load (a reload loads the stored model; slow-load holds it 3 s)
  await page.reload();
  await modelState(page, ['loading']);
  await page.click(byId('cancel'));
  assert.equal(await modelState(page, ['none', 'ready', 'error']), 'none', await errorText(page));
  assert.match(await page.textContent(byId('model-status')), /Loading cancelled/);
  assert.equal(await page.isDisabled(byId('generate')), true);
  await page.click('#models button:has-text("Load")');
  assert.equal(await modelState(page, ['ready', 'error']), 'ready', await errorText(page));
  const after = psnrAgainstGolden(await generate(page));
  assert.ok(after >= MIN_PSNR_DB, `after a cancelled load: ${after.toFixed(2)} dB`);
  console.log(JSON.stringify({ cancel_during_decode_dropped_the_image: decodeCancelled }));
}));

test('the worker crashing mid-generation: the page says so, restarts it, and generates again', { timeout: 4 * SLOW }, () => withBrowser(async (browser, track) => {
  const page = await readyPage(browser);
  track(page);
  await fillGolden(page, { steps: 20 });
  await page.click(byId('generate'));
  await progressAt(page, 2);
  await hook(page, 'test_crash');
  await page.waitForSelector(`${byId('error')}:not([hidden])`, { timeout: SLOW });
  const text = await errorText(page);
  assert.match(text, /engine stopped unexpectedly/, text);
  assert.match(text, /restarted/, text);
  assert.match(await progressText(page), /crashed/);
  // the new engine loads the model by itself
  assert.equal(await modelState(page, ['ready', 'error']), 'ready', await errorText(page));
  const psnr = psnrAgainstGolden(await generate(page));
  assert.ok(psnr >= MIN_PSNR_DB, `after the crash: ${psnr.toFixed(2)} dB`);
  // the page ending the worker itself goes the same way
  await page.evaluate(() => window.roentgenTest.restart());
  assert.equal(await modelState(page, ['ready', 'error']), 'ready', await errorText(page));
  console.log(JSON.stringify({ crash_message: text }));
}));

test('many Generate requests in a row: one runs, the others are refused with a sentence', { timeout: 2 * SLOW }, () => withBrowser(async (browser, track) => {
  const page = await readyPage(browser);
  track(page);
  await fillGolden(page);
  const before = await generation(page);
  const gallery = await page.$$eval('#gallery li', (l) => l.length);
  await page.click(byId('generate'));
  // the button is disabled now; the form can still be submitted, and Ctrl+Enter works
  await page.evaluate(() => { for (let i = 0; i < 5; i++) document.querySelector('#form').requestSubmit(); });
  for (let i = 0; i < 3; i++) await page.press(byId('prompt'), 'Control+Enter');
  await page.click(byId('generate'), { force: true, noWaitAfter: true }).catch(() => {});
  const note = await page.textContent(byId('busy-note'));
  assert.equal(await page.isVisible(byId('busy-note')), true);
  assert.match(note, /Not started: an image is being generated/, note);
  const image = await waitForImage(page, before);
  assert.ok(psnrAgainstGolden(image) >= MIN_PSNR_DB);
  // nothing else runs afterwards: one image, no "Busy" from the engine
  await page.waitForTimeout(3000);
  assert.equal(await page.$$eval('#gallery li', (l) => l.length), gallery + 1);
  assert.equal(await page.isVisible(byId('busy-note')), false);
  assert.equal(await errorText(page), '');
  assert.doesNotMatch(page.logs.join('\n'), /another task is still running/);
  assert.equal(await page.isDisabled(byId('generate')), false);
}));

/** The stored files of a model in OPFS: path -> [size, lastModified]. */
function storedFiles(page, name) {
  return page.evaluate(async (name) => {
    const out = {};
    async function walk(dir, prefix) {
      for await (const [n, h] of dir.entries()) {
        if (h.kind === 'file') {
          const f = await h.getFile();
          out[prefix + n] = [f.size, f.lastModified];
        } else await walk(h, `${prefix}${n}/`);
      }
    }
    const models = await (await navigator.storage.getDirectory()).getDirectoryHandle('models');
    await walk(await models.getDirectoryHandle(name), '');
    return out;
  }, name);
}

test('an import interrupted by a page reload resumes from the same folder, keeping what is stored', { timeout: 3 * SLOW }, () => withBrowser(async (browser, track) => {
  const page = await browser.newPage();
  page.logs = [];
  page.on('console', (m) => page.logs.push(m.text()));
  track(page);
  // every file takes 600 ms more to copy: time to reload halfway
  await page.goto(`${server.url}?test-hooks&slow-import=600`);
  await modelState(page, ['none']);
  await page.selectOption(byId('import-format'), 'original');
  await page.setInputFiles(byId('model-folder'), FIXTURE);
  await page.waitForFunction(() => {
    const m = /\((\d+) %/.exec(document.querySelector('[data-testid="model-status"]').textContent);
    return m && Number(m[1]) >= 50;
  }, null, { timeout: SLOW });
  await page.reload();
  await modelState(page, ['none']);
  assert.match(await page.textContent('#models'), /tiny-sd — import did not finish/);
  const stored = await storedFiles(page, 'tiny-sd');
  const whole = Object.entries(stored).filter(([p, [size]]) => p !== 'roentgen-import.json' && size > 0);
  assert.ok(whole.length >= 1, `nothing was stored before the reload: ${JSON.stringify(stored)}`);
  assert.ok(!('roentgen-model.json' in stored), 'the interrupted import has a manifest');
  // Resume asks for the folder again (a dialog closed without one resumes nothing)
  await page.click('#models button:has-text("Resume")');
  await page.$eval(byId('model-folder'), (i) => i.dispatchEvent(new Event('cancel')));
  assert.match(await page.textContent(byId('model-status')), /Resume cancelled/);
  const chooser = page.waitForEvent('filechooser');
  await page.click('#models button:has-text("Resume")');
  await (await chooser).setFiles(FIXTURE);
  assert.equal(await modelState(page, ['ready', 'error']), 'ready', await errorText(page));
  assert.match(await page.textContent('#models'), /tiny-sd — original/);
  assert.doesNotMatch(await page.textContent('#models'), /did not finish/);
  const after = await storedFiles(page, 'tiny-sd');
  for (const [p, [size, modified]] of whole) {
    assert.deepEqual(after[p], [size, modified], `${p} was written again`);
  }
  assert.ok(!('roentgen-import.json' in after), 'the import marker stayed');
  const psnr = psnrAgainstGolden(await generate(page));
  assert.ok(psnr >= MIN_PSNR_DB, `resumed model: ${psnr.toFixed(2)} dB`);
  console.log(JSON.stringify({ files_kept_on_resume: whole.length, files: Object.keys(after).length }));
}));
