// The show as the event stream tells it: GET /api/events?production=<id> (Server-Sent Events,
// with the session cookie). Pages render this state and nothing else: a button sends a command
// and the page changes when the event that follows says so, so every page shows the same show,
// whoever changed it (another browser, `baycast ctl`, the rundown).
//
// Each connection begins with `hello`, the current state as events, then `snapshot`. The state
// is built afresh from `hello` and shown at `snapshot`, so nothing that ended while the stream
// was away (a source gone offline, an alert cleared) lingers after a reconnect.

import { api } from "./api.js";
import { createStore } from "./ui.js";

const ASRUN_KEPT = 200;
const EVENTS = [
  "hello",
  "snapshot",
  "mixer.state",
  "mixer.levels",
  "tally",
  "loudness",
  "rundown.state",
  "gfx.state",
  "gfx.scene",
  "dist.output.state",
  "exchange.state",
  "cue",
  "asrun",
  "source.state",
  "source.stats",
  "alert",
];

function fresh() {
  return {
    mixer: null,
    tally: {}, // source -> { program, preview }
    levels: {}, // source ("" = program) -> Level
    loudness: null,
    rundown: null,
    scene: {}, // instance id -> GfxInstance
    outputs: {}, // output id -> OutputState
    viewers: [],
    cues: {}, // cue id -> Cue
    sources: {}, // source id -> SourceState
    stats: {}, // source id -> SourceStats
    alerts: {}, // alert id -> Alert
  };
}

function applyTally(show, tally) {
  show.tally = {};
  for (const entry of tally.sources || []) {
    show.tally[entry.source] = { program: !!entry.program, preview: !!entry.preview };
  }
}

// One event into `show` (a plain object this function may change).
function apply(show, name, data) {
  switch (name) {
    case "mixer.state":
      show.mixer = data;
      if (data.tally) applyTally(show, data.tally);
      break;
    case "tally":
      applyTally(show, data);
      break;
    case "mixer.levels":
      show.levels = {};
      for (const level of data.levels || []) show.levels[level.source || ""] = level;
      break;
    case "loudness":
      show.loudness = data;
      break;
    case "rundown.state":
      show.rundown = { ...data, recent: data.recent || show.rundown?.recent || [] };
      break;
    case "gfx.scene":
      show.scene = {};
      for (const instance of data.instances || []) show.scene[instance.id] = instance;
      break;
    case "gfx.state":
      show.scene = { ...show.scene };
      if (data.event === "hidden") delete show.scene[data.instance.id];
      else show.scene[data.instance.id] = data.instance;
      break;
    case "dist.output.state":
      show.outputs = { ...show.outputs, [data.id]: data };
      break;
    case "exchange.state":
      show.viewers = data.viewers || [];
      show.cues = {};
      for (const cue of data.cues || []) show.cues[cue.id] = cue;
      break;
    case "cue":
      show.cues = { ...show.cues };
      if (data.cleared) delete show.cues[data.id];
      else show.cues[data.id] = data;
      break;
    case "source.state":
      show.sources = { ...show.sources, [data.source]: data };
      if (!data.online) {
        show.stats = { ...show.stats };
        delete show.stats[data.source];
      }
      break;
    case "source.stats":
      show.stats = { ...show.stats, [data.source]: data };
      break;
    case "alert":
      show.alerts = { ...show.alerts };
      if (data.state === "ALERT_STATE_CLEARED") delete show.alerts[data.id];
      else show.alerts[data.id] = data;
      break;
    default:
      break;
  }
}

const asrunKey = (e) => `${e.timeUs}|${e.cue}|${e.operator || ""}|${e.detail || ""}`;

// Follows one production's events into a store: { connection, show, asrun, snapshots }.
export function followShow(production) {
  const store = createStore({ connection: "connecting", show: fresh(), asrun: [], snapshots: 0 });
  let pending = null; // the state being rebuilt between `hello` and `snapshot`
  const update = (change) => store.set({ ...store.get(), ...change });

  async function loadAsRun() {
    try {
      const log = await api(`/api/asrun/${encodeURIComponent(production)}?limit=50`);
      const seen = new Set(log.entries.map(asrunKey));
      const later = store.get().asrun.filter((e) => !seen.has(asrunKey(e)));
      update({ asrun: [...log.entries, ...later].slice(-ASRUN_KEPT) });
    } catch (_err) {
      // The as-run log lives in JetStream: the live entries still arrive as events.
    }
  }

  const url = `/api/events?production=${encodeURIComponent(production)}`;
  const source = new EventSource(url, { withCredentials: true });
  const onEvent = (name) => (message) => {
    const data = JSON.parse(message.data);
    if (name === "hello") {
      pending = fresh();
      return;
    }
    if (name === "snapshot") {
      const state = store.get();
      update({ connection: "live", show: pending || state.show, snapshots: state.snapshots + 1 });
      pending = null;
      loadAsRun();
      return;
    }
    if (name === "asrun") {
      const entries = [...store.get().asrun, data].slice(-ASRUN_KEPT);
      update({ asrun: entries });
      return;
    }
    if (pending) {
      apply(pending, name, data);
      return;
    }
    const show = { ...store.get().show };
    apply(show, name, data);
    update({ show });
  };
  for (const name of EVENTS) source.addEventListener(name, onEvent(name));
  source.addEventListener("error", async () => {
    pending = null;
    update({ connection: source.readyState === EventSource.CLOSED ? "closed" : "connecting" });
    if (source.readyState === EventSource.CLOSED) {
      // Refused for good (401: the session ended; 404: no such production): ask why.
      try {
        await api("/api/me");
        update({ connection: "refused" });
      } catch (_err) {
        // api() took the page to the login page on a 401.
      }
    }
  });
  return { store, close: () => source.close() };
}
