// Why not: for each feature the document could carry (speakers, prosody, its contour, emotion), the reason
// in words when it was not computed, taken from the document itself (`meta.diarization`, `audio_state.status`).
"use strict";

const FEATURE_NAMES = { prosody: "Prosody (pitch, energy, rate, pauses)", emotion: "Emotion" };

function statusWords(feature, status) {
  switch (status) {
    case "skipped":
      return `not computed: ${feature} was turned off for this transcript`;
    case "failed":
      return `${feature} failed`;
    case undefined:
    case null:
      return "not computed: this transcript was not enriched (Stage 2 did not run)";
    default:
      return "";
  }
}

// One note per feature that is missing on some lines, and per measurement left empty, with a count.
function whyNot(doc) {
  const notes = [];
  const speakers = speakerNote(doc);
  if (speakers) notes.push(speakers);
  const n = doc.segments.length;
  for (const feature of ["prosody", "emotion"]) {
    const counts = new Map(); // reason -> lines
    for (const seg of doc.segments) {
      const state = seg.audio_state || {};
      const status = (state.status || {})[feature];
      if (status === "ok") continue;
      const errors = ((state.status || {}).errors || []).filter((e) => e.startsWith(`${feature}:`));
      const reason = errors.length ? errors.join("; ") : statusWords(feature, status);
      counts.set(reason, (counts.get(reason) || 0) + 1);
    }
    for (const [reason, count] of counts) {
      notes.push({ feature, text: `${FEATURE_NAMES[feature]}: ${reason}${count < n ? ` (${count} of ${n} lines)` : ""}.` });
    }
  }
  const measured = doc.segments.filter((s) => s.audio_state && s.audio_state.prosody);
  if (measured.length && !measured.some((s) => s.audio_state.prosody.contour)) {
    notes.push({
      feature: "contour",
      text: "Pitch and energy within lines: not in this transcript (enriched before contours were recorded); the chart shows one point per line.",
    });
  }
  notes.push(...valueNotes(doc));
  return notes;
}

function speakerNote(doc) {
  const diarization = (doc.meta || {}).diarization;
  if (Array.isArray(doc.speakers) && doc.speakers.length) return null;
  if (diarization && diarization.status === "failed") {
    return { feature: "speakers", text: `Speakers: failed: ${diarization.error || "no reason recorded"}.` };
  }
  if (doc.segments.some((s) => s.speaker)) return null;
  return { feature: "speakers", text: "Speakers: not computed: speakers were not asked for (tick Speakers before transcribing)." };
}

// Measurements that stayed empty although their feature ran: grouped by the field the error names.
function valueNotes(doc) {
  const byField = new Map();
  for (const seg of doc.segments) {
    const status = (seg.audio_state || {}).status || {};
    for (const error of status.errors || []) {
      const colon = error.indexOf(":");
      const field = error.slice(0, colon);
      if (!field.includes(".")) continue; // a whole feature's failure: noted above
      const entry = byField.get(field) || { count: 0, example: error.slice(colon + 1).trim() };
      entry.count += 1;
      byField.set(field, entry);
    }
  }
  return [...byField].map(([field, e]) => ({
    feature: field,
    text: `${field} (${e.count} of ${doc.segments.length} lines): ${e.example}.`,
  }));
}

function showWhyNot(doc) {
  const list = $("why-not");
  list.replaceChildren();
  for (const note of whyNot(doc)) {
    const item = document.createElement("li");
    item.dataset.feature = note.feature;
    item.textContent = note.text;
    list.append(item);
  }
  list.hidden = !list.children.length;
}
