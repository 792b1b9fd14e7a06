// WebRTC for the control room: feeds played over WHEP from distribution (the multiview) and the
// director's microphone published over WHIP to ingest (talkback).
//
// Both need a bearer, and a page holds only its session cookie: before each offer and each
// hang-up the page asks the control service for a fresh media grant (POST /api/media-grant), which
// ingest and distribution take as the operator's token for a minute. Offers carry every ICE
// candidate (no trickle); a refused or failed session is retried after 1 s, 2 s, 4 s ... 15 s, but
// not after 401 or 403 (retrying would not help).

import { ApiError, mediaGrant } from "./api.js";

const ICE_GATHER_MS = 3000;
const RETRY_MIN_MS = 1000;
const RETRY_MAX_MS = 15000;
const DISCONNECTED_GRACE_MS = 4000;
const FINAL_STATUSES = new Set([400, 401, 403, 404]);

class HttpError extends Error {
  constructor(status, body) {
    super(`${status}: ${body.trim().slice(0, 200)}`);
    this.status = status;
  }
}

function iceGatheringDone(peer) {
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

// POSTs the peer's offer to `url` with a fresh grant; the session's URL and its answer.
async function exchangeOffer(peer, url) {
  await peer.setLocalDescription(await peer.createOffer());
  await iceGatheringDone(peer);
  const grant = await mediaGrant();
  const response = await fetch(url, {
    method: "POST",
    headers: { "Content-Type": "application/sdp", Authorization: `Bearer ${grant}` },
    body: peer.localDescription.sdp,
  });
  const body = await response.text();
  if (response.status !== 201) throw new HttpError(response.status, body);
  const location = response.headers.get("Location");
  await peer.setRemoteDescription({ type: "answer", sdp: body });
  return { session: location ? new URL(location, url).href : null, grant };
}

// DELETEs a WHEP or WHIP session (best effort: the server also ends it when the peer goes).
async function hangUp(session, keepalive = false, grant = "") {
  if (!session) return;
  try {
    const bearer = grant || (await mediaGrant());
    await fetch(session, {
      method: "DELETE",
      keepalive,
      headers: { Authorization: `Bearer ${bearer}` },
    });
  } catch (_err) {
    // Gone already, or the page is closing: the server times the session out.
  }
}

function describe(err) {
  if (err instanceof ApiError) return `${err.status}: ${err.message}`;
  return err.message || String(err);
}

function isFinal(err) {
  return (err instanceof HttpError || err instanceof ApiError) && FINAL_STATUSES.has(err.status);
}

// Plays a WHEP feed into a <video>; onState(state, detail): connecting, playing, retrying,
// stopped, error.
export class WhepPlayer {
  constructor(video, onState) {
    this.video = video;
    this.onState = onState;
    this.url = "";
    this.peer = null;
    this.session = null;
    this.lastGrant = "";
    this.generation = 0;
    this.retryTimer = null;
    this.delay = RETRY_MIN_MS;
    this.onPageHide = () => hangUp(this.session, true, this.lastGrant);
    window.addEventListener("pagehide", this.onPageHide);
  }

  play(url) {
    this.url = url;
    this.delay = RETRY_MIN_MS;
    this.connect();
  }

  async stop() {
    this.generation++;
    clearTimeout(this.retryTimer);
    window.removeEventListener("pagehide", this.onPageHide);
    await this.teardown();
    this.onState("stopped", "");
  }

  async teardown() {
    const peer = this.peer;
    const session = this.session;
    this.peer = null;
    this.session = null;
    this.video.srcObject = null;
    // The DELETE first: a peer closed first may end the session on its own, and then the
    // DELETE finds nothing (404).
    await hangUp(session);
    if (peer) peer.close();
  }

  retry(generation, reason) {
    if (generation !== this.generation) return;
    this.teardown();
    this.onState("retrying", `${reason}; 重试 retrying in ${Math.round(this.delay / 1000)} s`);
    clearTimeout(this.retryTimer);
    this.retryTimer = setTimeout(() => {
      if (generation === this.generation) this.connect();
    }, this.delay);
    this.delay = Math.min(this.delay * 2, RETRY_MAX_MS);
  }

  async connect() {
    const generation = ++this.generation;
    clearTimeout(this.retryTimer);
    await this.teardown();
    if (generation !== this.generation) return;
    this.onState("connecting", "");
    const peer = (this.peer = new RTCPeerConnection({ iceServers: [] }));
    const stream = new MediaStream();
    let disconnected = null;
    peer.addTransceiver("video", { direction: "recvonly" });
    peer.addTransceiver("audio", { direction: "recvonly" });
    peer.addEventListener("track", (event) => {
      stream.addTrack(event.track);
      if (this.video.srcObject !== stream) this.video.srcObject = stream;
    });
    peer.addEventListener("connectionstatechange", () => {
      if (peer !== this.peer) return;
      clearTimeout(disconnected);
      const state = peer.connectionState;
      if (state === "connected") {
        this.delay = RETRY_MIN_MS;
        this.onState("playing", "");
      } else if (state === "failed" || state === "closed") {
        this.retry(generation, "连接中断 connection lost");
      } else if (state === "disconnected") {
        disconnected = setTimeout(
          () => this.retry(generation, "连接中断 connection lost"),
          DISCONNECTED_GRACE_MS,
        );
      }
    });
    try {
      const { session, grant } = await exchangeOffer(peer, this.url);
      this.lastGrant = grant;
      if (generation !== this.generation) return hangUp(session, false, grant);
      this.session = session;
    } catch (err) {
      if (generation !== this.generation) return;
      if (isFinal(err)) {
        this.generation++;
        await this.teardown();
        this.onState("error", describe(err));
        return;
      }
      this.retry(generation, describe(err));
    }
  }
}

// The director's microphone, published once (audio only) when armed: the mixer hears it as
// source `talk_<operator>` and puts it into the returns the talk buttons name.
export class TalkMicrophone {
  constructor(onState) {
    this.onState = onState;
    this.peer = null;
    this.stream = null;
    this.session = null;
    this.lastGrant = "";
    // A page going away cannot wait for a fresh grant: the last one (a minute) usually serves.
    window.addEventListener("pagehide", () => hangUp(this.session, true, this.lastGrant));
  }

  async arm(url) {
    this.onState("arming", "");
    try {
      this.stream = await navigator.mediaDevices.getUserMedia({
        audio: { echoCancellation: true, noiseSuppression: true, autoGainControl: true },
        video: false,
      });
      const peer = (this.peer = new RTCPeerConnection({ iceServers: [] }));
      for (const track of this.stream.getAudioTracks()) {
        peer.addTransceiver(track, { direction: "sendonly", streams: [this.stream] });
      }
      peer.addEventListener("connectionstatechange", () => {
        if (peer !== this.peer) return;
        if (peer.connectionState === "connected") this.onState("live", "");
        else if (["failed", "closed"].includes(peer.connectionState)) {
          this.onState("error", "连接中断 connection lost");
        }
      });
      const { session, grant } = await exchangeOffer(peer, url);
      this.session = session;
      this.lastGrant = grant;
    } catch (err) {
      await this.disarm(false);
      this.onState("error", describe(err));
    }
  }

  async disarm(report = true) {
    const { session, peer, stream } = this;
    this.session = null;
    this.peer = null;
    this.stream = null;
    await hangUp(session); // before closing, as for a player
    if (peer) peer.close();
    for (const track of stream?.getTracks() || []) track.stop();
    if (report) this.onState("off", "");
  }
}
