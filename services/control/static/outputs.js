// Outputs (state, bitrate, start / stop), who watches over WHEP, and the alerts raised now.

import { command } from "./api.js";
import { attempt, clock, html, may, num } from "./ui.js";

const STATUS = {
  OUTPUT_STATUS_IDLE: "停止 idle",
  OUTPUT_STATUS_CONNECTING: "连接中 connecting",
  OUTPUT_STATUS_LIVE: "直播 live",
  OUTPUT_STATUS_RETRYING: "重试 retrying",
  OUTPUT_STATUS_FAILED: "失败 failed",
};
const KIND = {
  OUTPUT_KIND_RTMP: "RTMP",
  OUTPUT_KIND_RTMPS: "RTMPS",
  OUTPUT_KIND_SRT: "SRT",
  OUTPUT_KIND_HLS: "HLS",
  OUTPUT_KIND_RECORDING: "录制 Recording",
};

function Alerts({ show }) {
  const alerts = Object.values(show.alerts).sort((a, b) => num(b.raisedAtUs) - num(a.raisedAtUs));
  if (!alerts.length) return html`<p class="small" id="no-alerts">无告警 No alerts</p>`;
  return html`<ul class="alerts" id="alerts">
    ${alerts.map(
      (a) => html`<li key=${a.id} class=${`alert ${a.severity}`}>
        <time>${clock(a.raisedAtUs)}</time>
        <strong>${a.severity === "critical" ? "严重 critical" : "警告 warning"}</strong>
        <span>${a.message || a.condition}</span>
        <span class="small">${a.target}</span>
      </li>`,
    )}
  </ul>`;
}

export function Outputs({ me, production, show }) {
  const outputs = Object.values(show.outputs).sort((a, b) => a.id.localeCompare(b.id));
  const send = (what, body) => attempt(what, () => command(production.id, "outputs", body));
  const viewers = show.viewers.filter((v) => v.state !== "closed");
  const byHandle = {};
  for (const v of viewers) byHandle[v.handle] = (byHandle[v.handle] || 0) + 1;
  return html`<section id="outputs" class="panel" aria-label="输出 Outputs">
    <h2>输出 Outputs</h2>
    ${outputs.length
      ? html`<table class="outputs">
          <thead>
            <tr><th>输出 Output</th><th>类型 Kind</th><th>状态 State</th><th>码率 kbps</th>
              <th>重连 Reconnects</th><th></th></tr>
          </thead>
          <tbody>
            ${outputs.map(
              (o) => html`<tr key=${o.id} data-output=${o.id} data-status=${o.status}>
                <th scope="row">${o.label || o.id}<div class="small">${o.url || ""}</div></th>
                <td>${KIND[o.kind] || o.kind}${o.station ? ` → ${o.station}` : ""}</td>
                <td>${STATUS[o.status] || o.status}
                  ${o.reason ? html`<div class="small error">${o.reason}</div>` : null}</td>
                <td>${Math.round(num(o.bitrateKbps))}</td>
                <td>${num(o.reconnects)}</td>
                <td>
                  ${o.enabled
                    ? may(me, "dist.stop") &&
                      html`<button type="button" onClick=${() => send("停止 stop", { stop: { id: o.id } })}>停止 Stop</button>`
                    : may(me, "dist.start") &&
                      html`<button type="button" onClick=${() => send("开始 start", { start: { id: o.id } })}>开始 Start</button>`}
                </td>
              </tr>`,
            )}
          </tbody>
        </table>`
      : html`<p class="small">无输出 No outputs</p>`}
    <h3>观看 Viewers (WHEP): ${viewers.length}</h3>
    <ul class="small viewers">
      ${Object.entries(byHandle).map(([handle, n]) => html`<li key=${handle}>${handle}: ${n}</li>`)}
    </ul>
    <h2>告警 Alerts</h2>
    <${Alerts} show=${show} />
  </section>`;
}
