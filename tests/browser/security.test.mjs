// The page's security (issue 13): its Content-Security-Policy holds in Chromium with no
// violation while the app starts, imports a folder, generates and downloads a model
// from a URL; every request the page, its worker and its service worker make goes to
// the app's own origin; the service worker caches only the app shell, never a model.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { ROOT, DIST, serve, launch } from './harness.mjs';
import { FIXTURE, SLOW, byId, modelState, errorText, generate } from './page.mjs';

const SHELL = ['', 'index.html', 'app.js', 'subgroups.js', 'roentgen-web.js', 'roentgen-web_bg.wasm', 'worker.js',
  'style.css', 'manifest.webmanifest', 'icon.svg'];

test("Trunk's output has no inline script and the policy allows no eval", () => {
  const html = fs.readFileSync(path.join(DIST, 'index.html'), 'utf8');
  const scripts = [...html.matchAll(/<script\b([^>]*)>([\s\S]*?)<\/script>/g)];
  assert.ok(scripts.length >= 1, 'no script at all');
  for (const [tag, attrs, body] of scripts) {
    assert.match(attrs, /\bsrc="/, `inline script: ${tag}`);
    assert.equal(body.trim(), '', tag);
  }
  assert.doesNotMatch(html, /\son[a-z]+="/, 'an inline event handler');
  const csp = /http-equiv="Content-Security-Policy" content="([^"]+)"/.exec(html)?.[1];
  assert.ok(csp, 'no Content-Security-Policy meta tag');
  const dirs = Object.fromEntries(csp.split(';').map((d) => d.trim().split(/\s+/)).map(([k, ...v]) => [k, v]));
  assert.deepEqual(dirs['script-src'], ["'self'", "'wasm-unsafe-eval'"]);
  assert.deepEqual(dirs['default-src'], ["'none'"]);
  assert.ok(!csp.includes("'unsafe-eval'") && !csp.includes("'unsafe-inline'"), csp);
  assert.ok(dirs['connect-src'].includes("'self'"), csp);
});

test('no CSP violation, no request off the origin, and the service worker caches only the shell', { timeout: 4 * SLOW }, async () => {
  const server = await serve(undefined, { mounts: { '/remote/': path.join(ROOT, 'tests/fixtures') } });
  const origin = new URL(server.url).origin;
  const browser = await launch();
  try {
    const context = await browser.newContext();
    const requests = new Set();
    const note = (r) => requests.add(r.url());
    context.on('request', note);
    const page = await context.newPage();
    page.on('request', note);
    const problems = [];
    const watch = (where) => (m) => {
      if (m.type() === 'error' && /Content.Security.Policy|Refused to/i.test(m.text())) problems.push(`${where}: ${m.text()}`);
    };
    page.on('console', watch('page'));
    page.on('worker', (w) => w.on('console', watch('worker')));
    context.on('serviceworker', (w) => w.on('console', watch('service worker')));
    page.on('pageerror', (e) => problems.push(`page error: ${e}`));
    await page.addInitScript(() => {
      window.__violations = [];
      document.addEventListener('securitypolicyviolation', (e) => window.__violations.push(`${e.violatedDirective} ${e.blockedURI}`));
    });

    // start, import, generate
    await page.goto(server.url);
    assert.equal(await modelState(page, ['none', 'unavailable', 'error']), 'none', await errorText(page));
    await page.selectOption(byId('import-format'), 'original');
    await page.setInputFiles(byId('model-folder'), FIXTURE);
    assert.equal(await modelState(page, ['ready', 'error']), 'ready', await errorText(page));
    await generate(page);
    await page.evaluate(() => navigator.serviceWorker.ready.then(() => true));
    // a model from a URL (this origin's /remote/)
    await page.fill(byId('model-url'), `${server.url}remote/tiny-sd/`);
    await page.click(byId('model-url-go'));
    assert.equal(await modelState(page, ['ready', 'error']), 'ready', await errorText(page));
    await page.reload(); // the service worker answers this one
    assert.equal(await modelState(page, ['ready', 'error']), 'ready', await errorText(page));

    const violations = await page.evaluate(() => window.__violations);
    assert.deepEqual(violations, [], 'CSP violations');
    assert.deepEqual(problems, [], 'CSP errors in the console');
    const away = [...requests].filter((u) => !u.startsWith('blob:') && !u.startsWith('data:') && new URL(u).origin !== origin);
    assert.deepEqual(away, [], 'requests off the app origin');
    assert.ok([...requests].some((u) => u.includes('/remote/tiny-sd/unet/')), 'the download was not seen');

    // the service worker's cache: the shell only, no model file
    const cached = await page.evaluate(async () => {
      const out = [];
      for (const key of await caches.keys()) {
        for (const r of await (await caches.open(key)).keys()) out.push(r.url);
      }
      return out;
    });
    assert.ok(cached.length >= 5, `the shell is not cached: ${cached}`);
    for (const u of cached) {
      const rel = new URL(u).pathname.slice(1);
      assert.ok(SHELL.includes(rel), `the service worker cached ${u}`);
    }
    assert.ok(!cached.some((u) => u.includes('/remote/')), 'a model file is in the service worker cache');

    // the policy is in force: an inline script and a plain-http request to another
    // origin are refused (eval cannot be tried from here: the DevTools protocol's
    // evaluation is exempt from the page's policy)
    const blocked = await page.evaluate(async (other) => {
      const s = document.createElement('script');
      s.textContent = 'window.__inlineRan = true;';
      document.head.append(s);
      let fetchRefused = false;
      try { await fetch(other); } catch { fetchRefused = true; }
      await new Promise((ok) => setTimeout(ok, 100));
      return { inlineRan: window.__inlineRan === true, fetchRefused, violations: window.__violations };
    }, server.url.replace('127.0.0.1', 'localhost'));
    assert.equal(blocked.inlineRan, false, 'an inline script ran');
    assert.ok(blocked.violations.some((v) => v.startsWith('script-src')), JSON.stringify(blocked.violations));
    assert.equal(blocked.fetchRefused, true, 'a request to another origin went out');
    assert.ok(blocked.violations.some((v) => v.startsWith('connect-src')), JSON.stringify(blocked.violations));
    console.log(JSON.stringify({ requests: requests.size, cached: cached.length }));
  } finally {
    await browser.close();
    server.close();
  }
});
