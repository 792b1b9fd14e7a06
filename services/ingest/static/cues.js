// Cues on the station page: each open cue with its text, a live countdown when it has one, and
// an "OK 收到" button that acknowledges it. Acknowledged cues stay, marked; cleared ones go.

const TICK_MS = 200;

// A field of a message in proto's JSON mapping, which writes lowerCamelCase (and may be asked
// to keep the .proto's snake_case); int64 values come as strings.
export function field(message, name) {
  if (!message) return undefined;
  if (name in message) return message[name];
  const camel = name.replace(/_([a-z])/g, (_m, c) => c.toUpperCase());
  return message[camel];
}

export const microseconds = (value) => Number(value || 0);

// "0:27", "1:02:03": a duration in milliseconds, rounded up to the second.
export function formatCountdown(remainingMs) {
  const total = Math.ceil(Math.abs(remainingMs) / 1000);
  const h = Math.floor(total / 3600);
  const m = Math.floor((total % 3600) / 60);
  const s = String(total % 60).padStart(2, "0");
  return h ? `${h}:${String(m).padStart(2, "0")}:${s}` : `${m}:${s}`;
}

function clockTime(us) {
  return new Date(us / 1000).toLocaleTimeString("zh-CN", { hour12: false });
}

export class CueBoard {
  // acknowledge(cue) resolves when the server took the acknowledgement, rejects otherwise.
  constructor(section, list, acknowledge) {
    this.section = section;
    this.list = list;
    this.acknowledge = acknowledge;
    this.cues = new Map(); // id -> { cue, item }
    this.timer = null;
  }

  // The stream reconnected: it sends every open cue again.
  reset() {
    for (const { item } of this.cues.values()) item.remove();
    this.cues.clear();
    this.refresh();
  }

  update(cue) {
    const id = field(cue, "id");
    if (!id) return;
    const known = this.cues.get(id);
    if (field(cue, "cleared")) {
      if (known) known.item.remove();
      this.cues.delete(id);
      return this.refresh();
    }
    const item = known ? known.item : this.build(id);
    this.cues.set(id, { cue, item });
    this.fill(item, cue);
    if (!known) {
      this.list.prepend(item); // newest first, where the eye lands
      if (navigator.vibrate && navigator.userActivation?.hasBeenActive) navigator.vibrate(200);
    }
    this.refresh();
  }

  build(id) {
    const item = document.createElement("li");
    item.className = "cue";
    item.dataset.cueId = id;
    const text = document.createElement("p");
    text.className = "cue-text";
    const countdown = document.createElement("p");
    countdown.className = "cue-countdown";
    countdown.setAttribute("aria-live", "off"); // read on demand, not every tick
    const footer = document.createElement("div");
    footer.className = "cue-footer";
    const meta = document.createElement("span");
    meta.className = "cue-meta";
    const ok = document.createElement("button");
    ok.type = "button";
    ok.className = "cue-ok";
    ok.textContent = "OK 收到";
    ok.addEventListener("click", () => this.acknowledgeItem(id));
    footer.append(meta, ok);
    item.append(text, countdown, footer);
    return item;
  }

  // The countdown runs on this device's clock against the server's `countdown_to_us`: a phone
  // set by the network is close enough for a cue.
  fill(item, cue) {
    item.querySelector(".cue-text").textContent = field(cue, "text") || "";
    const acknowledgedAt = microseconds(field(cue, "acknowledged_at_us"));
    const ok = item.querySelector(".cue-ok");
    const meta = item.querySelector(".cue-meta");
    const sentAt = microseconds(field(cue, "sent_at_us"));
    if (acknowledgedAt) {
      item.dataset.acknowledged = "true";
      ok.disabled = true;
      ok.textContent = "✓ 已收到 Acknowledged";
      const by = field(cue, "acknowledged_by");
      meta.textContent = `${clockTime(acknowledgedAt)}${by ? " · " + by : ""}`;
    } else {
      item.dataset.acknowledged = "false";
      if (item.dataset.pending !== "true") {
        ok.disabled = false;
        ok.textContent = "OK 收到";
      }
      meta.textContent = sentAt ? `${clockTime(sentAt)}` : "";
    }
    item.dataset.countdownToUs = String(microseconds(field(cue, "countdown_to_us")));
    this.tick(item);
  }

  async acknowledgeItem(id) {
    const entry = this.cues.get(id);
    if (!entry || entry.item.dataset.acknowledged === "true") return;
    const { item, cue } = entry;
    const ok = item.querySelector(".cue-ok");
    item.dataset.pending = "true";
    ok.disabled = true;
    ok.textContent = "发送中 Sending…";
    try {
      await this.acknowledge(cue);
      // The stream brings the acknowledged cue back; until then, say it went.
      if (item.dataset.acknowledged !== "true") ok.textContent = "✓ 已发送 Sent";
    } catch (err) {
      ok.disabled = false;
      ok.textContent = "OK 收到 (重试 retry)";
      item.querySelector(".cue-meta").textContent = `未送达 Not delivered: ${err.message}`;
    } finally {
      delete item.dataset.pending;
    }
  }

  tick(item) {
    const toUs = Number(item.dataset.countdownToUs || 0);
    const countdown = item.querySelector(".cue-countdown");
    if (!toUs) {
      countdown.hidden = true;
      return;
    }
    countdown.hidden = false;
    const remaining = toUs / 1000 - Date.now();
    item.dataset.countdown = remaining > 0 ? "running" : "zero";
    countdown.textContent =
      remaining > 0 ? formatCountdown(remaining) : `到点 NOW +${formatCountdown(remaining)}`;
  }

  refresh() {
    this.section.hidden = this.cues.size === 0;
    const counting = [...this.cues.values()].some(({ cue }) =>
      microseconds(field(cue, "countdown_to_us")),
    );
    if (counting && !this.timer) {
      this.timer = setInterval(() => {
        for (const { item } of this.cues.values()) this.tick(item);
      }, TICK_MS);
    } else if (!counting && this.timer) {
      clearInterval(this.timer);
      this.timer = null;
    }
  }

  // The newest cue not acknowledged yet (for a keyboard shortcut).
  newestOpen() {
    let newest = null;
    for (const [id, { cue, item }] of this.cues) {
      if (item.dataset.acknowledged === "true") continue;
      const sent = microseconds(field(cue, "sent_at_us"));
      if (!newest || sent >= newest.sent) newest = { id, sent };
    }
    return newest && newest.id;
  }
}
