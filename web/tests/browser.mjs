// The real-browser test of the Flick page: Debian's headless Chromium, driven by
// playwright-core. Serves web/dist/ on a free local port, loads the page, waits for the first
// clips the page makes by itself with the one-step generator, then for the teacher, types a
// prompt and presses Enter like a user,
// scrubs the timeline (a slider click at each end, then the arrow key), and checks that the
// canvas shows the clip (non-uniform pixels where the clip is drawn, different pixels on the
// first and the last frame), that the page kept painting while the clip was made, and that
// the console has no errors.
//
//   node web/tests/browser.mjs --mode webgpu   # --enable-unsafe-webgpu: SwiftShader's WebGPU
//   node web/tests/browser.mjs --mode cpu      # no WebGPU flag: no adapter, the CPU fallback
//
// Options: --out DIR (screenshots and summary.json; default web/test-output/MODE),
// --timeout SECS (default 600), --compare DIR (another mode's output folder: its first and last
// frames must match this run's — the same prompt and seeds on WebGPU and on the CPU give the
// same clip, within 8/255 per channel and 0.5/255 on average). Prints one `summary {...}` line
// with the timings.
import { chromium } from 'playwright-core';
import { PNG } from 'pngjs';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const webDir = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const dist = path.join(webDir, 'dist');
const args = process.argv.slice(2);
const opt = (name, fallback) => { const i = args.indexOf(name); return i >= 0 && args[i + 1] ? args[i + 1] : fallback; };
const mode = opt('--mode', 'webgpu');
const outDir = path.resolve(opt('--out', path.join(webDir, 'test-output', mode)));
const timeoutMs = Number(opt('--timeout', '600')) * 1000;
// --params QUERY: added to the page's address (e.g. engine=burn: burn's WebGPU engine instead of
// flick-direct's; fused=0: that engine with burn's operations instead of Flick's kernels, which the
// page must then say).
const extraParams = opt('--params', '');
// The engine this run's page must download and run.
const engine = mode === 'cpu' ? 'cpu' : /(^|&)(engine=burn|fused=0)(&|$)/.test(extraParams) ? 'webgpu-burn' : 'webgpu';
// --record DIR: screenshots of the explorer while its slider is dragged (for the docs' GIF).
const record = args.includes('--record') ? path.resolve(opt('--record', '')) : null;
const compareDir = args.includes('--compare') ? path.resolve(opt('--compare', '')) : null;
if (compareDir && !fs.existsSync(path.join(compareDir, 'clip-first-frame.png'))) { console.error(`--compare: no clip-first-frame.png in ${compareDir}`); process.exit(1); }
const PROMPT = 'a large red circle moving left on black';
const PROMPT_B = 'a small yellow square moving right on navy';

function fail(message) {
  console.error(`browser test (${mode}): FAILED: ${message}`);
  process.exitCode = 1;
  throw new Error(message);
}
if (!['webgpu', 'cpu'].includes(mode)) fail(`--mode must be webgpu or cpu, not ${mode}`);
if (!fs.existsSync(path.join(dist, 'index.html'))) fail(`no ${dist}/index.html: run bash web/build.sh first`);
const chromiumPath = process.env.CHROMIUM || '/usr/bin/chromium';
if (!fs.existsSync(chromiumPath)) fail(`no Chromium at ${chromiumPath}: run bash scripts/setup.sh test (installs Debian's chromium)`);
fs.mkdirSync(outDir, { recursive: true });

const freePort = () => new Promise((resolve, reject) => {
  const s = net.createServer();
  s.listen(0, '127.0.0.1', () => { const { port } = s.address(); s.close(() => resolve(port)); });
  s.on('error', reject);
});
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

const consoleLog = [];
const started = Date.now();
const stamp = () => `[${((Date.now() - started) / 1000).toFixed(1)} s]`;
const port = await freePort();
// Bad models the static server offers in step 6 (made there, removed at the end): a sparse file
// announced as 2 GiB, a 0-byte file, a bundled checkpoint cut in half, and a valid safetensors
// file that is not a Flick checkpoint.
const badModel = (name) => path.join(dist, 'models', name);
const badModels = ['oversize', 'empty', 'truncated', 'foreign'].map((n) => badModel(`${n}.safetensors`));
const server = spawn('python3', [path.join(webDir, 'serve.py'), '--bind', '127.0.0.1', '--dir', dist, '--port', String(port)], { stdio: 'ignore', env: { ...process.env, FLICK_SERVE_QUIET: '1' } });
let browser;
try {
  for (let i = 0; ; i++) {
    try { if ((await fetch(`http://127.0.0.1:${port}/index.html`)).ok) break; } catch {}
    if (i > 100) fail('the static server did not start');
    await sleep(100);
  }
  // A closed network: no background connections. Both modes draw the UI with WebGL on
  // SwiftShader; only the webgpu mode lets the page have a WebGPU adapter.
  const flags = ['--no-sandbox', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync', '--disable-quic',
    '--disable-default-apps', '--use-angle=swiftshader', '--enable-unsafe-swiftshader'];
  if (mode === 'webgpu') flags.push('--enable-unsafe-webgpu');
  browser = await chromium.launch({ executablePath: chromiumPath, headless: true, args: flags });
  const page = await browser.newPage({ viewport: { width: 1280, height: 800 } });
  const consoleLines = consoleLog;
  const errors = [];
  // burn 0.22.1 / cubecl 0.11.3 on browser WebGPU: matmul autotuning compiles candidates that
  // need WGSL's `subgroups` extension, which wgpu 30 never requests from a browser; on wasm the
  // refusal panics inside wgpu and the worker dies. The page then moves to a CPU worker and says
  // so. The webgpu run must generate on WebGPU: a crash report there is a failure too.
  const webgpuCrash = [];
  const isWebgpuCrash = (t) => mode === 'webgpu' && /the generation worker crashed|WebGPU failed on this adapter/.test(t);
  const onError = (t) => (isWebgpuCrash(t) ? webgpuCrash : errors).push(t);
  page.on('console', (m) => {
    consoleLines.push(`${stamp()} ${m.type()}: ${m.text()}`);
    if (m.type() === 'error') onError(m.text());
  });
  // The generation worker's own console (Chromium's WGSL compiler messages land there).
  page.on('worker', (w) => w.on('console', (m) => {
    consoleLines.push(`${stamp()} worker ${m.type()}: ${m.text()}`);
    if (m.type() === 'error') onError(`worker: ${m.text()}`);
  }));
  // The wasm trap that ends a panicking worker surfaces as an uncaught `unreachable`.
  page.on('pageerror', (e) => ((mode === 'webgpu' && webgpuCrash.length > 0 && /unreachable/.test(e.message)) ? webgpuCrash : errors).push(`uncaught: ${e.message}`));
  page.on('crash', () => errors.push('the page crashed'));
  // What the wasm downloads cost on the wire (web/serve.py sends the precompressed copies):
  // the page's module and one engine's (the worker's requests are the page's too).
  const wasmServed = {};
  page.on('response', async (r) => {
    const m = /\/pkg\/flick_([\w-]+)_bg\.wasm$/.exec(r.url());
    if (!m) return;
    const h = await r.allHeaders();
    wasmServed[m[1]] = { encoding: h['content-encoding'] || 'identity', bytes: Number(h['content-length']) || null };
  });

  const status = () => page.evaluate(() => (window.flickStatus ? window.flickStatus() : {}));
  async function waitFor(what, predicate, ms, { errorExpected = false } = {}) {
    const t0 = Date.now();
    for (;;) {
      const st = await status();
      if (predicate(st)) return st;
      if (!errorExpected && st.error && /crashed|failed|could not/i.test(st.error) && !isWebgpuCrash(st.error)) fail(`${what}: the page says ${st.error}`);
      if (errors.length) fail(`${what}: console errors: ${errors.join(' | ')}`);
      if (Date.now() - t0 > ms) fail(`${what}: timed out after ${ms / 1000} s; status ${JSON.stringify(st)}; console:\n${consoleLines.join('\n')}`);
      await sleep(100);
    }
  }
  const pngOf = (buffer) => PNG.sync.read(buffer);
  // The explorer's panel: from its slider's top-left to its clip's bottom-right, with a margin.
  const explorerArea = (st) => {
    const w = st.widgets, x0 = Math.min(w.explore_slider[0], w.explore_clip[0]) - 8, y0 = w.explore_slider[1] - 40;
    const x1 = Math.max(w.explore_slider[2], w.explore_clip[2]) + 8, y1 = w.explore_clip[3] + 40;
    return { x: Math.max(0, Math.floor(x0)), y: Math.max(0, Math.floor(y0)), width: Math.ceil(x1 - x0), height: Math.ceil(y1 - y0) };
  };
  const center = (r) => ({ x: (r[0] + r[2]) / 2, y: (r[1] + r[3]) / 2 });
  async function clipShot(st, name) {
    const r = st.clip_rect;
    const clip = { x: Math.floor(r[0]), y: Math.floor(r[1]), width: Math.floor(r[2] - r[0]), height: Math.floor(r[3] - r[1]) };
    const buffer = await page.screenshot({ clip });
    fs.writeFileSync(path.join(outDir, name), buffer);
    return pngOf(buffer);
  }

  // 1. Load: the app, the device, both bundled models (downloaded, initialised, warmed up).
  const t0 = Date.now();
  await page.goto(`http://127.0.0.1:${port}/index.html${extraParams ? `?${extraParams}` : ''}`);
  // The page opens on the one-step generator and shows its first clips by itself; the teacher
  // loads after them.
  let readyAt = null;
  const firstShown = await waitFor('the first clips', (s) => {
    if (!readyAt && s.models && s.models.length >= 1) readyAt = Date.now();
    return s.generations >= 1 && !s.busy && s.rows && s.rows.length > 0 && s.rows[0].clips > 0;
  }, timeoutMs);
  const firstClipSecs = (Date.now() - t0) / 1000;
  const readySecs = (readyAt - t0) / 1000;
  if (firstShown.models.length !== 1 || firstShown.rows[0].model !== 'generator-small') fail(`the first clips should come from the one-step generator alone: ${JSON.stringify(firstShown.models)}, ${firstShown.rows[0].model}`);
  const ready = await waitFor('loading the models', (s) => s.backend && s.models && s.models.length >= 2 && s.loading.length === 0, timeoutMs);
  const loadSecs = (Date.now() - t0) / 1000;
  let webgpuGenerates = null;
  if (mode === 'webgpu') {
    if (!consoleLines.some((l) => l.includes('flick: WebGPU adapter initialised'))) fail(`the page found no WebGPU adapter: ${ready.backend} (notice: ${ready.notice})`);
    webgpuGenerates = /^WebGPU/.test(ready.backend);
    if (!webgpuGenerates || webgpuCrash.length > 0) fail(`WebGPU does not generate: the page runs on ${ready.backend} (notice: ${ready.notice}); crash reports: ${webgpuCrash.map((c) => c.split('\n')[0]).join(' | ') || 'none'}`);
  }
  if (mode === 'webgpu' && /through burn/.test(ready.backend) !== (engine === 'webgpu-burn')) fail(`the page should run the ${engine} engine, it says it runs on ${ready.backend}`);
  if (/(^|&)fused=0(&|$)/.test(extraParams) && mode === 'webgpu' && !/\?fused=0/.test(ready.backend)) fail(`?fused=0 was given but the page does not say it runs burn's operations: ${ready.backend}`);
  if (mode === 'cpu' && !(/CPU/.test(ready.backend) && /No WebGPU/.test(ready.notice || ''))) fail(`expected the CPU fallback with a notice, got ${ready.backend} / ${ready.notice}`);
  await page.screenshot({ path: path.join(outDir, 'loaded.png') });

  // 2. Type a prompt into the prompt box and press Enter, as a user would, while counting the
  // page's animation frames (a page blocked by the model would stop painting).
  const p = center(ready.widgets.prompt);
  await page.mouse.click(p.x, p.y);
  await page.keyboard.press('Control+A');
  await page.keyboard.type(PROMPT, { delay: 5 });
  await waitFor('typing the prompt', (s) => s.prompt === PROMPT, 10000);
  await page.evaluate(() => {
    window.__frames = [];
    const tick = (t) => { window.__frames.push(t); if (window.__frames.length < 100000) requestAnimationFrame(tick); };
    requestAnimationFrame(tick);
  });
  const g0 = Date.now();
  await page.keyboard.press('Enter');
  const done = await waitFor('generating', (s) => s.generations === 2 && !s.busy && s.clip_rect, timeoutMs);
  const generateSecs = (Date.now() - g0) / 1000;
  const row = done.rows[0];
  if (row.error || row.clips < 1) fail(`generation: ${row.error || 'no clips'}`);
  const computeSecs = row.secs_per_clip * row.clips;
  const gaps = await page.evaluate(() => { const f = window.__frames; let m = 0; for (let i = 1; i < f.length; i++) m = Math.max(m, f[i] - f[i - 1]); return { frames: f.length, maxGap: m }; });

  // A page that waited on the model would not paint for the whole computation.
  if (gaps.maxGap > 600 * computeSecs) fail(`the page stopped painting for ${gaps.maxGap.toFixed(0)} ms while a ${computeSecs.toFixed(2)} s generation ran`);

  // 3. Scrub: pause, a click at each end of the timeline slider, then the left arrow key.
  let st = await status();
  if (st.playing) {
    const c = center(st.clip_rect);
    await page.mouse.click(c.x, c.y); // selects the clip and takes focus out of the prompt box
    await page.keyboard.press('Space');
    st = await waitFor('pausing', (s) => !s.playing, 5000);
  }
  const tl = st.widgets.timeline;
  const y = (tl[1] + tl[3]) / 2;
  await page.mouse.click(tl[0] + 2, y);
  st = await waitFor('scrubbing to the first frame', (s) => s.frame === 0, 5000);
  await sleep(300);
  const first = await clipShot(st, 'clip-first-frame.png');
  await page.mouse.click(tl[2] - 2, y);
  st = await waitFor('scrubbing to the last frame', (s) => s.frame === s.frames - 1, 5000);
  await sleep(300);
  const last = await clipShot(st, 'clip-last-frame.png');
  await page.keyboard.press('ArrowLeft');
  await waitFor('stepping back a frame', (s) => s.frame === s.frames - 2, 5000);

  // 4. The clip is a picture (not one flat colour), and it moves between the two ends.
  const stats = (img) => {
    const seen = new Set();
    let sum = 0, sum2 = 0, n = 0;
    for (let i = 0; i < img.data.length; i += 4) {
      const v = img.data[i] + img.data[i + 1] + img.data[i + 2];
      seen.add((img.data[i] << 16) | (img.data[i + 1] << 8) | img.data[i + 2]);
      sum += v; sum2 += v * v; n++;
    }
    return { colours: seen.size, std: Math.sqrt(Math.max(0, sum2 / n - (sum / n) ** 2)) };
  };
  const a = stats(first), b = stats(last);
  if (a.colours < 8 || a.std < 5) fail(`the clip area is (nearly) uniform: ${JSON.stringify(a)}`);
  let differ = 0;
  for (let i = 0; i < first.data.length && i < last.data.length; i += 4) {
    if (Math.abs(first.data[i] - last.data[i]) + Math.abs(first.data[i + 1] - last.data[i + 1]) + Math.abs(first.data[i + 2] - last.data[i + 2]) > 30) differ++;
  }
  if (differ < 20) fail(`the first and last frames look the same (${differ} pixels differ)`);
  // 5. The same clip as another backend made (--compare): WebGPU and the CPU agree.
  let compared = null;
  if (compareDir) {
    compared = {};
    for (const [name, img] of [['clip-first-frame.png', first], ['clip-last-frame.png', last]]) {
      const other = PNG.sync.read(fs.readFileSync(path.join(compareDir, name)));
      if (other.width !== img.width || other.height !== img.height) fail(`${name}: ${img.width}×${img.height} here, ${other.width}×${other.height} in ${compareDir}`);
      let max = 0, sum = 0, n = 0;
      for (let i = 0; i < img.data.length; i += 4) {
        for (let c = 0; c < 3; c++) { const d = Math.abs(img.data[i + c] - other.data[i + c]); max = Math.max(max, d); sum += d; n++; }
      }
      compared[name] = { max, mean: sum / n };
      if (max > 8 || sum / n > 0.5) fail(`${name} differs from ${compareDir}'s: max ${max}/255, mean ${(sum / n).toFixed(3)}/255 per channel`);
    }
  }
  // 6. Bad models by address: one whose server announces 2 GiB (refused before a byte of it is
  // read), a 0-byte file, a checkpoint cut in half, a safetensors file that is not a Flick
  // checkpoint, and a page that is not a checkpoint. Each is a message on the page; the page,
  // its models and its clip stay as they were, and the model in use still generates.
  fs.closeSync(fs.openSync(badModel('oversize.safetensors'), 'w'));
  fs.truncateSync(badModel('oversize.safetensors'), 2 ** 31);
  fs.writeFileSync(badModel('empty.safetensors'), Buffer.alloc(0));
  const bundled = fs.readFileSync(path.join(dist, 'models', 'generator-small.safetensors'));
  fs.writeFileSync(badModel('truncated.safetensors'), bundled.subarray(0, bundled.length >> 1));
  {
    let header = '{"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}';
    while (header.length % 8) header += ' ';
    const len = Buffer.alloc(8);
    len.writeBigUInt64LE(BigInt(header.length));
    fs.writeFileSync(badModel('foreign.safetensors'), Buffer.concat([len, Buffer.from(header), Buffer.alloc(8)]));
  }
  const badAddresses = [];
  for (const [address, expect] of [
    ['models/oversize.safetensors', /2048 MiB is more than the 1024 MiB/],
    ['models/empty.safetensors', /not a usable Flick checkpoint/],
    ['models/truncated.safetensors', /not a usable Flick checkpoint/],
    ['models/foreign.safetensors', /not a usable Flick checkpoint/],
    ['index.html', /index\.html/],
  ]) {
    st = await status();
    const box = center(st.widgets.address);
    await page.mouse.click(box.x, box.y);
    await page.keyboard.type(address, { delay: 5 });
    await page.keyboard.press('Enter');
    const t = Date.now();
    const seen = await waitFor(`opening ${address}`, (s) => s.error && s.error.includes(address) && s.loading.length === 0, 30000, { errorExpected: true });
    if (!expect.test(seen.error)) fail(`opening ${address}: unexpected message ${seen.error}`);
    if (seen.models.length !== ready.models.length || seen.generations !== 2) fail(`opening ${address} changed the page: ${JSON.stringify(seen.models)}, ${seen.generations} generations`);
    badAddresses.push({ address, message: seen.error, seconds: (Date.now() - t) / 1000 });
  }
  // The model in use still works: the same prompt again, Enter in the prompt box.
  st = await status();
  const pb = center(st.widgets.prompt);
  await page.mouse.click(pb.x, pb.y);
  await page.keyboard.press('Enter');
  const again = await waitFor('generating after the bad models', (s) => s.generations === 3 && !s.busy, timeoutMs, { errorExpected: true });
  if (again.rows[0].error || again.rows[0].clips < 1) fail(`generating after the bad models: ${again.rows[0].error || 'no clips'}`);
  // 7. Live exploration: open the explorer, drag its slider from one end towards the other as a
  // hand would (small moves, 120 ms apart), and check that the clip followed: several distinct
  // clips during the drag, and once the hand stops, the clip on screen is the one for where the
  // slider stopped — the same clip a single click at that place makes afresh.
  st = await status();
  const ex = center(st.widgets.explore);
  await page.mouse.click(ex.x, ex.y);
  st = await waitFor('opening the explorer', (s) => s.explore.open && s.explore.made >= 1 && !s.explore.busy && s.widgets.explore_slider, 60000);
  // The second end: another seed (the default) and another prompt.
  const pb2 = center(st.widgets.explore_prompt_b);
  await page.mouse.click(pb2.x, pb2.y);
  await page.keyboard.type(PROMPT_B, { delay: 5 });
  await page.keyboard.press('Enter');
  st = await waitFor('the explorer taking the second prompt', (s) => !s.explore.busy && s.explore.made >= 2, 60000);
  const rail = st.widgets.explore_slider;
  const ry = (rail[1] + rail[3]) / 2;
  const rx = (f) => rail[0] + 4 + f * (rail[2] - rail[0] - 8);
  const hashes = new Set([st.explore.clip_hash]);
  const frames = [];
  let maxRate = 0;
  const d0 = Date.now();
  const madeBefore = st.explore.made;
  await page.mouse.move(rx(0), ry);
  await page.mouse.down();
  const moves = 16;
  for (let k = 1; k <= moves; k++) {
    await page.mouse.move(rx((0.8 * k) / moves), ry, { steps: 2 });
    await sleep(120);
    const e = (await status()).explore;
    if (e.clip_hash) hashes.add(e.clip_hash);
    if (e.rate) maxRate = Math.max(maxRate, e.rate);
    if (record) frames.push(await page.screenshot({ clip: explorerArea(await status()) }));
  }
  await page.mouse.up();
  const dragSecs = (Date.now() - d0) / 1000;
  st = await waitFor('the explorer catching up', (s) => { if (s.explore.clip_hash) hashes.add(s.explore.clip_hash); return !s.explore.busy && s.explore.clip_at && s.explore.clip_at[0] === s.explore.at[0]; }, 60000);
  const finalAt = st.explore.at[0], finalHash = st.explore.clip_hash;
  hashes.add(finalHash);
  const explored = st.explore.made - madeBefore;
  if (hashes.size < 3) fail(`dragging the explorer made only ${hashes.size} distinct clips (${explored} clips in ${dragSecs.toFixed(1)} s)`);
  if (!(finalAt > 0.6 && finalAt < 0.95)) fail(`the explorer's slider ended at ${finalAt}, expected near 0.8`);
  if (record) for (let i = 0; i < 6; i++) frames.push(await page.screenshot({ clip: explorerArea(st) }));
  // Elsewhere, then a single click where the drag stopped: the same clip.
  await page.mouse.click(rx(0.2), ry);
  await waitFor('the explorer at 0.2', (s) => !s.explore.busy && s.explore.clip_at && s.explore.clip_at[0] < 0.4, 60000);
  await page.mouse.click(rx(0.8), ry);
  st = await waitFor('the explorer back where the drag stopped', (s) => !s.explore.busy && s.explore.clip_at && s.explore.clip_at[0] > 0.6, 60000);
  if (st.explore.at[0] !== finalAt) fail(`a click where the drag stopped gave ${st.explore.at[0]}, the drag ${finalAt}`);
  if (st.explore.clip_hash !== finalHash) fail(`the clip after the drag (${finalHash}) is not the direct generation at ${finalAt} (${st.explore.clip_hash})`);
  if (st.explore.error) fail(`explorer: ${st.explore.error}`);
  const exploreSummary = { clips_during_drag: explored, distinct_clips: hashes.size, drag_seconds: dragSecs, clips_per_s_while_dragging: explored / dragSecs, max_rate_shown: maxRate, final_at: finalAt };
  if (record) {
    fs.mkdirSync(record, { recursive: true });
    frames.forEach((b, i) => fs.writeFileSync(path.join(record, `explore-${String(i).padStart(3, '0')}.png`), b));
  }
  await page.screenshot({ path: path.join(outDir, 'page.png') });
  await sleep(500);
  if (errors.length) fail(`console errors: ${errors.join(' | ')}`);

  // 8. The download: the page's module and this mode's engine only, within the size budget (raw
  // and as served compressed).
  const size = (f) => fs.statSync(path.join(dist, f)).size;
  const fetched = Object.keys(wasmServed).sort();
  if (fetched.join(',') !== ['page', engine].sort().join(',')) fail(`the page should download its own module and the ${engine} engine, it downloaded: ${fetched.join(', ')}`);
  const wasmRaw = size('pkg/flick_page_bg.wasm') + size(`pkg/flick_${engine}_bg.wasm`);
  const servedBytes = fetched.map((m) => wasmServed[m].bytes);
  const wasmOnWire = servedBytes.every((b) => b) ? servedBytes.reduce((a, b) => a + b, 0) : null;
  // The budget: 8 MB raw, 3 MB served, for the page as it loads by default (the CPU engine, or
  // flick-direct's WebGPU engine). burn's WebGPU engine (?engine=burn: cubecl's kernel compiler
  // and kernel library) does not fit 8 MB raw; that page is held to its measured ceiling instead
  // (docs/browser.md).
  const budget = { raw: engine === 'webgpu-burn' ? 16e6 : 8e6, served: 3e6 };
  if (wasmRaw > budget.raw) fail(`the page and the ${engine} engine are ${wasmRaw} bytes of wasm, over the budget of ${budget.raw}`);
  if (wasmOnWire === null || wasmOnWire > budget.served) fail(`the page and the ${engine} engine went out as ${wasmOnWire} bytes (${JSON.stringify(wasmServed)}), over the budget of ${budget.served} served compressed`);
  // 9. (cpu mode) The WebGPU engine asked for where the browser has no adapter: the worker says
  // so, and the page moves to the CPU engine (which the new worker fetches itself) and generates.
  let fallback = null;
  if (mode === 'cpu') {
    const t1 = Date.now();
    const second = await browser.newPage({ viewport: { width: 1280, height: 800 } });
    const served = new Set();
    const secondErrors = [];
    second.on('response', (r) => { const m = /\/pkg\/flick_([\w-]+)_bg\.wasm$/.exec(r.url()); if (m) served.add(m[1]); });
    second.on('console', (m) => { consoleLines.push(`${stamp()} fallback page ${m.type()}: ${m.text()}`); if (m.type() === 'error') secondErrors.push(m.text()); });
    second.on('pageerror', (e) => secondErrors.push(`uncaught: ${e.message}`));
    await second.goto(`http://127.0.0.1:${port}/index.html?backend=webgpu`);
    let st = {};
    while (!(st.backend && st.models && st.models.length >= 1 && st.rows && st.rows.length > 0 && st.rows[0].clips > 0)) {
      if (secondErrors.length) fail(`?backend=webgpu without an adapter: console errors: ${secondErrors.join(' | ')}`);
      if (Date.now() - t1 > timeoutMs) fail(`?backend=webgpu without an adapter: no clips after ${timeoutMs / 1000} s; status ${JSON.stringify(st)}`);
      await sleep(100);
      st = await second.evaluate(() => (window.flickStatus ? window.flickStatus() : {}));
    }
    if (!(/CPU/.test(st.backend) && /No WebGPU/.test(st.notice || ''))) fail(`?backend=webgpu without an adapter should move to the CPU engine with a notice, got ${st.backend} / ${st.notice}`);
    if (!served.has('webgpu') || !served.has('cpu')) fail(`?backend=webgpu without an adapter: expected the webgpu engine and then the cpu engine to be fetched, got ${[...served].join(', ')}`);
    fallback = { backend: st.backend, notice: st.notice, fetched: [...served].sort(), first_clips_s: (Date.now() - t1) / 1000 };
    await second.close();
  }

  const summary = {
    fallback,
    mode, engine, backend: done.backend, notice: done.notice, webgpu_generates: webgpuGenerates, webgpu_crash_reports: webgpuCrash.length,
    wasm_bytes: { page: size('pkg/flick_page_bg.wasm'), engine: size(`pkg/flick_${engine}_bg.wasm`), total: wasmRaw }, wasm_served: { ...wasmServed, total: wasmOnWire }, wasm_budget: budget,
    model_bytes: { generator: size('models/generator-small.safetensors'), teacher: size('models/teacher-small.safetensors') },
    page_to_generator_ready_s: readySecs, page_to_first_clips_s: firstClipSecs, page_to_models_ready_s: loadSecs,
    model: row.model, clips: row.clips, secs_per_clip: row.secs_per_clip, click_to_clips_s: row.latency, enter_to_done_seen_s: generateSecs,
    max_frame_gap_ms: Math.round(gaps.maxGap), animation_frames_during_generation: gaps.frames,
    clip_pixels: { first: a, last: b, differing: differ }, bad_addresses: badAddresses, explore: exploreSummary, compared_with: compareDir, difference: compared,
    console: consoleLines.filter((l) => l.includes('flick')),
  };
  fs.writeFileSync(path.join(outDir, 'summary.json'), JSON.stringify(summary, null, 2));
  console.log(`summary ${JSON.stringify(summary)}`);
  console.log(`browser test (${mode}): passed (screenshots in ${outDir})`);
} catch (e) {
  if (!process.exitCode) { console.error(`browser test (${mode}): FAILED: ${e.stack || e}`); process.exitCode = 1; }
} finally {
  try { fs.writeFileSync(path.join(outDir, 'console.log'), consoleLog.join('\n') + '\n'); } catch {}
  if (browser) await browser.close().catch(() => {});
  server.kill();
  for (const f of badModels) fs.rmSync(f, { force: true });
}
