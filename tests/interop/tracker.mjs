// A WebSocket-only WebTorrent tracker (npm bittorrent-tracker 11.2.3) for interop tests.
//
//   node tracker.mjs [--port 0] [--host 127.0.0.1] [--ws-interval 10] [--verbose]
//
// Prints one line to stdout: {"event":"listening","port":N,"host":"127.0.0.1","url":"ws://127.0.0.1:N",
// "wsInterval":S}; diagnostics go to stderr. Exits when stdin closes or on SIGTERM/SIGINT.
//
// --ws-interval is the announce interval (seconds) that WebSocket clients are told.
// bittorrent-tracker's server.js answers WebSocket announces with
//   response.interval = Math.ceil(this.intervalMs / 1000 / 5)
// (its "WebSocket tracker should have a shorter interval" rule), so we configure the Server
// with interval = wsInterval * 5 * 1000 ms. Trystero clamps it to 10..120 s anyway.
// HTTP tracker, UDP tracker and the /stats page are off; the http server exists only to
// carry the WebSocket upgrade (other requests get 404).

import { parseArgs } from "node:util";
import Server from "bittorrent-tracker/server";

const { values: args } = parseArgs({
  options: {
    port: { type: "string", default: "0" },
    host: { type: "string", default: "127.0.0.1" },
    "ws-interval": { type: "string", default: "10" },
    verbose: { type: "boolean", default: false },
  },
});

const log = (...a) => console.error(new Date().toISOString(), "[tracker]", ...a);
const port = Number(args.port);
const wsInterval = Number(args["ws-interval"]);
if (!Number.isInteger(port) || port < 0 || port > 65535) throw new Error(`bad --port ${args.port}`);
if (!Number.isFinite(wsInterval) || wsInterval <= 0) throw new Error(`bad --ws-interval ${args["ws-interval"]}`);

const server = new Server({
  http: false,
  udp: false,
  ws: true,
  stats: false,
  interval: wsInterval * 5 * 1000,
});

server.on("error", (err) => log("error:", err?.message ?? err));
server.on("warning", (err) => log("warning:", err?.message ?? err));
if (args.verbose) {
  for (const ev of ["start", "update", "complete", "stop"]) {
    server.on(ev, (peerId, params) => log(ev, "peer", peerId, "info_hash", params?.info_hash, "offers", params?.offers?.length ?? 0, params?.answer ? "(answer)" : ""));
  }
}

server.listen(port, args.host, () => {
  const addr = server.ws.address();
  const url = `ws://${args.host}:${addr.port}`;
  log(`listening on ${url}, WebSocket clients told interval=${Math.ceil(server.intervalMs / 1000 / 5)} s`);
  process.stdout.write(JSON.stringify({ event: "listening", port: addr.port, host: args.host, url, wsInterval: Math.ceil(server.intervalMs / 1000 / 5) }) + "\n");
});

let closing = false;
const shutdown = () => {
  if (closing) return;
  closing = true;
  server.close(() => process.exit(0));
  setTimeout(() => process.exit(0), 500).unref();
};
process.stdin.on("end", shutdown);
process.stdin.on("error", shutdown);
process.stdin.resume();
process.on("SIGTERM", shutdown);
process.on("SIGINT", shutdown);
