// The audio mixer: per source, the channel strip (input trim with the input meter, high-pass
// filter, gate, compressor, three-band EQ and their gain reduction: channel_strip.js), a fader
// (gain in dB; the bottom stop is −∞, which mutes), mute and audio-follows-video; the master
// fader with the program's leveler gain and limiter reduction; peak and short-term loudness
// meters from mixer.levels events (~12 a second), and the program's loudness as monitoring
// measures it (momentary, short-term, integrated, range, true peak) against the production's
// target. What the controls show is the switcher's state (the production's settings until a
// command changes them).

import { command } from "./api.js";
import { Reduction, Stages, Trim } from "./channel_strip.js";
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
// Fader and knob moves go out at most 10 times a second (each is a command with an as-run entry).
const FADER_INTERVAL_MS = 100;
const DEFAULT_TARGET_LUFS = -23; // the mixer's, for a production that sets none

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

// The production's loudness target as the mixer holds it (mixer.proto, Loudness).
function target(production) {
  const loudness = production.loudness || {};
  if (loudness.enabled === false) return "响度控制关 loudness control off";
  return `目标 target ${num(loudness.targetLufs ?? DEFAULT_TARGET_LUFS).toFixed(1)} LUFS`;
}

// The program's leveler gain (positive lifts) and limiter reduction, beside its meter.
function BusGain({ level }) {
  const leveler = num(level?.levelerGainDb);
  return html`<div class="bus-gain">
    <span data-leveler=${leveler.toFixed(1)}>调平 Leveler ${leveler > 0 ? "+" : ""}${leveler.toFixed(1)} dB</span>
    <${Reduction} value=${level?.limiterReductionDb} label="限幅 Limiter" what="limiter" />
  </div>`;
}

export function Audio({ production, show, allowed }) {
  const prod = production.id;
  const switcher = show.mixer?.switcher || {};
  const settings = {};
  for (const a of production.audio || []) settings[a.source] = a;
  for (const a of switcher.audio || []) settings[a.source] = a;
  const send = (body) => attempt("音频 audio", () => command(prod, "mixer", { audio: body }));

  // One sender per source and control, so two faders (or a source's trim and its EQ) moved
  // together neither hold each other back nor drop each other's last value.
  const senders = useMemo(() => new Map(), [prod]);
  const sender = (source, control = "fader") => {
    const key = `${source}|${control}`;
    if (!senders.has(key)) senders.set(key, latestSender(send, FADER_INTERVAL_MS));
    return senders.get(key);
  };
  const moveSource = (source, current) => (v) => {
    if (v <= MINUS_INFINITY) sender(source)({ source, gainDb: FADER_FLOOR, mute: true });
    else if (current.mute && num(current.gainDb) <= FADER_FLOOR) {
      sender(source)({ source, gainDb: v, mute: false });
    } else sender(source)({ source, gainDb: v });
  };
  const moveMaster = (v) => sender("")({ gainDb: Math.max(FADER_FLOOR, v) });

  const rows = sourcesOf(production).map((s) => {
    const a = settings[s.id] || {};
    const gain = num(a.gainDb);
    const position = a.mute && gain <= FADER_FLOOR ? MINUS_INFINITY : gain;
    const level = show.levels[s.id];
    const strip = { source: s.id, settings: a, allowed, send, sendOf: (c) => sender(s.id, c) };
    return html`<tr key=${s.id} class="channel" data-source=${s.id} data-mute=${!!a.mute}
        data-gain=${gain} data-trim=${num(a.trimDb)}>
        <th scope="row" rowspan="2">${s.name}</th>
        <td class="meter-cell">
          <${Meter} level=${level} label=${s.name} />
          <${Reduction} value=${level?.gainReductionDb} label="压缩量 GR" what="gain" />
        </td>
        <td><${Trim} ...${strip} /></td>
        <td><${Fader} id=${`fader-${s.id}`} label=${s.name} value=${position} allowed=${allowed}
          onMove=${moveSource(s.id, a)} /></td>
        <td><button type="button" class="mute" aria-pressed=${!!a.mute} disabled=${!allowed}
          onClick=${() => send({ source: s.id, mute: !a.mute })}>静音 Mute</button></td>
        <td><button type="button" class="afv" aria-pressed=${!!a.afv} disabled=${!allowed}
          onClick=${() => send({ source: s.id, afv: !a.afv })}>跟随 AFV</button></td>
      </tr>
      <tr key=${`${s.id}-strip`} class="strip" data-strip=${s.id}>
        <td colspan="5"><${Stages} ...${strip} /></td>
      </tr>`;
  });
  return html`<section id="audio" class="panel" aria-label="音频 Audio">
    <h2>音频 Audio</h2>
    <table class="mixer">
      <thead><tr><th>信号 Source</th><th>输入电平 Input level</th><th>输入增益 Trim</th>
        <th>推子 Fader</th><th></th><th></th></tr></thead>
      <tbody>
        ${rows}
        <tr class="master" data-source="">
          <th scope="row">总线 Master</th>
          <td class="meter-cell">
            <${Meter} level=${show.levels[""]} label="master" />
            <${BusGain} level=${show.levels[""]} />
          </td>
          <td></td>
          <td><${Fader} id="fader-master" label="master" value=${num(switcher.masterGainDb)}
            allowed=${allowed} onMove=${moveMaster} /></td>
          <td></td><td></td>
        </tr>
      </tbody>
    </table>
    <h3>节目响度 Program loudness (EBU R128) · <span id="loudness-target">${target(production)}</span></h3>
    <${Loudness} loudness=${show.loudness} />
  </section>`;
}
