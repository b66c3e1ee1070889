// The upload page: send a recording to /v1/audio/transcriptions, then show the enriched transcript and a
// plot of pitch and energy per segment. Plain browser JavaScript, no build step and no external assets.
"use strict";

const $ = (id) => document.getElementById(id);
const PITCH = "#1f77b4";
const ENERGY = "#d62728";

$("apikey").value = localStorage.getItem("slower-whisper-key") || "";

$("upload").addEventListener("submit", async (event) => {
  event.preventDefault();
  const file = $("file").files[0];
  if (!file) return;
  const key = $("apikey").value.trim();
  localStorage.setItem("slower-whisper-key", key);
  const form = new FormData();
  form.append("file", file, file.name);
  form.append("model", "whisper-1");
  form.append("response_format", "slower_whisper_json");
  form.append("enrich", $("enrich").checked ? "true" : "false");
  const language = $("language").value.trim();
  if (language) form.append("language", language);
  setStatus(`Transcribing ${file.name}…`);
  $("submit").disabled = true;
  try {
    const response = await fetch("/v1/audio/transcriptions", {
      method: "POST",
      body: form,
      headers: key ? { Authorization: `Bearer ${key}` } : {},
    });
    const body = await response.json();
    if (!response.ok) {
      const retry = response.headers.get("Retry-After");
      const message = (body.error && body.error.message) || response.statusText;
      throw new Error(message + (retry ? ` (retry in ${retry} s)` : ""));
    }
    show(body);
    setStatus(`Done: ${body.segments.length} segments, ${body.duration.toFixed(1)} s of audio.`);
  } catch (err) {
    setStatus(`Failed: ${err.message}`, true);
  } finally {
    $("submit").disabled = false;
  }
});

function setStatus(text, error = false) {
  $("status").textContent = text;
  $("status").className = error ? "error" : "";
}

function fmtTime(t) {
  const m = Math.floor(t / 60);
  return `${m}:${(t - 60 * m).toFixed(1).padStart(4, "0")}`;
}

function fmt(value, digits = 0) {
  return value === null || value === undefined ? "–" : Number(value).toFixed(digits);
}

function show(doc) {
  $("result").hidden = false;
  $("summary").textContent = `${doc.file} · ${doc.language || "?"} · ${doc.duration.toFixed(1)} s · ${doc.text}`;
  const body = $("segments").tBodies[0];
  body.replaceChildren();
  for (const seg of doc.segments) {
    const state = seg.audio_state || {};
    const prosody = state.prosody || {};
    const emotion = state.emotion;
    const row = body.insertRow();
    row.dataset.segment = seg.id;
    const cells = [
      [`${fmtTime(seg.start)}–${fmtTime(seg.end)}`, "num"],
      [seg.text.trim(), ""],
      [state.rendering || "", "how"],
      [fmt(prosody.pitch && prosody.pitch.mean_hz), "num pitch"],
      [fmt(prosody.energy && prosody.energy.rms_db, 1), "num energy"],
      [emotion ? [emotion.arousal, emotion.valence, emotion.dominance].map((v) => fmt(v, 2)).join(" / ") : "–",
        "num"],
    ];
    for (const [text, cls] of cells) {
      const cell = row.insertCell();
      cell.textContent = text;
      cell.className = cls;
    }
  }
  plot(doc);
}

// Pitch (left axis, Hz) and energy (right axis, dB) at each segment's midpoint, over the recording's time.
function plot(doc) {
  const canvas = $("plot");
  const ctx = canvas.getContext("2d");
  const W = canvas.width, H = canvas.height, pad = { l: 52, r: 52, t: 14, b: 30 };
  ctx.clearRect(0, 0, W, H);
  const points = doc.segments.map((s) => {
    const p = (s.audio_state && s.audio_state.prosody) || {};
    return {
      t: (s.start + s.end) / 2,
      pitch: p.pitch ? p.pitch.mean_hz : null,
      energy: p.energy ? p.energy.rms_db : null,
    };
  });
  const series = [
    { key: "pitch", color: PITCH, label: "pitch (Hz)", axis: "left", dash: [] },
    { key: "energy", color: ENERGY, label: "energy (dB)", axis: "right", dash: [6, 4] },
  ];
  const x = (t) => pad.l + (t / Math.max(doc.duration, 1e-6)) * (W - pad.l - pad.r);
  ctx.strokeStyle = "#999";
  ctx.strokeRect(pad.l, pad.t, W - pad.l - pad.r, H - pad.t - pad.b);
  ctx.fillStyle = "#333";
  ctx.font = "12px sans-serif";
  ctx.textAlign = "center";
  for (let i = 0; i <= 5; i++) {
    const t = (doc.duration * i) / 5;
    ctx.fillText(`${t.toFixed(1)} s`, x(t), H - 10);
  }
  let drawn = 0;
  const legend = [];
  for (const s of series) {
    const pts = points.filter((p) => p[s.key] !== null && p[s.key] !== undefined);
    if (!pts.length) continue;
    let lo = Math.min(...pts.map((p) => p[s.key])), hi = Math.max(...pts.map((p) => p[s.key]));
    if (hi - lo < 1e-6) { lo -= 1; hi += 1; }
    const y = (v) => pad.t + (1 - (v - lo) / (hi - lo)) * (H - pad.t - pad.b);
    ctx.strokeStyle = ctx.fillStyle = s.color;
    ctx.lineWidth = 2;
    ctx.setLineDash(s.dash); // dashed energy stays visible where the two lines coincide
    ctx.beginPath();
    pts.forEach((p, i) => (i ? ctx.lineTo(x(p.t), y(p[s.key])) : ctx.moveTo(x(p.t), y(p[s.key]))));
    ctx.stroke();
    ctx.setLineDash([]);
    for (const p of pts) {
      ctx.beginPath();
      ctx.arc(x(p.t), y(p[s.key]), 3, 0, 2 * Math.PI);
      ctx.fill();
    }
    ctx.textAlign = s.axis === "left" ? "right" : "left";
    const ax = s.axis === "left" ? pad.l - 6 : W - pad.r + 6;
    ctx.fillText(hi.toFixed(0), ax, pad.t + 10);
    ctx.fillText(lo.toFixed(0), ax, H - pad.b);
    drawn += pts.length;
    legend.push(s);
  }
  canvas.dataset.points = String(drawn);
  // Built as elements, not markup: the page's content security policy allows no inline styles.
  const box = $("legend");
  box.replaceChildren();
  if (!drawn) {
    box.textContent = "No prosody in this transcript (enrichment off, or nothing could be measured).";
  }
  for (const s of drawn ? legend : []) {
    const swatch = document.createElement("i");
    swatch.className = "swatch";
    swatch.style.background = s.color;
    const item = document.createElement("span");
    item.append(swatch, s.label);
    box.append(item);
  }
}
