// Export what is on screen: the document with the names given to speakers applied everywhere (segments,
// words, turns, speakers), as TXT, SRT, VTT, RTTM or JSON, in the same layouts as the service's writers
// (transcription/writers.py). Made in the browser and saved from a blob: nothing is sent.
"use strict";

// A copy of the document with every speaker id replaced by its given name; two speakers given one name
// become one speaker, whose talk time is the union of their turns.
function renamedDocument(doc) {
  const out = structuredClone(doc);
  const name = (id) => (id ? speakerName(id) : id);
  for (const seg of out.segments) {
    if (seg.speaker) seg.speaker = name(seg.speaker);
    for (const w of seg.words || []) if (w.speaker) w.speaker = name(w.speaker);
  }
  if (Array.isArray(out.turns)) for (const t of out.turns) t.speaker = name(t.speaker);
  if (Array.isArray(out.speakers)) {
    const merged = new Map();
    for (const s of out.speakers) {
      const id = name(s.id);
      if (!merged.has(id)) merged.set(id, { id, total_s: s.total_s, sources: [s.id] });
      else merged.get(id).sources.push(s.id);
    }
    out.speakers = [...merged.values()].map((m) => {
      if (m.sources.length === 1 || !Array.isArray(doc.turns)) return { id: m.id, total_s: m.total_s };
      const turns = doc.turns.filter((t) => m.sources.includes(t.speaker));
      return { id: m.id, total_s: Math.round(unionSeconds(turns) * 1000) / 1000 };
    });
  }
  return out;
}

function clock(seconds, sep) {
  let ms = Math.round(Math.max(0, seconds) * 1000);
  const h = Math.floor(ms / 3600000); ms -= h * 3600000;
  const m = Math.floor(ms / 60000); ms -= m * 60000;
  const s = Math.floor(ms / 1000); ms -= s * 1000;
  const two = (n) => String(n).padStart(2, "0");
  return `${two(h)}:${two(m)}:${two(s)}${sep}${String(ms).padStart(3, "0")}`;
}

const words = (text) => String(text).split(/\s+/).filter(Boolean).join(" ");
const cueText = (seg) => words(seg.text || "").replaceAll("-->", "->");
const cueSpeaker = (seg) => (seg.speaker ? words(seg.speaker) : null);
const prefixed = (seg) => (cueSpeaker(seg) ? `${cueSpeaker(seg)}: ${cueText(seg)}` : cueText(seg));
const vttEscape = (text) => text.replaceAll("&", "&amp;").replaceAll("<", "&lt;");

const WRITERS = {
  txt: (doc) => doc.segments.map((seg) => {
    const rendering = (seg.audio_state || {}).rendering;
    return `[${clock(seg.start, ".")} --> ${clock(seg.end, ".")}] ${prefixed(seg)}${rendering ? ` ${rendering}` : ""}\n`;
  }).join(""),
  srt: (doc) => doc.segments.map((seg, i) => `${i + 1}\n${clock(seg.start, ",")} --> ${clock(seg.end, ",")}\n${prefixed(seg)}\n`).join("\n"),
  vtt: (doc) => ["WEBVTT\n", ...doc.segments.map((seg) => {
    let text = vttEscape(cueText(seg));
    if (cueSpeaker(seg)) text = `<v ${vttEscape(cueSpeaker(seg)).replaceAll(">", "&gt;")}>${text}`;
    return `${clock(seg.start, ".")} --> ${clock(seg.end, ".")}\n${text}\n`;
  })].join("\n"),
  rttm: (doc) => {
    const id = fileStem(doc).split(/\s+/).filter(Boolean).join("_") || "audio";
    return (doc.turns || []).map((t) => {
      const speaker = String(t.speaker).split(/\s+/).filter(Boolean).join("_");
      return `SPEAKER ${id} 1 ${t.start.toFixed(3)} ${Math.max(0, t.end - t.start).toFixed(3)} <NA> <NA> ${speaker} <NA> <NA>\n`;
    }).join("");
  },
  json: (doc) => `${JSON.stringify(doc, null, 2)}\n`,
};
const MEDIA_TYPES = { txt: "text/plain", srt: "application/x-subrip", vtt: "text/vtt", rttm: "text/plain", json: "application/json" };

function fileStem(doc) {
  const name = String(doc.file || "transcript").split("/").pop();
  const dot = name.lastIndexOf(".");
  return dot > 0 ? name.slice(0, dot) : name;
}

function exportAs(doc, format) {
  const text = WRITERS[format](renamedDocument(doc));
  const url = URL.createObjectURL(new Blob([text], { type: `${MEDIA_TYPES[format]};charset=utf-8` }));
  const link = document.createElement("a");
  link.href = url;
  link.download = `${fileStem(doc)}.${format}`;
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10000);
}

function showExports(doc) {
  const hasTurns = Array.isArray(doc.turns) && doc.turns.length > 0;
  for (const button of document.querySelectorAll("#exports button")) {
    const format = button.dataset.format;
    button.disabled = format === "rttm" && !hasTurns;
    button.title = button.disabled ? "RTTM lists speaker turns: this transcript has none" : `download ${format.toUpperCase()}`;
  }
}
