// The upload page: send a recording to /v1/audio/transcriptions (or open a saved transcript), then show
// the enriched transcript, who spoke each line, and a plot of pitch and energy per segment. Plain browser
// JavaScript, no build step and no external assets. Live mode is live.js.
"use strict";

const $ = (id) => document.getElementById(id);
const PITCH = "#1f77b4";
const ENERGY = "#d62728";
// Speaker colours, distinct and readable on white, in order of the document's speakers.
const SPEAKER_COLOURS = ["#1b6ca8", "#c0392b", "#2e8b57", "#8e44ad", "#d35400", "#16a085", "#7f6000", "#c2185b"];
const speakerNames = new Map(); // speaker id -> the name the user gave it (this page only)

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

// A transcript saved earlier (whisper_json/<stem>.json, a job's result): shown as if just transcribed.
$("open-doc").addEventListener("change", async () => {
  const file = $("open-doc").files[0];
  if (!file) return;
  try {
    const doc = JSON.parse(await file.text());
    if (!doc || !Array.isArray(doc.segments)) throw new Error("not a transcript: it has no segments");
    show(doc);
    setStatus(`Opened ${file.name}: ${doc.segments.length} segments.`);
  } catch (err) {
    setStatus(`Could not open ${file.name}: ${err.message}`, true);
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
  const duration = Number(doc.duration) || 0;
  $("summary").textContent = `${doc.file || "transcript"} · ${doc.language || "?"} · ${duration.toFixed(1)} s · ${doc.text || ""}`;
  speakerNames.clear(); // names given belong to the document they were given in
  const speakers = speakerList(doc);
  $("segments").classList.toggle("no-speakers", speakers.length === 0);
  showSpeakers(speakers);
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
      [seg.speaker ? speakerName(seg.speaker) : "", "speaker-col speaker"],
      [String(seg.text || "").trim(), ""],
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
    if (seg.speaker) {
      const cell = row.cells[1];
      cell.dataset.speaker = seg.speaker;
      cell.style.color = speakerColour(speakers, seg.speaker);
      row.dataset.speaker = seg.speaker;
    }
  }
  plot(doc);
}

// ---------------------------------------------------------------- speakers

// The document's speakers (`speakers: [{id, total_s}]`), else those its segments name, in order of appearance.
function speakerList(doc) {
  const listed = Array.isArray(doc.speakers) ? doc.speakers.filter((s) => s && s.id) : [];
  const seen = new Set(listed.map((s) => s.id));
  for (const seg of doc.segments) {
    if (seg.speaker && !seen.has(seg.speaker)) {
      seen.add(seg.speaker);
      listed.push({ id: seg.speaker, total_s: null });
    }
  }
  return listed;
}

function speakerName(id) {
  return speakerNames.get(id) || id;
}

function speakerColour(speakers, id) {
  const i = speakers.findIndex((s) => s.id === id);
  return SPEAKER_COLOURS[(i < 0 ? 0 : i) % SPEAKER_COLOURS.length];
}

// One line per speaker: its colour, a box to rename it (every line of that speaker follows), its time.
function showSpeakers(speakers) {
  const box = $("speakers");
  box.replaceChildren();
  box.hidden = speakers.length === 0;
  for (const s of speakers) {
    const item = document.createElement("label");
    item.className = "speaker-item";
    const swatch = document.createElement("i");
    swatch.className = "swatch";
    swatch.style.background = speakerColour(speakers, s.id);
    const name = document.createElement("input");
    name.type = "text";
    name.className = "speaker-name";
    name.dataset.speaker = s.id;
    name.value = speakerName(s.id);
    name.setAttribute("aria-label", `name for ${s.id}`);
    name.addEventListener("input", () => renameSpeaker(s.id, name.value));
    const time = document.createElement("span");
    time.className = "speaker-time";
    time.textContent = s.total_s === null || s.total_s === undefined ? "" : `${Number(s.total_s).toFixed(1)} s`;
    item.append(swatch, name, time);
    box.append(item);
  }
}

function renameSpeaker(id, name) {
  const clean = name.trim();
  if (clean) speakerNames.set(id, clean);
  else speakerNames.delete(id);
  for (const cell of document.querySelectorAll("#segments td.speaker")) {
    if (cell.dataset.speaker === id) cell.textContent = speakerName(id);
  }
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
  const duration = Number(doc.duration) || Math.max(0, ...doc.segments.map((s) => Number(s.end) || 0));
  const x = (t) => pad.l + (t / Math.max(duration, 1e-6)) * (W - pad.l - pad.r);
  ctx.strokeStyle = "#999";
  ctx.strokeRect(pad.l, pad.t, W - pad.l - pad.r, H - pad.t - pad.b);
  ctx.fillStyle = "#333";
  ctx.font = "12px sans-serif";
  ctx.textAlign = "center";
  for (let i = 0; i <= 5; i++) {
    const t = (duration * i) / 5;
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
