// The page's loader (Trunk.toml's pattern_script puts `<script type="module"
// src="/app.js">` where Trunk would inline one, so the Content-Security-Policy in
// index.html needs no inline script): instantiates the wasm, whose start function runs
// the UI (src/web/page.rs).
import './subgroups.js'; // the browser's subgroups (the benchmark's engine runs here)
import init, * as bindings from './roentgen-web.js';

await init({ module_or_path: new URL('./roentgen-web_bg.wasm', import.meta.url) });

// The browser benchmark (tests/browser/bench.mjs) calls the engine's bench_* exports
// from the page: they are handed out only on `?bench`, so the ordinary page exposes no
// global. (Trunk's own inline loader used to set `window.wasmBindings`; the CSP change
// that moved the loader here dropped it and the benchmark waited in vain.)
if (new URLSearchParams(location.search).has('bench')) {
  window.wasmBindings = bindings;
}
