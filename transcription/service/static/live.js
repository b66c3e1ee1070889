// Live mode: the microphone streamed to /v1/realtime (OpenAI's Realtime transcription protocol); what the
// server sends is shown by live-view.js. The key goes in OpenAI's browser subprotocol, as browsers cannot set
// WebSocket headers.
"use strict";

const live = {
  ws: null,
  context: null,
  stream: null,
  open: new Set(), // items started and not yet completed
  uncommitted: new Set(), // items started and not yet committed
};

$("live-start").addEventListener("click", startLive);
$("live-stop").addEventListener("click", () => stopLive("Stopped."));

function setLiveStatus(text, error = false) {
  $("live-status").textContent = text;
  $("live-status").className = error ? "error" : "";
}

async function startLive() {
  const key = $("apikey").value.trim();
  localStorage.setItem("slower-whisper-key", key);
  $("live-start").disabled = true;
  $("live").hidden = false;
  resetLiveView();
  live.open.clear();
  live.uncommitted.clear();
  try {
    // The raw signal: the browser's voice-call processing (noise suppression, gain riding) distorts speech
    // more than it helps Whisper.
    live.stream = await navigator.mediaDevices.getUserMedia({
      audio: { channelCount: 1, echoCancellation: false, noiseSuppression: false, autoGainControl: false },
    });
    live.context = openContext();
    await live.context.audioWorklet.addModule("/static/capture-worklet.js");
  } catch (err) {
    stopLive(`No microphone: ${err.message}`, true);
    return;
  }
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  const protocols = ["realtime"];
  if (key) protocols.push(`openai-insecure-api-key.${key}`);
  const ws = new WebSocket(`${scheme}://${location.host}/v1/realtime?intent=transcription`, protocols);
  live.ws = ws;
  ws.addEventListener("open", () => {
    const transcription = { model: "whisper-1" };
    const language = $("language").value.trim();
    if (language) transcription.language = language;
    ws.send(JSON.stringify({
      type: "transcription_session.update",
      session: {
        input_audio_format: "pcm16",
        input_audio_transcription: transcription,
        turn_detection: { type: "server_vad" },
        slower_whisper: { enrich: $("enrich").checked },
      },
    }));
    capture(ws);
    $("live-stop").disabled = false;
    setLiveStatus("Listening…");
  });
  ws.addEventListener("message", (event) => onEvent(JSON.parse(event.data)));
  ws.addEventListener("close", (event) => {
    if (live.ws === ws) {
      const why = event.reason || (event.code === 1006 ? "the connection was refused or lost (check the API key)" : "");
      stopLive(why ? `Session closed: ${why}` : "Session closed.", event.code !== 1000);
    }
  });
}

// A context at 24 kHz, where the browser resamples the microphone itself; else the device's rate, and the
// worklet resamples.
function openContext() {
  try {
    return new AudioContext({ sampleRate: 24000 });
  } catch (err) {
    return new AudioContext();
  }
}

function capture(ws) {
  const source = live.context.createMediaStreamSource(live.stream);
  const node = new AudioWorkletNode(live.context, "capture-24k");
  node.port.onmessage = (event) => {
    if (ws.readyState !== WebSocket.OPEN) return;
    ws.send(JSON.stringify({ type: "input_audio_buffer.append", audio: base64(new Uint8Array(event.data)) }));
  };
  source.connect(node);
}

function base64(bytes) {
  let text = "";
  for (let i = 0; i < bytes.length; i += 0x8000) text += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  return btoa(text);
}

// Stop capturing; a turn still open is committed and its final line awaited briefly before closing.
function stopLive(message, error = false) {
  if (live.stream) live.stream.getTracks().forEach((t) => t.stop());
  if (live.context) live.context.close();
  live.stream = live.context = null;
  const ws = live.ws;
  live.ws = null;
  if (ws && ws.readyState === WebSocket.OPEN) {
    if (live.uncommitted.size) ws.send(JSON.stringify({ type: "input_audio_buffer.commit" }));
    const deadline = Date.now() + 10000;
    const wait = setInterval(() => {
      if (!live.open.size || Date.now() > deadline || ws.readyState !== WebSocket.OPEN) {
        clearInterval(wait);
        ws.close(1000, "stopped");
      }
    }, 100);
  }
  $("live-start").disabled = false;
  $("live-stop").disabled = true;
  setLiveStatus(message, error);
}

// Items are tracked from their first event to their completion, so that Stop can commit the one being
// spoken and wait for the last one's text.
function onEvent(event) {
  if (event.type === "error") {
    setLiveStatus(`Server: ${event.error.message}`, true);
    return;
  }
  if (!showLiveEvent(event)) return;
  const id = event.item_id;
  const row = liveView.items.get(id).row;
  if (!row.classList.contains("partial")) {
    live.open.delete(id); // completed or failed
    live.uncommitted.delete(id);
    return;
  }
  live.open.add(id);
  if (row.classList.contains("committed")) live.uncommitted.delete(id);
  else live.uncommitted.add(id);
}
