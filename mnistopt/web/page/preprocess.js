// MNIST preprocessing in the browser: the same steps, and the same arithmetic, as
// mnistopt/runtime/preprocess.py `to_mnist` (the reference; a test holds the two within 1/255
// per pixel). Pillow's 8-bit kernels (resample, rank filter, box blur) are written out here
// with their fixed-point rounding, numpy's float32 steps with Math.fround, and numpy's
// pairwise float32 sums in numpy's order, because the centre of mass of a symmetric digit sits
// on a rounding tie that a different summation order would break the other way.
// No DOM: the page, the benchmark and the tests import it as it is.

const f32 = Math.fround;
export const BOX = 20, SIZE = 28, WORK_SIDE = 256;
const STROKE_FRACTION = 0.12, THICKEN_SIDE = 64;

export class NoDigitError extends Error {}
// The Pillow release whose kernels to follow (the server tells the page what Python has).
let PILLOW_MAJOR = 13;

// ---- numpy ------------------------------------------------------------------------------

// Python's round() and numpy's: halves go to the even neighbour.
export function roundHalfEven(x) {
  const r = Math.round(x);
  return (r - x === 0.5 && r % 2 !== 0) ? r - 1 : r;
}

// numpy's float32 add.reduce over a contiguous run (pairwise, 8 accumulators, 128-blocks).
function pairwiseSum(a, start, n, stride) {
  if (n < 8) {
    let res = 0;
    for (let i = 0; i < n; i++) res = f32(res + a[start + i * stride]);
    return res;
  }
  if (n <= 128) {
    const r = new Array(8);
    for (let j = 0; j < 8; j++) r[j] = a[start + j * stride];
    let i = 8;
    for (; i < n - (n % 8); i += 8)
      for (let j = 0; j < 8; j++) r[j] = f32(r[j] + a[start + (i + j) * stride]);
    let res = f32(f32(f32(r[0] + r[1]) + f32(r[2] + r[3])) + f32(f32(r[4] + r[5]) + f32(r[6] + r[7])));
    for (; i < n; i++) res = f32(res + a[start + i * stride]);
    return res;
  }
  let n2 = Math.floor(n / 2);
  n2 -= n2 % 8;
  return f32(pairwiseSum(a, start, n2, stride) + pairwiseSum(a, start + n2 * stride, n - n2, stride));
}

// np.percentile(a, q), method 'linear', float32 result.
function percentile(sorted, q) {
  const idx = (sorted.length - 1) * (q / 100);
  const lo = Math.floor(idx), hi = Math.min(lo + 1, sorted.length - 1);
  const gamma = idx - lo, a = sorted[lo], b = sorted[hi], diff = f32(b - a);
  return gamma >= 0.5 ? f32(b - f32(diff * f32(1 - gamma))) : f32(a + f32(diff * f32(gamma)));
}

// ---- images: {w, h, data}; data Uint8Array (Pillow 'L') or Float32Array (numpy) --------

const img = (w, h, data) => ({ w, h, data });

function toBytes(g) {  // Image.fromarray((g * 255).astype(np.uint8))
  const out = new Uint8Array(g.data.length);
  for (let i = 0; i < out.length; i++) out[i] = Math.trunc(f32(g.data[i] * 255));
  return img(g.w, g.h, out);
}

function toFloat(im, divisor) {  // np.asarray(im, np.float32) / divisor
  const out = new Float32Array(im.data.length);
  for (let i = 0; i < out.length; i++) out[i] = divisor === 1 ? im.data[i] : f32(im.data[i] / divisor);
  return img(im.w, im.h, out);
}

function crop(g, r0, r1, c0, c1) {  // g[r0:r1 + 1, c0:c1 + 1]
  const w = c1 - c0 + 1, h = r1 - r0 + 1, out = new g.data.constructor(w * h);
  for (let y = 0; y < h; y++) out.set(g.data.subarray((r0 + y) * g.w + c0, (r0 + y) * g.w + c0 + w), y * w);
  return img(w, h, out);
}

function bboxRowsCols(g, test) {  // first/last row and column holding a pixel that passes
  let r0 = -1, r1 = -1, c0 = g.w, c1 = -1;
  for (let y = 0; y < g.h; y++)
    for (let x = 0; x < g.w; x++)
      if (test(g.data[y * g.w + x])) {
        if (r0 < 0) r0 = y;
        r1 = y; c0 = Math.min(c0, x); c1 = Math.max(c1, x);
      }
  return r0 < 0 ? null : [r0, r1, c0, c1];
}

// ---- Pillow: Resample.c (8-bit, separable, horizontal pass first) -----------------------

const PRECISION_BITS = 22;
const sinc = (x) => (x === 0 ? 1 : Math.sin(x * Math.PI) / (x * Math.PI));
const FILTERS = {
  box: [(x) => (x > -0.5 && x <= 0.5 ? 1 : 0), 0.5],
  bilinear: [(x) => (Math.abs(x) < 1 ? 1 - Math.abs(x) : 0), 1],
  lanczos: [(x) => (-3 <= x && x < 3 ? sinc(x) * sinc(x / 3) : 0), 3],
};

function coeffs(inSize, outSize, [filter, support0]) {
  const scale = inSize / outSize, filterscale = Math.max(scale, 1);
  const support = support0 * filterscale, ksize = Math.ceil(support) * 2 + 1;
  const inv = 1 / filterscale, bounds = new Int32Array(outSize * 2);
  const kk = new Float64Array(outSize * ksize);
  for (let xx = 0; xx < outSize; xx++) {
    const center = (xx + 0.5) * scale;
    const xmin = Math.max(0, Math.trunc(center - support + 0.5));
    const xmax = Math.min(inSize, Math.trunc(center + support + 0.5)) - xmin;
    let ww = 0;
    for (let x = 0; x < xmax; x++) {
      const w = filter((x + xmin - center + 0.5) * inv);
      kk[xx * ksize + x] = w;
      ww += w;
    }
    for (let x = 0; x < xmax; x++) {
      const k = ww !== 0 ? kk[xx * ksize + x] / ww : kk[xx * ksize + x];
      const fixed = k * (1 << PRECISION_BITS);
      kk[xx * ksize + x] = Math.trunc(k < 0 ? fixed - 0.5 : fixed + 0.5);
    }
    bounds[xx * 2] = xmin;
    bounds[xx * 2 + 1] = xmax;
  }
  return { ksize, bounds, kk };
}

const clip8 = (ss) => Math.min(255, Math.max(0, Math.floor(ss / (1 << PRECISION_BITS))));

// `count` lines of `src` (one every `itemStride`, pixels `inStride` apart) -> `outN` pixels each.
function resample1d(src, count, inStride, itemStride, outN, c, dst, outStride, outItemStride) {
  for (let i = 0; i < count; i++)
    for (let xx = 0; xx < outN; xx++) {
      const xmin = c.bounds[xx * 2], xmax = c.bounds[xx * 2 + 1];
      let ss = 1 << (PRECISION_BITS - 1);
      for (let x = 0; x < xmax; x++)
        ss += src[i * itemStride + (x + xmin) * inStride] * c.kk[xx * c.ksize + x];
      dst[i * outItemStride + xx * outStride] = clip8(ss);
    }
}

// Image.resize((w, h), filter) on an 'L' image. Pillow 13 runs the vertical pass first when
// the height shrinks by more than twice what the width does; older versions never do.
export function resize(im, w, h, filter, pillowMajor = PILLOW_MAJOR) {
  if (im.w === w && im.h === h) return img(w, h, im.data.slice());
  const horizontal = (cur) => {
    const out = new Uint8Array(w * cur.h);
    resample1d(cur.data, cur.h, 1, cur.w, w, coeffs(cur.w, w, FILTERS[filter]), out, 1, w);
    return img(w, cur.h, out);
  };
  const vertical = (cur) => {
    const out = new Uint8Array(cur.w * h);
    resample1d(cur.data, cur.w, cur.w, 1, h, coeffs(cur.h, h, FILTERS[filter]), out, cur.w, 1);
    return img(cur.w, h, out);
  };
  const dy = im.h - h, verticalFirst = pillowMajor >= 13 && dy > 0 && dy > (im.w - w) * 2;
  let cur = im;
  if (verticalFirst) {
    if (h !== im.h) cur = vertical(cur);
    if (w !== im.w) cur = horizontal(cur);
  } else {
    if (w !== im.w) cur = horizontal(cur);
    if (h !== im.h) cur = vertical(cur);
  }
  return cur;
}

// ---- Pillow: RankFilter.c (Min/MaxFilter; the image is first expanded by edge copies) ---

function rankFilter(im, k, pick) {
  const r = k >> 1, out = new Uint8Array(im.w * im.h);
  for (let y = 0; y < im.h; y++)
    for (let x = 0; x < im.w; x++) {
      let v = im.data[y * im.w + x];
      for (let dy = -r; dy <= r; dy++) {
        const yy = Math.min(im.h - 1, Math.max(0, y + dy)) * im.w;
        for (let dx = -r; dx <= r; dx++) v = pick(v, im.data[yy + Math.min(im.w - 1, Math.max(0, x + dx))]);
      }
      out[y * im.w + x] = v;
    }
  return img(im.w, im.h, out);
}

// ---- Pillow: BoxBlur.c (GaussianBlur = 3 extended box blurs per axis, 24-bit fixed point)

function gaussianRadius(radius, passes) {  // _gaussian_blur_radius, in C float arithmetic
  const sigma2 = f32(f32(radius * radius) / passes);
  const L = f32(Math.sqrt(12.0 * sigma2 + 1.0));
  const l = f32(Math.floor((L - 1.0) / 2.0));
  let a = f32(f32(f32(2 * l) + 1) * f32(f32(l * f32(l + 1)) - f32(3 * sigma2)));
  a = f32(a / f32(6 * f32(sigma2 - f32(f32(l + 1) * f32(l + 1)))));
  return f32(l + a);
}

function boxBlurLine(line, n, radius, fradius) {  // ImagingLineBoxBlur8
  const ww = Math.trunc(f32((1 << 24) / f32(fradius * 2 + 1)));
  const fw = Math.floor(((1 << 24) - (radius * 2 + 1) * ww) / 2);
  const last = n - 1, edgeA = Math.min(radius + 1, n), edgeB = Math.max(n - radius - 1, 0);
  const src = line.slice();
  const at = (i) => src[Math.min(last, Math.max(0, i))];
  let acc = src[0] * (radius + 1);
  for (let x = 0; x < edgeA - 1; x++) acc += src[x];
  acc += src[last] * (radius - edgeA + 1);
  for (let x = 0; x <= last; x++) {
    // The C code's three loops clamp the entering and leaving pixels to the line's ends.
    acc += at(x + radius) - at(x - radius - 1);
    const bulk = acc * ww + (at(x - radius - 1) + at(x + radius + 1)) * fw;
    line[x] = Math.floor((bulk + (1 << 23)) / (1 << 24)) & 255;
  }
}

function gaussianBlur(im, radius) {
  const fr = gaussianRadius(radius, 3), r = Math.trunc(fr), out = im.data.slice();
  const row = new Uint8Array(im.w), col = new Uint8Array(im.h);
  for (let y = 0; y < im.h; y++) {
    row.set(out.subarray(y * im.w, (y + 1) * im.w));
    for (let p = 0; p < 3; p++) boxBlurLine(row, im.w, r, fr);
    out.set(row, y * im.w);
  }
  for (let x = 0; x < im.w; x++) {
    for (let y = 0; y < im.h; y++) col[y] = out[y * im.w + x];
    for (let p = 0; p < 3; p++) boxBlurLine(col, im.h, r, fr);
    for (let y = 0; y < im.h; y++) out[y * im.w + x] = col[y];
  }
  return img(im.w, im.h, out);
}

// ---- the steps of to_mnist ----------------------------------------------------------------

function flattenBackground(g) {
  if (Math.min(g.w, g.h) < 32) return g;
  const im = toBytes(g);
  const small = resize(im, 32, 32, "box");
  const bg = resize(gaussianBlur(rankFilter(small, 7, Math.min), 2), im.w, im.h, "bilinear");
  const out = new Float32Array(g.data.length);
  for (let i = 0; i < out.length; i++)
    out[i] = Math.min(1, Math.max(0, f32(g.data[i] - f32(bg.data[i] / 255))));
  return img(g.w, g.h, out);
}

function thicken(g) {
  const side = Math.max(g.w, g.h);
  let im = toBytes(g);
  if (side > THICKEN_SIDE) {
    const s = THICKEN_SIDE / side;
    im = resize(im, Math.max(1, roundHalfEven(g.w * s)), Math.max(1, roundHalfEven(g.h * s)), "box");
  }
  let a = toFloat(im, 1);
  const max = a.data.reduce((m, v) => Math.max(m, v), 0);
  if (max > 0) a = img(a.w, a.h, a.data.map((v) => f32(v / max)));
  const t = f32(0.3), { w, h } = a;
  const on = (x, y) => x >= 0 && y >= 0 && x < w && y < h && a.data[y * w + x] > t;
  let area = 0, inner = 0;
  for (let y = 0; y < h; y++)
    for (let x = 0; x < w; x++)
      if (on(x, y)) {
        area++;
        if (on(x - 1, y) && on(x + 1, y) && on(x, y - 1) && on(x, y + 1)) inner++;
      }
  const perimeter = Math.max(1, area - inner), stroke = 2.0 * area / perimeter;
  const want = STROKE_FRACTION * Math.max(w, h), k = roundHalfEven(want - stroke) | 1;
  if (stroke >= want * 0.6 || k < 3) return a;
  const pad = (k >> 1) + 1, pw = w + 2 * pad, ph = h + 2 * pad, padded = new Float32Array(pw * ph);
  for (let y = 0; y < h; y++) padded.set(a.data.subarray(y * w, (y + 1) * w), (y + pad) * pw + pad);
  const grown = toFloat(rankFilter(toBytes(img(pw, ph, padded)), k, Math.max), 255);
  return crop(grown, ...bboxRowsCols(grown, (v) => v > t));  // rows / columns whose max > 0.3
}

function fitAndCentre(g) {
  const s = BOX / Math.max(g.w, g.h);
  const nh = Math.max(1, roundHalfEven(g.h * s)), nw = Math.max(1, roundHalfEven(g.w * s));
  const small = toFloat(resize(toBytes(g), nw, nh, "lanczos"), 1).data;
  const max = small.reduce((m, v) => Math.max(m, v), 0);
  if (max > 0) {  // anti-aliasing dims thin digits; MNIST's ink peaks at 255
    const k = f32(255 / max);
    for (let i = 0; i < small.length; i++) small[i] = f32(small[i] * k);
  }
  const total = pairwiseSum(small, 0, small.length, 1);
  const colSums = new Float32Array(nw);  // axis-0 sums: numpy adds row after row
  if (nw === 1) colSums[0] = pairwiseSum(small, 0, nh, 1);
  else
    for (let y = 0; y < nh; y++)
      for (let x = 0; x < nw; x++) colSums[x] = f32(colSums[x] + small[y * nw + x]);
  let sy = 0, sx = 0;
  for (let y = 0; y < nh; y++) sy += pairwiseSum(small, y * nw, nw, 1) * y;
  for (let x = 0; x < nw; x++) sx += colSums[x] * x;
  const cy = total ? sy / total : (nh - 1) / 2, cx = total ? sx / total : (nw - 1) / 2;
  const top = Math.min(SIZE - nh, Math.max(0, roundHalfEven(SIZE / 2 - 0.5 - cy)));
  const left = Math.min(SIZE - nw, Math.max(0, roundHalfEven(SIZE / 2 - 0.5 - cx)));
  const out = new Uint8Array(SIZE * SIZE);
  for (let y = 0; y < nh; y++)
    for (let x = 0; x < nw; x++)
      out[(top + y) * SIZE + left + x] = Math.min(255, Math.max(0, roundHalfEven(small[y * nw + x])));
  return out;
}

// Grayscale float32 in [0, 1] (h*w, row-major), any polarity -> Uint8Array(784) MNIST digit.
export function toMnist(gray, w, h, { pillowMajor = 13 } = {}) {
  PILLOW_MAJOR = pillowMajor;
  let g = img(w, h, Float32Array.from(gray));
  if (w < 2 || h < 2 || g.data.length !== w * h) throw new Error(`bad image size ${w}x${h}`);
  const border = [];
  for (let x = 0; x < w; x++) border.push(g.data[x], g.data[(h - 1) * w + x]);
  for (let y = 0; y < h; y++) border.push(g.data[y * w], g.data[y * w + w - 1]);
  border.sort((p, q) => p - q);
  const m = border.length, mid = m >> 1;
  const median = m % 2 ? border[mid] : f32(f32(border[mid - 1] + border[mid]) / 2);
  if (median > 0.5) g = img(w, h, g.data.map((v) => f32(1 - v)));  // dark ink on paper
  g = flattenBackground(g);
  const sorted = Float32Array.from(g.data).sort();
  const lo = percentile(sorted, 50), hi = percentile(sorted, 99.5), span = f32(hi - lo);
  if (span < f32(0.08)) throw new NoDigitError("the image has no visible digit (it is nearly uniform)");
  const d = g.data.map((v) => {
    const x = Math.min(1, Math.max(0, f32(f32(v - lo) / span)));
    return x < 0.25 ? 0 : x;  // paper grain and shadows left after levelling
  });
  g = img(w, h, d);
  const box = bboxRowsCols(g, (v) => v > 0.5);
  if (!box) throw new NoDigitError("the image has no visible digit");
  return fitAndCentre(thicken(crop(g, ...box)));
}

// Canvas RGBA pixels -> grayscale float32 in [0, 1], as Pillow's convert('L') then / 255.
export function rgbaToGray(rgba, w, h) {
  const out = new Float32Array(w * h);
  for (let i = 0; i < w * h; i++) {
    const [r, g, b] = [rgba[4 * i], rgba[4 * i + 1], rgba[4 * i + 2]];
    out[i] = f32(((r * 19595 + g * 38470 + b * 7471 + 0x8000) >> 16) / 255);
  }
  return out;
}
