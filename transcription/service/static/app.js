// The page: send a recording to /v1/audio/transcriptions (or open a saved transcript and its recording),
// then review it: listen line by line (player.js), who spoke when (timeline.js), pitch and energy (chart.js),
// why a feature is missing (notes.js), export with the names given (exports.js). Plain browser JavaScript in
// classic scripts sharing one scope, no build step and no external assets. Live mode is live.js.
"use strict";

const $ = (id) => document.getElementById(id);
const page = { doc: null };

$("apikey").value = localStorage.getItem("slower-whisper-key") || "";

function setStatus(text, error = false) {
  $("status").textContent = text;
  $("status").className = error ? "error" : "";
}

function fmtTime(t) {
  const h = Math.floor(t / 3600);
  const m = Math.floor((t % 3600) / 60);
  const s = (t - 3600 * h - 60 * m).toFixed(1).padStart(4, "0");
  return h ? `${h}:${String(m).padStart(2, "0")}:${s}` : `${m}:${s}`;
}

function fmt(value, digits = 0) {
  return value === null || value === undefined ? "–" : Number(value).toFixed(digits);
}

// The form's fields, named as the API names them (docs/service.md).
function uploadForm(file) {
  const form = new FormData();
  form.append("file", file, file.name);
  form.append("model", "whisper-1");
  form.append("response_format", "slower_whisper_json");
  form.append("enrich", $("enrich").checked ? "true" : "false");
  const language = $("language").value.trim();
  if (language) form.append("language", language);
  form.append("diarize", $("diarize").checked ? "true" : "false");
  if ($("diarize").checked) {
    for (const [field, id] of [["num_speakers", "num-speakers"], ["min_speakers", "min-speakers"], ["max_speakers", "max-speakers"]]) {
      const value = $(id).value.trim();
      if (value) form.append(field, value);
    }
  }
  return form;
}

function speakerFieldsEnabled() {
  for (const id of ["num-speakers", "min-speakers", "max-speakers"]) $(id).disabled = !$("diarize").checked;
}
$("diarize").addEventListener("change", speakerFieldsEnabled);
speakerFieldsEnabled();

$("upload").addEventListener("submit", async (event) => {
  event.preventDefault();
  const file = $("file").files[0];
  if (!file) return;
  const key = $("apikey").value.trim();
  localStorage.setItem("slower-whisper-key", key);
  setStatus(`Transcribing ${file.name}…`);
  $("submit").disabled = true;
  try {
    const response = await fetch("/v1/audio/transcriptions", {
      method: "POST",
      body: uploadForm(file),
      headers: key ? { Authorization: `Bearer ${key}` } : {},
    });
    const body = await response.json();
    if (!response.ok) {
      const retry = response.headers.get("Retry-After");
      const message = (body.error && body.error.message) || response.statusText;
      throw new Error(message + (retry ? ` (retry in ${retry} s)` : ""));
    }
    show(body);
    setAudio(file); // the recording just sent, kept in the browser
    setStatus(`Done: ${body.segments.length} segments, ${body.duration.toFixed(1)} s of audio.`);
  } catch (err) {
    setStatus(`Failed: ${err.message}`, true);
  } finally {
    $("submit").disabled = false;
  }
});

// A transcript saved earlier (whisper_json/<stem>.json, a job's result): shown as if just transcribed; its
// recording is chosen separately.
$("open-doc").addEventListener("change", async () => {
  const file = $("open-doc").files[0];
  if (!file) return;
  try {
    const doc = JSON.parse(await file.text());
    if (!doc || !Array.isArray(doc.segments)) throw new Error("not a transcript: it has no segments");
    show(doc);
    setAudio(null);
    setStatus(`Opened ${file.name}: ${doc.segments.length} segments.`);
  } catch (err) {
    setStatus(`Could not open ${file.name}: ${err.message}`, true);
  }
});

$("open-audio").addEventListener("change", () => {
  const file = $("open-audio").files[0];
  if (!file) return;
  setAudio(file);
  setStatus(`Recording ${file.name} ready: click a line to hear it.`);
});

function show(doc) {
  page.doc = doc;
  $("result").hidden = false;
  const duration = Number(doc.duration) || 0;
  $("summary").textContent = `${doc.file || "transcript"} · ${doc.language || "?"} · ${duration.toFixed(1)} s · ${doc.segments.length} lines`;
  speakerNames.clear(); // names given belong to the document they were given in
  const speakers = speakerList(doc);
  showWhyNot(doc);
  showLines(doc, speakers);
  resetPlayer(doc);
  showTimeline(doc, speakers);
  showExports(doc);
}

function renameSpeaker(id, name) {
  const clean = name.trim();
  if (clean) speakerNames.set(id, clean);
  else speakerNames.delete(id);
  renameInLines(id);
}

$("segments").tBodies[0].addEventListener("click", (event) => {
  const row = event.target.closest("tr");
  if (row && !window.getSelection().toString()) playLine(Number(row.dataset.index));
});
$("overview").addEventListener("click", (event) => onTrackClick(event));
$("zoom").addEventListener("change", () => {
  timeline.span = Number($("zoom").value) || 0;
  setView((player.el.currentTime || 0) - 0.1 * (timeline.span || 0));
});
$("exports").addEventListener("click", (event) => {
  const button = event.target.closest("button[data-format]");
  if (button && page.doc) exportAs(page.doc, button.dataset.format);
});
window.addEventListener("resize", () => { if (page.doc) plot(page.doc, timeline.view); });
