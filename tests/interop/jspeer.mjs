// A long-running Trystero 0.25 peer for peermesh's interop tests, driven by JSON lines.
//
//   node jspeer.mjs            (cwd: tests/interop, so node_modules resolves)
//
// stdin:  one JSON command per line.   stdout: one JSON object per line, nothing else.
// stderr: diagnostics (console.* is redirected there, including Trystero's own warnings).
// The process exits as soon as stdin closes (pending commands are abandoned), so a dead
// driver never leaves it behind.
//
// On start: {"event":"ready","selfId":"<Trystero selfId>","pid":N,"node":"v20…"} (before any join).
//
// Every command may carry "id"; its reply is
//   {"event":"result","id":<id>,"ok":true,"value":…}   or
//   {"event":"result","id":<id>,"ok":false,"error":"<message>"}
// Commands run concurrently (a pending "send" does not block a "ping").
//
// Commands
//   {"cmd":"join","strategy":"torrent","appId":…,"roomId":…,"relayUrls":[…],
//    "password"?:…, "actions"?:[names…], "handshakeTimeoutMs"?:N,
//    "config"?:{…extra joinRoom config, e.g. trickleIce, passive…}, "package"?:"<npm name>"}
//       → value {"selfId","roomId","strategy"}. Uses rtcPolyfill = ./rtc-polyfill.mjs and
//         rtcConfig {iceServers: []}. relayUrls is required (never the public defaults).
//         The strategy package is imported by name: "@trystero-p2p/<strategy>".
//   {"cmd":"action","name":…}            → registers room.makeAction(name); value {"name"}
//   {"cmd":"send","action":…,"data":<enc>,"target"?:id|[ids]|null,"metadata"?:…,"progress"?:false}
//       ("progress":false: no onProgress, so no send-progress events; writing one event per
//        16 KiB chunk to stdout slows the send loop noticeably)
//       → resolves when Trystero's send promise resolves; value
//         {"ms":<float>,"targets":[ids active at send time or given],
//          "length"?,"sha256"? (bytes only)}. The action is registered if needed.
//   {"cmd":"ping","peerId":…}            → value = round trip in ms (room.ping)
//   {"cmd":"peers"}                      → value = [peer ids] (room.getPeers(), active only)
//   {"cmd":"status"}                     → value {"selfId","joined","roomId","peers","actions",
//                                           "relays":{url: WebSocket readyState},"polyfill":{counters}}
//   {"cmd":"polyfill-selftest","bytes"?:N} → exercises rtc-polyfill.mjs alone (two local
//                                           connections, implicit SLD, N bytes with back-pressure);
//                                           value {"waits","maxBuffered","transferMs",…}
//   {"cmd":"leave"}                      → value null, after room.leave() resolves
//   {"cmd":"exit"}                       → value null, then the process exits (no leave)
//
// Events (every event carries "ts": wall-clock ms, float)
//   {"event":"peer-join","peerId"}   {"event":"peer-leave","peerId"}
//   {"event":"join-error","error","peerId"}                         (onJoinError)
//   {"event":"message","action","peerId","data":<enc>,"metadata"?} (key absent = no metadata)
//   {"event":"progress","action","peerId","percent","metadata"?}    (receive progress)
//   {"event":"send-progress","cmdId","action","peerId","percent","metadata"?}
//   {"event":"fatal","kind":"uncaughtException"|"unhandledRejection","error"}
//   {"event":"error","error"}                                        (unparseable input line)
// "percent" is Trystero's progress fraction, 0..1 (Trystero names it percent too).
//
// Data encoding <enc>
//   string        {"type":"string","value":"…"}
//   binary        {"type":"bytes","length":N,"sha256":"<hex>","base64"?:"…"}  (base64 only if N <= 65536)
//   anything else {"type":"json","value":…}
// For "send", bytes are given either as {"type":"bytes","base64":"…"} or as the generator spec
// {"type":"bytes","length":N,"seed":S} (S an integer or a string), which produces
//   SHAKE256("peermesh-deterministic-bytes:" + String(S)) truncated/extended to N bytes
// (an XOF, so any N). Python: tests/interop/jspeer.py deterministic_bytes(N, S) is the same.

import { createInterface } from "node:readline";
import { performance } from "node:perf_hooks";
import { selfId } from "@trystero-p2p/core";
import { RTCPeerConnection, polyfillStats } from "./rtc-polyfill.mjs";
import { deterministicBytes, sha256Hex, toBytes } from "./payloads.mjs";

const BASE64_LIMIT = 64 * 1024;

// ---- output discipline --------------------------------------------------------------------
const origError = console.error.bind(console);
const tag = `[jspeer ${selfId}]`;
const log = (...args) => origError(new Date().toISOString(), tag, ...args);
console.log = console.info = console.debug = (...args) => origError(...args);

const now = () => performance.timeOrigin + performance.now();
const emit = (obj) => {
  let line;
  try {
    line = JSON.stringify({ ...obj, ts: now() });
  } catch (err) {
    line = JSON.stringify({ event: "error", error: `cannot encode event ${obj?.event}: ${err}`, ts: now() });
  }
  process.stdout.write(line + "\n");
};
const errText = (err) => (err instanceof Error ? `${err.name}: ${err.message}` : String(err));

process.on("uncaughtException", (err) => {
  log("uncaughtException:", err?.stack ?? err);
  emit({ event: "fatal", kind: "uncaughtException", error: errText(err) });
});
process.on("unhandledRejection", (err) => {
  log("unhandledRejection:", err?.stack ?? err);
  emit({ event: "fatal", kind: "unhandledRejection", error: errText(err) });
});

// Node 20 has no global WebSocket (Node 22 does); Trystero's relay sockets need one.
if (typeof globalThis.WebSocket === "undefined") {
  const { WebSocket } = await import("ws");
  globalThis.WebSocket = WebSocket;
}

// ---- data encoding ------------------------------------------------------------------------
const encodeData = (data) => {
  if (typeof data === "string") return { type: "string", value: data };
  const bytes = toBytes(data);
  if (bytes) {
    const enc = { type: "bytes", length: bytes.byteLength, sha256: sha256Hex(bytes) };
    if (bytes.byteLength <= BASE64_LIMIT) enc.base64 = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString("base64");
    return enc;
  }
  return { type: "json", value: data === undefined ? null : data };
};

const decodeData = (enc) => {
  if (!enc || typeof enc !== "object") throw new Error(`data must be an encoded object, got ${JSON.stringify(enc)}`);
  switch (enc.type) {
    case "string":
      if (typeof enc.value !== "string") throw new Error("string data needs a string value");
      return enc.value;
    case "json":
      if (!("value" in enc)) throw new Error("json data needs a value");
      return enc.value;
    case "bytes": {
      if (typeof enc.base64 === "string") {
        const buf = Buffer.from(enc.base64, "base64");
        const bytes = new Uint8Array(buf.byteLength);
        bytes.set(buf);
        if (enc.length !== undefined && enc.length !== bytes.byteLength) throw new Error(`base64 decodes to ${bytes.byteLength} bytes, length says ${enc.length}`);
        return bytes;
      }
      if (enc.length !== undefined && enc.seed !== undefined) return deterministicBytes(enc.length, enc.seed);
      throw new Error('bytes data needs "base64" or "length"+"seed"');
    }
    default:
      throw new Error(`unknown data type ${JSON.stringify(enc.type)}`);
  }
};

const withMeta = (obj, ctx) => (ctx && "metadata" in ctx && ctx.metadata !== undefined ? { ...obj, metadata: ctx.metadata } : obj);

// ---- room state ---------------------------------------------------------------------------
let room = null;
let roomInfo = null;
let strategyModule = null;
const actions = new Map();

const requireRoom = () => {
  if (!room) throw new Error("not in a room (send a join command first)");
  return room;
};

const registerAction = (name) => {
  if (typeof name !== "string" || !name) throw new Error("action name must be a non-empty string");
  const existing = actions.get(name);
  if (existing) return existing;
  const action = requireRoom().makeAction(name);
  action.onMessage = (data, ctx) => {
    emit(withMeta({ event: "message", action: name, peerId: ctx?.peerId, data: encodeData(data) }, ctx));
  };
  action.onReceiveProgress = (percent, ctx) => {
    emit(withMeta({ event: "progress", action: name, peerId: ctx?.peerId, percent }, ctx));
  };
  actions.set(name, action);
  return action;
};

const strategyPackage = (strategy) => {
  if (typeof strategy !== "string" || !/^[a-z][a-z0-9-]*$/.test(strategy)) throw new Error(`bad strategy name ${JSON.stringify(strategy)}`);
  // @trystero-p2p/ws-relay is not on npm: a protocol adapter over the real core stands in.
  if (strategy === "ws-relay") return "./ws-relay-strategy.mjs";
  return `@trystero-p2p/${strategy}`;
};

const commands = {
  async join(msg) {
    if (room) throw new Error(`already in room ${roomInfo?.roomId}; leave first`);
    const strategy = msg.strategy ?? "torrent";
    const pkg = msg.package ?? strategyPackage(strategy);
    const { appId, roomId, relayUrls, password } = msg;
    if (!appId || typeof appId !== "string") throw new Error("appId is required");
    if (!roomId || typeof roomId !== "string") throw new Error("roomId is required");
    if (!Array.isArray(relayUrls) || relayUrls.length === 0) throw new Error("relayUrls is required (the harness never uses public relays)");
    let mod;
    try {
      mod = await import(pkg);
    } catch (err) {
      throw new Error(`cannot import strategy package ${pkg} (add it to tests/interop/package.json?): ${errText(err)}`);
    }
    if (typeof mod.joinRoom !== "function") throw new Error(`${pkg} exports no joinRoom`);
    if (mod.selfId && mod.selfId !== selfId) log(`warning: ${pkg} selfId ${mod.selfId} differs from core selfId ${selfId}`);
    if (room) throw new Error("joined concurrently");
    const config = {
      appId,
      ...(password !== undefined && password !== null ? { password } : {}),
      relayConfig: { urls: relayUrls, ...(msg.relayConfig ?? {}) },
      rtcConfig: { iceServers: [], ...(msg.rtcConfig ?? {}) },
      rtcPolyfill: RTCPeerConnection,
      ...(msg.config ?? {}),
    };
    const callbacks = {
      onJoinError: ({ error, peerId }) => {
        log("join-error", peerId, error);
        emit({ event: "join-error", error: errText(error), peerId });
      },
      ...(msg.handshakeTimeoutMs !== undefined ? { handshakeTimeoutMs: msg.handshakeTimeoutMs } : {}),
    };
    log(`join ${strategy} app=${appId} room=${roomId} relays=${relayUrls.join(",")}${password ? " (password)" : ""}`);
    const joined = mod.joinRoom(config, roomId, callbacks);
    room = joined;
    roomInfo = { strategy, appId, roomId };
    strategyModule = mod;
    joined.onPeerJoin = (peerId) => {
      log("peer-join", peerId);
      emit({ event: "peer-join", peerId });
    };
    joined.onPeerLeave = (peerId) => {
      log("peer-leave", peerId);
      emit({ event: "peer-leave", peerId });
    };
    for (const name of msg.actions ?? []) registerAction(name);
    return { selfId, roomId, strategy };
  },

  async action(msg) {
    registerAction(msg.name);
    return { name: msg.name };
  },

  async send(msg) {
    const r = requireRoom();
    const action = registerAction(msg.action);
    const data = decodeData(msg.data);
    const bytes = toBytes(data);
    let targets = msg.target ?? null;
    if (typeof targets === "string") targets = [targets];
    const options = {};
    if (msg.progress !== false) {
      options.onProgress = (percent, ctx) => emit(withMeta({ event: "send-progress", cmdId: msg.id, action: msg.action, peerId: ctx?.peerId, percent }, ctx));
    }
    if (msg.target !== undefined && msg.target !== null) options.target = msg.target;
    if ("metadata" in msg) options.metadata = msg.metadata;
    const sentTo = targets ?? Object.keys(r.getPeers());
    const t0 = performance.now();
    await action.send(data, options);
    const value = { ms: performance.now() - t0, targets: sentTo };
    if (bytes) Object.assign(value, { length: bytes.byteLength, sha256: sha256Hex(bytes) });
    return value;
  },

  async ping(msg) {
    if (typeof msg.peerId !== "string") throw new Error("peerId is required");
    return await requireRoom().ping(msg.peerId);
  },

  async peers() {
    return room ? Object.keys(room.getPeers()) : [];
  },

  async status() {
    const relays = {};
    try {
      for (const [url, socket] of Object.entries(strategyModule?.getRelaySockets?.() ?? {})) relays[url] = socket?.readyState ?? null;
    } catch (err) {
      relays.error = errText(err);
    }
    return {
      selfId,
      joined: Boolean(room),
      ...(roomInfo ?? {}),
      peers: room ? Object.keys(room.getPeers()) : [],
      actions: [...actions.keys()],
      relays,
      polyfill: { ...polyfillStats },
    };
  },

  // Exercises rtc-polyfill.mjs without Trystero: two local RTCPeerConnections negotiated with
  // argument-less setLocalDescription() on both sides, then `bytes` sent in 16 KiB chunks as
  // fast as possible, waiting for `bufferedamountlow` (10 s timeout) whenever bufferedAmount is
  // above 65535, exactly like Trystero's send loop. wrtc's SCTP stack absorbs a few MB before
  // bufferedAmount rises, so use well over that (default 16 MiB) to force real waits.
  async "polyfill-selftest"(msg) {
    const total = msg.bytes ?? 16 * 1024 * 1024;
    const chunkSize = 16 * 1024;
    const threshold = 65535;
    const withTimeout = (p, ms, what) =>
      Promise.race([p, new Promise((_, rej) => setTimeout(() => rej(new Error(`${what} timed out after ${ms} ms`)), ms).unref())]);
    const gathered = (pc) =>
      new Promise((res) => {
        const check = () => {
          if (pc.iceGatheringState === "complete") {
            pc.removeEventListener("icegatheringstatechange", check);
            res();
          }
        };
        pc.addEventListener("icegatheringstatechange", check);
        check();
      });
    const a = new RTCPeerConnection({ iceServers: [] });
    const b = new RTCPeerConnection({ iceServers: [] });
    try {
      const dc = a.createDataChannel("selftest");
      dc.binaryType = "arraybuffer";
      dc.bufferedAmountLowThreshold = threshold;
      let propertyHandlerCalls = 0;
      dc.onbufferedamountlow = () => propertyHandlerCalls++;
      const opened = new Promise((res) => dc.addEventListener("open", res));
      let received = 0;
      let remoteThreshold = null;
      const done = new Promise((res) => {
        b.ondatachannel = ({ channel }) => {
          remoteThreshold = channel.bufferedAmountLowThreshold;
          channel.binaryType = "arraybuffer";
          channel.onmessage = (e) => {
            received += e.data.byteLength;
            if (received >= total) res();
          };
        };
      });
      const t0 = performance.now();
      await a.setLocalDescription();
      await withTimeout(gathered(a), 10000, "offer gathering");
      await b.setRemoteDescription(a.localDescription);
      await b.setLocalDescription();
      const answerType = b.localDescription?.type;
      await withTimeout(gathered(b), 10000, "answer gathering");
      await a.setRemoteDescription(b.localDescription);
      await withTimeout(opened, 10000, "data channel open");
      const tOpen = performance.now();
      const chunk = new Uint8Array(chunkSize);
      let sent = 0;
      let waits = 0;
      let maxBuffered = 0;
      while (sent < total) {
        if (dc.bufferedAmount > dc.bufferedAmountLowThreshold) {
          waits++;
          await withTimeout(
            new Promise((res) => {
              const h = () => {
                dc.removeEventListener("bufferedamountlow", h);
                res();
              };
              dc.addEventListener("bufferedamountlow", h);
            }),
            10000,
            `bufferedamountlow wait #${waits} (bufferedAmount ${dc.bufferedAmount})`,
          );
        }
        const n = Math.min(chunkSize, total - sent);
        dc.send(n === chunkSize ? chunk : chunk.subarray(0, n));
        sent += n;
        maxBuffered = Math.max(maxBuffered, dc.bufferedAmount);
      }
      await withTimeout(done, 20000, `receiving (${received}/${total} bytes)`);
      const tEnd = performance.now();
      return {
        bytes: total,
        received,
        waits,
        maxBuffered,
        propertyHandlerCalls,
        answerType,
        offerType: a.localDescription?.type,
        localThreshold: dc.bufferedAmountLowThreshold,
        remoteThreshold,
        setupMs: tOpen - t0,
        transferMs: tEnd - tOpen,
      };
    } finally {
      a.close();
      b.close();
    }
  },

  async leave() {
    const r = requireRoom();
    room = null;
    actions.clear();
    log("leave");
    await r.leave();
    return null;
  },

  async exit() {
    setTimeout(() => shutdown(0), 20);
    return null;
  },
};

// ---- command loop -------------------------------------------------------------------------
const handleLine = async (line) => {
  if (!line.trim()) return;
  let msg;
  try {
    msg = JSON.parse(line);
  } catch (err) {
    emit({ event: "error", error: `bad JSON command: ${errText(err)}` });
    return;
  }
  const id = msg && typeof msg === "object" ? msg.id : undefined;
  try {
    const handler = msg && typeof msg === "object" && Object.hasOwn(commands, msg.cmd) ? commands[msg.cmd] : null;
    if (!handler) throw new Error(`unknown command ${JSON.stringify(msg?.cmd)}`);
    const value = await handler(msg);
    emit({ event: "result", id, ok: true, value: value === undefined ? null : value });
  } catch (err) {
    log(`command ${msg?.cmd} failed:`, err?.stack ?? err);
    emit({ event: "result", id, ok: false, error: errText(err) });
  }
};

let exiting = false;
const shutdown = (code) => {
  if (exiting) return;
  exiting = true;
  // Drain stdout (a pipe: synchronous on Linux, but be safe) before exiting.
  process.stdout.write("", () => process.exit(code));
  setTimeout(() => process.exit(code), 500).unref();
};

const rl = createInterface({ input: process.stdin, crlfDelay: Infinity });
rl.on("line", (line) => void handleLine(line));
rl.on("close", () => {
  log("stdin closed, exiting");
  shutdown(0);
});
process.on("SIGTERM", () => shutdown(0));
process.on("SIGINT", () => shutdown(0));

log(`ready (node ${process.version}, pid ${process.pid})`);
emit({ event: "ready", selfId, pid: process.pid, node: process.version });
