// Browser client for /ws/asr-stream (STREAMING.md): microphone → AudioWorklet
// (16 kHz 16-bit mono PCM in 100 ms frames) → WebSocket → transcript on the page.
// Message `type` strings are the server's (app/messages.py).
"use strict";

const TARGET_RATE = 16000;
const FRAME_SAMPLES = 1600; // 100 ms at 16 kHz
const WORKLET_URL = "/static/pcm-worklet.js";
const STREAM_PATH = "/ws/asr-stream";

const $ = (id) => document.getElementById(id);
const ui = {
  start: $("start"),
  stop: $("stop"),
  status: $("status"),
  transcript: $("transcript"),
  interim: $("interim"),
  language: $("language"),
  backend: $("backend"),
  model: $("model"),
  apiKey: $("api-key"),
};

let session = null; // the one running stream, or null

// The socket lives on the page's own server: ws:// for http pages, wss:// for https.
function streamUrl() {
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  return `${scheme}//${location.host}${STREAM_PATH}`;
}

// idle, connecting, streaming, finishing, done, error
function setStatus(state, detail) {
  ui.status.dataset.state = state;
  ui.status.textContent = detail ? `${state}: ${detail}` : state;
}

function setRunning(running) {
  ui.start.disabled = running;
  ui.stop.disabled = !running;
  for (const input of [ui.language, ui.backend, ui.model, ui.apiKey]) input.disabled = running;
}

function microphoneUnavailable() {
  if (navigator.mediaDevices && navigator.mediaDevices.getUserMedia) return null;
  const port = location.port ? `:${location.port}` : "";
  if (!window.isSecureContext) {
    return (
      `the microphone is not available at ${location.origin}: browsers only allow it on ` +
      `secure origins. Open http://localhost${port}/ or http://127.0.0.1${port}/ on this ` +
      "machine, or serve the page over HTTPS."
    );
  }
  return "this browser does not give pages access to a microphone.";
}

function microphoneError(err) {
  switch (err && err.name) {
    case "NotAllowedError":
    case "SecurityError":
      return (
        "permission to use the microphone was denied. Allow the microphone for this site " +
        "(the icon in the address bar, or the browser's site settings) and press Start again."
      );
    case "NotFoundError":
    case "OverconstrainedError":
      return "no microphone was found. Connect one and press Start again.";
    case "NotReadableError":
      return "the microphone could not be opened; another application may be using it.";
    default:
      return `the microphone could not be opened (${err && err.message ? err.message : err}).`;
  }
}

function streamConfig() {
  const config = {
    sample_rate_hertz: TARGET_RATE,
    encoding: "LINEAR16",
    interim_results: true,
  };
  const language = ui.language.value.trim();
  const model = ui.model.value.trim();
  if (language) config.language_code = language;
  if (ui.backend.value) config.backend = ui.backend.value;
  if (model) config.model = model;
  return config;
}

async function start() {
  if (session) return;
  const unavailable = microphoneUnavailable();
  if (unavailable) {
    setStatus("error", unavailable);
    return;
  }
  setRunning(true);
  ui.transcript.textContent = "";
  ui.interim.textContent = "";
  setStatus("connecting");
  // Created inside the click: the user gesture lets the AudioContext run.
  const context = new AudioContext();
  const s = {
    context,
    media: null,
    source: null,
    node: null,
    ws: null,
    stopping: false,
    opened: false,
    stopSent: false,
    completed: false,
    finished: false,
    lastError: null,
  };
  session = s;
  try {
    s.media = await navigator.mediaDevices.getUserMedia({
      audio: {
        channelCount: 1,
        // The recognizer wants the voice as it is: no processing meant for calls.
        echoCancellation: false,
        noiseSuppression: false,
        autoGainControl: false,
      },
    });
  } catch (err) {
    finish(s, "error", microphoneError(err));
    return;
  }
  if (s.finished) {
    for (const track of s.media.getTracks()) track.stop(); // stopped while we were asking
    return;
  }
  try {
    await context.audioWorklet.addModule(WORKLET_URL);
    await context.resume();
  } catch (err) {
    finish(s, "error", `audio capture could not start (${err.message || err}).`);
    return;
  }
  if (s.finished) return; // stopped meanwhile
  s.source = context.createMediaStreamSource(s.media);
  s.node = new AudioWorkletNode(context, "pcm-downsampler", {
    numberOfInputs: 1,
    numberOfOutputs: 0,
    channelCount: 1,
    channelCountMode: "explicit", // the graph mixes stereo down to mono
    processorOptions: { targetRate: TARGET_RATE, frameSamples: FRAME_SAMPLES },
  });
  s.node.port.onmessage = ({ data }) => {
    if (data === "flushed") {
      sendStop(s);
    } else if (!s.stopSent && s.ws.readyState === WebSocket.OPEN) {
      s.ws.send(data); // ArrayBuffer: a binary frame of Int16 little-endian PCM
    }
  };
  for (const track of s.media.getAudioTracks()) track.onended = () => stop();

  const key = ui.apiKey.value.trim();
  // Browsers cannot set headers on a WebSocket: the key goes as a subprotocol.
  s.ws = key ? new WebSocket(streamUrl(), ["bearer", key]) : new WebSocket(streamUrl());
  s.ws.binaryType = "arraybuffer";
  s.ws.onopen = () => {
    s.opened = true;
    s.ws.send(JSON.stringify(streamConfig()));
    // Audio may follow the config at once; the server reads it once the engine is ready.
    s.source.connect(s.node);
  };
  s.ws.onmessage = (event) => onMessage(s, JSON.parse(event.data));
  s.ws.onclose = (event) => onClose(s, event);
}

function onMessage(s, msg) {
  switch (msg.type) {
    case "metadata":
      if (!s.stopping) setStatus("streaming", `${msg.backend} ${msg.model}, ${msg.language_code}`);
      break;
    case "transcript":
      if (msg.is_final) {
        // Finals concatenate as sent: each later one carries its leading space.
        ui.transcript.textContent += msg.text;
        ui.interim.textContent = "";
      } else {
        ui.interim.textContent = msg.text; // replaces the previous interim
      }
      break;
    case "error":
      // A fatal error is followed by a close, which reports it; a non-fatal one is shown now.
      s.lastError = msg;
      if (!s.stopping) setStatus("streaming", `warning: ${msg.detail}`);
      break;
    case "complete":
      s.completed = true;
      ui.interim.textContent = "";
      break;
  }
}

function onClose(s, event) {
  if (s.completed) {
    finish(s, "done");
  } else if (s.lastError && event.code === 1013) {
    finish(s, "error", `busy: ${s.lastError.detail} (${s.lastError.code})`);
  } else if (s.lastError && event.code !== 1000) {
    finish(s, "error", `${s.lastError.detail} (${s.lastError.code})`);
  } else if (s.stopping && !s.stopSent) {
    finish(s, "idle");
  } else if (event.code === 1006 && !s.opened) {
    explainRefusal(s);
  } else {
    finish(s, "error", `the connection closed before the transcript was complete (code ${event.code}).`);
  }
}

// A browser sees no HTTP status of a refused handshake: ask /ready whether the
// node is full or draining (a 503 before the upgrade), and say "busy" if so.
async function explainRefusal(s) {
  try {
    const response = await fetch("/ready");
    const ready = await response.json();
    if (ready.accepting === false || ready.status === "draining") {
      const wait = ready.retry_after_sec ?? 5;
      finish(s, "error", `busy: the server takes no new session now; retry in ${wait} s.`);
      return;
    }
  } catch {
    // not reachable at all: the message below
  }
  finish(s, "error", `could not connect to ${streamUrl()}: the server is not reachable or refused ` +
    "the connection (if it requires an API key, enter one).");
}

function sendStop(s) {
  if (s.stopSent || !s.ws || s.ws.readyState !== WebSocket.OPEN) return;
  s.stopSent = true;
  s.ws.send(JSON.stringify({ type: "stop" }));
}

// Stop: no more audio; the server sends its last finals, `complete`, then closes.
function stop() {
  const s = session;
  if (!s || s.stopping) return;
  s.stopping = true;
  ui.stop.disabled = true;
  if (s.source) s.source.disconnect();
  if (s.media) for (const track of s.media.getTracks()) track.stop();
  if (!s.ws || s.ws.readyState !== WebSocket.OPEN) {
    // Nothing was streamed yet: just give up the connection attempt.
    if (s.ws) s.ws.close();
    finish(s, "idle");
    return;
  }
  setStatus("finishing");
  // The worklet hands over its partial frame, then "flushed", then we send stop.
  s.node.port.postMessage("flush");
}

function finish(s, state, detail) {
  if (s.finished) return;
  s.finished = true;
  if (s.source) s.source.disconnect();
  if (s.media) for (const track of s.media.getTracks()) track.stop();
  if (s.node) s.node.port.onmessage = null;
  if (s.ws && s.ws.readyState <= WebSocket.OPEN) s.ws.close();
  s.context.close().catch(() => {});
  if (session === s) session = null;
  setRunning(false);
  setStatus(state, detail);
}

// What the server offers: backends that can run here, and the defaults.
async function loadBackends() {
  try {
    const response = await fetch("/backends");
    if (!response.ok) return; // e.g. an API key is required: keep the built-in choice
    const info = await response.json();
    const usable = info.backends.filter((b) => b.usable);
    if (usable.length === 0) return;
    ui.backend.replaceChildren(
      ...usable.map((b) => new Option(b.name, b.name, false, b.name === info.default.backend)),
    );
    if (info.default.language_code) ui.language.value = info.default.language_code;
  } catch (err) {
    // Offline or not served by the service: the defaults in the page still work.
  }
}

// The WebRTC transport (webrtc.js) takes Start and Stop when it is chosen or running.
const webrtc = () => window.asrWebRTC;
ui.start.addEventListener("click", () => (webrtc()?.selected() ? webrtc().start() : start()));
ui.stop.addEventListener("click", () => (webrtc()?.running() ? webrtc().stop() : stop()));
$("endpoint").textContent = streamUrl();
const unavailable = microphoneUnavailable();
if (unavailable) setStatus("error", unavailable);
loadBackends();
