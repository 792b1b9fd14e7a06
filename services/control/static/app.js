// The control room: who is logged in (GET /api/me), which production (?production=<id>, else
// the first), the show from the event stream, and the panels this operator's role may use. The
// monitors stay on the left on every tab; the tabs hold the panels.

import { api, setCsrfToken, toLogin } from "./api.js";
import { Audio } from "./audio.js";
import { Graphics } from "./graphics.js";
import { Layouts } from "./layouts.js";
import { Monitors } from "./monitors.js";
import { Outputs } from "./outputs.js";
import { Rundown } from "./rundown.js";
import { followShow } from "./show.js";
import { Stations } from "./stations.js";
import { Switcher } from "./switcher.js";
import { html, may, render, Toasts, useEffect, useState, useStore } from "./ui.js";

const ROLE_NAMES = {
  director: "导演 Director",
  graphics: "图文 Graphics",
  audio: "音频 Audio",
  viewer: "观看 Viewer",
};
const CONNECTION = {
  connecting: "连接中 connecting…",
  live: "实时 live",
  closed: "已断开 disconnected",
  refused: "被拒 refused",
};

// The tabs, each shown only to a role that may use it (the server enforces the same).
function tabsFor(me) {
  const tabs = [];
  if (may(me, "mixer.cut")) tabs.push(["switcher", "切换台 Switcher"]);
  if (may(me, "gfx.show") || me.role === "viewer") tabs.push(["graphics", "图文 Graphics"]);
  tabs.push(["audio", "音频 Audio"]);
  tabs.push(["rundown", "串联单 Rundown"]);
  tabs.push(["stations", "信号源 Stations"]);
  tabs.push(["outputs", "输出 Outputs"]);
  return tabs;
}

function Panel({ tab, me, production, state }) {
  const props = { me, production, show: state.show };
  switch (tab) {
    case "switcher":
      return html`<${Switcher} ...${props} />
        <${Layouts} ...${props} allowed=${may(me, "mixer.layout")} />`;
    case "graphics":
      return html`<${Graphics} ...${props} allowed=${may(me, "gfx.show")} />`;
    case "audio":
      return html`<${Audio} ...${props} allowed=${may(me, "mixer.audio")} />`;
    case "rundown":
      return html`<${Rundown} ...${props} asrun=${state.asrun} />`;
    case "stations":
      return html`<${Stations} ...${props} />`;
    default:
      return html`<${Outputs} ...${props} />`;
  }
}

function useTab(tabs) {
  const wanted = () => window.location.hash.slice(1);
  const [tab, setTab] = useState(wanted());
  useEffect(() => {
    const onHash = () => setTab(wanted());
    window.addEventListener("hashchange", onHash);
    return () => window.removeEventListener("hashchange", onHash);
  }, []);
  return tabs.some(([id]) => id === tab) ? tab : tabs[0][0];
}

async function logOut() {
  try {
    await api("/api/session", { method: "DELETE", onUnauthenticated: null });
  } finally {
    toLogin("");
  }
}

function App({ me, production, productions, live }) {
  const state = useStore(live.store);
  const tabs = tabsFor(me);
  const tab = useTab(tabs);
  useEffect(() => {
    document.body.dataset.connection = state.connection;
    document.body.dataset.role = me.role;
  }, [state.connection]);
  return html`<header class="bar">
      <h1>baycast 控制室 · control room</h1>
      <label class="production">
        <select value=${production.id} aria-label="节目 Show" onChange=${(e) => {
          window.location.search = `?production=${encodeURIComponent(e.currentTarget.value)}`;
        }}>
          ${productions.map((p) => html`<option value=${p.id}>${p.name || p.id}</option>`)}
        </select>
      </label>
      <nav class="tabs" aria-label="面板 Panels">
        ${tabs.map(
          ([id, label]) => html`<a key=${id} href=${`#${id}`} data-tab=${id}
            aria-current=${tab === id ? "page" : undefined}>${label}</a>`,
        )}
      </nav>
      <span class="connection" data-state=${state.connection}>● ${CONNECTION[state.connection]}</span>
      <span class="who">${me.operator.name || me.operator.id} · ${ROLE_NAMES[me.role] || me.role}</span>
      <button type="button" onClick=${logOut}>退出 Log out</button>
    </header>
    <main class="room">
      <${Monitors} me=${me} production=${production} show=${state.show} />
      <div class="panels"><${Panel} tab=${tab} me=${me} production=${production} state=${state} /></div>
    </main>
    <${Toasts} />`;
}

function Message({ title, text }) {
  return html`<main class="message"><h1>${title}</h1><p>${text}</p></main>`;
}

async function start() {
  const root = document.getElementById("app");
  let me;
  try {
    me = await api("/api/me");
  } catch (err) {
    if (err.status !== 401) render(html`<${Message} title="出错 Error" text=${err.message} />`, root);
    return; // a 401 went to the login page
  }
  setCsrfToken(me.csrfToken || "");
  let productions = [];
  try {
    productions = (await api("/api/productions")).productions || [];
  } catch (err) {
    render(html`<${Message} title="混音器未响应 The mixer does not answer" text=${err.message} />`, root);
    return;
  }
  const wanted = new URLSearchParams(window.location.search).get("production");
  const production = productions.find((p) => p.id === wanted) || productions[0];
  if (!production) {
    render(
      html`<${Message} title="没有节目 No production"
        text="baycast ctl production create … (or baycast up) makes one." />`,
      root,
    );
    return;
  }
  document.title = `${production.name || production.id} · baycast 控制室`;
  const live = followShow(production.id);
  render(html`<${App} me=${me} production=${production} productions=${productions} live=${live} />`, root);
}

start();
