// Who spoke: the document's speakers in order, their colours, the names given in this page, their turns
// and talk time. Shared by the lines, the timeline and the exports; nothing here touches the page.
"use strict";

// Distinct and readable on white, in order of the document's speakers.
const SPEAKER_COLOURS = ["#1b6ca8", "#c0392b", "#2e8b57", "#8e44ad", "#d35400", "#16a085", "#7f6000", "#c2185b"];
const speakerNames = new Map(); // speaker id -> the name the user gave it (this page, this document only)

// The document's speakers (`speakers: [{id, total_s}]`), else those its turns or segments name, in order
// of appearance.
function speakerList(doc) {
  const listed = Array.isArray(doc.speakers) ? doc.speakers.filter((s) => s && s.id).map((s) => ({ ...s })) : [];
  const seen = new Set(listed.map((s) => s.id));
  const named = [...(Array.isArray(doc.turns) ? doc.turns : []), ...doc.segments];
  for (const item of named) {
    if (item && item.speaker && !seen.has(item.speaker)) {
      seen.add(item.speaker);
      listed.push({ id: item.speaker, total_s: null });
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

// The diarizer's turns at full resolution when the document has them, else runs of segments of one speaker.
function speakerTurns(doc) {
  if (Array.isArray(doc.turns) && doc.turns.length) {
    return doc.turns.filter((t) => t && t.speaker).map((t) => ({ speaker: t.speaker, start: +t.start, end: +t.end }));
  }
  const turns = [];
  for (const seg of doc.segments) {
    if (!seg.speaker) continue;
    const last = turns[turns.length - 1];
    if (last && last.speaker === seg.speaker && seg.start - last.end < 1.0) last.end = Math.max(last.end, +seg.end);
    else turns.push({ speaker: seg.speaker, start: +seg.start, end: +seg.end });
  }
  return turns;
}

// Seconds covered by a set of intervals (their union: one speaker's own turns may overlap).
function unionSeconds(intervals) {
  const sorted = intervals.map((t) => [t.start, t.end]).sort((a, b) => a[0] - b[0]);
  let total = 0, reach = -Infinity;
  for (const [start, end] of sorted) {
    const from = Math.max(start, reach);
    if (end > from) total += end - from;
    reach = Math.max(reach, end);
  }
  return total;
}

// Stretches where two or more speakers talk at once, from every speaker's turns.
function overlaps(turns) {
  const edges = [];
  for (const t of turns) {
    if (t.end > t.start) edges.push([t.start, 1, t.speaker], [t.end, -1, t.speaker]);
  }
  edges.sort((a, b) => a[0] - b[0] || a[1] - b[1]); // at a tie, an end before a start: touching is no overlap
  const open = new Map();
  const out = [];
  let since = null;
  for (const [time, step, speaker] of edges) {
    const before = open.size;
    open.set(speaker, (open.get(speaker) || 0) + step);
    if (!open.get(speaker)) open.delete(speaker);
    if (before < 2 && open.size >= 2) since = time;
    if (before >= 2 && open.size < 2 && time > since) out.push({ start: since, end: time });
  }
  return out;
}

// Each speaker's talk time: the document's `total_s` where it has one, else the union of their turns;
// share is of all speakers' talk time together (overlapping speech counts for each speaker in it).
function talkTimes(speakers, turns) {
  const totals = speakers.map((s) => {
    const given = s.total_s === null || s.total_s === undefined ? null : Number(s.total_s);
    return given !== null ? given : unionSeconds(turns.filter((t) => t.speaker === s.id));
  });
  const sum = totals.reduce((a, b) => a + b, 0);
  return speakers.map((s, i) => ({ id: s.id, total: totals[i], share: sum > 0 ? totals[i] / sum : 0 }));
}
