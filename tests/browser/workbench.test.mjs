// The radiology workbench in the page, in headless Chromium on SwiftShader WebGPU, with
// the committed tiny pipeline (the native tests hold the engine's image-to-image,
// inpainting and maps to diffusers; this holds the page's wiring to what they show):
//   1. the prompt builder writes the impression from ticked findings; the SD 1.x
//      family's recipe (guidance 4) is set, the SD 2.x demographics stay hidden;
//   2. text-to-image with attention maps: a word button per word, a click lays that
//      word's map over the image (colour), "Image" takes it off;
//   3. the DICOM download: Secondary Capture, SYN, DERIVED\SECONDARY, MONOCHROME2, its
//      pixels byte for byte those of the PNG (parsed here, element by element), and no
//      error from dicom3tools' IOD validator `dciodvfy` (scripts/test.sh installs it);
//   4. image-to-image from a chosen PNG at strength 0.6 runs 60 % of the steps, and
//      Compare shows it beside the text-to-image result with both settings;
//   5. inpainting with a mask painted by the pointer: two seeds differ inside the
//      mask far more than away from it;
//   6. bad input: a corrupt PNG and a strength of 1.5 are refused with sentences, the
//      result shown stays.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { ROOT, serve, launch } from './harness.mjs';
import { FIXTURE, SLOW, byId, modelState, errorText, fillGolden, generation, waitForImage } from './page.mjs';

const INIT = path.join(ROOT, 'tests/fixtures/workbench/init.png');
const STEPS = 6;

let server;
before(async () => { server = await serve(); });
after(() => server?.close());

/** The elements of an explicit-VR little-endian DICOM file, top level: tag → bytes. */
function dicomElements(buf) {
  assert.equal(buf.toString('latin1', 128, 132), 'DICM', 'no DICM preamble');
  const out = new Map();
  const long = new Set(['OB', 'OW', 'OF', 'SQ', 'UT', 'UN', 'UC', 'UR', 'OD', 'OL', 'OV']);
  let i = 132;
  while (i + 8 <= buf.length) {
    const tag = buf.readUInt16LE(i).toString(16).padStart(4, '0') + ',' + buf.readUInt16LE(i + 2).toString(16).padStart(4, '0');
    const vr = buf.toString('latin1', i + 4, i + 6);
    let len, start;
    if (long.has(vr)) { len = buf.readUInt32LE(i + 8); start = i + 12; } else { len = buf.readUInt16LE(i + 6); start = i + 8; }
    assert.ok(start + len <= buf.length, `element ${tag} runs past the file`);
    out.set(tag, { vr, value: buf.subarray(start, start + len) });
    i = start + len;
  }
  assert.equal(i, buf.length, 'trailing bytes');
  return out;
}
const text = (el) => el.value.toString('latin1').replace(/[\0 ]+$/, '');

/** dicom3tools' IOD validator `dciodvfy` on a DICOM file's bytes: fails on any line it
 * starts with `Error` (as tests/common/mod.rs does for the native files). Missing, it
 * fails with a sentence, unless ROENTGEN_SKIP_DCIODVFY=1. */
function assertDciodvfyAccepts(bytes, name) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'roentgen-dciodvfy-'));
  const file = path.join(dir, name);
  try {
    fs.writeFileSync(file, bytes);
    const r = spawnSync('dciodvfy', [file], { encoding: 'utf8' });
    if (r.error?.code === 'ENOENT') {
      if (process.env.ROENTGEN_SKIP_DCIODVFY === '1') {
        console.log('dciodvfy not checked: ROENTGEN_SKIP_DCIODVFY=1');
        return;
      }
      assert.fail('dciodvfy is not on PATH: install dicom3tools (apt-get install dicom3tools; scripts/test.sh does), or set ROENTGEN_SKIP_DCIODVFY=1 to skip this check');
    }
    assert.ifError(r.error);
    // its verdict goes to stderr, the IOD's name to stdout
    const said = `${r.stdout}${r.stderr}`;
    const errors = said.split('\n').filter((l) => l.startsWith('Error'));
    assert.deepEqual(errors, [], `dciodvfy finds errors in ${name}:\n${said}`);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

/** Generates with the form as it is, returns the image and the progress bar's call count. */
async function run(page) {
  const before = await generation(page);
  await page.click(byId('generate'));
  const image = await waitForImage(page, before);
  const calls = await page.$eval(byId('progress'), (p) => p.max);
  return { ...image, calls };
}

const meanDiff = (a, b, inside) => {
  let s = 0, n = 0;
  for (let y = 0; y < 128; y++) for (let x = 0; x < 128; x++) if (inside(x, y)) { s += Math.abs(a[y * 128 + x] - b[y * 128 + x]); n++; }
  return s / n;
};

test('workbench: prompt builder, word maps, DICOM, image-to-image, Compare, inpainting, bad input', { timeout: 4 * SLOW }, async () => {
  const browser = await launch();
  const page = await browser.newPage();
  const logs = [];
  page.on('console', (m) => logs.push(m.text()));
  page.on('pageerror', (e) => logs.push(String(e)));
  try {
    await page.goto(server.url);
    assert.equal(await modelState(page, ['none', 'unavailable', 'error']), 'none', await errorText(page));
    await page.selectOption(byId('import-format'), 'original');
    await page.setInputFiles(byId('model-folder'), FIXTURE);
    assert.equal(await modelState(page, ['ready', 'error']), 'ready', await errorText(page));

    // 1. the prompt builder
    assert.equal(await page.inputValue(byId('guidance')), '4', 'SD 1.x recipe: guidance 4');
    assert.equal(await page.getAttribute(byId('prompt-builder'), 'data-family'), 'sd1');
    assert.equal(await page.isHidden(byId('demographics')), true, 'demographics are for SD 2.x models');
    await page.click(`${byId('prompt-builder')} summary`);
    assert.equal(await page.$$eval('#findings li', (l) => l.length), 14, 'the 14 CheXpert labels');
    await page.check(byId('finding-pleural_effusion'));
    await page.selectOption(byId('side-pleural_effusion'), 'right');
    await page.selectOption(byId('size-pleural_effusion'), 'small');
    await page.check(byId('finding-cardiomegaly'));
    await page.click(byId('build-prompt'));
    assert.equal(await page.inputValue(byId('prompt')), 'Small right pleural effusion. Cardiomegaly.');

    // 2. text-to-image with maps
    await fillGolden(page, { steps: STEPS });
    await page.fill(byId('prompt'), 'Small right pleural effusion.');
    await page.check(byId('attention-maps'));
    const t2i = await run(page);
    await page.waitForSelector(`${byId('words')}:not([hidden])`, { timeout: SLOW });
    const words = await page.$$eval(`${byId('words')} [data-testid=word]`, (b) => b.map((x) => x.dataset.word));
    assert.deepEqual(words, ['small', 'right', 'pleural', 'effusion', '.']);
    const plainSrc = await page.getAttribute(byId('result'), 'src');
    await page.click(`${byId('words')} [data-word=effusion]`);
    await page.waitForFunction((sel) => document.querySelector(sel).dataset.word === 'effusion', byId('result'));
    const colour = await page.$eval(byId('result'), async (img) => {
      await img.decode();
      const c = document.createElement('canvas');
      c.width = img.naturalWidth; c.height = img.naturalHeight;
      const ctx = c.getContext('2d');
      ctx.drawImage(img, 0, 0);
      const d = ctx.getImageData(0, 0, c.width, c.height).data;
      let most = 0;
      for (let i = 0; i < d.length; i += 4) most = Math.max(most, Math.abs(d[i] - d[i + 2]));
      return most;
    });
    assert.ok(colour > 40, `the map's colours are not over the image (largest R-B ${colour})`);
    await page.click(byId('word-none'));
    assert.equal(await page.getAttribute(byId('result'), 'src'), plainSrc);

    // 3. DICOM
    await page.waitForSelector(`${byId('download-dicom')}:not([hidden])`, { timeout: SLOW });
    assert.match(await page.getAttribute(byId('download-dicom'), 'download'), /^roentgen-seed0\.dcm$/);
    const dcm = Buffer.from(await page.$eval(byId('download-dicom'), async (a) => Array.from(new Uint8Array(await (await fetch(a.href)).arrayBuffer()))));
    const el = dicomElements(dcm);
    assert.equal(text(el.get('0008,0016')), '1.2.840.10008.5.1.4.1.1.7', 'Secondary Capture');
    assert.equal(text(el.get('0008,0008')), 'DERIVED\\SECONDARY');
    assert.equal(text(el.get('0008,0064')), 'SYN');
    assert.equal(text(el.get('0028,0004')), 'MONOCHROME2');
    assert.equal(el.get('0028,0010').value.readUInt16LE(0), 128);
    assert.equal(el.get('0028,0011').value.readUInt16LE(0), 128);
    assert.match(text(el.get('0010,0010')), /SYNTHETIC/);
    assert.match(text(el.get('0020,4000')), /Small right pleural effusion\./);
    assert.deepEqual(Array.from(el.get('7fe0,0010').value.subarray(0, 128 * 128)), t2i.gray, 'DICOM pixels = PNG pixels');
    assertDciodvfyAccepts(dcm, 'roentgen-seed0.dcm');

    // 4. image-to-image at 0.6, in Compare beside the text-to-image result
    await page.click(byId('compare-pin'));
    await page.uncheck(byId('attention-maps'));
    await page.setInputFiles(byId('init-image'), INIT);
    await page.waitForSelector(`${byId('edit-box')}:not([hidden])`);
    assert.equal(await page.getAttribute(byId('edit-box'), 'data-mode'), 'image-to-image');
    assert.match(await page.textContent(byId('init-note')), /init\.png \(128×96\): its middle square is used/);
    await page.fill(byId('strength'), '0.6');
    const i2i = await run(page);
    // PNDM: steps + 1 UNet calls; int(6 x 0.6) = 3 steps run, + 1
    assert.equal(t2i.calls, STEPS + 1);
    assert.equal(i2i.calls, Math.floor(STEPS * 0.6) + 1);
    assert.notDeepEqual(i2i.gray, t2i.gray);
    assert.equal(await page.isVisible(byId('compare')), true);
    assert.equal(await page.getAttribute(byId('compare-a'), 'src'), plainSrc);
    assert.equal(await page.getAttribute(byId('compare-b'), 'src'), await page.getAttribute(byId('result'), 'src'));
    assert.match(await page.textContent('#compare-b-text'), /image-to-image \(strength 0\.6\)/);
    assert.doesNotMatch(await page.textContent('#compare-a-text'), /image-to-image/);

    // 5. inpainting: paint the top-left quarter with the pointer
    await page.selectOption('#brush', '80');
    await page.locator(byId('mask-canvas')).scrollIntoViewIfNeeded();
    const box = await page.locator(byId('mask-canvas')).boundingBox();
    await page.mouse.move(box.x + box.width * 0.05, box.y + box.height * 0.05);
    await page.mouse.down();
    for (let k = 0; k <= 8; k++) {
      await page.mouse.move(box.x + box.width * (0.05 + 0.04 * k), box.y + box.height * (0.05 + 0.04 * (k % 3)), { steps: 3 });
    }
    await page.mouse.up();
    assert.equal(await page.getAttribute(byId('edit-box'), 'data-mode'), 'inpainting');
    await page.fill(byId('strength'), '');
    const a = await run(page);
    await page.fill(byId('seed'), '1');
    const b = await run(page);
    const inMask = meanDiff(a.gray, b.gray, (x, y) => x < 40 && y < 30);
    const farAway = meanDiff(a.gray, b.gray, (x, y) => x > 96 && y > 96);
    assert.ok(inMask > 4 * farAway && inMask > 2, `seeds differ by ${inMask.toFixed(2)} inside the mask and ${farAway.toFixed(2)} far from it`);
    assert.match(await page.textContent('#result-text'), /inpainting \(strength 1\)/);

    // 6. bad input, nothing lost
    const shown = await page.getAttribute(byId('result'), 'src');
    await page.setInputFiles(byId('init-image'), { name: 'broken.png', mimeType: 'image/png', buffer: Buffer.from('\x89PNG\r\n\x1a\nthis is not a png') });
    await page.waitForSelector(`${byId('error')}:not([hidden])`);
    assert.match(await errorText(page), /broken\.png/);
    await page.fill(byId('strength'), '1.5');
    await page.click(byId('generate'));
    await page.waitForFunction((sel) => /strength/.test(document.querySelector(sel).textContent), byId('error'));
    assert.match(await errorText(page), /greater than 0 and at most 1/);
    assert.equal(await page.getAttribute(byId('result'), 'src'), shown, 'the result shown was lost');
    console.log(JSON.stringify({ workbench: { t2i_calls: t2i.calls, i2i_calls: i2i.calls, inpaint_diff_in_mask: +inMask.toFixed(2), far: +farAway.toFixed(2), map_colour: colour } }));
  } catch (e) {
    console.log(logs.join('\n'));
    await page.screenshot({ path: path.join(os.tmpdir(), 'roentgen-workbench-failure.png'), fullPage: true }).catch(() => {});
    throw e;
  } finally {
    await browser.close();
  }
});
