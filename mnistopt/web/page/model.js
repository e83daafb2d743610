// An MNIST classifier in onnxruntime-web, fed the way mnistopt.runtime feeds it: the server
// reads each model's input/output spec with the runtime (layout, dtype, scale, zero point)
// and the page applies it here, so the same uint8 pixels give the same tensor in both.
import * as ort from './ort/ort.wasm.min.mjs';
import { roundHalfEven } from './preprocess.js';

const f32 = Math.fround;
const SAMPLE = { NCHW: [1, 28, 28], NHWC: [28, 28, 1], NHW: [28, 28], flat: [784] };
const ARRAYS = { float32: Float32Array, int8: Int8Array, uint8: Uint8Array };

export { ort };

// Threads need a cross-origin isolated page (SharedArrayBuffer); `threads` 0 = ort's default.
export function configure({ threads = 0 } = {}) {
  ort.env.wasm.wasmPaths = new URL('./ort/', location.href).href;
  ort.env.wasm.simd = true;
  ort.env.wasm.numThreads = crossOriginIsolated ? threads : 1;
  ort.env.logLevel = 'error';
  return { crossOriginIsolated, requestedThreads: ort.env.wasm.numThreads,
           hardwareConcurrency: navigator.hardwareConcurrency, ortVersion: ort.env.versions?.web };
}

export async function config() {
  const r = await fetch('./models.json');
  if (!r.ok) throw new Error(`models.json: HTTP ${r.status}`);
  return r.json();
}

export class Classifier {
  static async open(info) {
    const t0 = performance.now();
    const session = await ort.InferenceSession.create(info.url, {
      executionProviders: ['wasm'], graphOptimizationLevel: 'all' });
    return new Classifier(session, info, performance.now() - t0);
  }

  constructor(session, info, loadMs) {
    this.session = session;
    this.info = info;
    this.loadMs = loadMs;
    const inp = info.input, out = info.output;
    this.inputName = inp.name;
    this.outputName = out.name;
    this.sample = SAMPLE[inp.layout];
    this.dtype = inp.dtype;
    if (!this.sample || !ARRAYS[this.dtype]) throw new Error(`unsupported input ${inp.layout} ${inp.dtype}`);
    this.fixedBatch = inp.shape[0] > 0 ? inp.shape[0] : null;
    this.lut = pixelTable(inp);
    this.outScale = out.scale ?? null;
    this.outZero = out.zero_point ?? 0;
    this.kind = out.kind || 'logits';
  }

  // Uint8Array of n*784 pixels -> an input tensor of n images (padded to a fixed batch).
  tensor(pixels, n) {
    const batch = this.fixedBatch ?? n;
    const data = new ARRAYS[this.dtype](batch * 784);
    for (let i = 0; i < n * 784; i++) data[i] = this.lut[pixels[i]];
    return new ort.Tensor(this.dtype, data, [batch, ...this.sample]);
  }

  feeds(tensor) {
    return { [this.inputName]: tensor };
  }

  // The model's raw output for n images -> float32 logits (n*10), int8 outputs dequantized.
  logits(output, n) {
    const raw = output[this.outputName].data, out = new Float32Array(n * 10);
    for (let i = 0; i < n * 10; i++)
      out[i] = this.outScale === null ? raw[i] : f32(f32(raw[i] - this.outZero) * f32(this.outScale));
    return out;
  }

  async classify(pixels) {  // one image: {logits, probs, ms (session.run only)}
    const feeds = this.feeds(this.tensor(pixels, 1));
    const t0 = performance.now();
    const output = await this.session.run(feeds);
    const ms = performance.now() - t0;
    const logits = this.logits(output, 1);
    return { logits, probs: this.kind === 'logits' ? softmax(logits) : normalise(logits), ms };
  }
}

// The runtime's Classifier._pixel_table: uint8 pixel -> the model's input value.
function pixelTable(inp) {
  const table = new ARRAYS[inp.dtype](256);
  for (let v = 0; v < 256; v++) {
    const x01 = f32(v / 255);
    if (inp.scale === null || inp.scale === undefined) { table[v] = x01; continue; }
    const lo = inp.dtype === 'int8' ? -128 : 0, hi = inp.dtype === 'int8' ? 127 : 255;
    table[v] = Math.min(hi, Math.max(lo, roundHalfEven(f32(x01 / f32(inp.scale))) + inp.zero_point));
  }
  return table;
}

export function softmax(logits) {
  const m = Math.max(...logits), e = Array.from(logits, (v) => Math.exp(v - m));
  const s = e.reduce((a, b) => a + b, 0);
  return e.map((v) => v / s);
}

function normalise(p) {
  const s = Array.from(p).reduce((a, b) => a + b, 0);
  return Array.from(p, (v) => v / s);
}
