// The generation worker: receives the page's compiled wasm module first, starts the same wasm
// in here and hands over to `worker_main` (flick-web); requests that arrive before that are
// replayed in order.
import init, { worker_main } from './pkg/flick_web.js';

const early = [];
let starting = false;
self.onmessage = async (event) => {
  if (!starting && event.data && event.data.module) {
    starting = true;
    await init({ module_or_path: event.data.module });
    worker_main(); // installs its own onmessage
    for (const e of early) self.onmessage(e);
    return;
  }
  early.push(event);
};
