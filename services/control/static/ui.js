// What every panel uses: Preact with htm (tagged templates: no build step), the show's store,
// the operator's permissions, error toasts and small formatting helpers.

import { h, render } from "./vendor/preact.js";
import { useCallback, useEffect, useMemo, useRef, useState } from "./vendor/hooks.js";
import htm from "./vendor/htm.js";

export const html = htm.bind(h);
export { render, useCallback, useEffect, useMemo, useRef, useState };

// --- the show, shared by every panel ---------------------------------------------------------

// A tiny external store: panels read `store.state` and re-render when it changes. Bursts of
// events (audio levels come ~12 times a second) are folded into one render per animation frame.
export function createStore(initial) {
  const listeners = new Set();
  let state = initial;
  let scheduled = false;
  const notify = () => {
    scheduled = false;
    for (const listener of listeners) listener();
  };
  return {
    get: () => state,
    set(next) {
      state = next;
      if (scheduled) return;
      scheduled = true;
      // A hidden tab gets no animation frames: a timer keeps it current for when it shows.
      if (document.hidden) setTimeout(notify, 100);
      else requestAnimationFrame(notify);
    },
    subscribe(listener) {
      listeners.add(listener);
      return () => listeners.delete(listener);
    },
  };
}

export function useStore(store) {
  const [, changed] = useState(0);
  useEffect(() => store.subscribe(() => changed((n) => n + 1)), [store]);
  return store.get();
}

// --- who may do what -------------------------------------------------------------------------

// `kind` is service.verb as GET /api/me lists it (mixer.cut, gfx.show ...).
export function may(me, kind) {
  return Boolean(me && me.permissions && me.permissions.includes(kind));
}

// --- messages --------------------------------------------------------------------------------

const toasts = createStore([]);
let toastId = 0;

export function toast(text, kind = "error") {
  const id = ++toastId;
  toasts.set([...toasts.get(), { id, text, kind }].slice(-4));
  setTimeout(() => toasts.set(toasts.get().filter((t) => t.id !== id)), 8000);
}

const REFUSALS = {
  403: "没有权限 Not allowed",
  404: "找不到 Not found",
  409: "冲突 Conflict",
  429: "太频繁 Too many requests",
  503: "服务不可用 Unavailable",
};

// Reports a failed command: the server's own words, a 403 said plainly.
export function explain(err, what = "") {
  const head = REFUSALS[err.status] || "出错 Error";
  const field = err.field ? ` [${err.field}]` : "";
  toast(`${head}${what ? ` (${what})` : ""}: ${err.message}${field}`);
}

// Runs a command and reports a refusal; the page shows the result only when an event says so.
export async function attempt(what, send) {
  try {
    return await send();
  } catch (err) {
    explain(err, what);
    return null;
  }
}

export function Toasts() {
  const list = useStore(toasts);
  return html`<div class="toasts" role="alert" aria-live="assertive">
    ${list.map((t) => html`<p key=${t.id} class=${`toast ${t.kind}`}>${t.text}</p>`)}
  </div>`;
}

// --- formatting ------------------------------------------------------------------------------

export const num = (value) => Number(value || 0);

export function db(value, digits = 1) {
  const v = num(value);
  return v <= -120 ? "−∞" : v.toFixed(digits);
}

export function clock(us) {
  const when = new Date(num(us) / 1000);
  return when.toLocaleTimeString("zh-CN", { hour12: false });
}

export function duration(ms) {
  const total = Math.max(0, Math.round(num(ms) / 1000));
  const m = Math.floor(total / 60);
  const s = String(total % 60).padStart(2, "0");
  return `${m}:${s}`;
}

// A meter's fill, 0..1, from dB over [floor, 0].
export function meterFill(value, floor = -60) {
  const v = num(value);
  return Math.max(0, Math.min(1, (v - floor) / -floor));
}

// A horizontal meter: peak and short-term loudness bars (the loudness scaled like the peak).
// (Canonical JSON leaves out zeros: a level without peakDbfs peaks at 0 dBFS.)
export function Meter({ level, label }) {
  const peak = level ? meterFill(level.peakDbfs) : 0;
  const loud = level ? meterFill(level.shortTermLufs) : 0;
  const text = level
    ? `峰值 peak ${db(level.peakDbfs)} dBFS · 短期 short-term ${db(level.shortTermLufs)} LUFS`
    : "无信号 no signal";
  return html`<div class="meter" title=${text} aria-label=${`${label || ""} ${text}`}>
    <div class="meter-peak" style=${{ transform: `scaleX(${peak})` }}></div>
    <div class="meter-loudness" style=${{ transform: `scaleX(${loud})` }}></div>
  </div>`;
}

// Sends values one request at a time, at most one every `intervalMs`, always ending with the
// latest value: a T-bar or a fader moved quickly never has two positions racing on the wire.
export function latestSender(send, intervalMs) {
  let busy = false;
  let pending = null;
  let last = 0;
  let timer = null;
  async function pump() {
    if (busy || pending === null || timer) return;
    const wait = last + intervalMs - performance.now();
    if (wait > 0) {
      timer = setTimeout(() => {
        timer = null;
        pump();
      }, wait);
      return;
    }
    busy = true;
    const value = pending;
    pending = null;
    last = performance.now();
    try {
      await send(value);
    } finally {
      busy = false;
      pump();
    }
  }
  return (value) => {
    pending = value;
    pump();
  };
}

// A source's tally as a word: program, preview or off.
export function tallyOf(show, source) {
  const t = show.tally[source];
  if (t?.program) return "program";
  return t?.preview ? "preview" : "off";
}

// The production's sources in order, each with its display name.
export function sourcesOf(production) {
  return (production.sources || []).map((s) => ({ id: s.id, name: s.name || s.id }));
}
