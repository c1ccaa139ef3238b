// WebRTC transport for the page (app/webrtc.py, STREAMING.md "WebRTC"): the microphone
// as a WebRTC audio track (Opus), the native JSON messages on a data channel "asr".
// It reuses app.js's page helpers (ui, setStatus, setRunning, streamConfig…) but renders
// the messages itself: app.js's onMessage keeps WebSocket resume state this does not have.
// app.js hands Start and Stop here when the transport choice is WebRTC.
"use strict";

const WEBRTC_OFFER_PATH = "/webrtc/offer";
const WEBRTC_CHANNEL = "asr";
// No trickle: the offer goes with its candidates. Host candidates come at once (the
// page configures no STUN or TURN server; a browser whose network blocks UDP should
// use the WebSocket transport).
const ICE_GATHER_TIMEOUT_MS = 3000;

window.asrWebRTC = (() => {
  let rtc = null; // the running WebRTC session, or null

  const transport = document.getElementById("transport");
  const selected = () => !!transport && transport.value === "webrtc";

  function gathered(pc) {
    if (pc.iceGatheringState === "complete") return Promise.resolve();
    return new Promise((resolve) => {
      const done = () => {
        if (pc.iceGatheringState !== "complete") return;
        pc.removeEventListener("icegatheringstatechange", done);
        resolve();
      };
      pc.addEventListener("icegatheringstatechange", done);
      setTimeout(resolve, ICE_GATHER_TIMEOUT_MS); // send what was gathered
    });
  }

  // The messages as the WebSocket page shows them (STREAMING.md §4).
  function render(s, msg) {
    switch (msg.type) {
      case "metadata":
        if (!s.stopping) setStatus("streaming", `WebRTC, ${msg.backend} ${msg.model}, ${msg.language_code}`);
        break;
      case "transcript":
        if (msg.is_final) {
          ui.transcript.textContent += msg.text; // each later final carries its leading space
          ui.interim.textContent = "";
        } else {
          ui.interim.textContent = msg.text;
        }
        break;
      case "error":
        s.lastError = msg; // a fatal one is followed by the channel's close, which reports it
        if (!s.stopping) setStatus("streaming", `warning: ${msg.detail}`);
        break;
      case "complete":
        s.completed = true;
        ui.interim.textContent = "";
        end(s, "done");
        break;
    }
  }

  async function refusal(response) {
    let body = {};
    try {
      body = await response.json();
    } catch {
      // not JSON: the status says enough
    }
    const detail = body.detail || `the server refused the offer (HTTP ${response.status})`;
    if (response.status === 503 || response.status === 429) {
      const wait = response.headers.get("Retry-After") || "a few";
      return `busy: ${detail} (${body.code}); retry in ${wait} s.`;
    }
    return body.code ? `${detail} (${body.code})` : detail;
  }

  async function start() {
    if (rtc || session) return;
    const unavailable = microphoneUnavailable();
    if (unavailable) {
      setStatus("error", unavailable);
      return;
    }
    if (!window.RTCPeerConnection) {
      setStatus("error", "this browser has no WebRTC; choose the WebSocket transport.");
      return;
    }
    setRunning(true);
    transport.disabled = true;
    ui.transcript.textContent = "";
    ui.interim.textContent = "";
    setStatus("connecting", "WebRTC");
    const s = { pc: null, channel: null, media: null, stopping: false, completed: false,
      lastError: null, finished: false };
    rtc = s;
    try {
      s.media = await navigator.mediaDevices.getUserMedia({
        // The recognizer wants the voice as it is: no processing meant for calls.
        audio: { channelCount: 1, echoCancellation: false, noiseSuppression: false,
          autoGainControl: false },
      });
    } catch (err) {
      end(s, "error", microphoneError(err));
      return;
    }
    try {
      s.pc = new RTCPeerConnection(); // no ICE servers: host candidates only
      s.channel = s.pc.createDataChannel(WEBRTC_CHANNEL);
      s.channel.onmessage = (event) => render(s, JSON.parse(event.data));
      s.channel.onclose = () => closed(s);
      s.pc.onconnectionstatechange = () => {
        if (["failed", "closed"].includes(s.pc.connectionState)) closed(s);
      };
      for (const track of s.media.getAudioTracks()) s.pc.addTrack(track, s.media);
      await s.pc.setLocalDescription(await s.pc.createOffer());
      await gathered(s.pc);
      const headers = { "Content-Type": "application/json" };
      const key = ui.apiKey.value.trim();
      if (key) headers.Authorization = `Bearer ${key}`;
      const response = await fetch(WEBRTC_OFFER_PATH, {
        method: "POST",
        headers,
        body: JSON.stringify({
          sdp: s.pc.localDescription.sdp,
          type: "offer",
          config: streamConfig(), // app.js: the native config
        }),
      });
      if (!response.ok) {
        end(s, "error", await refusal(response));
        return;
      }
      if (s.finished) return; // Stop pressed meanwhile
      await s.pc.setRemoteDescription(await response.json());
    } catch (err) {
      end(s, "error", `WebRTC failed: ${err && err.message ? err.message : err}`);
    }
  }

  function closed(s) {
    if (s.completed) end(s, "done");
    else if (s.lastError) end(s, "error", `${s.lastError.detail} (${s.lastError.code})`);
    else if (!s.finished) end(s, "error", "the WebRTC connection closed before the transcript was complete.");
  }

  // Stop: the server takes the audio up to `stop`, sends its last finals, then `complete`.
  // The track stays live until then: audio already on its way is not cut off.
  function stop() {
    const s = rtc;
    if (!s || s.stopping) return;
    s.stopping = true;
    ui.stop.disabled = true;
    if (!s.channel || s.channel.readyState !== "open") {
      end(s, "idle");
      return;
    }
    setStatus("finishing");
    s.channel.send(JSON.stringify({ type: "stop" }));
  }

  function end(s, state, detail) {
    if (s.finished) return;
    s.finished = true;
    if (s.media) for (const track of s.media.getTracks()) track.stop();
    if (s.pc) s.pc.close();
    if (rtc === s) rtc = null;
    transport.disabled = false;
    setRunning(false);
    setStatus(state, detail);
  }

  // A closed tab tells the server nothing until the track times out (about 30 s
  // in Chromium, the session held meanwhile); closing the connection frees it now.
  window.addEventListener("pagehide", () => {
    if (rtc) end(rtc, "idle");
  });

  return { selected, running: () => rtc !== null, start, stop };
})();
