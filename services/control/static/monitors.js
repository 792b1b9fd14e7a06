// The monitor wall: the multiview played live over WHEP from distribution, preview and program
// shown large (the multiview's top half) above its source tiles (its bottom half): one session,
// one encode, for all of it. Below, a tile per source with its tally (from tally events) and
// its audio meter (from mixer.levels events).

import { html, Meter, sourcesOf, tallyOf, useEffect, useRef, useState } from "./ui.js";
import { WhepPlayer } from "./webrtc.js";

const STATES = {
  connecting: "连接中 connecting…",
  playing: "播放中 live",
  retrying: "重连 retrying",
  stopped: "已停止 stopped",
  error: "被拒 refused",
};

function MultiviewPlayer({ me, production }) {
  const video = useRef(null);
  const previewCrop = useRef(null);
  const programCrop = useRef(null);
  const [on, setOn] = useState(true);
  const [listen, setListen] = useState(false);
  const [status, setStatus] = useState({ state: "stopped", detail: "" });
  const available = Boolean(me.exchangeUrl && me.mediaGrants);

  useEffect(() => {
    if (!on || !available) return undefined;
    const player = new WhepPlayer(video.current, (state, detail) => {
      document.body.dataset.multiview = state;
      for (const crop of [previewCrop.current, programCrop.current]) {
        if (crop && crop.srcObject !== video.current.srcObject) {
          crop.srcObject = video.current.srcObject;
        }
      }
      setStatus({ state, detail });
    });
    const url = `${me.exchangeUrl}/whep/${encodeURIComponent(production.id)}/multiview`;
    player.play(url);
    return () => player.stop();
  }, [on, available, production.id]);

  if (!available) {
    const why = me.exchangeUrl
      ? "未配置媒体授权 no media grant secret (BAYCAST_MEDIA_GRANT_SECRET)"
      : "未配置交换服务 no exchange URL (BAYCAST_CONTROL_EXCHANGE_URL)";
    return html`<p class="note">多画面不可用 Multiview unavailable: ${why}</p>`;
  }
  return html`<div class="multiview">
    <div class="pvw-pgm">
      <figure class="crop preview">
        <video ref=${previewCrop} autoplay muted playsinline></video>
        <figcaption>预监 PVW</figcaption>
      </figure>
      <figure class="crop program">
        <video ref=${programCrop} autoplay muted playsinline></video>
        <figcaption>节目 PGM</figcaption>
      </figure>
    </div>
    <figure class="crop tiles-half" aria-label="多画面 Multiview">
      <video id="multiview" ref=${video} autoplay playsinline muted=${!listen}></video>
    </figure>
    <div class="row small">
      <span class="status" data-state=${status.state}>
        多画面 Multiview: ${STATES[status.state] || status.state} ${status.detail}
      </span>
      <button type="button" aria-pressed=${on} onClick=${() => setOn(!on)}>
        ${on ? "关闭视频 Video off" : "打开视频 Video on"}
      </button>
      <button type="button" aria-pressed=${listen} onClick=${() => setListen(!listen)}>
        ${listen ? "静音 Mute" : "监听 Listen"}
      </button>
    </div>
  </div>`;
}

const SHOWING = { held: "", slate: "信号丢失 slate" };

// What a tile says about its source: what the mixer shows for it (a slate, a backup) or that
// ingest has it offline; nothing while it is live.
function condition(show, source) {
  const showing = show.mixer?.showing?.[source];
  if (showing && showing !== "live") {
    return showing.startsWith("backup:") ? `备份 backup ${showing.slice(7)}` : SHOWING[showing] ?? showing;
  }
  return show.sources[source] && !show.sources[source].online ? "离线 offline" : "";
}

export function SourceTiles({ production, show }) {
  return html`<ul class="tiles" aria-label="信号 Sources">
    ${sourcesOf(production).map((s) => {
      const tally = tallyOf(show, s.id);
      return html`<li key=${s.id} class=${`tile tally-${tally}`} data-source=${s.id} data-tally=${tally}>
        <span class="tile-name">${s.name}</span>
        <span class="tile-state">${condition(show, s.id)}</span>
        <${Meter} level=${show.levels[s.id]} label=${s.name} />
      </li>`;
    })}
  </ul>`;
}

export function Monitors({ me, production, show }) {
  return html`<section class="monitors" aria-label="监视器 Monitors">
    <${MultiviewPlayer} me=${me} production=${production} />
    <${SourceTiles} production=${production} show=${show} />
    <div class="program-meter">
      <span>节目 Program</span>
      <${Meter} level=${show.levels[""]} label="program" />
    </div>
  </section>`;
}
