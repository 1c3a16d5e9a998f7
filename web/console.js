// The instance console, loaded only when a console tab opens (boot.js imports it on demand).
// VMs: noVNC speaks RFB over the API's websocket, with the session's one-time VNC password.
// Containers: xterm.js speaks Proxmox's terminal protocol (`0:<bytes>:<data>` input,
// `1:<cols>:<rows>:` resize, `2` keep-alive); its login step is done by the API.
// The vendored libraries' folders carry their versions (filled in by build-web.sh), so the
// year-long asset cache never serves an old copy.

const NOVNC = "./novnc-{{NOVNC}}/core/rfb.js";
const XTERM = "./xterm-{{XTERM}}/xterm.js";
const XTERM_CSS = "/assets/xterm-{{XTERM}}/xterm.css";

/// Opens `session` ({protocol, url, password}) in `element`; `onState(state, detail)` hears
/// `connecting`, `connected` and `disconnected`. Resolves to a handle whose `close()` ends it.
export async function open(element, session, onState) {
  const url = new URL(session.url, window.location.href);
  url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
  // After `close()` the page has let go of `onState`: only the element hears the end.
  let closed = false;
  const report = (state, detail) => {
    element.dataset.state = state;
    if (!closed) onState(state, detail || "");
  };
  report("connecting");
  element.replaceChildren();
  const open = session.protocol === "vnc" ? vnc : terminal;
  const inner = await open(element, url.href, session.password, report);
  return {
    close: () => {
      closed = true;
      inner.close();
    },
  };
}

async function vnc(element, url, password, report) {
  const { default: RFB } = await import(NOVNC);
  const rfb = new RFB(element, url, { credentials: { password }, wsProtocols: ["binary"] });
  rfb.scaleViewport = true;
  rfb.background = "transparent";
  rfb.addEventListener("connect", () => report("connected"));
  rfb.addEventListener("securityfailure", (e) => report("disconnected", e.detail.reason || "authentication failed"));
  rfb.addEventListener("disconnect", (e) => report("disconnected", e.detail.clean ? "" : "the connection was lost"));
  return { close: () => rfb.disconnect() };
}

async function terminal(element, url, _password, report) {
  const { Terminal } = await import(XTERM);
  if (!document.querySelector(`link[href="${XTERM_CSS}"]`)) {
    const css = document.createElement("link");
    css.rel = "stylesheet";
    css.href = XTERM_CSS;
    document.head.append(css);
  }
  const term = new Terminal({ cursorBlink: true, convertEol: false, fontSize: 14, rows: 24, cols: 80 });
  term.open(element);
  const socket = new WebSocket(url, ["binary"]);
  socket.binaryType = "arraybuffer";
  const utf8 = new TextEncoder();
  const send = (message) => socket.readyState === WebSocket.OPEN && socket.send(message);
  let keepAlive;
  socket.onopen = () => {
    report("connected");
    send(`1:${term.cols}:${term.rows}:`);
    keepAlive = setInterval(() => send("2"), 30000);
    term.focus();
  };
  socket.onmessage = (e) => term.write(typeof e.data === "string" ? e.data : new Uint8Array(e.data));
  socket.onclose = (e) => {
    clearInterval(keepAlive);
    report("disconnected", e.wasClean ? "" : "the connection was lost");
  };
  term.onData((data) => send(`0:${utf8.encode(data).length}:${data}`));
  term.onResize(({ cols, rows }) => send(`1:${cols}:${rows}:`));
  return {
    close: () => {
      socket.close();
      term.dispose();
    },
  };
}
