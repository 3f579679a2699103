// A Trystero 0.25.4 peer in headless Chromium (Debian's /usr/bin/chromium, driven through
// playwright-core), speaking jspeer.mjs's JSON-line protocol so that tests/interop/jspeer.py
// drives it as a JsPeer:
//
//   node browserpeer.mjs            (cwd: tests/interop)
//
// The page (browserpeer-page.mjs) is served from this directory on 127.0.0.1 with an import
// map onto node_modules, so Trystero runs unbundled, as published, on Chromium's own
// RTCPeerConnection. Chromium gets fake camera and microphone devices
// (--use-fake-device-for-media-stream, granted without a prompt) and may offer 127.0.0.1 as
// an ICE candidate (--allow-loopback-in-peer-connection; Chromium gathers no loopback
// candidates otherwise, and a test namespace has nothing else). Loopback candidates are
// only offered once the page may use the camera, so the page asks for it before joining.
//
// Commands: join (torrent or nostr), action, send (string, json or base64 bytes), ping,
// peers, connections, media-add, media-status, give-up, leave, exit — see
// browserpeer-page.mjs. Events: ready, peer-join, peer-leave, join-error, message,
// peer-stream, fatal (an uncaught error in the page), and "console" for every console line
// of the page at warning level or above (Trystero reports peer errors there).
//
// The process (and Chromium with it) ends when stdin closes.

import http from "node:http";
import { readFile } from "node:fs/promises";
import { createInterface } from "node:readline";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

const HERE = path.dirname(fileURLToPath(import.meta.url));
const CHROMIUM = process.env.PEERMESH_CHROMIUM ?? "/usr/bin/chromium";
const SERVED = ["/browserpeer-page.mjs", "/node_modules/@trystero-p2p/", "/node_modules/@noble/"];
const IMPORTS = {
  "@trystero-p2p/core": "/node_modules/@trystero-p2p/core/dist/index.mjs",
  "@trystero-p2p/torrent": "/node_modules/@trystero-p2p/torrent/dist/index.mjs",
  "@trystero-p2p/nostr": "/node_modules/@trystero-p2p/nostr/dist/index.mjs",
  "@noble/secp256k1": "/node_modules/@noble/secp256k1/index.js",
};
const PAGE = `<!doctype html><meta charset="utf-8"><title>browserpeer</title>
<script type="importmap">${JSON.stringify({ imports: IMPORTS })}</script>
<script type="module">
  await navigator.mediaDevices.getUserMedia({ audio: true, video: true }).then((s) => s.getTracks().forEach((t) => t.stop()));
  await import("/browserpeer-page.mjs");
  window.__ready = true;
</script>`;

const log = (...args) => console.error(new Date().toISOString(), "[browserpeer]", ...args);
const emit = (obj) => process.stdout.write(JSON.stringify({ ts: Date.now(), ...obj }) + "\n");
const errText = (err) => (err instanceof Error ? `${err.name}: ${err.message}` : String(err));

const server = http.createServer(async (req, res) => {
  const url = new URL(req.url, "http://127.0.0.1");
  const file = path.normalize(url.pathname);
  try {
    if (file === "/favicon.ico") {
      res.writeHead(204).end();
      return;
    }
    if (file === "/") {
      res.writeHead(200, { "content-type": "text/html" }).end(PAGE);
      return;
    }
    if (!SERVED.some((prefix) => file.startsWith(prefix)) || file.includes("..")) throw new Error("not served");
    const body = await readFile(path.join(HERE, file));
    res.writeHead(200, { "content-type": "text/javascript" }).end(body);
  } catch {
    res.writeHead(404).end();
  }
});
await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));

const browser = await chromium.launch({
  executablePath: CHROMIUM,
  args: [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--use-fake-device-for-media-stream",
    "--use-fake-ui-for-media-stream",
    "--allow-loopback-in-peer-connection",
  ],
});
const page = await browser.newPage();
await page.exposeBinding("__emit", (_source, obj) => emit(obj));
page.on("console", (message) => {
  const level = message.type();
  log(`page ${level}:`, message.text());
  if (level === "error" || level === "warning") emit({ event: "console", level, text: message.text() });
});
page.on("pageerror", (err) => emit({ event: "fatal", kind: "pageerror", error: errText(err) }));
await page.goto(`http://127.0.0.1:${server.address().port}/`);
await page.waitForFunction(() => window.__ready === true, null, { timeout: 20000 });
const selfId = await page.evaluate(() => window.harnessSelfId);

let exiting = false;
const shutdown = async () => {
  if (exiting) return;
  exiting = true;
  setTimeout(() => process.exit(0), 3000).unref();
  await browser.close().catch(() => {});
  server.close();
  process.exit(0);
};

const handleLine = async (line) => {
  if (!line.trim()) return;
  let msg;
  try {
    msg = JSON.parse(line);
  } catch (err) {
    emit({ event: "error", error: `bad JSON command: ${errText(err)}` });
    return;
  }
  const id = msg?.id;
  if (msg?.cmd === "exit") {
    emit({ event: "result", id, ok: true, value: null });
    await shutdown();
    return;
  }
  try {
    const value = await page.evaluate((command) => window.harness(command), msg);
    emit({ event: "result", id, ok: true, value });
  } catch (err) {
    log(`command ${msg?.cmd} failed:`, err?.message ?? err);
    emit({ event: "result", id, ok: false, error: errText(err).replace(/^Error: page\.evaluate: /, "") });
  }
};

const rl = createInterface({ input: process.stdin, crlfDelay: Infinity });
rl.on("line", (line) => void handleLine(line));
rl.on("close", () => void shutdown());
process.on("SIGTERM", () => void shutdown());

log(`ready (chromium ${browser.version()}, pid ${process.pid})`);
emit({ event: "ready", selfId, pid: process.pid, browser: browser.version() });
