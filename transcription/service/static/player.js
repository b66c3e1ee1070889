// Listening: the recording plays in the page from a blob URL (the file uploaded, or the one chosen for a
// transcript opened from disk; nothing is sent anywhere). The media element gets the URL at the first play,
// so a transcript only read is never loaded into the player; the timeline's tracks are its seek bar. The line being played is highlighted and kept
// in view; while playing, each animation frame only finds the line at the current time (a binary search)
// and moves the playheads; rows change class only when the line changes.
"use strict";

const player = {
  el: $("player"),
  url: null,
  starts: [], // segment start times, in order, for the search
  ends: [],
  current: -1, // index of the highlighted line
  frame: 0,
};

function setAudio(file) {
  player.el.pause();
  if (player.url) URL.revokeObjectURL(player.url);
  player.url = file ? URL.createObjectURL(file) : null;
  player.el.removeAttribute("src");
  player.el.load();
  $("player-bar").classList.toggle("no-audio", !file);
  $("audio-name").textContent = file ? file.name : "No recording: choose its audio file (Its recording) to listen.";
  showClock(0);
}

function showClock(t) {
  const text = `${fmtTime(t)} / ${fmtTime(timeline.duration || 0)}`;
  if ($("clock").textContent !== text) $("clock").textContent = text;
}

function resetPlayer(doc) {
  player.starts = doc.segments.map((s) => Number(s.start));
  player.ends = doc.segments.map((s) => Number(s.end));
  player.current = -1;
}

// The line whose time holds t, else -1 (between lines nothing is highlighted).
function lineAt(t) {
  let lo = 0, hi = player.starts.length - 1, found = -1;
  while (lo <= hi) {
    const mid = (lo + hi) >> 1;
    if (player.starts[mid] <= t) { found = mid; lo = mid + 1; } else hi = mid - 1;
  }
  return found >= 0 && t < player.ends[found] ? found : -1;
}

function highlight(index) {
  if (index === player.current) return;
  const old = lines.rows[player.current];
  if (old) old.classList.remove("playing");
  player.current = index;
  const row = lines.rows[index];
  if (!row) return;
  row.classList.add("playing");
  if ($("follow").checked) keepInView(row);
}

// Scroll the lines' own box (not the page) when the row is outside it.
function keepInView(row) {
  const box = $("lines");
  const top = row.getBoundingClientRect().top - box.getBoundingClientRect().top + box.scrollTop;
  if (top < box.scrollTop || top + row.offsetHeight > box.scrollTop + box.clientHeight) {
    box.scrollTop = Math.max(0, top - box.clientHeight / 3);
  }
}

function onTime() {
  const t = player.el.currentTime;
  highlight(lineAt(t));
  movePlayhead(t);
  showClock(t);
}

function tick() {
  onTime();
  player.frame = player.el.paused ? 0 : requestAnimationFrame(tick);
}

player.el.addEventListener("play", () => {
  $("play").textContent = "Pause";
  if (!player.frame) player.frame = requestAnimationFrame(tick);
});
player.el.addEventListener("pause", () => { $("play").textContent = "Play"; });
$("play").addEventListener("click", togglePlay);
$("speed").addEventListener("change", () => { player.el.defaultPlaybackRate = player.el.playbackRate = Number($("speed").value); });

function togglePlay() {
  if (player.el.paused) playFrom(player.el.currentTime || 0);
  else player.el.pause();
}
player.el.addEventListener("seeked", onTime);
player.el.addEventListener("timeupdate", () => { if (!player.frame) onTime(); });

function playFrom(t) {
  if (!player.url) {
    highlight(lineAt(t));
    setStatus("No recording to play: choose its audio file (Its recording) to listen.", true);
    return;
  }
  if (player.el.getAttribute("src") !== player.url) {
    player.el.src = player.url;
    player.el.defaultPlaybackRate = player.el.playbackRate = Number($("speed").value);
  }
  player.el.currentTime = t;
  onTime();
  const playing = player.el.play();
  if (playing) playing.catch((err) => setStatus(`Cannot play the recording: ${err.message}`, true));
}

function playLine(index) {
  if (index < 0 || index >= player.starts.length) return;
  highlight(index);
  playFrom(player.starts[index]);
}

// The line before or after the one being played (or the one the playback time has passed last).
function stepLine(direction) {
  let index = player.current;
  if (index < 0) {
    const t = player.el.currentTime || 0;
    index = player.starts.findIndex((s) => s > t);
    index = direction > 0 ? (index < 0 ? player.starts.length : index) - 1 : index < 0 ? player.starts.length : index;
  }
  playLine(Math.max(0, Math.min(player.starts.length - 1, index + direction)));
}

// Space plays or pauses, the arrows go to the previous and next line; not while typing in a field or on a
// control that uses the keys itself.
document.addEventListener("keydown", (event) => {
  if ($("result").hidden || event.altKey || event.ctrlKey || event.metaKey) return;
  if (event.target.closest("input, textarea, select, button, a")) return;
  if (event.key === " ") {
    event.preventDefault();
    togglePlay();
  } else if (event.key === "ArrowUp" || event.key === "ArrowLeft") {
    event.preventDefault();
    stepLine(-1);
  } else if (event.key === "ArrowDown" || event.key === "ArrowRight") {
    event.preventDefault();
    stepLine(1);
  }
});
