// The station's page beyond contributing (reporter.js does that): the return player, tally,
// talkback and cues, from distribution's exchange routes (docs/adr/0012).
//
// The exchange's address comes from /station/<id>/config.json (empty: this origin), and the
// station's name too when asked with the station's token. The token is the one reporter.js put
// into the form (from the link's fragment or typed in); a new token restarts everything here.

import { CueBoard, field } from "./cues.js";
import { followEventStream, HttpError } from "./sse.js";
import { WhepPlayer } from "./whep.js";

const $ = (id) => document.getElementById(id);
const station = decodeURIComponent(location.pathname.split("/").filter(Boolean).pop() || "");
const EVENT_KINDS = ["hello", "tally", "cue", "talkback"];
const TALLY_LABELS = { program: "ON AIR 直播中", preview: "PREVIEW 预监", off: "" };

let exchange = location.origin;
let token = "";
let configToken = null; // the token the configuration was last asked with
let events = null; // AbortController of the current event stream
let feeds = [];
let freshStream = false; // the stream just (re)connected: its hello comes with every open cue
let returnWanted = true;
let autoplayBlocked = false;
const tally = new Map(); // production -> { program, preview }
const talkback = new Map(); // production -> active

const exchangeUrl = (path) => `${exchange}/exchange/${encodeURIComponent(station)}${path}`;
const auth = () => ({ Authorization: `Bearer ${token}` });

const REASONS = {
  401: "密钥错误 The token is wrong or revoked",
  403: "无权观看 This station may not watch this feed",
  404: "交换服务未找到 The exchange does not serve this (yet)",
  503: "服务器忙 The server is full or restarting",
};

// `err.message` of an HttpError is "<status>: <the server's words>".
function explain(err) {
  if (err instanceof HttpError) return `${REASONS[err.status] || "Error"} (${err.message})`;
  return err.message || String(err);
}

function setExchangeStatus(state, text) {
  document.body.dataset.events = state;
  $("exchange-status").textContent = text;
}

// --- tally and talkback ----------------------------------------------------------------------

function applyTally(receivedAt) {
  let state = "off";
  for (const entry of tally.values()) {
    if (entry.program) state = "program";
    else if (entry.preview && state === "off") state = "preview";
  }
  document.body.dataset.tally = state;
  $("tally-label").textContent = TALLY_LABELS[state];
  // How long from the event's arrival until the frame that shows it (read by the tests).
  requestAnimationFrame(() =>
    performance.measure("baycast:tally", { start: receivedAt, detail: state }),
  );
}

function applyTalkback() {
  const active = [...talkback.values()].some(Boolean);
  document.body.dataset.talkback = active ? "on" : "off";
  $("talkback").hidden = !active;
}

// --- return player ---------------------------------------------------------------------------

const video = $("return");
const player = new WhepPlayer(video, (state, detail, status) => {
  document.body.dataset.returnState = state;
  const texts = {
    connecting: "连接返送中 Connecting the return…",
    playing: "返送播放中 Return playing",
    retrying: `返送中断 Return lost: ${detail}`,
    stopped: "返送已停止 Return stopped",
    error: `返送被拒 Return refused: ${REASONS[status] || "Error"} (${detail})`,
  };
  $("return-status").textContent = texts[state] || state;
  $("return-toggle").textContent =
    state === "stopped" || state === "error" ? "播放返送 Play return" : "停止返送 Stop return";
});

function selectedFeed() {
  return feeds[Number($("feed").value)] || null;
}

function feedUrl(feed) {
  const url = new URL(field(feed, "whep_url"), exchange);
  const picture = document.querySelector("input[name=picture]:checked").value;
  if (isReturn(feed) && picture === "clean") url.searchParams.set("picture", "clean");
  return url.href;
}

const isReturn = (feed) => String(field(feed, "handle") || "").startsWith("return/");

function setFeeds(list) {
  const usable = (list || []).filter((feed) => field(feed, "whep_url"));
  const before = selectedFeed();
  const beforeUrl = before && field(before, "whep_url");
  feeds = usable;
  const select = $("feed");
  select.replaceChildren();
  const productions = new Set(feeds.map((feed) => field(feed, "production")));
  feeds.forEach((feed, i) => {
    const label = field(feed, "label") || field(feed, "handle");
    const option = new Option(
      productions.size > 1 ? `${label} · ${field(feed, "production")}` : label,
      String(i),
    );
    select.append(option);
  });
  const keep = feeds.findIndex((feed) => field(feed, "whep_url") === beforeUrl);
  select.value = String(Math.max(0, keep));
  select.disabled = feeds.length < 2;
  updatePictureChoice();
  if (!feeds.length) {
    if (before) player.stop();
    $("return-status").textContent = "暂无返送 No return yet: the station is in no production";
    return;
  }
  if (returnWanted && (keep < 0 || !document.body.dataset.returnState)) playSelected();
}

function updatePictureChoice() {
  const feed = selectedFeed();
  $("picture").disabled = !feed || !isReturn(feed);
}

function playSelected() {
  const feed = selectedFeed();
  if (!feed || !token) return;
  returnWanted = true;
  const url = feedUrl(feed);
  video.dataset.feed = url; // what plays, for whoever inspects the page
  player.play(url, token);
}

function ensurePlaying() {
  video.muted = autoplayBlocked || $("return-mute").getAttribute("aria-pressed") === "true";
  video.play().catch((err) => {
    if (err.name !== "NotAllowedError") return;
    // The browser wants a tap before it plays sound: play the picture now, the sound on a tap.
    autoplayBlocked = true;
    $("unmute").hidden = false;
    video.muted = true;
    video.play().catch(() => {});
  });
}

function unmute() {
  autoplayBlocked = false;
  $("unmute").hidden = true;
  ensurePlaying();
}

function setMuted(muted) {
  $("return-mute").setAttribute("aria-pressed", String(muted));
  $("return-mute").textContent = muted ? "取消静音 Unmute" : "静音 Mute";
  if (!muted && autoplayBlocked) return unmute();
  video.muted = muted || autoplayBlocked;
}

// --- cues ------------------------------------------------------------------------------------

const cues = new CueBoard($("cues"), $("cue-list"), async (cue) => {
  const id = encodeURIComponent(field(cue, "id"));
  const response = await fetch(exchangeUrl(`/cues/${id}/ack`), {
    method: "POST",
    headers: { ...auth(), "Content-Type": "application/json" },
    body: JSON.stringify({ by: "page" }),
  });
  if (!response.ok) throw new HttpError(response.status, await response.text());
});

// --- the event stream ------------------------------------------------------------------------

function onEvent({ type, data }) {
  const receivedAt = performance.now();
  let message;
  try {
    message = JSON.parse(data);
  } catch (_err) {
    return; // not ours to show
  }
  // The StationEvent names its kind; an event that carries the bare message names it in `event:`.
  let kind = EVENT_KINDS.find((k) => message && typeof message === "object" && k in message);
  let body = kind ? message[kind] : message;
  if (!kind && EVENT_KINDS.includes(type)) kind = type;
  if (!kind) return;
  body = body || {};
  if (kind === "hello") {
    setExchangeStatus("connected", "已连接交换 Connected to the exchange");
    // A new connection sends every open cue again; a later hello only says the feeds changed.
    if (freshStream) cues.reset();
    freshStream = false;
    const list = field(body, "feeds") || [];
    const productions = new Set(list.map((feed) => field(feed, "production")));
    for (const map of [tally, talkback]) {
      for (const production of [...map.keys()]) {
        if (!productions.has(production)) map.delete(production);
      }
    }
    applyTally(receivedAt);
    applyTalkback();
    if (field(body, "name")) $("station-name").textContent = field(body, "name");
    setFeeds(list);
  } else if (kind === "tally") {
    tally.set(field(body, "production") || "", {
      program: Boolean(field(body, "program")),
      preview: Boolean(field(body, "preview")),
    });
    applyTally(receivedAt);
  } else if (kind === "talkback") {
    talkback.set(field(body, "production") || "", Boolean(field(body, "active")));
    applyTalkback();
  } else if (kind === "cue") {
    cues.update(body);
  }
}

async function loadFeeds(signal) {
  try {
    const response = await fetch(exchangeUrl(""), { headers: auth(), cache: "no-store", signal });
    if (response.ok && !feeds.length) setFeeds(field(await response.json(), "feeds"));
  } catch (_err) {
    // The event stream's hello brings the feeds too.
  }
}

function start() {
  const typed = $("token").value.trim();
  if (!typed || typed === token) return;
  token = typed;
  if (configToken !== token) loadConfig(); // the name, now that there is a token
  if (events) events.abort();
  events = new AbortController();
  const { signal } = events;
  setExchangeStatus("connecting", "连接交换中… Connecting to the exchange…");
  loadFeeds(signal);
  followEventStream(exchangeUrl("/events"), {
    headers: auth(),
    signal,
    onEvent,
    onOpen: () => (freshStream = true),
    onError: (err) => setExchangeStatus("error", `交换连接中断 Exchange lost: ${explain(err)}`),
    fatal: (status) => status === 401 || status === 403,
  });
  if (feeds.length && returnWanted) playSelected();
}

async function loadConfig() {
  const asked = $("token").value.trim();
  configToken = asked;
  try {
    const response = await fetch(`/station/${encodeURIComponent(station)}/config.json`, {
      cache: "no-store",
      headers: asked ? { Authorization: `Bearer ${asked}` } : {},
    });
    if (!response.ok) return;
    const config = await response.json();
    if (config.exchange_url) exchange = config.exchange_url.replace(/\/+$/, "");
    if (config.name) {
      $("station-name").textContent = config.name;
      document.title = `baycast · ${config.name}`;
    }
  } catch (_err) {
    // Without it the exchange is taken to be on this origin.
  }
}

$("token").addEventListener("change", start);
// Going live is a tap: it may start the return's sound, and it carries the token in use.
$("form").addEventListener("submit", () => {
  start();
  if (autoplayBlocked) unmute();
});
$("unmute").addEventListener("click", unmute);
$("return-mute").addEventListener("click", () =>
  setMuted($("return-mute").getAttribute("aria-pressed") !== "true"),
);
$("volume").addEventListener("input", () => {
  video.volume = Number($("volume").value) / 100;
  localStorage.setItem("baycast.return.volume", $("volume").value);
});
$("feed").addEventListener("change", () => {
  updatePictureChoice();
  playSelected();
});
$("picture").addEventListener("change", playSelected);
$("return-toggle").addEventListener("click", () => {
  const state = document.body.dataset.returnState;
  if (state === "stopped" || state === "error") return playSelected();
  returnWanted = false;
  player.stop();
});
video.addEventListener("loadedmetadata", ensurePlaying);

const savedVolume = localStorage.getItem("baycast.return.volume");
if (savedVolume !== null) $("volume").value = savedVolume;
video.volume = Number($("volume").value) / 100;

await loadConfig();
start();
