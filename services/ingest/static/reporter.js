// The reporter page: camera preview, audio level, and WHIP publishing from the browser.
// The token comes from the form or from the URL fragment (#token=...), which browsers never send
// to the server; it is removed from the address bar once read.
(() => {
  "use strict";
  const ICE_GATHER_MS = 3000;
  const $ = (id) => document.getElementById(id);
  const station = decodeURIComponent(location.pathname.split("/").filter(Boolean).pop() || "");
  const whipUrl = `/whip/${encodeURIComponent(station)}`;
  let stream = null;
  let pc = null;
  let sessionUrl = null;
  let token = "";
  let audioContext = null;

  function setState(state, text) {
    document.body.dataset.state = state;
    $("status").textContent = text;
  }

  function explain(status, body) {
    const reasons = {
      400: "The server could not use this browser's offer",
      401: "The token is wrong or revoked",
      404: "This station does not exist",
      409: "This station is already live",
      413: "The offer is too large",
      503: "The server is full or restarting: try again in a moment",
    };
    return `${reasons[status] || "Error " + status} (${status}: ${body.trim()})`;
  }

  async function startCamera() {
    try {
      stream = await navigator.mediaDevices.getUserMedia({
        video: { width: { ideal: 1280 }, height: { ideal: 720 }, facingMode: "environment" },
        audio: { echoCancellation: false, noiseSuppression: false, autoGainControl: false },
      });
    } catch (err) {
      setState("error", `No camera or microphone (${err.name}). Allow them and reload.`);
      return;
    }
    $("preview").srcObject = stream;
    startMeter();
    setState("idle", "Camera ready. Enter the token and go live.");
  }

  function startMeter() {
    if (!stream.getAudioTracks().length) return;
    audioContext = new AudioContext();
    const analyser = audioContext.createAnalyser();
    analyser.fftSize = 16384; // about 1/3 s: the meter holds short peaks
    audioContext.createMediaStreamSource(stream).connect(analyser);
    const samples = new Float32Array(analyser.fftSize);
    setInterval(() => {
      analyser.getFloatTimeDomainData(samples);
      let peak = 0;
      for (const s of samples) peak = Math.max(peak, Math.abs(s));
      const db = peak > 0 ? 20 * Math.log10(peak) : -Infinity;
      $("level").style.width = `${Math.max(0, Math.min(100, ((db + 60) / 60) * 100))}%`;
      $("level-text").textContent = Number.isFinite(db) ? `${db.toFixed(0)} dBFS` : "-∞ dBFS";
      document.body.dataset.level = Number.isFinite(db) ? db.toFixed(1) : "-inf";
    }, 100);
  }

  function iceGatheringDone(peer) {
    // The WHIP answer carries no trickle: send the offer with every candidate in it.
    if (peer.iceGatheringState === "complete") return Promise.resolve();
    return new Promise((resolve) => {
      const timer = setTimeout(resolve, ICE_GATHER_MS);
      peer.addEventListener("icegatheringstatechange", () => {
        if (peer.iceGatheringState === "complete") {
          clearTimeout(timer);
          resolve();
        }
      });
    });
  }

  function teardown() {
    if (pc) pc.close();
    pc = null;
  }

  async function goLive(event) {
    event.preventDefault();
    if (audioContext) audioContext.resume();
    token = $("token").value.trim();
    if (!token) return setState("error", "Enter the station token first.");
    if (!stream) return setState("error", "No camera: allow it and reload the page.");
    $("go").disabled = true;
    setState("connecting", "Connecting…");
    const peer = (pc = new RTCPeerConnection({ iceServers: [] }));
    peer.addEventListener("connectionstatechange", () => {
      if (peer !== pc) return;
      const state = peer.connectionState;
      if (state === "connected") setState("live", "You are live. 正在直播");
      else if (state === "disconnected") setState("connecting", "Connection unstable…");
      else if (state === "failed") {
        teardown();
        sessionUrl = null;
        $("go").disabled = false;
        $("stop").disabled = true;
        setState("error", "Connection lost. Press Go live to reconnect.");
      }
    });
    for (const track of stream.getTracks()) {
      peer.addTransceiver(track, { direction: "sendonly", streams: [stream] });
    }
    try {
      await peer.setLocalDescription(await peer.createOffer());
      await iceGatheringDone(peer);
      const response = await fetch(whipUrl, {
        method: "POST",
        headers: { "Content-Type": "application/sdp", Authorization: `Bearer ${token}` },
        body: peer.localDescription.sdp,
      });
      const body = await response.text();
      if (response.status !== 201) throw new Error(explain(response.status, body));
      sessionUrl = new URL(response.headers.get("Location"), location.href).href;
      await peer.setRemoteDescription({ type: "answer", sdp: body });
      $("stop").disabled = false;
      if (peer.connectionState !== "connected") setState("connecting", "Connecting media…");
    } catch (err) {
      teardown();
      $("go").disabled = false;
      setState("error", err.message);
    }
  }

  async function stop() {
    $("stop").disabled = true;
    const url = sessionUrl;
    sessionUrl = null;
    if (url) {
      try {
        await fetch(url, { method: "DELETE", headers: { Authorization: `Bearer ${token}` } });
      } catch (_err) {
        // The server ends the session on its own when the connection goes.
      }
    }
    teardown();
    $("go").disabled = false;
    setState("stopped", "Stopped. Press Go live when ready.");
  }

  window.addEventListener("pagehide", () => {
    if (sessionUrl) {
      fetch(sessionUrl, {
        method: "DELETE",
        keepalive: true,
        headers: { Authorization: `Bearer ${token}` },
      });
    }
  });

  const fragment = new URLSearchParams(location.hash.slice(1));
  if (fragment.get("token")) {
    $("token").value = fragment.get("token");
    history.replaceState(null, "", location.pathname + location.search);
  }
  $("station").textContent = station;
  $("form").addEventListener("submit", goLive);
  $("stop").addEventListener("click", stop);
  document.addEventListener("pointerdown", () => audioContext && audioContext.resume());
  startCamera();
})();
