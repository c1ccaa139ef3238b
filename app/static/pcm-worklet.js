// AudioWorkletProcessor "pcm-downsampler": microphone audio at the AudioContext's
// rate (44.1 kHz, 48 kHz, …) in, 16 kHz 16-bit mono PCM frames out.
//
// Resampling is a windowed-sinc low-pass below the target's Nyquist frequency
// (so 8–24 kHz content does not fold back into speech) followed by linear
// interpolation. The fractional read position is carried across the
// 128-sample render quanta, so frames join without clicks or drift.
//
// Each full frame (1600 samples = 100 ms by default) is posted to the page as
// an ArrayBuffer of little-endian Int16 (the byte order of every platform
// browsers run on). Posting "flush" to the port posts the partial frame, then
// the string "flushed": everything captured so far has been handed over.

const DEFAULT_TARGET_RATE = 16000;
const DEFAULT_FRAME_SAMPLES = 1600;
const FILTER_TAPS = 63; // odd: a symmetric filter with a whole-sample delay
const CUTOFF_FRACTION = 0.9; // of the target's Nyquist frequency

// Blackman-windowed sinc low-pass; `cutoff` in cycles per input sample (< 0.5).
function lowPass(taps, cutoff) {
  const h = new Float32Array(taps);
  const middle = (taps - 1) / 2;
  let sum = 0;
  for (let i = 0; i < taps; i++) {
    const n = i - middle;
    const sinc = n === 0 ? 2 * cutoff : Math.sin(2 * Math.PI * cutoff * n) / (Math.PI * n);
    const window =
      0.42 - 0.5 * Math.cos((2 * Math.PI * i) / (taps - 1)) +
      0.08 * Math.cos((4 * Math.PI * i) / (taps - 1));
    h[i] = sinc * window;
    sum += h[i];
  }
  for (let i = 0; i < taps; i++) h[i] /= sum; // unity gain at 0 Hz
  return h;
}

class PcmDownsampler extends AudioWorkletProcessor {
  constructor(options) {
    super();
    const opts = (options && options.processorOptions) || {};
    const targetRate = opts.targetRate || DEFAULT_TARGET_RATE;
    this.frameSamples = opts.frameSamples || DEFAULT_FRAME_SAMPLES;
    this.step = sampleRate / targetRate; // input samples per output sample
    // Only downsampling needs the anti-aliasing filter.
    this.taps =
      this.step > 1
        ? lowPass(FILTER_TAPS, (CUTOFF_FRACTION * targetRate) / 2 / sampleRate)
        : new Float32Array([1]);
    this.history = new Float32Array(this.taps.length - 1); // the last inputs, for the filter
    this.window = new Float32Array(0); // history + current block, reused
    this.filtered = new Float32Array(0);
    this.previous = 0; // the last filtered sample of the previous block (index -1)
    this.position = 0; // where the next output sample lies, in this block's input samples
    this.frame = new Int16Array(this.frameSamples);
    this.filled = 0;
    this.port.onmessage = (event) => {
      if (event.data === "flush") {
        if (this.filled > 0) {
          const rest = this.frame.slice(0, this.filled);
          this.port.postMessage(rest.buffer, [rest.buffer]);
          this.filled = 0;
        }
        this.port.postMessage("flushed");
      }
    };
  }

  process(inputs) {
    const input = inputs[0] && inputs[0][0];
    if (!input || input.length === 0) return true; // nothing connected (yet, or any more)
    const n = input.length;
    const keep = this.history.length;
    if (this.window.length !== keep + n) {
      this.window = new Float32Array(keep + n);
      this.filtered = new Float32Array(n);
    }
    this.window.set(this.history, 0);
    this.window.set(input, keep);
    const taps = this.taps;
    const y = this.filtered;
    for (let i = 0; i < n; i++) {
      let acc = 0;
      for (let k = 0; k < taps.length; k++) acc += taps[k] * this.window[i + k];
      y[i] = acc;
    }
    this.history.set(this.window.subarray(n, n + keep));

    // Linear interpolation between y[i] and y[i + 1]; y[-1] is the previous block's last.
    let p = this.position;
    while (p < n - 1) {
      const i = Math.floor(p);
      const frac = p - i;
      const a = i < 0 ? this.previous : y[i];
      this.emit(a + (y[i + 1] - a) * frac);
      p += this.step;
    }
    this.position = p - n;
    this.previous = y[n - 1];
    return true;
  }

  emit(value) {
    const s = value < -1 ? -1 : value > 1 ? 1 : value;
    this.frame[this.filled++] = Math.round(s < 0 ? s * 0x8000 : s * 0x7fff);
    if (this.filled === this.frameSamples) {
      const full = this.frame;
      this.port.postMessage(full.buffer, [full.buffer]);
      this.frame = new Int16Array(this.frameSamples);
      this.filled = 0;
    }
  }
}

registerProcessor("pcm-downsampler", PcmDownsampler);
