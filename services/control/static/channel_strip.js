// A source's channel strip in the audio panel (docs/adr/0021), in signal order: the input trim
// (its meter reads after it), high-pass filter, gate, compressor and three-band EQ, each stage
// off until it is switched on, and the gain reduction the gate and compressor apply (from
// mixer.levels). The controls show the switcher's state; a move sends only the field it moves
// ({"audio": {"source", "compressor": {"ratio": 4}}}), and the mixer keeps the others.

import { db, html, num, useState } from "./ui.js";

// The mixer's defaults for a field never set (mixer.proto) and its ranges (the mixer refuses
// others, processing_settings.py).
const TRIM = { min: -24, max: 24, step: 0.5 };
const HPF = { min: 20, max: 1000, fallback: 80 };
const GATE = { min: -90, max: 0, step: 1, fallback: -50 };
const COMP = { min: -60, max: 0, step: 1, fallback: -20 };
const RATIO = { min: 1, max: 20, step: 0.5, fallback: 3 };
const EQ = { min: -18, max: 18, step: 0.5 };
const EQ_BANDS = [
  ["low", "低 Low"],
  ["mid", "中 Mid"],
  ["high", "高 High"],
];
// The gain reduction bar's full scale (dB).
const REDUCTION_FULL_DB = 24;
// A high-pass frequency on a slider: positions 0..LOG_STEPS spread evenly over octaves, so
// 40–200 Hz (where voices are cleaned) gets as much travel as 200–1000.
const LOG_STEPS = 1000;

const signed = (v) => `${v > 0 ? "+" : ""}${v.toFixed(1)}`;

function hzToPosition(hz) {
  return Math.round((LOG_STEPS * Math.log(hz / HPF.min)) / Math.log(HPF.max / HPF.min));
}

function positionToHz(position) {
  return Math.round(HPF.min * (HPF.max / HPF.min) ** (position / LOG_STEPS));
}

// A slider with its value beside it. `toValue`/`toPosition` map a slider whose travel is not
// the value itself (the high-pass frequency); the hand's position wins over the shown state
// while it moves, so events arriving meanwhile do not pull the slider from under it.
export function Knob({ id, label, unit, range, value, allowed, onMove, format = signed, log }) {
  const [hand, setHand] = useState(null);
  const shown = hand ?? value;
  const move = (event, done) => {
    const position = Number(event.currentTarget.value);
    const v = log ? positionToHz(position) : position;
    setHand(done ? null : v);
    onMove(v);
  };
  const text = format(shown);
  return html`<label class="knob">
    <span>${label}</span>
    <input type="range" id=${id} disabled=${!allowed}
      min=${log ? 0 : range.min} max=${log ? LOG_STEPS : range.max} step=${log ? 1 : range.step}
      value=${log ? hzToPosition(shown) : shown} aria-valuetext=${`${text} ${unit}`}
      onInput=${(e) => move(e, false)} onChange=${(e) => move(e, true)} />
    <output>${text} ${unit}</output>
  </label>`;
}

// A stage's on/off switch.
function Switch({ id, label, on, allowed, onToggle }) {
  return html`<button type="button" id=${id} class="stage-switch" aria-pressed=${on}
    disabled=${!allowed} onClick=${onToggle}>${label}</button>`;
}

// Gain reduction (dB, ≥ 0) as a bar growing with it, and its figure.
export function Reduction({ value, label, what }) {
  const v = Math.max(0, num(value));
  const fill = Math.min(1, v / REDUCTION_FULL_DB);
  return html`<div class="reduction" data-reduction=${what} data-db=${v.toFixed(1)}
      title=${`${label} ${v.toFixed(1)} dB`}>
    <div class="reduction-track"><div class="reduction-bar" style=${{ transform: `scaleX(${fill})` }}></div></div>
    <span class="reduction-text">${label} ${db(-v)} dB</span>
  </div>`;
}

// The input trim of a source: its own cell, beside the meter that reads after it.
export function Trim({ source, settings, allowed, sendOf }) {
  return html`<${Knob} id=${`trim-${source}`} label="输入 Trim" unit="dB" range=${TRIM}
    value=${num(settings.trimDb)} allowed=${allowed}
    onMove=${(v) => sendOf("trim")({ source, trimDb: v })} />`;
}

// The processing stages of one source. `settings` is its SourceAudio (canonical JSON), `sendOf`
// gives the throttled sender of one control, `send` sends a switch at once.
export function Stages({ source, settings, allowed, send, sendOf }) {
  const hpf = settings.highPass || {};
  const gate = settings.gate || {};
  const comp = settings.compressor || {};
  const eq = settings.eq || {};
  const knob = (name, block, field, range, label, unit, extra = {}) => html`<${Knob}
    id=${`${name}-${source}`} label=${label} unit=${unit} range=${range} allowed=${allowed}
    value=${block[field] ?? range.fallback} ...${extra}
    onMove=${(v) => sendOf(name)({ source, ...patch(name, v) })} />`;
  const toggle = (name, key, block, label) => html`<${Switch} id=${`${name}-on-${source}`}
    label=${label} on=${!!block.enabled} allowed=${allowed}
    onToggle=${() => send({ source, [key]: { enabled: !block.enabled } })} />`;
  return html`<div class="stages">
    <fieldset class="stage" data-stage="hpf" data-on=${!!hpf.enabled}>
      <legend>${toggle("hpf", "highPass", hpf, "高通 HPF")}</legend>
      ${knob("hpf-hz", hpf, "frequencyHz", HPF, "频率 Freq", "Hz", {
        log: true,
        format: (v) => `${Math.round(v)}`,
      })}
    </fieldset>
    <fieldset class="stage" data-stage="gate" data-on=${!!gate.enabled}>
      <legend>${toggle("gate", "gate", gate, "噪声门 Gate")}</legend>
      ${knob("gate-db", gate, "thresholdDb", GATE, "门限 Threshold", "dBFS")}
    </fieldset>
    <fieldset class="stage" data-stage="comp" data-on=${!!comp.enabled}>
      <legend>${toggle("comp", "compressor", comp, "压缩 Comp")}</legend>
      ${knob("comp-db", comp, "thresholdDb", COMP, "门限 Threshold", "dBFS")}
      ${knob("comp-ratio", comp, "ratio", RATIO, "压缩比 Ratio", ": 1", {
        format: (v) => num(v).toFixed(1),
      })}
    </fieldset>
    <fieldset class="stage" data-stage="eq" data-on=${!!eq.enabled}>
      <legend>${toggle("eq", "eq", eq, "均衡 EQ")}</legend>
      ${EQ_BANDS.map(([band, label]) => {
        const range = { ...EQ, fallback: 0 };
        return knob(`eq-${band}`, eq[band] || {}, "gainDb", range, label, "dB");
      })}
    </fieldset>
  </div>`;
}

// The command fields one control moves.
function patch(name, v) {
  switch (name) {
    case "hpf-hz":
      return { highPass: { frequencyHz: v } };
    case "gate-db":
      return { gate: { thresholdDb: v } };
    case "comp-db":
      return { compressor: { thresholdDb: v } };
    case "comp-ratio":
      return { compressor: { ratio: v } };
    default: {
      const band = name.slice("eq-".length); // eq-low, eq-mid, eq-high
      return { eq: { [band]: { gainDb: v } } };
    }
  }
}
