// The page's "From the Hugging Face Hub" (issue 21, item 4) against the local stand-in
// for the Hub (examples/hub_standin.rs, built by scripts/test.sh; `cargo build --example
// hub_standin` by hand). No test reaches the internet.
//   0. an unknown repo refused with a sentence, nothing stored; storage running out said
//      with the size needed, the partial download kept (and resumed in 1.);
//   1. a public repo (tiny-sd-heavy, f32) downloaded as int8 (the default): its UNet's
//      download is cut halfway (--cut-once), the page is reloaded, Resume asks the file
//      CDN for the rest only (Range) and the model loads; storage holds the small model;
//      the image matches diffusers with the same int8 weights as the folder import does;
//   2. a gated repo refused without a token (the sentence, nothing stored), refused with
//      a wrong one, opened with the right one; the token sent only to the endpoint's
//      origin, in no stored file and not in localStorage;
//   3. offline afterwards: the page reloads from its service worker and generates.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import readline from 'node:readline';
import { ROOT, serve, launch, readSafetensors } from './harness.mjs';
import {
  FIXTURE, MIN_PSNR_DB, SLOW, byId, modelState, errorText, generate, psnrAgainstGolden,
} from './page.mjs';

const HEAVY = path.join(ROOT, 'tests/fixtures/tiny-sd-heavy');
const HEAVY_GOLDEN = readSafetensors(path.join(ROOT, 'tests/fixtures/golden/tiny-sd-heavy.safetensors'));
const INT8_VS_F32_DB = 45; // as app.test.mjs's int8 import
// where cargo put it (CARGO_TARGET_DIR when a worktree builds into a target folder of its own)
const STANDIN = path.join(path.resolve(ROOT, process.env.CARGO_TARGET_DIR ?? 'target'), 'debug/examples/hub_standin');
const PUBLIC = 'roentgen-test/tiny-sd-heavy';
const GATED = 'roentgen-test/tiny-sd-gated';
const TOKEN = 'hf_standin_secret_4711';
const UNET = 'unet/diffusion_pytorch_model.safetensors';
const UNET_BYTES = fs.statSync(path.join(HEAVY, UNET)).size;

let hub; let cdn; let standin; let server;

before(async () => {
  assert.ok(fs.existsSync(STANDIN), `${STANDIN} is missing: run \`cargo build --example hub_standin\``);
  standin = spawn(STANDIN, ['--repo', `${PUBLIC}=${HEAVY}`, '--repo', `${GATED}=${FIXTURE}`,
    '--gated', GATED, '--token', TOKEN, '--cut-once', `${PUBLIC}/${UNET}`], { stdio: ['ignore', 'pipe', 'pipe'] });
  const line = (stream, re) => new Promise((ok, fail) => {
    readline.createInterface({ input: stream }).on('line', (l) => { const m = re.exec(l); if (m) ok(m[1]); });
    standin.on('exit', (code) => fail(new Error(`hub_standin exited (${code})`)));
  });
  [hub, cdn] = await Promise.all([line(standin.stdout, /^ready (\S+)/), line(standin.stderr, /files on (\S+)/)]);
  server = await serve(undefined, { connect: [new URL(hub).origin, new URL(cdn).origin] });
});
after(() => { standin?.kill(); server?.close(); });

/** Every text file the Origin Private File System holds for the stored models. */
const storedTexts = (page) => page.evaluate(async () => {
  const out = [];
  async function walk(dir, prefix) {
    for await (const [name, h] of dir.entries()) {
      if (h.kind === 'directory') await walk(h, `${prefix}${name}/`);
      else if (/\.(json|txt)$/.test(name)) out.push([`${prefix}${name}`, await (await h.getFile()).text()]);
    }
  }
  await walk(await (await navigator.storage.getDirectory()).getDirectoryHandle('models'), '');
  return out;
});

const storedBytes = (page, name) => page.evaluate(async (name) => {
  async function size(dir) {
    let n = 0;
    for await (const [, h] of dir.entries()) n += h.kind === 'file' ? (await h.getFile()).size : await size(h);
    return n;
  }
  const models = await (await navigator.storage.getDirectory()).getDirectoryHandle('models');
  return size(await models.getDirectoryHandle(name));
}, name);

/** Waits for the error box to show a sentence matching `re`, returns it. */
async function errorMatching(page, re) {
  await page.waitForFunction(([sel, src]) => {
    const e = document.querySelector(sel);
    return !e.hidden && new RegExp(src).test(e.textContent);
  }, [byId('error'), re.source], { timeout: SLOW });
  return errorText(page);
}

async function download(page, repo, token = '') {
  await page.fill(byId('hub-repo'), repo);
  await page.fill(byId('hub-token'), token);
  await page.click(byId('hub-download'));
}

test('a Hub repo downloads as int8, resumes after a cut and a reload, a gated one opens with a token, offline afterwards', { timeout: 4 * SLOW }, async () => {
  const browser = await launch();
  try {
    const context = await browser.newContext();
    const requests = [];
    context.on('request', (r) => requests.push({ url: r.url(), headers: r.headers() }));
    const responses = [];
    context.on('response', (r) => responses.push({ url: r.url(), status: r.status() }));
    const page = await context.newPage();
    await page.goto(server.url);
    assert.equal(await modelState(page, ['none', 'unavailable', 'error']), 'none', await errorText(page));
    assert.equal(await page.inputValue(byId('hub-endpoint')), 'https://huggingface.co', 'the default endpoint');
    assert.deepEqual(await page.$$eval('#hub-known option', (o) => o.map((x) => x.value)),
      ['StanfordAIMI/roent-gen-v1-0', 'stanfordmimi/RoentGen-v2']);
    await page.fill(byId('hub-endpoint'), hub);

    // 0. no such repo: refused before a byte is stored; too little space (the quota
    //    lowered to 2 MB more through CDP: Chromium's estimate() does not show such an
    //    override, so the writes themselves fail): said, what was stored kept
    await download(page, 'roentgen-test/no-such-repo');
    let text = await errorMatching(page, /does not exist/);
    assert.match(text, /The repo roentgen-test\/no-such-repo does not exist on http/, text);
    const usage = await page.evaluate(async () => (await navigator.storage.estimate()).usage);
    const cdp = await context.newCDPSession(page);
    const origin = new URL(server.url).origin;
    await cdp.send('Storage.overrideQuotaForOrigin', { origin, quotaSize: usage + 2e6 });
    await download(page, PUBLIC);
    text = await errorMatching(page, /storage ran out/);
    assert.match(text, /while downloading “tiny-sd-heavy”: it needs up to 19\.\d MB/, text);
    assert.match(text, /kept for the resume/, text);
    assert.match(await page.textContent('#models'), /tiny-sd-heavy — import did not finish/);
    await cdp.send('Storage.overrideQuotaForOrigin', { origin });

    // 1. public, int8: the UNet's download is cut halfway
    await download(page, PUBLIC);
    text = await errorMatching(page, /connection broke/);
    assert.match(text, /diffusion_pytorch_model\.safetensors/, text);
    assert.match(text, /resume/, text);
    // a reload: the unfinished model is listed, the endpoint setting kept
    await page.reload();
    assert.equal(await modelState(page, ['none', 'error']), 'none', await errorText(page));
    assert.equal(await page.inputValue(byId('hub-endpoint')), hub);
    assert.match(await page.textContent('#models'), /tiny-sd-heavy — import did not finish/);
    const mark = requests.length;
    const markResponses = responses.length;
    await page.click('#models button:has-text("Resume")');
    assert.equal(await modelState(page, ['ready', 'error']), 'ready', await errorText(page));
    // Range goes on the Hub's resolve request and is kept across its 302 (Playwright
    // reports a redirected request's headers without it: the CDN's 206 shows it arrived)
    const unet = requests.slice(mark).filter((r) => r.url.startsWith(hub) && r.url.endsWith(UNET));
    assert.equal(unet.length, 1, JSON.stringify(unet));
    const from = Number(/^bytes=(\d+)-$/.exec(unet[0].headers.range ?? '')?.[1]);
    assert.ok(from > 0 && from <= UNET_BYTES / 2, `resumed from ${unet[0].headers.range}`);
    const fromCdn = responses.slice(markResponses).filter((r) => r.url.startsWith(cdn) && r.url.endsWith(UNET));
    assert.deepEqual(fromCdn.map((r) => r.status), [206], JSON.stringify(fromCdn));
    const again = requests.slice(mark).filter((r) => r.url.endsWith('text_encoder/model.safetensors') && r.url.startsWith(cdn));
    assert.deepEqual(again, [], 'a weight file stored on the first try was fetched again');
    assert.match(await page.textContent('#models'), /tiny-sd-heavy — int8, /);
    const stored = await storedBytes(page, 'tiny-sd-heavy');
    const folder = fs.readdirSync(HEAVY, { recursive: true })
      .map((f) => path.join(HEAVY, f)).filter((f) => fs.statSync(f).isFile())
      .reduce((n, f) => n + fs.statSync(f).size, 0);
    assert.ok(stored < 0.5 * folder, `stored ${stored} bytes of a ${folder}-byte repo`);
    const image = await generate(page);
    const same = psnrAgainstGolden(image, HEAVY_GOLDEN['pipe.int8.pndm.image']);
    const fidelity = psnrAgainstGolden(image, HEAVY_GOLDEN['pipe.pndm.image']);
    assert.ok(same >= MIN_PSNR_DB, `${same.toFixed(2)} dB against diffusers with the same int8 weights`);
    assert.ok(fidelity >= INT8_VS_F32_DB, `${fidelity.toFixed(2)} dB against the f32 image`);

    // 2. gated: no token, a wrong token, the right one (stored as the repo has it)
    await download(page, GATED);
    await errorMatching(page, /is gated/);
    text = (await page.textContent('#error-text')).trim();
    assert.equal(text, `The repo ${GATED} is gated: accept its terms at ${hub}/${GATED} and paste an access token.`);
    assert.doesNotMatch(await page.textContent('#models'), /tiny-sd-gated/, 'a refused repo left a model behind');
    await download(page, GATED, 'hf_wrong');
    await errorMatching(page, /refused this access token/);
    await page.selectOption(byId('import-format'), 'original');
    await download(page, GATED, TOKEN);
    assert.equal(await modelState(page, ['ready', 'error']), 'ready', await errorText(page));
    const gated = psnrAgainstGolden(await generate(page));
    assert.ok(gated >= MIN_PSNR_DB, `gated repo: ${gated.toFixed(2)} dB`);
    // the token: only to the endpoint's origin, never stored
    const bearer = `Bearer ${TOKEN}`;
    const withToken = requests.filter((r) => r.headers.authorization === bearer);
    assert.ok(withToken.length > 0, 'the token was never sent');
    for (const r of withToken) assert.equal(new URL(r.url).origin, new URL(hub).origin, `token sent to ${r.url}`);
    assert.ok(!requests.some((r) => r.url.includes(TOKEN)), 'the token in a URL');
    for (const [file, body] of await storedTexts(page)) assert.ok(!body.includes(TOKEN), `the token in ${file}`);
    const local = await page.evaluate(() => JSON.stringify({ ...localStorage }));
    assert.ok(!local.includes(TOKEN), `the token in localStorage: ${local}`);

    // 3. offline afterwards
    await page.evaluate(() => navigator.serviceWorker.ready.then(() => true));
    await context.setOffline(true);
    await page.reload();
    assert.equal(await modelState(page, ['ready', 'error', 'unavailable']), 'ready', await errorText(page));
    const offline = psnrAgainstGolden(await generate(page));
    assert.ok(offline >= MIN_PSNR_DB, `offline: ${offline.toFixed(2)} dB`);
    console.log(JSON.stringify({ int8_stored_bytes: stored, repo_bytes: folder, resumed_from: from, unet_bytes: UNET_BYTES,
      psnr_int8_same_weights_db: +same.toFixed(2), psnr_int8_vs_f32_db: +fidelity.toFixed(2),
      psnr_gated_db: +gated.toFixed(2), psnr_offline_db: +offline.toFixed(2) }));
  } finally {
    await browser.close();
  }
});
