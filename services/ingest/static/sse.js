// Server-Sent Events read with fetch(): EventSource cannot send the bearer header.
//
// SseParser follows the HTML standard's event-stream interpretation: lines end in CRLF, LF or
// CR (even split across chunks), ":" starts a comment, "data" lines join with "\n", "retry"
// takes only digits, a blank line dispatches, and an event without data is dropped.

export class SseParser {
  constructor(onEvent, onRetry = () => {}) {
    this.onEvent = onEvent;
    this.onRetry = onRetry;
    this.buffer = "";
    this.skipLineFeed = false; // the last chunk ended in CR: a LF that follows belongs to it
    this.started = false;
    this.type = "";
    this.data = [];
    this.lastEventId = "";
  }

  push(text) {
    if (!this.started && text.length) {
      this.started = true;
      if (text.charCodeAt(0) === 0xfeff) text = text.slice(1);
    }
    if (this.skipLineFeed && text.startsWith("\n")) text = text.slice(1);
    this.skipLineFeed = false;
    this.buffer += text;
    let start = 0;
    for (let i = 0; i < this.buffer.length; i++) {
      const c = this.buffer[i];
      if (c !== "\n" && c !== "\r") continue;
      this.line(this.buffer.slice(start, i));
      if (c === "\r") {
        if (i + 1 === this.buffer.length) this.skipLineFeed = true;
        else if (this.buffer[i + 1] === "\n") i++;
      }
      start = i + 1;
    }
    this.buffer = this.buffer.slice(start);
  }

  line(line) {
    if (line === "") return this.dispatch();
    if (line.startsWith(":")) return; // a comment: a keep-alive
    const colon = line.indexOf(":");
    const field = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? "" : line.slice(colon + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    if (field === "event") this.type = value;
    else if (field === "data") this.data.push(value);
    else if (field === "id" && !value.includes("\0")) this.lastEventId = value;
    else if (field === "retry" && /^[0-9]+$/.test(value)) this.onRetry(Number(value));
  }

  dispatch() {
    const type = this.type || "message";
    this.type = "";
    if (!this.data.length) return;
    const data = this.data.join("\n");
    this.data = [];
    this.onEvent({ type, data, lastEventId: this.lastEventId });
  }
}

export class HttpError extends Error {
  constructor(status, body) {
    super(`${status}: ${body.trim()}`);
    this.status = status;
  }
}

const sleep = (ms, signal) =>
  new Promise((resolve) => {
    const timer = setTimeout(resolve, ms);
    signal.addEventListener("abort", () => {
      clearTimeout(timer);
      resolve();
    });
  });

// Follows `url` until `signal` aborts, reconnecting after 0.5 s, 1 s, 2 s ... up to `maxDelayMs`
// (or the server's `retry:` when longer). A connection that delivered an event resets the
// delay. `fatal(status)` says which answers stop it (a wrong token: retrying helps nobody).
export async function followEventStream(url, options) {
  const {
    headers = {},
    signal,
    onEvent,
    onOpen = () => {},
    onError = () => {},
    fatal = () => false,
    minDelayMs = 500,
    maxDelayMs = 10000,
    idleMs = 60000,
  } = options;
  let delay = minDelayMs;
  let serverRetry = 0;
  while (!signal.aborted) {
    const attempt = new AbortController();
    const stopAttempt = () => attempt.abort();
    signal.addEventListener("abort", stopAttempt);
    let idleTimer = null;
    const restartIdle = () => {
      clearTimeout(idleTimer);
      idleTimer = setTimeout(stopAttempt, idleMs); // a silent server may be gone: reconnect
    };
    try {
      restartIdle();
      const response = await fetch(url, {
        headers: { Accept: "text/event-stream", ...headers },
        cache: "no-store",
        signal: attempt.signal,
      });
      if (!response.ok) throw new HttpError(response.status, await response.text());
      onOpen(response);
      const parser = new SseParser(
        (event) => {
          delay = minDelayMs;
          onEvent(event);
        },
        (ms) => (serverRetry = ms),
      );
      const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        restartIdle();
        parser.push(value);
      }
      onError(new Error("the event stream ended"));
    } catch (err) {
      if (signal.aborted) break;
      onError(err);
      if (err instanceof HttpError && fatal(err.status)) break;
    } finally {
      clearTimeout(idleTimer);
      signal.removeEventListener("abort", stopAttempt);
    }
    await sleep(Math.max(delay, serverRetry), signal);
    delay = Math.min(delay * 2, maxDelayMs);
  }
}
