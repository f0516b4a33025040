// Shared by the browser test and the browser benchmark: a static server for Trunk's
// dist/, Chromium from Debian with the flags this machine needs, and the golden reader.
import http from 'node:http';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
export const DIST = process.env.ROENTGEN_DIST ?? path.join(ROOT, 'dist');

const TYPES = {
  '.html': 'text/html; charset=utf-8', '.js': 'text/javascript', '.mjs': 'text/javascript',
  '.wasm': 'application/wasm', '.css': 'text/css', '.svg': 'image/svg+xml',
  '.json': 'application/json', '.webmanifest': 'application/manifest+json', '.png': 'image/png',
};

/** Serves `dir` at the site root (Trunk writes absolute paths) on a free port, and each
 * `mounts` entry (URL prefix -> folder) beneath it like a plain static web server: GET
 * and HEAD, `Range: bytes=N-` answered with 206, Content-Length always. `cut(urlPath)`
 * may return a byte count at which to break that response's connection (a download
 * interrupted halfway). `log` records `[method, path, range]` of every request. */
// `delay(pathname)`: milliseconds to wait before answering (a slow network for one file).
// `connect`: origins added to connect-src in the policy the worker and the service worker
// are served with (test-only: tests/browser/hub.test.mjs lets the engine's worker reach
// the local Hub stand-in on 127.0.0.1, which the shipped policy refuses; the page's own
// meta tag is never changed, and security.test.mjs serves the policy as shipped).
export async function serve(dir = DIST, { mounts = {}, cut = () => null, delay = () => 0, connect = [] } = {}) {
  if (!fs.existsSync(path.join(dir, 'index.html'))) {
    throw new Error(`${dir}/index.html is missing: run \`trunk build --release\` first`);
  }
  const log = [];
  // The engine's worker and the service worker take their policy from their response
  // headers (a document's meta tag does not reach them): served with the page's own.
  const csp = /http-equiv="Content-Security-Policy" content="([^"]+)"/
    .exec(fs.readFileSync(path.join(dir, 'index.html'), 'utf8'))?.[1]
    ?.replace(/connect-src ([^;]*)/, (_, v) => `connect-src ${[v, ...connect].join(' ')}`);
  const server = http.createServer(async (req, res) => {
    const url = new URL(req.url, 'http://x');
    const wait = delay(decodeURIComponent(url.pathname));
    if (wait) await new Promise((ok) => setTimeout(ok, wait));
    const pathname = decodeURIComponent(url.pathname);
    log.push([req.method, pathname, req.headers.range ?? null]);
    let root = dir;
    let rel = pathname;
    for (const [prefix, folder] of Object.entries(mounts)) {
      if (pathname.startsWith(prefix)) { root = folder; rel = pathname.slice(prefix.length - 1); }
    }
    let file = path.join(root, rel);
    if (!file.startsWith(root)) { res.writeHead(403).end(); return; }
    if (fs.existsSync(file) && fs.statSync(file).isDirectory()) file = path.join(file, 'index.html');
    if (!fs.existsSync(file)) { res.writeHead(404).end(); return; }
    const size = fs.statSync(file).size;
    const m = /^bytes=(\d+)-$/.exec(req.headers.range ?? '');
    const start = m ? Number(m[1]) : 0;
    const headers = {
      'content-type': TYPES[path.extname(file)] ?? 'application/octet-stream',
      'cache-control': 'no-cache',
      'accept-ranges': 'bytes',
      'content-length': size - start,
    };
    if (m) headers['content-range'] = `bytes ${start}-${size - 1}/${size}`;
    if (csp && ['worker.js', 'sw.js'].includes(path.basename(file))) headers['content-security-policy'] = csp;
    res.writeHead(m ? 206 : 200, headers);
    if (req.method === 'HEAD') { res.end(); return; }
    const data = fs.readFileSync(file).subarray(start);
    const at = req.method === 'GET' ? cut(pathname) : null;
    if (at != null && at < data.length) {
      res.write(data.subarray(0, at), () => setTimeout(() => res.socket.destroy(), 100));
    } else {
      res.end(data);
    }
  });
  await new Promise((ok) => server.listen(0, '127.0.0.1', ok));
  return { url: `http://127.0.0.1:${server.address().port}/`, log, close: () => server.close() };
}

// Without the background-networking flags Chromium keeps dialling Google, which this
// machine's closed network refuses (TOOLCHAIN.md).
const QUIET = ['--no-sandbox', '--disable-quic', '--no-first-run', '--disable-background-networking',
  '--disable-component-update', '--disable-sync'];
export const WEBGPU = ['--enable-unsafe-webgpu', '--use-webgpu-adapter=swiftshader'];

export function launch({ webgpu = true } = {}) {
  return chromium.launch({
    executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium',
    args: [...QUIET, ...(webgpu ? WEBGPU : [])],
  });
}

/** The float32 tensors of a .safetensors file, by name: { shape, data }. */
export function readSafetensors(file) {
  const buf = fs.readFileSync(file);
  const n = Number(buf.readBigUInt64LE(0));
  const header = JSON.parse(buf.subarray(8, 8 + n).toString('utf8'));
  const out = {};
  for (const [name, t] of Object.entries(header)) {
    if (name === '__metadata__' || t.dtype !== 'F32') continue;
    const [a, b] = t.data_offsets;
    const bytes = buf.subarray(8 + n + a, 8 + n + b);
    out[name] = { shape: t.shape, data: new Float32Array(bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.length)) };
  }
  return out;
}
