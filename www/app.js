// The page's loader (Trunk.toml's pattern_script puts `<script type="module"
// src="/app.js">` where Trunk would inline one, so the Content-Security-Policy in
// index.html needs no inline script): instantiates the wasm, whose start function runs
// the UI (src/web/page.rs).
import init from './roentgen-web.js';

await init({ module_or_path: new URL('./roentgen-web_bg.wasm', import.meta.url) });
