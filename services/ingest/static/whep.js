// A small WHEP client (draft-ietf-wish-whep): receive-only audio and video into a <video>.
//
// It POSTs an offer carrying every ICE candidate (the answer brings none to trickle), sets the
// answer, and DELETEs the session's Location when told to stop or when the page goes away. A
// failed connection or a refused offer is retried after 1 s, 2 s, 4 s ... up to 15 s; answers
// that retrying cannot fix (401, 403) stop it until it is told to play again.

import { HttpError } from "./sse.js";

const ICE_GATHER_MS = 3000;
const RETRY_MIN_MS = 1000;
const RETRY_MAX_MS = 15000;
// A connection "disconnected" this long is treated as failed (ICE may recover on its own first).
const DISCONNECTED_GRACE_MS = 4000;
const FINAL_STATUSES = new Set([400, 401, 403]);

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

export class WhepPlayer {
  // onState(state, detail): "connecting", "playing", "retrying", "stopped" or "error".
  constructor(video, onState) {
    this.video = video;
    this.onState = onState;
    this.url = "";
    this.token = "";
    this.pc = null;
    this.session = null;
    this.generation = 0;
    this.retryTimer = null;
    this.delay = RETRY_MIN_MS;
    window.addEventListener("pagehide", () => this.deleteSession(true));
  }

  // Plays `url` (replacing whatever played before).
  play(url, token) {
    this.url = url;
    this.token = token;
    this.delay = RETRY_MIN_MS;
    this.connect();
  }

  async stop() {
    this.generation++;
    clearTimeout(this.retryTimer);
    await this.teardown();
    this.onState("stopped", "");
  }

  async teardown() {
    const peer = this.pc;
    this.pc = null;
    await this.deleteSession(false);
    if (peer) peer.close();
    this.video.srcObject = null;
  }

  async deleteSession(keepalive) {
    const session = this.session;
    this.session = null;
    if (!session) return;
    try {
      await fetch(session, {
        method: "DELETE",
        keepalive,
        headers: { Authorization: `Bearer ${this.token}` },
      });
    } catch (_err) {
      // The server ends the session on its own when the connection goes.
    }
  }

  retry(generation, reason) {
    if (generation !== this.generation) return;
    this.teardown();
    const seconds = (this.delay / 1000).toFixed(0);
    this.onState("retrying", `${reason}; 重试 retrying in ${seconds} s`);
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
    const peer = (this.pc = new RTCPeerConnection({ iceServers: [] }));
    const stream = new MediaStream();
    let disconnectedTimer = null;
    peer.addTransceiver("video", { direction: "recvonly" });
    peer.addTransceiver("audio", { direction: "recvonly" });
    peer.addEventListener("track", (event) => {
      stream.addTrack(event.track);
      if (this.video.srcObject !== stream) this.video.srcObject = stream;
    });
    peer.addEventListener("connectionstatechange", () => {
      if (peer !== this.pc) return;
      clearTimeout(disconnectedTimer);
      const state = peer.connectionState;
      if (state === "connected") {
        this.delay = RETRY_MIN_MS;
        this.onState("playing", "");
      } else if (state === "failed" || state === "closed") {
        this.retry(generation, "连接中断 connection lost");
      } else if (state === "disconnected") {
        disconnectedTimer = setTimeout(
          () => this.retry(generation, "连接中断 connection lost"),
          DISCONNECTED_GRACE_MS,
        );
      }
    });
    try {
      await peer.setLocalDescription(await peer.createOffer());
      await iceGatheringDone(peer);
      if (generation !== this.generation) return;
      const response = await fetch(this.url, {
        method: "POST",
        headers: { "Content-Type": "application/sdp", Authorization: `Bearer ${this.token}` },
        body: peer.localDescription.sdp,
      });
      const body = await response.text();
      if (response.status !== 201) throw new HttpError(response.status, body);
      const location = response.headers.get("Location");
      const session = location ? new URL(location, this.url).href : null;
      if (generation !== this.generation) {
        // Told to stop or to play something else while the offer was on its way.
        if (session) this.session = session;
        return this.deleteSession(false);
      }
      this.session = session;
      await peer.setRemoteDescription({ type: "answer", sdp: body });
      // The server's DTLS close_notify ends the session at once; ICE would notice only when
      // its consent checks time out, seconds later.
      const dtls = peer.getReceivers().find((r) => r.transport)?.transport;
      dtls?.addEventListener("statechange", () => {
        if (peer === this.pc && (dtls.state === "closed" || dtls.state === "failed")) {
          this.retry(generation, "服务器结束了返送 the server ended the return");
        }
      });
    } catch (err) {
      if (generation !== this.generation) return;
      if (err instanceof HttpError && FINAL_STATUSES.has(err.status)) {
        this.generation++;
        await this.teardown();
        this.onState("error", err.message, err.status);
        return;
      }
      this.retry(generation, err.message);
    }
  }
}
