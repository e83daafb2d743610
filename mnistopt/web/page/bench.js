// The benchmark's side in the page: `mnistoptBench.start(opts)` runs one model on the test
// images with onnxruntime-web; `mnistoptBench.state` reports progress, then the result.
// Only `session.run` is inside the clock (performance.now(); 5 µs steps when the page is
// cross-origin isolated): tensors are built before it, logits are read after it.
import { Classifier, config, configure, ort } from './model.js';

const state = { phase: 'idle', done: 0, total: 0, result: null, error: null };

async function timeCalls(session, feeds, { warmup, iters, budgetS, minIters = 5 }) {
  for (let i = 0; i < warmup; i++) await session.run(feeds);
  const samples = [], deadline = performance.now() + budgetS * 1000;
  for (let i = 0; i < iters; i++) {
    const t0 = performance.now();
    await session.run(feeds);
    const t1 = performance.now();
    samples.push((t1 - t0) * 1000);  // µs
    if (i + 1 >= minIters && t1 > deadline) break;
  }
  return samples;
}

function base64(floats) {
  const bytes = new Uint8Array(floats.buffer, floats.byteOffset, floats.byteLength);
  let s = '';
  for (let i = 0; i < bytes.length; i += 0x8000) s += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  return btoa(s);
}

async function run({ model, threads = 0, warmup = 20, batchSizes = [1], iters = 300, budgetS = 3 }) {
  const env = configure({ threads });
  const cfg = await config();
  const info = cfg.models[model];
  state.phase = 'loading';
  const clf = await Classifier.open(info);
  const x = new Uint8Array(await (await fetch('./data/x_test.bin')).arrayBuffer());
  const n = x.length / 784;
  state.total = n;
  state.phase = 'accuracy';
  // Batch 1 over every test image: the accuracy pass and the batch-1 latency samples at once.
  const logits = new Float32Array(n * 10), single = new Array(n);
  const first = clf.feeds(clf.tensor(x.subarray(0, 784), 1));
  for (let i = 0; i < warmup; i++) await clf.session.run(first);
  const t0 = performance.now();
  for (let i = 0; i < n; i++) {
    const feeds = clf.feeds(clf.tensor(x.subarray(i * 784, (i + 1) * 784), 1));
    const a = performance.now();
    const out = await clf.session.run(feeds);
    single[i] = (performance.now() - a) * 1000;
    logits.set(clf.logits(out, 1), i * 10);
    state.done = i + 1;
  }
  const evalSeconds = (performance.now() - t0) / 1000;
  const samples = { 1: single };
  state.phase = 'latency';
  for (const b of batchSizes) {
    if (b === 1 || b > n || (clf.fixedBatch !== null && clf.fixedBatch !== b)) continue;
    const feeds = clf.feeds(clf.tensor(x.subarray(0, b * 784), b));
    samples[b] = await timeCalls(clf.session, feeds, { warmup: Math.min(warmup, 5), iters, budgetS });
  }
  return {
    model: info.name, n, logits: base64(logits), samples, evalSeconds, loadMs: clf.loadMs,
    threads: ort.env.wasm.numThreads, crossOriginIsolated: env.crossOriginIsolated,
    ortVersion: cfg.ort_version, userAgent: navigator.userAgent,
  };
}

window.mnistoptBench = {
  state,
  start(opts) {
    Object.assign(state, { phase: 'starting', done: 0, total: 0, result: null, error: null });
    run(opts).then((r) => { state.result = r; state.phase = 'done'; },
                   (e) => { state.error = String(e && e.message || e); state.phase = 'error'; });
  },
};
document.getElementById('state').dataset.ready = 'true';
