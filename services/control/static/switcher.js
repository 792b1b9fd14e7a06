// The switcher: preview and program buses (a button per source), CUT, AUTO with its transition,
// the T-bar and fade to black. Keys: 1–9 and 0 put a source on preview, Space cuts, Enter runs
// AUTO (not while typing in a field; Escape leaves the field). The buses light from mixer.state
// events, not from clicks.

import { command } from "./api.js";
import {
  attempt,
  html,
  latestSender,
  sourcesOf,
  tallyOf,
  useEffect,
  useMemo,
  useRef,
  useState,
} from "./ui.js";

const KEYS = ["1", "2", "3", "4", "5", "6", "7", "8", "9", "0"];
const TRANSITIONS = [
  ["mix", "叠化 Mix"],
  ["wipe", "划像 Wipe"],
  ["dip", "闪黑 Dip"],
  ["cut", "切 Cut"],
];
const T_BAR_STEPS = 1000;
// The T-bar sends at most 20 positions a second (each a command through the API).
const T_BAR_INTERVAL_MS = 50;
const TYPING = new Set(["INPUT", "TEXTAREA", "SELECT"]);

// A click on a bus button must not move the focus there: Space would press it again instead of
// cutting. Keyboard users still Tab to the buttons.
const keepFocus = (event) => event.preventDefault();

export function Switcher({ production, show }) {
  const prod = production.id;
  const sources = sourcesOf(production);
  const switcher = show.mixer?.switcher || {};
  const transition = show.mixer?.transition || {};
  const [type, setType] = useState("mix");
  const [durationMs, setDurationMs] = useState(1000);
  const [hand, setHand] = useState(null); // the T-bar's position while the operator holds it
  const send = (what, body) => attempt(what, () => command(prod, "mixer", body));
  const settings = useRef({});
  settings.current = { type, durationMs, sources };

  const preview = (source) => send("预监 preview", { preview: { source } });
  const cut = () => send("切换 CUT", { cut: {} });
  const auto = () => {
    const { type: t, durationMs: ms } = settings.current;
    return send("自动 AUTO", { auto: { transition: { type: t, durationMs: ms } } });
  };
  const take = (source) => send("切换 cut", { cut: { source } });
  const ftb = () => send("淡出 FTB", { ftb: {} });

  const tBar = useMemo(
    () =>
      latestSender(
        (position) =>
          send("推杆 T-bar", {
            manual: {
              position,
              transition: { type: settings.current.type === "cut" ? "mix" : settings.current.type },
            },
          }),
        T_BAR_INTERVAL_MS,
      ),
    [prod],
  );

  useEffect(() => {
    const onKey = (event) => {
      if (event.ctrlKey || event.metaKey || event.altKey || event.repeat) return;
      const target = event.target;
      if (TYPING.has(target.tagName) && target.type !== "range") {
        if (event.key === "Escape") target.blur(); // back to the switcher's keys
        return;
      }
      const index = KEYS.indexOf(event.key);
      if (index >= 0 && index < settings.current.sources.length) {
        event.preventDefault();
        preview(settings.current.sources[index].id);
      } else if (event.key === " " && target.tagName !== "BUTTON") {
        event.preventDefault();
        cut();
      } else if (event.key === "Enter" && target.tagName !== "BUTTON") {
        event.preventDefault();
        auto();
      }
    };
    document.addEventListener("keydown", onKey);
    return () => document.removeEventListener("keydown", onKey);
  }, [prod]);

  const serverPosition = transition.active && transition.manual ? Number(transition.position || 0) : 0;
  const position = hand ?? serverPosition;
  const onBar = (event) => {
    const value = Number(event.currentTarget.value) / T_BAR_STEPS;
    setHand(value);
    tBar(value);
  };

  const bus = (label, kind, active, press) => html`<div class="bus" role="group" aria-label=${label}>
    <span class="bus-label">${label}</span>
    ${sources.map(
      (s, i) => html`<button
        type="button"
        key=${s.id}
        class=${`source tally-${tallyOf(show, s.id)}`}
        data-bus=${kind}
        data-source=${s.id}
        aria-pressed=${active === s.id}
        aria-keyshortcuts=${kind === "preview" && i < KEYS.length ? KEYS[i] : undefined}
        onMouseDown=${keepFocus}
        onClick=${() => press(s.id)}
      >
        ${kind === "preview" && i < KEYS.length ? html`<kbd>${KEYS[i]}</kbd>` : null}
        ${s.name}
      </button>`,
    )}
  </div>`;

  return html`<section id="switcher" class="panel" aria-label="切换台 Switcher"
      data-program=${switcher.program || ""} data-preview=${switcher.preview || ""}>
    <h2>切换台 Switcher</h2>
    ${bus("节目 Program", "program", switcher.program, take)}
    ${bus("预监 Preview", "preview", switcher.preview, preview)}
    <div class="row transition">
      <button type="button" id="cut" class="big" aria-keyshortcuts="Space" onMouseDown=${keepFocus}
        onClick=${cut}>切 CUT</button>
      <button type="button" id="auto" class="big" aria-keyshortcuts="Enter" onMouseDown=${keepFocus}
        onClick=${auto}>自动 AUTO</button>
      <label>转场 Transition
        <select id="transition-type" value=${type} onChange=${(e) => setType(e.currentTarget.value)}>
          ${TRANSITIONS.map(([value, label]) => html`<option value=${value}>${label}</option>`)}
        </select>
      </label>
      <label>时长 Duration (ms)
        <input id="transition-ms" type="number" min="0" max="10000" step="100" value=${durationMs}
          onInput=${(e) => setDurationMs(Math.max(0, Math.min(10000, Number(e.currentTarget.value) || 0)))} />
      </label>
      <button type="button" id="ftb" class=${`big ${switcher.ftb ? "on-air" : ""}`}
        aria-pressed=${!!switcher.ftb} onMouseDown=${keepFocus} onClick=${ftb}>淡出 FTB</button>
    </div>
    <label class="t-bar">推杆 T-bar
      <input id="t-bar" type="range" min="0" max=${T_BAR_STEPS} step="1"
        value=${Math.round(position * T_BAR_STEPS)}
        onInput=${onBar}
        onChange=${(e) => {
          onBar(e);
          setHand(null);
        }} />
      <output>${Math.round(position * 100)}%</output>
    </label>
    <p class="small" data-transition=${transition.active ? "active" : "idle"}>
      ${transition.active
        ? `转场中 in transition: ${transition.transition?.type || "mix"} ${Math.round(Number(transition.position || 0) * 100)}%`
        : "就绪 ready"}
    </p>
  </section>`;
}
