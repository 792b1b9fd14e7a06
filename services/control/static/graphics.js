// Graphics: the templates with their fields, filled in (Chinese or English), a preview of the
// layer rendered by the graphics service without airing it (GfxPreview), then show, update or
// hide; what is on air comes from gfx events, and a ticker takes new lines while it crawls.

import { api, command } from "./api.js";
import { attempt, explain, html, useEffect, useRef, useState } from "./ui.js";

const PREVIEW_WIDTH = 640;
const PREVIEW_DELAY_MS = 400;

// A list field is edited one item a line and sent as the JSON array the template takes.
function toForm(field, value) {
  if (field.kind !== "list") return value ?? "";
  try {
    return JSON.parse(value || "[]").join("\n");
  } catch (_err) {
    return value || "";
  }
}

function fromForm(kind, text) {
  if (kind !== "list") return text;
  const items = text
    .split("\n")
    .map((line) => line.trim())
    .filter(Boolean);
  return JSON.stringify(items);
}

function OnAir({ production, show, templates, allowed, onEdit }) {
  const [lines, setLines] = useState({});
  const instances = Object.values(show.scene).sort((a, b) => (a.layer || 0) - (b.layer || 0));
  const send = (what, body) => attempt(what, () => command(production.id, "graphics", body));
  if (!instances.length) return html`<p class="small" id="on-air-empty">无图文 Nothing on air</p>`;
  return html`<ul class="on-air" aria-label="播出中 On air">
    ${instances.map((inst) => {
      const template = templates.find((t) => t.name === inst.template);
      const listField = template?.fields.find((f) => f.kind === "list");
      const summary = Object.entries(inst.fields || {})
        .filter(([name]) => name !== listField?.name)
        .map(([, value]) => value)
        .join(" · ");
      return html`<li key=${inst.id} data-instance=${inst.id}>
        <strong>${inst.id}</strong> <span class="small">${inst.template}</span>
        <div class="small">${summary}</div>
        ${allowed
          ? html`<div class="row">
              <button type="button" onClick=${() => onEdit(inst)}>编辑 Edit</button>
              <button type="button" class="hide" onClick=${() => send("隐藏 hide", { hide: { instance: inst.id } })}>
                隐藏 Hide
              </button>
              ${listField
                ? html`<input type="text" class="ticker-line" placeholder="新条目 new line"
                      value=${lines[inst.id] || ""}
                      onInput=${(e) => setLines({ ...lines, [inst.id]: e.currentTarget.value })} />
                    <button type="button" class="ticker-add" onClick=${async () => {
                      const item = (lines[inst.id] || "").trim();
                      if (!item) return;
                      const done = await send("滚动条 ticker", {
                        tickerAdd: { instance: inst.id, item, field: listField.name },
                      });
                      if (done) setLines({ ...lines, [inst.id]: "" });
                    }}>添加 Add line</button>`
                : null}
            </div>`
          : null}
      </li>`;
    })}
  </ul>`;
}

export function Graphics({ production, show, allowed }) {
  const prod = production.id;
  const [templates, setTemplates] = useState([]);
  const [name, setName] = useState("");
  const [instance, setInstance] = useState("");
  const [layer, setLayer] = useState(0);
  const [values, setValues] = useState({});
  const [preview, setPreview] = useState({ src: "", error: "" });
  const generation = useRef(0);
  const template = templates.find((t) => t.name === name);

  useEffect(() => {
    api(`/api/graphics/templates?production=${encodeURIComponent(prod)}`)
      .then((reply) => {
        const list = reply.templates || [];
        setTemplates(list);
        if (list.length) choose(list[0]);
      })
      .catch((err) => explain(err, "模板 templates"));
  }, [prod]);

  function choose(t, fields = null, id = null) {
    setName(t.name);
    setInstance(id ?? t.name);
    const next = {};
    for (const f of t.fields) next[f.name] = toForm(f, fields ? fields[f.name] : f.defaultValue);
    setValues(next);
  }

  const fields = () => {
    const out = {};
    for (const f of template?.fields || []) out[f.name] = fromForm(f.kind, values[f.name] ?? "");
    return out;
  };

  // The preview follows the form, a moment after the typing stops.
  useEffect(() => {
    if (!template) return undefined;
    const mine = ++generation.current;
    const timer = setTimeout(async () => {
      try {
        const reply = await command(prod, "graphics", {
          preview: { template: template.name, fields: fields(), width: PREVIEW_WIDTH },
        });
        if (mine === generation.current) {
          setPreview({ src: `data:image/png;base64,${reply.previewPng || ""}`, error: "" });
        }
      } catch (err) {
        if (mine === generation.current) setPreview({ src: "", error: err.message });
      }
    }, PREVIEW_DELAY_MS);
    return () => clearTimeout(timer);
  }, [name, JSON.stringify(values)]);

  const send = (what, body) => attempt(what, () => command(prod, "graphics", body));
  const onAir = Boolean(show.scene[instance]);
  const showIt = () =>
    send("显示 show", { show: { template: name, instance, fields: fields(), layer } });
  const updateIt = () => send("更新 update", { update: { instance, fields: fields() } });
  const hideIt = () => send("隐藏 hide", { hide: { instance } });

  return html`<section id="graphics" class="panel" aria-label="图文 Graphics">
    <h2>图文 Graphics</h2>
    <div class="graphics-grid">
      <form class="gfx-form" onSubmit=${(e) => e.preventDefault()}>
        <label>模板 Template
          <select id="gfx-template" value=${name}
            onChange=${(e) => choose(templates.find((t) => t.name === e.currentTarget.value))}>
            ${templates.map((t) => html`<option value=${t.name}>${t.description || t.name}</option>`)}
          </select>
        </label>
        <div class="row">
          <label>实例 Instance
            <input id="gfx-instance" type="text" value=${instance}
              onInput=${(e) => setInstance(e.currentTarget.value.trim())} />
          </label>
          <label>层 Layer
            <input id="gfx-layer" type="number" min="-100" max="100" value=${layer}
              onInput=${(e) => setLayer(Math.trunc(Number(e.currentTarget.value) || 0))} />
          </label>
        </div>
        ${(template?.fields || []).map(
          (f) => html`<label key=${f.name}>${f.name}${f.kind === "list" ? " (一行一条 one a line)" : ""}
            ${f.kind === "list"
              ? html`<textarea name=${f.name} rows="3" value=${values[f.name] ?? ""}
                  onInput=${(e) => setValues({ ...values, [f.name]: e.currentTarget.value })}></textarea>`
              : html`<input type="text" name=${f.name} value=${values[f.name] ?? ""} lang="zh"
                  onInput=${(e) => setValues({ ...values, [f.name]: e.currentTarget.value })} />`}
          </label>`,
        )}
        ${allowed
          ? html`<div class="row">
              <button type="button" id="gfx-show" onClick=${showIt}>显示 Show</button>
              <button type="button" id="gfx-update" disabled=${!onAir} onClick=${updateIt}>更新 Update</button>
              <button type="button" id="gfx-hide" disabled=${!onAir} onClick=${hideIt}>隐藏 Hide</button>
            </div>`
          : null}
      </form>
      <figure class="gfx-preview">
        ${preview.src
          ? html`<img id="gfx-preview" src=${preview.src} alt=${`预览 preview: ${name}`} />`
          : html`<p class="small">${preview.error || "预览中 rendering…"}</p>`}
        <figcaption>预览 Preview (未播出 not on air)</figcaption>
      </figure>
    </div>
    <h3>播出中 On air</h3>
    <${OnAir} production=${production} show=${show} templates=${templates} allowed=${allowed}
      onEdit=${(inst) => {
        const t = templates.find((x) => x.name === inst.template);
        if (t) choose(t, inst.fields, inst.id);
        setLayer(inst.layer || 0);
      }} />
  </section>`;
}
