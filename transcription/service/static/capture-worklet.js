// The microphone's samples as 24 kHz PCM16, in blocks of about 100 ms, posted to the page. Runs in the
// audio rendering thread (an AudioWorklet), so capture never waits on the page's own work.
"use strict";

const TARGET_RATE = 24000;
const BLOCK = 2400; // samples at 24 kHz: 100 ms

class Capture extends AudioWorkletProcessor {
  constructor() {
    super();
    this.step = sampleRate / TARGET_RATE; // input samples per output sample
    this.pos = 0; // position of the next output sample, in input samples from the start of `tail`
    this.tail = new Float32Array(0); // input not yet used up by the interpolation
    this.out = new Int16Array(BLOCK);
    this.n = 0;
  }

  process(inputs) {
    const channels = inputs[0];
    if (!channels || !channels.length) return true;
    // Mono: the mean of the channels.
    const frame = new Float32Array(channels[0].length);
    for (const ch of channels) for (let i = 0; i < ch.length; i++) frame[i] += ch[i] / channels.length;
    const input = new Float32Array(this.tail.length + frame.length);
    input.set(this.tail);
    input.set(frame, this.tail.length);
    // Downsampling: average over one output step first (a box low-pass), then interpolate linearly.
    const width = Math.max(1, Math.floor(this.step));
    while (this.pos + width < input.length) {
      const i = Math.floor(this.pos);
      let sum = 0;
      for (let k = 0; k < width; k++) sum += input[i + k] + (input[i + k + 1] - input[i + k]) * (this.pos - i);
      this.emit(sum / width);
      this.pos += this.step;
    }
    const used = Math.floor(this.pos);
    this.tail = input.slice(used);
    this.pos -= used;
    return true;
  }

  emit(value) {
    const v = Math.max(-1, Math.min(1, value));
    this.out[this.n++] = v < 0 ? v * 0x8000 : v * 0x7fff;
    if (this.n === BLOCK) {
      this.port.postMessage(this.out.buffer, [this.out.buffer]);
      this.out = new Int16Array(BLOCK);
      this.n = 0;
    }
  }
}

registerProcessor("capture-24k", Capture);
