// The lines of the transcript: one table row per segment with its speaker, text, how it was said, pitch,
// energy and emotion; a value that was not measured shows "–" with the document's reason as its tooltip.
// Rows are built once per document; playback only moves the `playing` class (player.js).
"use strict";

const lines = {
  rows: [], // row per segment, in the document's order
  speakerCells: new Map(), // speaker id -> its cells, so a rename touches only those
};

function showLines(doc, speakers) {
  const table = $("segments");
  table.classList.toggle("no-speakers", speakers.length === 0);
  lines.rows = [];
  lines.speakerCells.clear();
  const body = document.createDocumentFragment();
  doc.segments.forEach((seg, index) => body.append(lineRow(seg, index, speakers)));
  table.tBodies[0].replaceChildren(body);
}

function lineRow(seg, index, speakers) {
  const row = segmentRow(seg, speakers);
  row.dataset.segment = seg.id;
  row.dataset.index = index;
  if (seg.speaker) {
    const cell = row.cells[1];
    if (!lines.speakerCells.has(seg.speaker)) lines.speakerCells.set(seg.speaker, []);
    lines.speakerCells.get(seg.speaker).push(cell);
  }
  lines.rows.push(row);
  return row;
}

// One line's row, as the review table and the live view both show it (`seg` as in the document:
// start/end in seconds, text, speaker, audio_state).
function segmentRow(seg, speakers) {
  const state = seg.audio_state || {};
  const status = state.status || {};
  const prosody = state.prosody || {};
  const emotion = state.emotion;
  const errors = Array.isArray(status.errors) ? status.errors : [];
  const row = document.createElement("tr");
  const pitch = prosody.pitch && prosody.pitch.mean_hz;
  const energy = prosody.energy && prosody.energy.rms_db;
  const emotionText = emotion ? [emotion.arousal, emotion.valence, emotion.dominance].map((v) => fmt(v, 2)).join(" / ") : "–";
  const cells = [
    [`${fmtTime(seg.start)}–${fmtTime(seg.end)}`, "num time", ""],
    [seg.speaker ? speakerName(seg.speaker) : "", "speaker-col speaker", ""],
    [String(seg.text || "").trim(), "text", ""],
    [state.rendering || "", "how", ""],
    [fmt(pitch), "num pitch", missing(pitch, "prosody.pitch", status.prosody, errors)],
    [fmt(energy, 1), "num energy", missing(energy, "prosody.energy", status.prosody, errors)],
    [emotionText, "num emotion", emotion ? "" : missing(null, "emotion", status.emotion, errors)],
  ];
  for (const [text, cls, why] of cells) {
    const cell = document.createElement("td");
    cell.textContent = text;
    cell.className = cls;
    if (why) cell.title = why;
    row.append(cell);
  }
  if (seg.speaker) {
    const cell = row.cells[1];
    cell.dataset.speaker = seg.speaker;
    cell.style.color = speakerColour(speakers, seg.speaker);
    row.dataset.speaker = seg.speaker;
  }
  return row;
}

// Why a value is missing, in the document's words: its error, or its feature's status.
function missing(value, path, featureStatus, errors) {
  if (value !== null && value !== undefined) return "";
  const feature = path.split(".")[0];
  const own = errors.filter((e) => e.startsWith(`${path}:`) || e.startsWith(`${path}.`) || e.startsWith(`${feature}:`));
  if (own.length) return own.join("\n");
  return statusWords(feature, featureStatus);
}

function renameInLines(id) {
  for (const cell of lines.speakerCells.get(id) || []) cell.textContent = speakerName(id);
}
