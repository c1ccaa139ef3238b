// Browser client for /ws/asr-stream (STREAMING.md): microphone → AudioWorklet
// (16 kHz 16-bit mono PCM in 100 ms frames) → WebSocket → transcript on the page.
// Message `type` strings are the server's (app/messages.py).
"use strict";

const TARGET_RATE = 16000;
const FRAME_SAMPLES = 1600; // 100 ms at 16 kHz
const WORKLET_URL = "/static/pcm-worklet.js";
const STREAM_PATH = "/ws/asr-stream";

// Resuming a dropped stream (STREAMING.md, "Resuming a stream"; the Python client's
// clients/resume.py does the same): keep the PCM sent after the `end` of the last
// final, and when the connection ends without `complete`, reconnect with
// stream_offset_sec = that end, resend it, then go on with the microphone.
const KEEP_SAMPLES = 60 * TARGET_RATE; // the server's 25 s buffer cap + 30 s queue, rounded up
const MAX_ATTEMPTS = 5; // reconnects in a row without a new final
const FIRST_DELAY_MS = 250; // doubles each attempt, jittered down to half, at most 8 s
const MAX_DELAY_MS = 8000;
const NODE_ERRORS = new Set(["shutting_down", "server_full", "google_quota_exceeded"]);
const REFUSING_CLOSES = new Set([1002, 1003, 1007, 1008, 1009, 1010]);
// Notices that belong to a drain's cut: the audio they name is kept and resent.
const CUT_NOTICES = new Set(["shutting_down", "audio_after_stop", "already_stopped"]);

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

// idle, connecting, streaming, reconnecting, finishing, done, error
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
    flushed: false, // the worklet handed over its last frame: `stop` follows the audio
    completed: false,
    finished: false,
    lastError: null,
    // Resume bookkeeping, in samples of the whole stream (all connections).
    kept: [], // Int16Array frames after the last final's end
    keptStart: 0, // stream sample of kept[0]
    sentSamples: 0, // stream samples recorded so far
    confirmed: 0, // stream sample of the last final's end
    started: false, // a session started (metadata came): from then on, cuts are resumed
    live: false, // this connection may take live frames (its kept audio went first)
    draining: false, // this connection's node sent `shutting_down`
    attempt: 0, // reconnects since the last new final
    resumed: false, // this connection continues a transcript
    separate: false, // its first final needs its separating space back
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
      s.flushed = true;
      sendStop(s);
    } else if (!s.stopSent) {
      keep(s, data); // kept first: a frame lost with the connection is resent
      // ArrayBuffer: a binary frame of Int16 little-endian PCM
      if (s.live && s.ws.readyState === WebSocket.OPEN) s.ws.send(data);
    }
  };
  for (const track of s.media.getAudioTracks()) track.onended = () => stop();
  connect(s, 0);
}

function connect(s, offsetSamples) {
  const key = ui.apiKey.value.trim();
  // Browsers cannot set headers on a WebSocket: the key goes as a subprotocol.
  const ws = key ? new WebSocket(streamUrl(), ["bearer", key]) : new WebSocket(streamUrl());
  s.ws = ws;
  s.opened = false;
  s.live = false;
  s.stopSent = false; // per connection: a resumed one sends `stop` again after its audio
  s.draining = false;
  s.lastError = null;
  ws.binaryType = "arraybuffer";
  ws.onopen = () => {
    s.opened = true;
    const config = streamConfig();
    if (s.resumed) config.stream_offset_sec = offsetSamples / TARGET_RATE;
    ws.send(JSON.stringify(config));
    // Audio may follow the config at once; the server reads it once the engine is ready.
    // A resumed stream first resends what no final covers yet (as fast as it goes: it
    // is backlog), then the microphone goes on where it is.
    for (const frame of s.kept) ws.send(frame);
    s.live = true;
    if (s.flushed) sendStop(s);
    if (!s.resumed) s.source.connect(s.node);
  };
  ws.onmessage = (event) => {
    if (s.ws === ws) onMessage(s, JSON.parse(event.data));
  };
  ws.onclose = (event) => {
    if (s.ws === ws) onClose(s, event);
  };
}

// A frame of the stream: kept until a final covers it, at most KEEP_SAMPLES.
function keep(s, buffer) {
  const frame = new Int16Array(buffer);
  s.kept.push(frame);
  s.sentSamples += frame.length;
  let kept = s.sentSamples - s.keptStart;
  while (kept > KEEP_SAMPLES && s.kept.length > 1) {
    const dropped = s.kept.shift(); // past the bound: the oldest goes (named on a resume)
    s.keptStart += dropped.length;
    kept -= dropped.length;
  }
}

// A final ending at `end` seconds of stream time: its audio is never resent.
function confirm(s, end) {
  const upto = Math.min(Math.round(end * TARGET_RATE), s.sentSamples);
  if (upto <= s.confirmed) return;
  s.confirmed = upto;
  while (s.kept.length && s.keptStart < upto) {
    const head = s.kept[0];
    const covered = upto - s.keptStart;
    if (covered >= head.length) {
      s.kept.shift();
      s.keptStart += head.length;
    } else {
      s.kept[0] = head.slice(covered);
      s.keptStart = upto;
    }
  }
  if (!s.kept.length) s.keptStart = Math.max(s.keptStart, upto);
}

// Why this connection ended, or null when the stream must not be resumed.
function cutReason(s, event) {
  const code = s.lastError && !s.draining ? s.lastError.code : null;
  if (s.draining) return `node draining (${event.code}, shutting_down)`;
  if (!s.opened) return "cannot connect"; // a refused handshake (a 503) looks the same
  if (code && NODE_ERRORS.has(code)) return `server busy (${event.code}, ${code})`;
  if (code || REFUSING_CLOSES.has(event.code)) return null; // refused: resending will not help
  return event.code === 1006 ? "connection lost (1006)" : `closed (${event.code})`;
}

function resume(s, reason) {
  s.attempt += 1;
  const seconds = (s.keptStart / TARGET_RATE).toFixed(2);
  if (s.attempt > MAX_ATTEMPTS) {
    finish(s, "error", `gave up resuming after ${MAX_ATTEMPTS} reconnects (the last: ${reason}); ` +
      `the transcript covers the audio up to ${(s.confirmed / TARGET_RATE).toFixed(2)} s.`);
    return;
  }
  let note = "";
  if (s.keptStart > s.confirmed) {
    const from = (s.confirmed / TARGET_RATE).toFixed(2);
    note = ` (audio ${from}–${seconds} s was not kept: words there are lost)`;
    s.confirmed = s.keptStart; // said once
  }
  const step = Math.min(MAX_DELAY_MS, FIRST_DELAY_MS * 2 ** (s.attempt - 1));
  const delay = step * (0.5 + 0.5 * Math.random());
  setStatus("reconnecting", `${reason}; resuming at ${seconds} s, attempt ${s.attempt}/${MAX_ATTEMPTS}${note}`);
  ui.interim.textContent = ""; // void: the new connection hears that audio again
  setTimeout(() => {
    if (s.finished) return;
    s.resumed = true;
    s.separate = ui.transcript.textContent.length > 0;
    connect(s, s.keptStart);
  }, delay);
}

function onMessage(s, msg) {
  switch (msg.type) {
    case "metadata":
      s.started = true;
      if (!s.stopping) setStatus("streaming", `${msg.backend} ${msg.model}, ${msg.language_code}`);
      else setStatus("finishing");
      break;
    case "transcript":
      if (msg.is_final) {
        confirm(s, msg.end);
        s.attempt = 0; // progress: the reconnect budget starts over
        let text = msg.text;
        // Finals concatenate as sent: each later one carries its leading space, and so
        // does a resumed session's first (an older server stripped it: put it back).
        if (s.separate && text && !/^\s/.test(text)) text = " " + text;
        s.separate = false;
        ui.transcript.textContent += text;
        ui.interim.textContent = "";
      } else {
        ui.interim.textContent = msg.text; // replaces the previous interim
      }
      break;
    case "error":
      if (msg.code === "shutting_down" && s.started) s.draining = true;
      if (s.draining && CUT_NOTICES.has(msg.code)) break; // the node's end, not the stream's
      // A fatal error is followed by a close, which reports it; a non-fatal one is shown now.
      s.lastError = msg;
      if (!s.stopping) setStatus("streaming", `warning: ${msg.detail}`);
      break;
    case "complete":
      if (s.draining) break; // a drained node's: the stream goes on elsewhere
      s.completed = true;
      ui.interim.textContent = "";
      break;
  }
}

function onClose(s, event) {
  if (s.finished) return;
  // Once a session has started, a connection that ends without `complete` is resumed.
  const reason = !s.completed && s.started ? cutReason(s, event) : null;
  if (reason) {
    resume(s, reason);
  } else if (s.completed) {
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
  if (s.stopSent || !s.live || !s.ws || s.ws.readyState !== WebSocket.OPEN) return;
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
  if (s.started && s.ws && s.ws.readyState !== WebSocket.OPEN) {
    // Reconnecting: the last frame and `stop` go once the stream is resumed.
    setStatus("finishing");
    s.node.port.postMessage("flush");
    return;
  }
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
