// The live view: what /v1/realtime sends (docs/service.md), laid out as the review view lays out a
// transcript. Each item (a stretch of speech the server commits on its own) is one line: its stable words
// (the deltas, appended) and then its revisable tail (`slower_whisper.tail`, shown apart, replaced by each
// delta event's tail); the item's `completed` transcript replaces both and fills in its time and prosody.
// The lines of one turn (the client's speech_started to its speech_stopped) are one group; a completed item
// is drawn on the "live" lane. Each event touches only its own line and at most one bar, so a long session
// stays responsive.
"use strict";

const LIVE_SPEAKERS = [{ id: "live" }]; // live audio is not diarized: one lane
// The lane's scale, in seconds: it steps up as the session grows, and only then are the bars laid out again.
const LIVE_SPANS = [60, 120, 300, 600, 1200, 1800, 3600, 7200, 14400, 28800, 86400];
const LINE_CLASSES = ["num time", "speaker-col speaker", "text", "how", "num pitch", "num energy", "num emotion"];

const liveView = {
  items: new Map(), // item id -> {row, stable (a text node), tail (an element), startS, endS}
  group: null, // the tbody of the turn being spoken
  bars: [], // [bar, start, end] of the completed items
  span: LIVE_SPANS[0],
  talk: 0, // seconds of speech in completed items
  following: true, // the lines box is kept at its newest line
  scrollPending: false,
  ownScroll: 0, // where the box's own last scroll left it
};

function resetLiveView() {
  liveView.items.clear();
  liveView.group = null;
  liveView.bars = [];
  liveView.span = LIVE_SPANS[0];
  liveView.talk = 0;
  liveView.following = true;
  liveView.ownScroll = 0;
  $("live-lines").replaceChildren();
  $("live-track").replaceChildren();
  $("live-total").textContent = fmtSeconds(0);
  drawAxis($("live-axis"), 0, liveView.span);
}

// One server event into the view; true when it was one of the item events it shows.
function showLiveEvent(event) {
  const shown = showItemEvent(event);
  if (shown) followLiveEnd();
  return shown;
}

function showItemEvent(event) {
  switch (event.type) {
    case "input_audio_buffer.speech_started":
      liveView.group = null; // a new turn: its first item opens a new group
      liveItem(event.item_id, msToS(event.audio_start_ms));
      return true;
    case "input_audio_buffer.speech_stopped":
      liveItem(event.item_id).endS = msToS(event.audio_end_ms);
      return true;
    case "input_audio_buffer.committed":
      liveItem(event.item_id).row.classList.add("committed");
      return true;
    case "conversation.item.input_audio_transcription.delta":
      liveDelta(liveItem(event.item_id), event);
      return true;
    case "conversation.item.input_audio_transcription.completed":
      liveCompleted(event.item_id, event);
      return true;
    case "conversation.item.input_audio_transcription.failed":
      liveFailed(liveItem(event.item_id), event.error.message);
      return true;
    default:
      return false;
  }
}

function msToS(ms) {
  return typeof ms === "number" ? ms / 1000 : null;
}

// The item's line, made at its first event: in the open turn's group (a later item of a turn has no
// speech_started of its own), or in a new group.
function liveItem(id, startS = null) {
  let item = liveView.items.get(id);
  if (item) return item;
  if (!liveView.group) liveView.group = liveTurn();
  const row = document.createElement("tr");
  row.className = "partial";
  row.dataset.item = id;
  for (const cls of LINE_CLASSES) {
    const cell = document.createElement("td");
    cell.className = cls;
    row.append(cell);
  }
  const stable = document.createTextNode("");
  const tail = document.createElement("span");
  tail.className = "tail";
  const stableBox = document.createElement("span");
  stableBox.className = "stable";
  stableBox.append(stable);
  row.cells[2].append(stableBox, tail);
  row.cells[1].textContent = speakerName("live");
  row.cells[1].style.color = speakerColour(LIVE_SPEAKERS, "live");
  if (startS !== null) row.cells[0].textContent = `${fmtTime(startS)}–`;
  item = { row, stable, tail, startS, endS: null };
  liveView.items.set(id, item);
  liveView.group.append(row);
  return item;
}

// A turn's lines: a table of its own in a box the browser skips laying out while it is off screen, so that
// a new line costs the same at the end of a long session as at its start (in one table of all the lines,
// every change laid out the whole table: frames grew to 150 ms after 1400 lines).
function liveTurn() {
  const box = document.createElement("div");
  box.className = "live-turn";
  const table = document.createElement("table");
  table.className = "line-table live-table";
  const body = document.createElement("tbody");
  table.append(body);
  box.append(table);
  $("live-lines").append(box);
  return body;
}

// Stable words are appended, never taken back; the tail after them is replaced whole.
function liveDelta(item, event) {
  if (event.delta) item.stable.appendData(event.delta);
  const extra = event.slower_whisper;
  if (!extra || typeof extra.tail !== "string") return;
  const tail = extra.tail;
  const gap = tail && item.stable.data && !/\s$/.test(item.stable.data) && !/^\s/.test(tail) ? " " : "";
  item.tail.textContent = gap + tail;
}

function liveCompleted(id, event) {
  const item = liveItem(id);
  const extra = event.slower_whisper || {};
  const startS = msToS(extra.start_ms) ?? item.startS ?? 0;
  const seconds = event.usage && typeof event.usage.seconds === "number" ? event.usage.seconds : 0;
  const endS = msToS(extra.end_ms) ?? item.endS ?? startS + seconds;
  const seg = { start: startS, end: endS, text: event.transcript, speaker: "live", audio_state: extra.audio_state };
  const row = segmentRow(seg, LIVE_SPEAKERS);
  row.className = "final";
  row.dataset.item = id;
  row.dataset.start = String(startS);
  row.dataset.end = String(endS);
  if (extra.end_of_turn !== undefined) row.dataset.endOfTurn = String(extra.end_of_turn);
  item.row.replaceWith(row);
  liveView.items.set(id, { ...item, row, startS, endS });
  addLiveBar(startS, endS, event.transcript);
}

function liveFailed(item, message) {
  item.row.className = "failed";
  item.tail.textContent = "";
  item.row.cells[2].textContent = `(failed: ${message})`;
}

// A completed item on the lane: one bar placed, unless the session outgrew the lane's scale.
function addLiveBar(start, end, text) {
  const bar = document.createElement("b");
  bar.className = "turn";
  bar.style.background = speakerColour(LIVE_SPEAKERS, "live");
  bar.dataset.start = start;
  bar.dataset.end = end;
  bar.title = `${fmtTime(start)}–${fmtTime(end)} ${text.trim()}`;
  $("live-track").append(bar);
  liveView.bars.push([bar, start, end]);
  liveView.talk += Math.max(0, end - start);
  $("live-total").textContent = fmtSeconds(liveView.talk);
  if (end > liveView.span) {
    liveView.span = LIVE_SPANS.find((s) => s >= end) || Math.ceil(end / 3600) * 3600;
    for (const [b, a, z] of liveView.bars) placeBar(b, a, z);
    drawAxis($("live-axis"), 0, liveView.span);
  } else {
    placeBar(bar, start, end);
  }
}

function placeBar(bar, start, end) {
  bar.style.left = `${(100 * start) / liveView.span}%`;
  bar.style.width = `${(100 * Math.max(0, end - start)) / liveView.span}%`;
}

// The lines box follows the newest line while the reader is at its end, and stays put once they scroll up.
// Whether they did is learnt from the box's scroll events (a scroll above its own last one), and the scroll
// is made once per frame: reading the box's height at every event would lay all the lines out each time. A
// turn first drawn as it comes into view can grow the box after the scroll: it is then made again, a few
// frames at most.
function followLiveEnd(tries = 3) {
  if (!liveView.following || liveView.scrollPending) return;
  liveView.scrollPending = true;
  requestAnimationFrame(() => {
    liveView.scrollPending = false;
    if (!liveView.following) return;
    const box = $("live-box");
    box.scrollTop = box.scrollHeight;
    liveView.ownScroll = box.scrollTop;
    if (tries > 1) requestAnimationFrame(() => { if (!atLiveEnd(box)) followLiveEnd(tries - 1); });
  });
}

function atLiveEnd(box) {
  return box.scrollHeight - box.scrollTop - box.clientHeight < 40;
}

$("live-box").addEventListener("scroll", () => {
  // Only the reader scrolls the box up: lines that change height or a clamped end never stop the following.
  const box = $("live-box");
  if (atLiveEnd(box)) liveView.following = true;
  else if (box.scrollTop < liveView.ownScroll - 2) liveView.following = false;
});
