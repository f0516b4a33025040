// RadEdit in the page, in headless Chromium on SwiftShader WebGPU, with the committed
// tiny RadEdit assembly (tests/fixtures/tiny-radedit: CXR-BERT text encoder as a
// pytorch_model.bin, WordPiece vocab.txt, DDIM) and its references
// (tools/make_radedit_fixtures.py; tests/radedit.rs holds the engine to them natively):
//   1. imported as it is (f32), the model list shows its family and license line, the
//      form takes RadEdit's recipe (DDIM, 100 steps, guidance 7.5) and the prompt
//      builder writes findings alone (no RoentGen v2 patient template);
//   2. text to image at 128x128 with the recipe matches diffusers (pipe.ddim, 100 calls);
//   3. RadEdit's edit of radedit/init.png with the edit mask read from its PNG (default
//      keep mask, 20 steps, skip 0.3, inversion prompt "") matches the DDPM-inversion
//      reference (edit), and with the keep mask read into the keep layer (edit_keep);
//   4. the keep mask painted with the pointer goes to its own canvas in its own colour;
//      bad masks and a bad skip ratio are refused with the CLI's sentences;
//   5. imported as int8 (the default): the BERT heads are not stored, the embeddings are
//      f16 and the encoder's matrices int8, and the edit stays within the tolerance
//      measured natively for the same conversion.
// 100 DDIM calls at 128x128 take about 90 s on SwiftShader here (the golden's settings;
// the edit's 28 calls about 20 s).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import os from 'node:os';
import path from 'node:path';
import { ROOT, serve, launch, readSafetensors } from './harness.mjs';
import { MIN_PSNR_DB, SLOW, byId, modelState, errorText, generation, waitForImage, psnrAgainstGolden } from './page.mjs';

const RADEDIT = path.join(ROOT, 'tests/fixtures/tiny-radedit');
const FILES = path.join(ROOT, 'tests/fixtures/radedit');
const GOLDEN = readSafetensors(path.join(ROOT, 'tests/fixtures/golden/tiny-radedit.safetensors'));
const PROMPT = 'Small right-sided pleural effusion.';
const EDIT_PROMPT = 'Large left pleural effusion.';
// int8 against the f32 reference for the edit: measured 32.7 dB natively on lavapipe for
// the same conversion (tests/radedit.rs, INT8_EDIT_PSNR_DB, which says where it is lost).
const INT8_EDIT_PSNR_DB = 30;

let server;
before(async () => { server = await serve(); });
after(() => server?.close());

/** Generates with the form as it is: the image, the progress bar's call count, the caption. */
async function run(page) {
  const before = await generation(page);
  await page.click(byId('generate'));
  const image = await waitForImage(page, before);
  const calls = await page.$eval(byId('progress'), (p) => p.max);
  const caption = await page.textContent('#result-text');
  return { ...image, calls, caption };
}

/** RadEdit's edit of init.png with the edit mask from its PNG, 20 steps, the defaults. */
async function setUpEdit(page) {
  await page.setInputFiles(byId('init-image'), path.join(FILES, 'init.png'));
  await page.waitForSelector(`${byId('edit-box')}:not([hidden])`);
  await page.selectOption(byId('edit-method'), 'radedit');
  assert.equal(await page.getAttribute(byId('edit-box'), 'data-mode'), 'radedit');
  assert.equal(await page.inputValue(byId('scheduler')), 'ddim', 'RadEdit\'s edit runs on DDIM');
  assert.equal(await page.isVisible(byId('radedit-options')), true);
  assert.equal(await page.isVisible(byId('strength')), false, 'the edit takes no strength');
  assert.equal(await page.isVisible('#strength-help'), false);
  assert.equal(await page.inputValue(byId('mask-layer')), 'edit');
  await page.setInputFiles(byId('mask-file'), path.join(FILES, 'edit_mask.png'));
  await page.fill(byId('prompt'), EDIT_PROMPT);
  await page.fill(byId('negative-prompt'), '');
  await page.fill(byId('seed'), '0');
  await page.fill(byId('steps'), '20');
  await page.fill(byId('skip-ratio'), '');
  await page.fill(byId('invert-prompt'), '');
}

/** Opaque pixels of a mask canvas, and how many of them are the keep mask's blue. */
const paint = (page, id) => page.$eval(byId(id), (c) => {
  const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
  let n = 0, blue = 0;
  for (let i = 0; i < d.length; i += 4) if (d[i + 3] >= 128) { n++; if (d[i + 2] > d[i] + 100) blue++; }
  return { n, blue };
});

test('RadEdit: family and license, its recipe, text to image and both edits as the references', { timeout: 5 * SLOW }, async () => {
  const browser = await launch();
  const page = await browser.newPage();
  const logs = [];
  page.on('console', (m) => logs.push(m.text()));
  page.on('pageerror', (e) => logs.push(String(e)));
  try {
    await page.goto(server.url);
    assert.equal(await modelState(page, ['none', 'unavailable', 'error']), 'none', await errorText(page));
    await page.selectOption(byId('import-format'), 'original');
    await page.setInputFiles(byId('model-folder'), RADEDIT);
    assert.equal(await modelState(page, ['ready', 'error']), 'ready', await errorText(page));

    // 1. the model list, the recipe, the prompt builder
    assert.match(await page.textContent('#models'), /tiny-radedit — original/);
    const family = await page.textContent(byId('model-family'));
    assert.match(family, /^RadEdit \(CXR-BERT\)/, family);
    assert.match(family, /research use, not for clinical use$/, family);
    assert.deepEqual(
      [await page.inputValue(byId('steps')), await page.inputValue(byId('guidance')), await page.inputValue(byId('scheduler'))],
      ['100', '7.5', 'ddim'], 'RadEdit\'s recipe in the form');
    assert.equal(await page.getAttribute(byId('prompt-builder'), 'data-family'), 'radedit');
    assert.equal(await page.isHidden(byId('demographics')), true, 'no patient template for RadEdit');
    await page.click(`${byId('prompt-builder')} summary`);
    await page.check(byId('finding-pleural_effusion'));
    await page.selectOption(byId('side-pleural_effusion'), 'right');
    await page.selectOption(byId('size-pleural_effusion'), 'small');
    await page.click(byId('build-prompt'));
    assert.equal(await page.inputValue(byId('prompt')), 'Small right pleural effusion.');
    await page.waitForFunction(() => /\/ 128 tokens/.test(document.querySelector('#token-count').textContent));

    // 2. text to image with the recipe as the form holds it
    await page.fill(byId('prompt'), PROMPT);
    await page.fill(byId('negative-prompt'), '');
    await page.fill(byId('seed'), '0');
    await page.selectOption(byId('size'), '128');
    let t = Date.now();
    const t2i = await run(page);
    const t2iMs = Date.now() - t;
    assert.equal(t2i.calls, 100, 'DDIM: one UNet call a step');
    const t2iDb = psnrAgainstGolden(t2i, GOLDEN['pipe.ddim.image']);
    assert.ok(t2iDb >= MIN_PSNR_DB, `text to image: ${t2iDb.toFixed(2)} dB < ${MIN_PSNR_DB} dB`);

    // 3. RadEdit's edit: the default keep mask, then the keep mask from its PNG
    await setUpEdit(page);
    t = Date.now();
    const edit = await run(page);
    const editMs = Date.now() - t;
    // 14 inversion calls and 14 guided ones (20 steps, skip int(20 x 0.3) = 6)
    assert.equal(edit.calls, 28);
    const editDb = psnrAgainstGolden(edit, GOLDEN['edit.image']);
    assert.ok(editDb >= MIN_PSNR_DB, `edit: ${editDb.toFixed(2)} dB < ${MIN_PSNR_DB} dB`);
    assert.match(edit.caption, /^RadEdit edit \(skip 0\.3\) · “Large left pleural effusion\.”/);
    await page.selectOption(byId('mask-layer'), 'keep');
    await page.setInputFiles(byId('mask-file'), path.join(FILES, 'keep_mask.png'));
    const keep = await run(page);
    const keepDb = psnrAgainstGolden(keep, GOLDEN['edit_keep.image']);
    assert.ok(keepDb >= MIN_PSNR_DB, `edit with the keep mask: ${keepDb.toFixed(2)} dB < ${MIN_PSNR_DB} dB`);
    assert.match(keep.caption, /^RadEdit edit \(skip 0\.3, keep mask\)/);
    assert.ok(psnrAgainstGolden(keep, GOLDEN['edit.image']) < keepDb, 'the keep mask changed nothing');

    // 4. the pointer paints the chosen layer, in its colour; bad input is refused
    const editPaint = await paint(page, 'mask-canvas');
    await page.click(byId('clear-keep'));
    assert.equal((await paint(page, 'keep-canvas')).n, 0);
    await page.locator(byId('mask-canvas')).scrollIntoViewIfNeeded();
    const box = await page.locator(byId('mask-canvas')).boundingBox();
    await page.mouse.move(box.x + box.width * 0.8, box.y + box.height * 0.2);
    await page.mouse.down();
    await page.mouse.move(box.x + box.width * 0.9, box.y + box.height * 0.3, { steps: 4 });
    await page.mouse.up();
    const keepPaint = await paint(page, 'keep-canvas');
    assert.ok(keepPaint.n > 0 && keepPaint.blue === keepPaint.n, `keep mask paint ${JSON.stringify(keepPaint)}`);
    assert.deepEqual(await paint(page, 'mask-canvas'), editPaint, 'the edit mask was painted on');
    // a keep mask over the whole edit mask: the engine's plan refuses it (the CLI's sentence)
    await page.setInputFiles(byId('mask-file'), path.join(FILES, 'edit_mask.png'));
    const shown = await page.getAttribute(byId('result'), 'src');
    await page.click(byId('generate'));
    await page.waitForSelector(`${byId('error')}:not([hidden])`, { timeout: SLOW });
    assert.match(await errorText(page), /the keep mask covers the whole edit mask, so nothing could change/i);
    await modelState(page, ['ready']);
    await page.waitForFunction((sel) => !document.querySelector(sel).disabled, byId('generate'));
    await page.fill(byId('skip-ratio'), '1');
    await page.click(byId('generate'));
    await page.waitForFunction((sel) => /skip ratio/.test(document.querySelector(sel).textContent), byId('error'));
    assert.match(await errorText(page), /The skip ratio must be a number from 0 to below 1/);
    await page.setInputFiles(byId('mask-file'), path.join(ROOT, 'tests/fixtures/workbench/mask.png'));
    await page.waitForFunction((sel) => /mask\.png/.test(document.querySelector(sel).textContent), byId('error'));
    assert.match(await errorText(page), /mask\.png is 128×96, but the image is 128×128: a mask must have the image's size/);
    assert.equal(await page.getAttribute(byId('result'), 'src'), shown, 'the result shown was lost');
    console.log(JSON.stringify({ radedit: {
      t2i_db: +t2iDb.toFixed(2), t2i_ms: t2iMs, edit_db: +editDb.toFixed(2), edit_ms: editMs, edit_keep_db: +keepDb.toFixed(2),
    } }));
  } catch (e) {
    console.log(logs.join('\n'));
    await page.screenshot({ path: path.join(os.tmpdir(), 'roentgen-radedit-failure.png'), fullPage: true }).catch(() => {});
    throw e;
  } finally {
    await browser.close();
  }
});

test('RadEdit imported as int8: no heads stored, f16 embeddings, int8 matrices, the edit within tolerance', { timeout: 2 * SLOW }, async () => {
  const browser = await launch();
  const page = await browser.newPage();
  try {
    await page.goto(server.url);
    assert.equal(await modelState(page, ['none', 'unavailable', 'error']), 'none', await errorText(page));
    assert.equal(await page.inputValue(byId('import-format')), 'int8', 'int8 is the default');
    await page.setInputFiles(byId('model-folder'), RADEDIT);
    assert.equal(await modelState(page, ['ready', 'error']), 'ready', await errorText(page));
    assert.match(await page.textContent('#models'), /tiny-radedit — int8, /);
    assert.match(await page.textContent(byId('model-family')), /^RadEdit/);
    // the stored text encoder, as the Origin Private File System holds it
    const stored = await page.evaluate(async () => {
      const models = await (await navigator.storage.getDirectory()).getDirectoryHandle('models');
      const te = await (await models.getDirectoryHandle('tiny-radedit')).getDirectoryHandle('text_encoder');
      const names = [];
      for await (const [name] of te.entries()) names.push(name);
      const buf = await (await (await te.getFileHandle('model.safetensors')).getFile()).arrayBuffer();
      const n = Number(new DataView(buf).getBigUint64(0, true));
      const header = JSON.parse(new TextDecoder().decode(new Uint8Array(buf, 8, n)));
      const dtypes = Object.fromEntries(Object.entries(header).filter(([k]) => k !== '__metadata__').map(([k, v]) => [k, v.dtype]));
      return { names: names.sort(), dtypes, bytes: buf.byteLength };
    });
    assert.deepEqual(stored.names, ['config.json', 'model.safetensors'], 'only the converted file is stored');
    const names = Object.keys(stored.dtypes);
    assert.deepEqual(names.filter((k) => k.startsWith('cls')), [], 'the heads are left out');
    for (const e of ['word_embeddings', 'position_embeddings', 'token_type_embeddings']) {
      assert.equal(stored.dtypes[`bert.embeddings.${e}.weight`], 'F16', e);
    }
    assert.equal(stored.dtypes['bert.encoder.layer.0.attention.self.query.weight'], 'I8');
    await page.selectOption(byId('size'), '128');
    await setUpEdit(page);
    const edit = await run(page);
    const db = psnrAgainstGolden(edit, GOLDEN['edit.image']);
    assert.ok(db >= INT8_EDIT_PSNR_DB, `int8 edit: ${db.toFixed(2)} dB < ${INT8_EDIT_PSNR_DB} dB against the f32 reference`);
    console.log(JSON.stringify({ radedit_int8: { edit_db: +db.toFixed(2), text_encoder_bytes: stored.bytes } }));
  } finally {
    await browser.close();
  }
});
