// The audio mixer: a fader (gain in dB; the bottom stop is −∞, which mutes), mute and
// audio-follows-video per source, the master fader, peak and short-term loudness meters from
// mixer.levels events (~12 a second), and the program's loudness as monitoring measures it
// (momentary, short-term, integrated, range, true peak).

import { command } from "./api.js";
import {
  attempt,
  db,
  html,
  latestSender,
  Meter,
  num,
  sourcesOf,
  useMemo,
  useState,
} from "./ui.js";

const FADER_TOP = 12;
const FADER_FLOOR = -96; // the mixer's lowest gain
const MINUS_INFINITY = -97; // the fader's bottom stop: below the floor, shown as −∞
// Fader moves go out at most 10 times a second (each is a command with an as-run entry).
const FADER_INTERVAL_MS = 100;

function Fader({ id, label, value, allowed, onMove }) {
  const [hand, setHand] = useState(null);
  const shown = hand ?? value;
  const move = (event, done) => {
    const v = Number(event.currentTarget.value);
    setHand(done ? null : v);
    onMove(v);
  };
  return html`<span class="fader">
    <input type="range" id=${id} min=${MINUS_INFINITY} max=${FADER_TOP} step="0.5"
      value=${shown} disabled=${!allowed} aria-label=${`${label} 增益 gain (dB)`}
      aria-valuetext=${shown <= MINUS_INFINITY ? "minus infinity" : `${shown} dB`}
      onInput=${(e) => move(e, false)} onChange=${(e) => move(e, true)} />
    <output>${shown <= MINUS_INFINITY ? "−∞" : `${shown.toFixed(1)}`} dB</output>
  </span>`;
}

function Loudness({ loudness }) {
  const rows = [
    ["momentary", "瞬时 Momentary", loudness?.momentaryLufs, "LUFS"],
    ["short-term", "短期 Short-term", loudness?.shortTermLufs, "LUFS"],
    ["integrated", "综合 Integrated", loudness?.integratedLufs, "LUFS"],
    ["range", "范围 Range", loudness?.rangeLu, "LU"],
    ["true-peak", "真峰值 True peak", loudness?.truePeakDbtp, "dBTP"],
  ];
  return html`<dl class="loudness" aria-label="节目响度 Program loudness">
    ${rows.map(
      ([key, label, value, unit]) => html`<div key=${key}>
        <dt>${label}</dt>
        <dd data-loudness=${key}>
          ${loudness ? `${unit === "LU" ? num(value).toFixed(1) : db(value)} ${unit}` : "—"}
        </dd>
      </div>`,
    )}
  </dl>`;
}

export function Audio({ production, show, allowed }) {
  const prod = production.id;
  const switcher = show.mixer?.switcher || {};
  const settings = {};
  for (const a of switcher.audio || []) settings[a.source] = a;
  const send = (body) => attempt("音频 audio", () => command(prod, "mixer", { audio: body }));

  // One sender per source, so two faders moved together do not hold each other back.
  const senders = useMemo(() => new Map(), [prod]);
  const fader = (source) => {
    if (!senders.has(source)) senders.set(source, latestSender(send, FADER_INTERVAL_MS));
    return senders.get(source);
  };
  const moveSource = (source, current) => (v) => {
    if (v <= MINUS_INFINITY) fader(source)({ source, gainDb: FADER_FLOOR, mute: true });
    else if (current.mute && num(current.gainDb) <= FADER_FLOOR) {
      fader(source)({ source, gainDb: v, mute: false });
    } else fader(source)({ source, gainDb: v });
  };
  const moveMaster = (v) => fader("")({ gainDb: Math.max(FADER_FLOOR, v) });

  const rows = sourcesOf(production).map((s) => {
    const a = settings[s.id] || {};
    const gain = num(a.gainDb);
    const position = a.mute && gain <= FADER_FLOOR ? MINUS_INFINITY : gain;
    return html`<tr key=${s.id} data-source=${s.id} data-mute=${!!a.mute} data-gain=${gain}>
      <th scope="row">${s.name}</th>
      <td class="meter-cell"><${Meter} level=${show.levels[s.id]} label=${s.name} /></td>
      <td><${Fader} id=${`fader-${s.id}`} label=${s.name} value=${position} allowed=${allowed}
        onMove=${moveSource(s.id, a)} /></td>
      <td><button type="button" class="mute" aria-pressed=${!!a.mute} disabled=${!allowed}
        onClick=${() => send({ source: s.id, mute: !a.mute })}>静音 Mute</button></td>
      <td><button type="button" class="afv" aria-pressed=${!!a.afv} disabled=${!allowed}
        onClick=${() => send({ source: s.id, afv: !a.afv })}>跟随 AFV</button></td>
    </tr>`;
  });
  return html`<section id="audio" class="panel" aria-label="音频 Audio">
    <h2>音频 Audio</h2>
    <table class="mixer">
      <thead><tr><th>信号 Source</th><th>电平 Level</th><th>推子 Fader</th><th></th><th></th></tr></thead>
      <tbody>
        ${rows}
        <tr class="master" data-source="">
          <th scope="row">总线 Master</th>
          <td class="meter-cell"><${Meter} level=${show.levels[""]} label="master" /></td>
          <td><${Fader} id="fader-master" label="master" value=${num(switcher.masterGainDb)}
            allowed=${allowed} onMove=${moveMaster} /></td>
          <td></td><td></td>
        </tr>
      </tbody>
    </table>
    <h3>节目响度 Program loudness (EBU R128)</h3>
    <${Loudness} loudness=${show.loudness} />
  </section>`;
}
