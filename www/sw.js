// Offline support: the app shell (page, wasm, JS, CSS, worker) is cached on the first
// visit. Requests go to the network first, so an update is picked up at once; when the
// network is off the cached copy answers. Models are not here: they live in the Origin
// Private File System (src/web/store.rs). Generation itself makes no request at all.
const CACHE = 'roentgen-web-v3';
const SHELL = [
  './', 'index.html', 'app.js', 'subgroups.js', 'roentgen-web.js', 'roentgen-web_bg.wasm', 'worker.js',
  'style.css', 'manifest.webmanifest', 'icon.svg',
];

self.addEventListener('install', (event) => {
  event.waitUntil((async () => {
    const cache = await caches.open(CACHE);
    await cache.addAll(SHELL);
    await self.skipWaiting();
  })());
});

self.addEventListener('activate', (event) => {
  event.waitUntil((async () => {
    for (const key of await caches.keys()) {
      if (key !== CACHE) await caches.delete(key);
    }
    await self.clients.claim();
  })());
});

// Only the shell's own files: a model downloaded from this origin (possibly gigabytes,
// in Range requests) goes straight to the network and into OPFS, never into this cache.
function inShell(url) {
  const scope = new URL(self.registration.scope);
  if (url.origin !== scope.origin || !url.pathname.startsWith(scope.pathname)) return false;
  const rel = url.pathname.slice(scope.pathname.length);
  return rel === '' || SHELL.includes(rel);
}

self.addEventListener('fetch', (event) => {
  const req = event.request;
  if (req.method !== 'GET' || !inShell(new URL(req.url))) return;
  event.respondWith((async () => {
    const cache = await caches.open(CACHE);
    try {
      const res = await fetch(req);
      if (res.ok) cache.put(req, res.clone());
      return res;
    } catch (err) {
      const hit = await cache.match(req, { ignoreSearch: true });
      if (hit) return hit;
      throw err;
    }
  })());
});
