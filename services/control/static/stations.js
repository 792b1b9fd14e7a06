// Stations: each source's health (frame rate, bitrate, loss, round trip, black / frozen / silent
// from source stats), its tally, who watches its return (exchange state), push-to-talk to it or
// to all (the director's microphone, published once over WHIP when armed; a talk button sends
// MixerCommand.talk on when pressed and off when released), and cues with their acknowledgements.

import { command } from "./api.js";
import {
  attempt,
  clock,
  createStore,
  html,
  may,
  num,
  sourcesOf,
  tallyOf,
  useRef,
  useState,
  useStore,
} from "./ui.js";
import { TalkMicrophone } from "./webrtc.js";

const MIC_STATES = {
  off: "麦克风关 Mic off",
  arming: "麦克风连接中 Connecting mic…",
  live: "麦克风就绪 Mic live",
  error: "麦克风失败 Mic failed",
};
const TALLY_WORDS = { program: "节目 PGM", preview: "预监 PVW", off: "" };

function flags(stats) {
  if (!stats) return "";
  return [stats.black && "黑场 black", stats.frozen && "冻结 frozen", stats.silent && "无声 silent"]
    .filter(Boolean)
    .join(" · ");
}

// A button that talks while held: pointer or Space/Enter down turns the talk on, up turns it off.
function TalkButton({ label, target, talking, enabled, talk }) {
  const held = useRef(false);
  const start = (event) => {
    event.preventDefault();
    if (held.current || !enabled) return;
    held.current = true;
    talk(target, true);
  };
  const end = () => {
    if (!held.current) return;
    held.current = false;
    talk(target, false);
  };
  const key = (down) => (event) => {
    if (event.key !== " " && event.key !== "Enter") return;
    event.preventDefault();
    event.stopPropagation();
    if (down && !event.repeat) start(event);
    if (!down) end();
  };
  return html`<button type="button" class=${`talk ${talking ? "on-air" : ""}`} disabled=${!enabled}
    aria-pressed=${talking} data-talk=${target.all ? "all" : target.station}
    onPointerDown=${start} onPointerUp=${end} onPointerLeave=${end} onPointerCancel=${end}
    onKeyDown=${key(true)} onKeyUp=${key(false)} onBlur=${end}>
    ${label}
  </button>`;
}

function CueForm({ production, stations }) {
  const [to, setTo] = useState("");
  const [text, setText] = useState("");
  const [seconds, setSeconds] = useState("");
  const submit = async (event) => {
    event.preventDefault();
    if (!text.trim()) return;
    const cue = { text: text.trim() };
    if (to) cue.stations = [to];
    else cue.all = true;
    if (Number(seconds) > 0) cue.countdownToUs = String(Date.now() * 1000 + Number(seconds) * 1e6);
    const sent = await attempt("提示 cue", () => command(production.id, "exchange", { cue }));
    if (sent) setText("");
  };
  return html`<form class="row cue-form" onSubmit=${submit}>
    <label>发给 To
      <select value=${to} onChange=${(e) => setTo(e.currentTarget.value)}>
        <option value="">全部 All stations</option>
        ${stations.map((s) => html`<option value=${s.id}>${s.name}</option>`)}
      </select>
    </label>
    <label>提示 Cue
      <input type="text" id="cue-text" value=${text} placeholder="30 秒后上场 / 30 s to air"
        onInput=${(e) => setText(e.currentTarget.value)} />
    </label>
    <label>倒计时 Countdown (s)
      <input type="number" min="0" max="3600" value=${seconds}
        onInput=${(e) => setSeconds(e.currentTarget.value)} />
    </label>
    <button type="submit">发送 Send</button>
  </form>`;
}

function Cues({ production, show, names, allowed }) {
  const cues = Object.values(show.cues).sort((a, b) => num(b.sentAtUs) - num(a.sentAtUs));
  if (!cues.length) return html`<p class="small">无提示 No open cues</p>`;
  return html`<ul class="cues">
    ${cues.map(
      (c) => html`<li key=${c.id} data-cue=${c.id} data-acknowledged=${num(c.acknowledgedAtUs) > 0}>
        <strong>${names[c.station] || c.station}</strong> ${c.text}
        ${num(c.countdownToUs) ? html` <span class="small">⏱ ${clock(c.countdownToUs)}</span>` : null}
        <span class="small">
          ${num(c.acknowledgedAtUs)
            ? ` ✓ 已确认 acknowledged ${clock(c.acknowledgedAtUs)} (${c.acknowledgedBy || ""})`
            : " 未确认 not acknowledged yet"}
        </span>
        ${allowed
          ? html`<button type="button" onClick=${() =>
              attempt("撤回 clear", () => command(production.id, "exchange", { clear: { id: c.id } }))}>
              撤回 Clear
            </button>`
          : null}
      </li>`,
    )}
  </ul>`;
}

function Microphone({ me, state, detail, mic, children }) {
  const url = `${me.ingestUrl}/whip/talk/${encodeURIComponent(me.operator.id)}`;
  const usable = Boolean(me.ingestUrl && me.mediaGrants);
  return html`<div class="row mic" data-mic=${state}>
    <button type="button" id="mic-arm" disabled=${!usable || state === "arming"}
      aria-pressed=${state === "live"}
      onClick=${() => (state === "off" || state === "error" ? mic.arm(url) : mic.disarm())}>
      ${state === "off" || state === "error" ? "启用麦克风 Arm mic" : "关闭麦克风 Disarm mic"}
    </button>
    ${children}
    <span class="small">${usable ? `${MIC_STATES[state]} ${detail}` : "对讲不可用 talkback unavailable (no ingest URL or media grants)"}</span>
  </div>`;
}

// One microphone for the page: it stays armed while the director moves between tabs.
const micState = createStore({ state: "off", detail: "" });
const microphone = new TalkMicrophone((state, detail) => micState.set({ state, detail }));

export function Stations({ me, production, show }) {
  const prod = production.id;
  const stations = sourcesOf(production);
  const names = Object.fromEntries(stations.map((s) => [s.id, s.name]));
  const mic = useStore(micState);

  const talkSource = `talk_${me.operator.id}`;
  const mayTalk = may(me, "mixer.talk");
  const talking = new Set();
  let talkingAll = false;
  for (const t of show.mixer?.talk || []) {
    if (t.source !== talkSource) continue;
    for (const s of t.stations || []) talking.add(s);
  }
  talkingAll = stations.length > 0 && stations.every((s) => talking.has(s.id));
  const talk = (target, on) =>
    attempt("对讲 talk", () =>
      command(prod, "mixer", {
        talk: { source: talkSource, on, ...(target.all ? { all: true } : { stations: [target.station] }) },
      }),
    );
  const micLive = mic.state === "live";

  return html`<section id="stations" class="panel" aria-label="信号源 Stations">
    <h2>信号源 Stations</h2>
    ${mayTalk
      ? html`<${Microphone} me=${me} state=${mic.state} detail=${mic.detail} mic=${microphone}>
          <${TalkButton} label="对全部讲话 Talk to all" target=${{ all: true }} talking=${talkingAll}
            enabled=${micLive} talk=${talk} />
        <//>`
      : null}
    <table class="stations">
      <thead>
        <tr>
          <th>台 Station</th><th>状态 State</th><th>帧率 fps</th><th>码率 kbps</th>
          <th>丢包 Loss</th><th>RTT ms</th><th>告警 Flags</th><th>返送 Return</th>
          ${mayTalk ? html`<th>对讲 Talk</th>` : null}
        </tr>
      </thead>
      <tbody>
        ${stations.map((s) => {
          const state = show.sources[s.id];
          const stats = state?.online ? show.stats[s.id] : null;
          const tally = tallyOf(show, s.id);
          const watching = show.viewers.filter(
            (v) => v.handle === `return/${s.id}` && v.state !== "closed",
          );
          return html`<tr key=${s.id} data-source=${s.id} data-tally=${tally}
              class=${`tally-${tally}`}>
            <th scope="row">${s.name} <span class="tally-word">${TALLY_WORDS[tally]}</span></th>
            <td>${state?.online ? `在线 online ${state.protocol || ""}` : "离线 offline"}</td>
            <td>${stats ? num(stats.fps).toFixed(1) : "—"}</td>
            <td>${stats ? Math.round(num(stats.bitrateKbps)) : "—"}</td>
            <td>${stats ? `${(num(stats.lossFraction) * 100).toFixed(1)}%` : "—"}</td>
            <td>${stats ? Math.round(num(stats.rttMs)) : "—"}</td>
            <td class="flags">${flags(stats)}</td>
            <td>${watching.length ? `${watching.length} 观看 watching` : "—"}</td>
            ${mayTalk
              ? html`<td><${TalkButton} label=${`讲话 Talk`} target=${{ station: s.id }}
                  talking=${talking.has(s.id)} enabled=${micLive} talk=${talk} /></td>`
              : null}
          </tr>`;
        })}
      </tbody>
    </table>
    <h3>提示 Cues</h3>
    ${may(me, "exchange.cue") ? html`<${CueForm} production=${production} stations=${stations} />` : null}
    <${Cues} production=${production} show=${show} names=${names} allowed=${may(me, "exchange.clear")} />
  </section>`;
}
