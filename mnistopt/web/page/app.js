// The drawing page: pointer strokes on a canvas -> MNIST preprocessing -> the model, in the page.
import { Classifier, config, configure, ort } from './model.js';
import { NoDigitError, rgbaToGray, toMnist, WORK_SIDE } from './preprocess.js';

const $ = (id) => document.getElementById(id);
const pad = $('pad'), ctx = pad.getContext('2d', { willReadFrequently: true });
const result = $('result');
// MNIST strokes are ~12 % of a digit's height: about this pen on a digit drawn over 2/3 of the pad.
const PEN = 22;
let settings, model = null, pillow = 13, inked = false, busy = null;

function clearPad() {
  ctx.fillStyle = '#fff';
  ctx.fillRect(0, 0, pad.width, pad.height);
  inked = false;
  show({ state: 'empty', text: '…' });
  $('top3').replaceChildren();
  $('seen').getContext('2d').clearRect(0, 0, 28, 28);
  $('timing').textContent = 'draw a digit in the box';
}

function show({ state, text }) {
  result.dataset.state = state;
  $('prediction').textContent = text;
}

// Pointer events cover mouse, pen and touch; the canvas is 256 px inside, scaled by CSS.
function point(ev) {
  const r = pad.getBoundingClientRect();
  return [(ev.clientX - r.left) * pad.width / r.width, (ev.clientY - r.top) * pad.height / r.height];
}

let last = null;
pad.addEventListener('pointerdown', (ev) => {
  ev.preventDefault();
  pad.setPointerCapture(ev.pointerId);
  last = point(ev);
  ctx.fillStyle = '#000';
  ctx.beginPath();
  ctx.arc(last[0], last[1], PEN / 2, 0, 2 * Math.PI);
  ctx.fill();
  inked = true;
});
pad.addEventListener('pointermove', (ev) => {
  if (!last) return;
  const p = point(ev);
  ctx.strokeStyle = '#000';
  ctx.lineWidth = PEN;
  ctx.lineCap = 'round';
  ctx.lineJoin = 'round';
  ctx.beginPath();
  ctx.moveTo(...last);
  ctx.lineTo(...p);
  ctx.stroke();
  last = p;
});
const endStroke = () => { if (last) { last = null; classify(); } };
pad.addEventListener('pointerup', endStroke);
pad.addEventListener('pointercancel', endStroke);
$('clear').addEventListener('click', clearPad);

function drawSeen(pixels) {
  const seen = $('seen').getContext('2d'), im = seen.createImageData(28, 28);
  for (let i = 0; i < 784; i++) {
    im.data.set([pixels[i], pixels[i], pixels[i], 255], 4 * i);
  }
  seen.putImageData(im, 0, 0);
}

function drawTop3(probs, labels) {
  const order = Array.from(probs.keys()).sort((a, b) => probs[b] - probs[a]).slice(0, 3);
  $('top3').replaceChildren(...order.map((k) => {
    const li = document.createElement('li'), bar = document.createElement('div');
    const pct = document.createElement('span'), name = document.createElement('span');
    name.textContent = labels[k];
    bar.className = 'bar';
    bar.style.width = `${Math.max(1, 100 * probs[k]).toFixed(1)}%`;
    const track = document.createElement('div');
    track.append(bar);
    pct.className = 'pct';
    pct.textContent = `${(100 * probs[k]).toFixed(1)} %`;
    li.append(name, track, pct);
    return li;
  }));
}

// One classification at a time; a stroke ending meanwhile asks for one more afterwards.
async function classify() {
  if (!inked || !model) return;
  if (busy) { busy.again = true; return; }
  busy = { again: false };
  try {
    const t0 = performance.now();
    const rgba = ctx.getImageData(0, 0, WORK_SIDE, WORK_SIDE).data;
    let pixels;
    try {
      pixels = toMnist(rgbaToGray(rgba, WORK_SIDE, WORK_SIDE), WORK_SIDE, WORK_SIDE, { pillowMajor: pillow });
    } catch (e) {
      if (!(e instanceof NoDigitError)) throw e;
      show({ state: 'empty', text: '…' });
      $('timing').textContent = e.message;
      return;
    }
    const prepMs = performance.now() - t0;
    drawSeen(pixels);
    const { probs, ms } = await model.classify(pixels);
    const best = probs.indexOf(Math.max(...probs));
    drawTop3(probs, model.info.labels);
    show({ state: 'ready', text: model.info.labels[best] });
    $('timing').textContent =
      `inference ${ms.toFixed(2)} ms (session.run) · preprocessing ${prepMs.toFixed(1)} ms`;
  } catch (e) {
    show({ state: 'error', text: '!' });
    $('timing').textContent = `error: ${e.message}`;
  } finally {
    const again = busy.again;
    busy = null;
    if (again) classify();
  }
}

async function useModel(index) {
  const info = settings.models[index];
  show({ state: 'loading', text: '…' });
  model = null;
  model = await Classifier.open(info);
  const threads = ort.env.wasm.numThreads;  // resolved by onnxruntime-web once it has started
  const kb = (info.bytes / 1024).toFixed(1);
  const isolation = env.crossOriginIsolated ? 'cross-origin isolated' : 'not isolated: 1 thread';
  $('status').textContent = [
    `${info.name} (${info.quant}, ${kb} kB)`, `onnxruntime-web ${settings.ort_version}`,
    `WASM SIMD`, `${threads} thread${threads === 1 ? '' : 's'}`, isolation,
    `loaded in ${model.loadMs.toFixed(0)} ms`].join(' · ');
  document.body.dataset.model = info.name;
  if (inked) await classify(); else show({ state: 'empty', text: '…' });
}

const env = configure({ threads: Number(new URLSearchParams(location.search).get('threads') || 0) });
clearPad();
try {
  settings = await config();
  pillow = settings.pillow ?? 13;
  const select = $('model');
  settings.models.forEach((m, i) => select.add(new Option(`${m.name} (${m.quant})`, String(i))));
  const wanted = new URLSearchParams(location.search).get('model');
  const start = Math.max(0, settings.models.findIndex((m) => m.name === wanted));
  select.value = String(start);
  select.addEventListener('change', () => useModel(Number(select.value)).catch(fail));
  await useModel(start);
  document.body.dataset.ready = 'true';
} catch (e) {
  fail(e);
}

function fail(e) {
  show({ state: 'error', text: '!' });
  $('status').textContent = `error: ${e.message}`;
}
