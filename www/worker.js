// The engine's Web Worker: loads the same wasm module as the page (its `start` does
// nothing here) and hands control to Rust (src/web/worker.rs).
import './subgroups.js'; // the browser's subgroups for the engine's kernels
import init, { worker_main } from './roentgen-web.js';

await init({ module_or_path: new URL('./roentgen-web_bg.wasm', import.meta.url) });
worker_main();
