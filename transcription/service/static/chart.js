// How it was said: pitch (left axis, Hz) and energy (right axis, dB) over the timeline's view, from each
// segment's contour (a value every 0.1 s) or, for a transcript without one, each segment's mean. Points
// are averaged per pixel column, so a 2-hour transcript draws as fast as a short one.
"use strict";

const PITCH = "#1f77b4";
const ENERGY = "#d62728";
const SERIES = [
  { key: "pitch", color: PITCH, label: "pitch (Hz)", dash: [] },
  { key: "energy", color: ENERGY, label: "energy (dB)", dash: [6, 4] }, // dashed: visible where lines coincide
];
const chart = { doc: null, series: null };

// Per series: times, values and their segment, in time order; and a scale from the 2nd to 98th percentile
// over the whole document, so the scale stays put while the view pages along.
function chartSeries(doc) {
  if (chart.doc === doc) return chart.series;
  const out = { pitch: { t: [], v: [], seg: [] }, energy: { t: [], v: [], seg: [] }, fine: false };
  doc.segments.forEach((s, i) => {
    const p = (s.audio_state && s.audio_state.prosody) || {};
    const c = p.contour;
    if (c && c.step_s > 0) {
      out.fine = true;
      c.pitch_hz.forEach((v, k) => v !== null && push(out.pitch, s.start + (k + 0.5) * c.step_s, v, i));
      c.energy_db.forEach((v, k) => v !== null && push(out.energy, s.start + (k + 0.5) * c.step_s, v, i));
    } else {
      const mid = (s.start + s.end) / 2;
      if (p.pitch && p.pitch.mean_hz !== null && p.pitch.mean_hz !== undefined) push(out.pitch, mid, p.pitch.mean_hz, i);
      if (p.energy && p.energy.rms_db !== null && p.energy.rms_db !== undefined) push(out.energy, mid, p.energy.rms_db, i);
    }
  });
  for (const key of ["pitch", "energy"]) {
    const sorted = Float64Array.from(out[key].v).sort();
    let lo = sorted.length ? sorted[Math.floor(0.02 * (sorted.length - 1))] : 0;
    let hi = sorted.length ? sorted[Math.ceil(0.98 * (sorted.length - 1))] : 1;
    if (hi - lo < 1e-6) { lo -= 1; hi += 1; }
    out[key].lo = lo;
    out[key].hi = hi;
  }
  chart.doc = doc;
  chart.series = out;
  return out;
}

function push(series, t, v, seg) {
  series.t.push(t);
  series.v.push(v);
  series.seg.push(seg);
}

function firstAtOrAfter(times, t) {
  let lo = 0, hi = times.length;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (times[mid] < t) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

function plot(doc, view) {
  const canvas = $("plot");
  const ratio = window.devicePixelRatio || 1;
  const W = Math.max(200, Math.round(canvas.clientWidth * ratio)) || 900;
  const H = Math.round((canvas.clientHeight || 180) * ratio);
  if (canvas.width !== W || canvas.height !== H) {
    canvas.width = W;
    canvas.height = H;
  }
  const ctx = canvas.getContext("2d");
  ctx.clearRect(0, 0, W, H);
  const data = chartSeries(doc);
  const pad = 14 * ratio;
  const span = Math.max(view.end - view.start, 1e-6);
  const x = (t) => ((t - view.start) / span) * W;
  ctx.font = `${11 * ratio}px sans-serif`;
  let drawn = 0;
  const legend = [];
  for (const s of SERIES) {
    const d = data[s.key];
    const y = (v) => pad + (1 - (Math.min(Math.max(v, d.lo), d.hi) - d.lo) / (d.hi - d.lo)) * (H - 2 * pad);
    const n = drawLine(ctx, d, view, x, y, data.fine ? 0.35 : Infinity, s, ratio);
    if (!d.v.length) continue;
    ctx.fillStyle = s.color;
    ctx.textAlign = s.key === "pitch" ? "left" : "right";
    const ax = s.key === "pitch" ? 3 * ratio : W - 3 * ratio;
    ctx.fillText(`${d.hi.toFixed(0)} ${s.key === "pitch" ? "Hz" : "dB"}`, ax, pad - 2 * ratio);
    ctx.fillText(d.lo.toFixed(0), ax, H - 3 * ratio);
    drawn += n;
    legend.push(s);
  }
  canvas.dataset.points = String(drawn);
  showLegend(legend, drawn, data.fine);
}

// One series in the view: a mean per pixel column, joined unless the points are more than `maxGap` seconds
// apart (unvoiced stretches and pauses stay gaps) or in different segments of a transcript without contours.
function drawLine(ctx, d, view, x, y, maxGap, s, ratio) {
  const first = Math.max(0, firstAtOrAfter(d.t, view.start) - 1);
  const stop = Math.min(d.t.length, firstAtOrAfter(d.t, view.end) + 1);
  ctx.strokeStyle = ctx.fillStyle = s.color;
  ctx.lineWidth = 1.5 * ratio;
  ctx.setLineDash(s.dash.map((v) => v * ratio));
  ctx.beginPath();
  let column = null, sum = 0, count = 0, lastT = -Infinity, drawing = false, points = 0;
  const flush = () => {
    if (!count) return;
    const px = column + 0.5, py = y(sum / count);
    if (drawing) ctx.lineTo(px, py);
    else ctx.moveTo(px, py);
    drawing = true;
  };
  for (let i = first; i < stop; i++) {
    const t = d.t[i];
    const col = Math.floor(x(t));
    if (t - lastT > maxGap) {
      flush();
      drawing = false;
      column = col; sum = 0; count = 0;
    } else if (col !== column) {
      flush();
      column = col; sum = 0; count = 0;
    }
    sum += d.v[i];
    count += 1;
    lastT = t;
    if (t >= view.start && t <= view.end) points += 1;
  }
  flush();
  ctx.stroke();
  ctx.setLineDash([]);
  if (maxGap === Infinity) { // a point per segment: marked, as a line between means says little
    for (let i = first; i < stop; i++) {
      ctx.beginPath();
      ctx.arc(x(d.t[i]), y(d.v[i]), 2.5 * ratio, 0, 2 * Math.PI);
      ctx.fill();
    }
  }
  return points;
}

// Built as elements, not markup: the page's content security policy allows no inline styles.
function showLegend(legend, drawn, fine) {
  const box = $("legend");
  box.replaceChildren();
  if (!drawn && !legend.length) {
    box.textContent = "No prosody in this transcript (see the notes above for why).";
    return;
  }
  for (const s of legend) {
    const swatch = document.createElement("i");
    swatch.className = "swatch";
    swatch.style.background = s.color;
    const item = document.createElement("span");
    item.append(swatch, s.label);
    box.append(item);
  }
  const what = document.createElement("span");
  what.className = "resolution";
  what.textContent = fine ? "every 0.1 s" : "one point per line";
  box.append(what);
}
