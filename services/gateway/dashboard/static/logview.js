// A log viewer for large, growing output: chunks are batched per animation frame into blocks that
// the browser skips laying out while off screen (content-visibility), so 1 MiB stays responsive.
import { events } from "./api.js";
import { h } from "./ui.js";

const BLOCK_CHARS = 32 * 1024;
const SGR = /\x1b\[([0-9;]*)m/g;
const OTHER_ESCAPES = /\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07|\r(?!\n)/g;
const STREAM_CLASS = { stdout: "stdout", stderr: "stderr", system: "system" };
const BASIC = ["black", "red", "green", "yellow", "blue", "magenta", "cyan", "white"];

/** ANSI SGR state of one stream, carried across chunks. */
class Style {
  constructor() { this.reset(); }
  reset() { this.fg = null; this.bg = null; this.bold = false; this.italic = false; this.underline = false; this.rgb = null; }
  apply(codes) {
    const list = codes === "" ? [0] : codes.split(";").map(Number);
    for (let i = 0; i < list.length; i += 1) {
      const code = list[i];
      if (code === 0) this.reset();
      else if (code === 1) this.bold = true;
      else if (code === 3) this.italic = true;
      else if (code === 4) this.underline = true;
      else if (code === 22) this.bold = false;
      else if (code === 23) this.italic = false;
      else if (code === 24) this.underline = false;
      else if (code >= 30 && code <= 37) { this.fg = `a-${BASIC[code - 30]}`; this.rgb = null; }
      else if (code >= 90 && code <= 97) { this.fg = `a-bright-${BASIC[code - 90]}`; this.rgb = null; }
      else if (code === 39) { this.fg = null; this.rgb = null; }
      else if (code >= 40 && code <= 47) this.bg = `b-${BASIC[code - 40]}`;
      else if (code === 49) this.bg = null;
      else if (code === 38 && list[i + 1] === 2) { this.rgb = `rgb(${list[i + 2]},${list[i + 3]},${list[i + 4]})`; i += 4; }
      else if (code === 38 && list[i + 1] === 5) { this.rgb = palette(list[i + 2]); i += 2; }
      else if (code === 48) i += list[i + 1] === 2 ? 4 : 2;
    }
  }
  get plain() { return !this.fg && !this.bg && !this.bold && !this.italic && !this.underline && !this.rgb; }
  span(text) {
    const span = h("span", { class: [this.fg, this.bg, this.bold && "a-bold", this.italic && "a-italic",
      this.underline && "a-underline"].filter(Boolean).join(" ") || null }, text);
    if (this.rgb) span.style.color = this.rgb;
    return span;
  }
}

function palette(n) {
  if (n < 8) return `var(--a-${BASIC[n]})`;
  if (n < 16) return `var(--a-bright-${BASIC[n - 8]})`;
  if (n >= 232) { const v = 8 + (n - 232) * 10; return `rgb(${v},${v},${v})`; }
  const c = n - 16; const scale = (x) => (x ? 55 + x * 40 : 0);
  return `rgb(${scale(Math.floor(c / 36))},${scale(Math.floor(c / 6) % 6)},${scale(c % 6)})`;
}

/** Output order: attempt, then the runner's sequence number (shared by stdout and stderr). */
function key(chunk) { return chunk.attempt * 1e9 + chunk.seq; }

/** Nodes for one chunk: text split on SGR codes, other control sequences dropped. */
function render(data, style) {
  const nodes = [];
  let last = 0;
  const push = (text) => {
    const clean = text.replace(OTHER_ESCAPES, "");
    if (clean) nodes.push(style.plain ? document.createTextNode(clean) : style.span(clean));
  };
  for (const match of data.matchAll(SGR)) {
    push(data.slice(last, match.index));
    style.apply(match[1]);
    last = match.index + match[0].length;
  }
  push(data.slice(last));
  return nodes;
}

export class LogView {
  constructor(name) {
    this.name = name;
    this.chunks = [];
    this.keys = new Set();
    this.lastKey = -1;
    this.queue = [];
    this.chars = 0;
    this.blockChars = 0;
    this.styles = { stdout: new Style(), stderr: new Style() };
    this.follow = true;
    this.status = h("span", { class: "muted", id: "log-status", "aria-live": "polite" }, "connecting…");
    this.body = h("div", { class: "log", id: "log", role: "log", tabindex: 0, "aria-label": "Output" });
    this.body.addEventListener("scroll", () => {
      const atEnd = this.body.scrollHeight - this.body.scrollTop - this.body.clientHeight < 40;
      if (atEnd !== this.follow) { this.follow = atEnd; this.followBox.checked = atEnd; }
    });
    this.followBox = h("input", { type: "checkbox", id: "log-follow", checked: true,
      onchange: () => { this.follow = this.followBox.checked; if (this.follow) this.jump(); } });
    const streams = h("select", { id: "log-streams", onchange: () => { this.body.dataset.only = streams.value; } },
      h("option", { value: "" }, "stdout + stderr"), h("option", { value: "stdout" }, "stdout only"),
      h("option", { value: "stderr" }, "stderr only"));
    this.element = h("section", { class: "card logs", "aria-labelledby": "logs-title" },
      h("div", { class: "row wrap" }, h("h2", { id: "logs-title" }, "Logs"), this.status,
        h("span", { class: "legend" }, h("span", { class: "stderr" }, "stderr"), " ", h("span", {}, "stdout"))),
      h("div", { class: "row wrap toolbar" },
        h("label", { class: "inline" }, this.followBox, " Follow"),
        h("label", { class: "visually-hidden", for: "log-streams" }, "Streams"), streams,
        h("button", { type: "button", class: "secondary", onclick: () => this.jump() }, "Jump to end"),
        h("button", { type: "button", class: "secondary", onclick: () => this.copy() }, "Copy"),
        h("button", { type: "button", class: "secondary", onclick: () => this.download() }, "Download")),
      this.body);
    this.newBlock();
  }

  newBlock() {
    this.block = h("div", { class: "block" });
    this.body.append(this.block);
    this.blockChars = 0;
  }

  add(chunk) {
    this.queue.push(chunk);
    if (this.queue.length === 1) requestAnimationFrame(() => this.flush());
  }

  flush() {
    const batch = this.queue.sort((a, b) => key(a) - key(b));
    this.queue = [];
    const fragment = document.createDocumentFragment();
    for (const chunk of batch) {
      const k = key(chunk);
      if (this.keys.has(k)) continue;  // sent again after a reconnect
      this.keys.add(k);
      this.chunks.push(chunk);
      this.chars += chunk.data.length;
      const holder = h("span", { class: STREAM_CLASS[chunk.stream] || "stdout", dataset: { k } },
        render(chunk.data, this.styles[chunk.stream] || this.styles.stdout));
      if (k < this.lastKey) { this.insertLate(holder, k); continue; }
      this.lastKey = k;
      fragment.append(holder);
      this.blockChars += chunk.data.length;
      if (this.blockChars > BLOCK_CHARS) {
        this.block.append(fragment);
        this.newBlock();
      }
    }
    this.block.append(fragment);
    this.status.textContent = this.status.textContent.replace(/ · .*$/, "") + ` · ${this.size()}`;
    if (this.follow) this.jump();
  }

  /** A chunk that arrived after later ones (stored and live output interleave): put it in its place. */
  insertLate(holder, k) {
    const spans = this.body.querySelectorAll("span[data-k]");
    for (let i = spans.length - 1; i >= 0; i -= 1) {
      if (Number(spans[i].dataset.k) < k) { spans[i].after(holder); return; }
    }
    this.body.firstChild.prepend(holder);
  }

  size() {
    return this.chars > 1024 * 1024 ? `${(this.chars / 1048576).toFixed(1)} MiB` : `${Math.ceil(this.chars / 1024)} KiB`;
  }

  text() { return [...this.chunks].sort((a, b) => key(a) - key(b)).map((chunk) => chunk.data).join(""); }
  jump() { this.body.scrollTop = this.body.scrollHeight; }

  async copy() {
    try {
      await navigator.clipboard.writeText(this.text().replace(OTHER_ESCAPES, "").replace(SGR, ""));
      this.setStatus("copied");
    } catch {
      const range = document.createRange();
      range.selectNodeContents(this.body);
      getSelection().removeAllRanges();
      getSelection().addRange(range);
      this.setStatus("selected: press Ctrl+C");
    }
  }

  download() {
    const blob = new Blob([this.text()], { type: "text/plain" });
    const link = h("a", { href: URL.createObjectURL(blob), download: `${this.name}.log` });
    document.body.append(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(link.href), 1000);
  }

  setStatus(text) { this.status.textContent = `${text} · ${this.size()}`; }

  /** Follow the run's output over SSE until the run ends or `signal` aborts. */
  async stream(path, signal) {
    this.setStatus("live");
    try {
      for await (const message of events(path, signal)) {
        if (message.event === "log") this.add(message.data);
        else if (message.event === "end") { this.setStatus(`ended: ${message.data.status}`); return; }
      }
      this.setStatus("stream closed");
    } catch (problem) {
      if (problem.name !== "AbortError") this.setStatus(problem.status === 404 ? "no output yet" : `error: ${problem.message}`);
    }
  }
}
