// The generation worker: its first message names the engine (`cpu` or `webgpu`) and carries the
// engine's compiled wasm module, or none (then the engine's module is fetched here); the engine
// then takes over with `worker_main` (flick-web). Requests that arrive before that are replayed
// in order.
const early = [];
let starting = false;
self.onmessage = async (event) => {
  if (!starting && event.data && event.data.engine) {
    starting = true;
    const { engine, module } = event.data;
    try {
      const glue = await import(`./pkg/flick_${engine}.js`);
      await glue.default(module ? { module_or_path: module } : undefined);
      glue.worker_main(); // installs its own onmessage
    } catch (e) {
      // Rethrown outside the promise: the page's worker.onerror reports it.
      setTimeout(() => { throw new Error(`the ${engine} engine could not start: ${e}`); });
      return;
    }
    for (const e of early) self.onmessage(e);
    return;
  }
  early.push(event);
};
