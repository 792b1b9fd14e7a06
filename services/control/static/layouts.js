// Layouts: pick one of the production's layouts (or a preset kind), choose the source of each
// box, and take it (MixerCommand.layout with the layout inline). What is on air is shown from
// mixer.state; the boxes being chosen are this page's draft until taken.

import { command } from "./api.js";
import { attempt, html, sourcesOf, useEffect, useState } from "./ui.js";

// How many boxes each preset kind has (a custom layout has its own list).
const BOXES = { full: 1, side_by_side: 2, pip: 2, quad: 4, grid3x3: 9, city_wall: 10 };
const KIND_NAMES = {
  full: "全屏 Full",
  side_by_side: "左右 Side by side",
  pip: "画中画 PiP",
  quad: "四分 Quad",
  grid3x3: "九宫格 3×3",
  city_wall: "城市墙 City wall",
  custom: "自定义 Custom",
};

function boxCount(layout) {
  if ((layout.kind || "full") === "custom") return (layout.boxes || []).length;
  return BOXES[layout.kind || "full"] || 1;
}

function choices(production) {
  const named = (production.layouts || []).map((l) => ({ ...l, kind: l.kind || "full" }));
  const kinds = new Set(named.map((l) => l.name));
  for (const kind of Object.keys(BOXES)) {
    if (!kinds.has(kind)) named.push({ name: kind, kind, sources: [] });
  }
  return named;
}

export function Layouts({ production, show, allowed }) {
  const options = choices(production);
  const onAir = show.mixer?.switcher?.layout || {};
  const [name, setName] = useState(onAir.name || options[0]?.name || "full");
  const chosen = options.find((l) => l.name === name) || options[0];
  const [sources, setSources] = useState([]);
  const list = sourcesOf(production);

  // A new choice starts from that layout's own sources (the one on air: from what is on air).
  useEffect(() => {
    const from = chosen.name === onAir.name ? onAir : chosen;
    setSources(Array.from({ length: boxCount(chosen) }, (_, i) => (from.sources || [])[i] || ""));
  }, [name]);

  const take = () => {
    const layout = { name: chosen.name, kind: chosen.kind, sources };
    if (chosen.kind === "custom") layout.boxes = chosen.boxes || [];
    if (chosen.pip) layout.pip = chosen.pip;
    return attempt("布局 layout", () =>
      command(production.id, "mixer", { layout: { layout } }),
    );
  };

  return html`<section id="layouts" class="panel" aria-label="布局 Layouts" data-on-air=${onAir.name || ""}>
    <h2>布局 Layouts</h2>
    <p class="small">播出中 On air: <strong>${onAir.name || KIND_NAMES[onAir.kind] || "—"}</strong>
      ${(onAir.sources || []).filter(Boolean).length ? ` (${onAir.sources.join(", ")})` : ""}</p>
    <div class="row">
      <label>布局 Layout
        <select id="layout-name" value=${name} onChange=${(e) => setName(e.currentTarget.value)}>
          ${options.map(
            (l) => html`<option value=${l.name}>${l.name} · ${KIND_NAMES[l.kind] || l.kind}</option>`,
          )}
        </select>
      </label>
      ${allowed ? html`<button type="button" id="layout-take" onClick=${take}>使用 Take layout</button>` : null}
    </div>
    <ol class="boxes">
      ${sources.map(
        (value, i) => html`<li key=${i}>
          <label>框 Box ${i + 1}
            <select data-box=${i} value=${value} disabled=${!allowed}
              onChange=${(e) => setSources(sources.map((v, j) => (j === i ? e.currentTarget.value : v)))}>
              <option value="">节目 bus source</option>
              ${list.map((s) => html`<option value=${s.id}>${s.name}</option>`)}
            </select>
          </label>
        </li>`,
      )}
    </ol>
  </section>`;
}
