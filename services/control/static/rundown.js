// The rundown: its segments with their durations, the current one counting down, the next one,
// take next / previous / start / stop, and the production's as-run log (GET /api/asrun and the
// `asrun` events: the rundown's cues and every operator's command, applied or refused).

import { command } from "./api.js";
import { attempt, clock, duration, html, may, num, useEffect, useState } from "./ui.js";

function useNow(intervalMs) {
  const [now, setNow] = useState(Date.now());
  useEffect(() => {
    const timer = setInterval(() => setNow(Date.now()), intervalMs);
    return () => clearInterval(timer);
  }, [intervalMs]);
  return now;
}

export function AsRun({ entries }) {
  const newest = [...entries].reverse().slice(0, 100);
  return html`<ol class="asrun" id="asrun" aria-label="播出记录 As-run log">
    ${newest.map(
      (e) => html`<li key=${`${e.timeUs}${e.cue}${e.detail}`} class=${e.ok ? "" : "refused"}>
        <time>${clock(e.timeUs)}</time>
        <span class="small">${e.cue}</span>
        <span>${e.detail || e.title}</span>
        ${e.ok ? null : html`<span class="error">${e.error}</span>`}
      </li>`,
    )}
  </ol>`;
}

export function Rundown({ me, production, show, asrun }) {
  const status = show.rundown;
  const segments = status?.rundown?.segments || [];
  const current = status?.running ? num(status.segment) : -1; // 0 is left out of the JSON
  const next = current + 1 < segments.length ? current + 1 : status?.rundown?.loop ? 0 : -1;
  const now = useNow(500);
  const send = (what, body) => attempt(what, () => command(production.id, "rundown", body));
  const started = num(status?.segmentStartedUs) / 1000;
  const elapsed = current >= 0 && started ? now - started : 0;

  return html`<section id="rundown" class="panel" aria-label="串联单 Rundown"
      data-segment=${current} data-running=${!!status?.running}>
    <h2>串联单 Rundown ${status?.rundown?.name ? `· ${status.rundown.name}` : ""}</h2>
    <div class="row">
      ${may(me, "rundown.next")
        ? html`<button type="button" id="rundown-next" class="big" onClick=${() => send("下一条 next", { next: {} })}>
            下一条 Take next
          </button>`
        : null}
      ${may(me, "rundown.prev")
        ? html`<button type="button" onClick=${() => send("上一条 previous", { prev: {} })}>上一条 Previous</button>`
        : null}
      ${may(me, "rundown.start") && !status?.running
        ? html`<button type="button" onClick=${() => send("开始 start", { start: { segment: 0 } })}>开始 Start</button>`
        : null}
      ${may(me, "rundown.stop") && status?.running
        ? html`<button type="button" onClick=${() => send("停止 stop", { stop: {} })}>停止 Stop</button>`
        : null}
      <span class="small">${status?.running ? "运行中 running" : "未运行 not running"}</span>
    </div>
    ${segments.length
      ? html`<ol class="segments">
          ${segments.map((seg, i) => {
            const length = num(seg.durationMs);
            const state = i === current ? "current" : i === next ? "next" : "";
            let timing = length ? duration(length) : "手动 manual";
            if (i === current && length) timing = `${duration(elapsed)} / ${duration(length)} (剩 left ${duration(length - elapsed)})`;
            else if (i === current) timing = `${duration(elapsed)} · 手动 manual`;
            return html`<li key=${i} class=${state} aria-current=${i === current ? "step" : undefined}>
              <span class="segment-title">${seg.title || `#${i + 1}`}</span>
              <span class="small">${state === "current" ? "当前 now" : state === "next" ? "下一条 next" : ""}</span>
              <span class="segment-time">${timing}</span>
            </li>`;
          })}
        </ol>`
      : html`<p class="small">未加载串联单 No rundown loaded (baycast ctl rundown load)</p>`}
    <h3>播出记录 As-run log</h3>
    <${AsRun} entries=${asrun} />
  </section>`;
}
