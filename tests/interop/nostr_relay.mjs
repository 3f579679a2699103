// A real Nostr relay (npm @nostr-relay/core 0.0.40 over ws 8.23.0) for tests, in memory.
//
//   node nostr_relay.mjs [--port 0] [--host 127.0.0.1] [--verbose]
//
// Prints one line to stdout: {"event":"listening","port":N,"host":"127.0.0.1","url":"ws://127.0.0.1:N"};
// diagnostics go to stderr. Exits when stdin closes or on SIGTERM/SIGINT.
//
// @nostr-relay/core checks every event's id and BIP-340 signature (EventUtils.validate) and
// answers ["OK", id, false, "invalid: …"] to forgeries, so they are never broadcast.
// Ephemeral events (kinds 20000–29999, all Trystero uses) are broadcast to matching
// subscriptions and not stored; other events are kept in an in-memory array.
// core expects messages to be validated first (normally by @nostr-relay/validator); the
// minimal structural check below stands in for it and answers NOTICE to junk.

import { parseArgs } from "node:util";
import { NostrRelay } from "@nostr-relay/core";
import { EventRepository, EventUtils, LogLevel } from "@nostr-relay/common";
import { WebSocketServer } from "ws";

const { values: args } = parseArgs({
  options: {
    port: { type: "string", default: "0" },
    host: { type: "string", default: "127.0.0.1" },
    verbose: { type: "boolean", default: false },
  },
});

const log = (...a) => console.error(new Date().toISOString(), "[nostr-relay]", ...a);
const port = Number(args.port);
if (!Number.isInteger(port) || port < 0 || port > 65535) throw new Error(`bad --port ${args.port}`);

class MemoryRepository extends EventRepository {
  constructor() {
    super();
    this.events = new Map();
  }
  isSearchSupported() {
    return false;
  }
  upsert(event) {
    const isDuplicate = this.events.has(event.id);
    if (!isDuplicate) {
      this.events.set(event.id, event);
      if (this.events.size > 10000) this.events.delete(this.events.keys().next().value);
    }
    return { isDuplicate };
  }
  find(filter) {
    const found = [...this.events.values()]
      .filter((e) => EventUtils.isMatchingFilter(e, filter))
      .sort((a, b) => b.created_at - a.created_at);
    return filter.limit !== undefined ? found.slice(0, filter.limit) : found;
  }
  async destroy() {
    this.events.clear();
  }
}

const relay = new NostrRelay(new MemoryRepository(), {
  logLevel: args.verbose ? LogLevel.DEBUG : LogLevel.ERROR,
  eventHandlingResultCacheTtl: 0,
  filterResultCacheTtl: 0,
});

const isString = (s) => typeof s === "string";
const wellFormed = (msg) => {
  if (!Array.isArray(msg) || !isString(msg[0])) return false;
  switch (msg[0]) {
    case "EVENT": {
      const e = msg[1];
      return (
        msg.length === 2 && e !== null && typeof e === "object" &&
        isString(e.id) && isString(e.pubkey) && isString(e.sig) && isString(e.content) &&
        Number.isInteger(e.kind) && Number.isInteger(e.created_at) &&
        Array.isArray(e.tags) && e.tags.every((t) => Array.isArray(t) && t.every(isString))
      );
    }
    case "REQ":
      return msg.length >= 3 && isString(msg[1]) && msg.slice(2).every((f) => f !== null && typeof f === "object" && !Array.isArray(f));
    case "CLOSE":
      return msg.length === 2 && isString(msg[1]);
    default:
      return false;
  }
};

const wss = new WebSocketServer({ host: args.host, port, maxPayload: 1024 * 1024 });
wss.on("connection", (ws, req) => {
  relay.handleConnection(ws, req.socket.remoteAddress);
  ws.on("message", async (data) => {
    let msg;
    try {
      msg = JSON.parse(data.toString("utf8"));
    } catch {
      ws.send(JSON.stringify(["NOTICE", "invalid: not JSON"]));
      return;
    }
    if (!wellFormed(msg)) {
      ws.send(JSON.stringify(["NOTICE", "invalid: malformed message"]));
      return;
    }
    if (args.verbose) log("<-", JSON.stringify(msg).slice(0, 300));
    try {
      await relay.handleMessage(ws, msg);
    } catch (err) {
      log("error handling message:", err?.message ?? err);
    }
  });
  ws.on("close", () => relay.handleDisconnect(ws));
  ws.on("error", (err) => log("socket error:", err?.message ?? err));
});
wss.on("error", (err) => log("server error:", err?.message ?? err));
wss.on("listening", () => {
  const addr = wss.address();
  const url = `ws://${args.host}:${addr.port}`;
  log(`listening on ${url}`);
  process.stdout.write(JSON.stringify({ event: "listening", port: addr.port, host: args.host, url }) + "\n");
});

let closing = false;
const shutdown = () => {
  if (closing) return;
  closing = true;
  for (const client of wss.clients) client.terminate();
  wss.close(() => process.exit(0));
  setTimeout(() => process.exit(0), 500).unref();
};
process.stdin.on("end", shutdown);
process.stdin.on("error", shutdown);
process.stdin.resume();
process.on("SIGTERM", shutdown);
process.on("SIGINT", shutdown);
