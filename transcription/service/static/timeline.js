// Who spoke when: one lane per speaker with its turns as bars (overlaps show as bars at the same time in
// two lanes, and in their own lane), each speaker's name box, talk time and share; below, pitch and energy
// (chart.js) on the same time axis. The view is the whole recording or a window of it; a window follows
// playback a page at a time, so bars are laid out again only when the view changes, never per frame.
"use strict";

const timeline = {
  doc: null,
  duration: 0,
  view: { start: 0, end: 1 },
  span: 0, // 0: the whole recording; else the window's length in seconds
  bars: [], // [element, start, end] of every bar, for laying out again when the view changes
  playheads: [],
};

function showTimeline(doc, speakers) {
  timeline.doc = doc;
  timeline.duration = docDuration(doc);
  timeline.span = Number($("zoom").value) || 0;
  timeline.bars = [];
  const box = $("speakers");
  box.replaceChildren();
  box.hidden = speakers.length === 0;
  const turns = speakerTurns(doc);
  const times = talkTimes(speakers, turns);
  speakers.forEach((s, i) => box.append(speakerLane(s, times[i], speakers, turns)));
  if (speakers.length > 1) box.append(overlapLane(overlaps(turns)));
  timeline.playheads = [...document.querySelectorAll("#overview .track")].map((track) => {
    const head = document.createElement("i");
    head.className = "playhead";
    track.append(head);
    return head;
  });
  setView(0);
}

function docDuration(doc) {
  return Number(doc.duration) || Math.max(0, ...doc.segments.map((s) => Number(s.end) || 0)) || 1;
}

function speakerLane(s, time, speakers, turns) {
  const colour = speakerColour(speakers, s.id);
  const lane = document.createElement("div");
  lane.className = "lane speaker-lane";
  lane.dataset.speaker = s.id;
  lane.dataset.totalS = time.total.toFixed(3);
  lane.dataset.share = time.share.toFixed(4);
  const label = document.createElement("label");
  label.className = "lane-label speaker-item";
  const swatch = document.createElement("i");
  swatch.className = "swatch";
  swatch.style.background = colour;
  const name = document.createElement("input");
  name.type = "text";
  name.className = "speaker-name";
  name.dataset.speaker = s.id;
  name.value = speakerName(s.id);
  name.setAttribute("aria-label", `name for ${s.id}`);
  name.addEventListener("input", () => renameSpeaker(s.id, name.value));
  const total = document.createElement("span");
  total.className = "speaker-time";
  total.textContent = `${fmtSeconds(time.total)} · ${Math.round(100 * time.share)}%`;
  label.append(swatch, name, total);
  const own = turns.filter((t) => t.speaker === s.id);
  lane.append(label, track(own, colour, `turns of ${s.id}`));
  return lane;
}

function overlapLane(stretches) {
  const lane = document.createElement("div");
  lane.className = "lane overlap-lane";
  lane.dataset.totalS = unionSeconds(stretches).toFixed(3);
  const label = document.createElement("span");
  label.className = "lane-label";
  label.textContent = `Overlap · ${fmtSeconds(unionSeconds(stretches))}`;
  lane.append(label, track(stretches, "#555", "two or more speakers at once"));
  return lane;
}

function track(intervals, colour, title) {
  const box = document.createElement("div");
  box.className = "track";
  for (const t of intervals) {
    const bar = document.createElement("b");
    bar.className = "turn";
    bar.style.background = colour;
    bar.dataset.start = t.start;
    bar.dataset.end = t.end;
    bar.title = `${fmtTime(t.start)}–${fmtTime(t.end)} ${title}`;
    box.append(bar);
    timeline.bars.push([bar, t.start, t.end]);
  }
  return box;
}

function fmtSeconds(s) {
  if (s < 60) return `${s.toFixed(1)} s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m} min ${Math.round(s - 60 * m)} s`;
  return `${Math.floor(m / 60)} h ${String(m % 60).padStart(2, "0")} min`;
}

// Show [start, start + span) (the whole recording when the span is 0) and lay the bars, the axis and the
// chart out for it.
function setView(start) {
  const span = timeline.span && timeline.span < timeline.duration ? timeline.span : timeline.duration;
  const from = Math.max(0, Math.min(start, timeline.duration - span));
  timeline.view = { start: from, end: from + span };
  for (const [bar, a, b] of timeline.bars) {
    const visible = b > from && a < from + span;
    bar.hidden = !visible;
    if (!visible) continue;
    bar.style.left = `${(100 * (a - from)) / span}%`;
    bar.style.width = `${(100 * (b - a)) / span}%`;
  }
  drawAxis($("axis"), from, from + span);
  plot(timeline.doc, timeline.view);
  movePlayhead(player.el.currentTime || 0);
}

// Time ticks along [start, end] (seconds), under the lanes of the review view or of the live view.
function drawAxis(axis, start, end) {
  axis.replaceChildren();
  const step = tickStep((end - start) / 6);
  for (let t = Math.ceil(start / step) * step; t <= end + 1e-9; t += step) {
    const tick = document.createElement("span");
    tick.className = t - start < step / 2 ? "tick first" : end - t < step / 2 ? "tick last" : "tick";
    tick.style.left = `${(100 * (t - start)) / (end - start)}%`;
    tick.textContent = fmtClock(t);
    axis.append(tick);
  }
}

function tickStep(rough) {
  const steps = [0.5, 1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600];
  return steps.find((s) => s >= rough) || 7200;
}

function fmtClock(t) {
  const h = Math.floor(t / 3600), m = Math.floor((t % 3600) / 60), s = Math.round(t % 60 * 10) / 10;
  const ss = String(Math.floor(s)).padStart(2, "0") + (s % 1 ? `.${Math.round((s % 1) * 10)}` : "");
  return h ? `${h}:${String(m).padStart(2, "0")}:${ss}` : `${m}:${ss}`;
}

// Per frame of playback: the playheads move (one style write each); the view turns a page when the
// playhead leaves it.
function movePlayhead(t) {
  const { start, end } = timeline.view;
  if (timeline.span && (t < start || t > end)) {
    setView(t - 0.1 * (end - start));
    return;
  }
  const left = `${(100 * (t - start)) / (end - start)}%`;
  for (const head of timeline.playheads) head.style.left = left;
}

// A click on a bar plays its turn from the start; on the track elsewhere, from that time.
function onTrackClick(event) {
  const trackBox = event.target.closest(".track");
  if (!trackBox) return;
  const bar = event.target.closest(".turn");
  const { start, end } = timeline.view;
  const rect = trackBox.getBoundingClientRect();
  const t = bar ? Number(bar.dataset.start) : start + ((event.clientX - rect.left) / rect.width) * (end - start);
  playFrom(t);
}
