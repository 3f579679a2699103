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
// Rooms: several rooms can be joined at once. Every room command takes "room":<label>
// (default "main"); every room event carries "room":<label>. Rooms joined with one strategy
// package and app id share Trystero's connections (one RTCPeerConnection per remote peer).
//
// Commands
//   {"cmd":"join","strategy":"torrent","appId":…,"roomId":…,"relayUrls":[…],"room"?:label,
//    "password"?:…, "actions"?:[names…], "handshakeTimeoutMs"?:N, "passive"?:bool,
//    "handshake"?:{…see below}, "config"?:{…extra joinRoom config, e.g. trickleIce},
//    "package"?:"<npm name>"}
//       → value {"selfId","roomId","strategy","room","isPassive"}. Uses rtcPolyfill =
//         ./rtc-polyfill.mjs and rtcConfig {iceServers: []}. relayUrls is required (never the
//         public defaults). The strategy package is imported by name: "@trystero-p2p/<strategy>".
//       "handshake" scripts onPeerHandshake(peerId, send, receive, isInitiator):
//         {"mode":"accept"|"reject","send"?:<enc>,"metadata"?:…,"receive"?:bool,"hold"?:bool,
//          "message"?:"<reject text>"}
//         In order: send(data, metadata) if "send" is given; receive() if "receive" (default
//         true for accept, false for reject) → event "handshake"; if "hold", event
//         "handshake-hold" and wait for a "handshake-release" command for that peer; then
//         reject throws Error(message) (Trystero reports it in onJoinError on this side), and
//         accept emits "handshake-done" and returns.
//   {"cmd":"action","name":…}            → registers room.makeAction(name); value {"name"}
//   {"cmd":"send","action":…,"data":<enc>,"target"?:id|[ids]|null,"metadata"?:…,"progress"?:false}
//       ("progress":false: no onProgress, so no send-progress events; writing one event per
//        16 KiB chunk to stdout slows the send loop noticeably)
//       → resolves when Trystero's send promise resolves; value
//         {"ms":<float>,"targets":[ids active at send time or given],
//          "length"?,"sha256"? (bytes only)}. The action is registered if needed.
//   {"cmd":"request-action","name":…,"mode"?:"echo"|"error"|"slow"|"none","errorText"?,"delayMs"?}
//       → makes room.makeAction(name, {kind:"request"}) (or re-configures it) and sets onRequest:
//         echo replies with the request data; error throws Error(errorText); slow waits
//         delayMs (default 5000) then echoes; none leaves onRequest unset (Trystero then
//         answers "request handler unavailable" after 500 ms). value {"name","mode"}
//   {"cmd":"request","action":…,"peerId":…,"data":<enc>,"metadata"?:…,"timeoutMs"?:N}
//       → action.request(data, {target, metadata, timeoutMs}); value
//         {"status":"fulfilled","data":<enc>,"ms"} or {"status":"error","kind":<err.kind|null>,
//         "message","ms"} (kinds: "rejected", "timeout", "disconnected", "aborted").
//         The request action is made without a handler if needed.
//   {"cmd":"handshake-release","peerId":…} → lets a held handshake with that peer continue
//                                           (a release before the hold makes the hold a no-op)
//   {"cmd":"ping","peerId":…}            → value = round trip in ms (room.ping)
//   {"cmd":"peers"}                      → value = [peer ids] (room.getPeers(), active only)
//   {"cmd":"connections"}                → value = {peerId: n}, n a serial number per
//                                           RTCPeerConnection object (same n = same connection)
//   {"cmd":"status"}                     → value {"selfId","joined","roomId","room","isPassive",
//                                           "rooms":[labels],"peers","actions","requestActions",
//                                           "relays":{url: WebSocket readyState},"polyfill":{counters}}
//   {"cmd":"polyfill-selftest","bytes"?:N} → exercises rtc-polyfill.mjs alone (two local
//                                           connections, implicit SLD, N bytes with back-pressure);
//                                           value {"waits","maxBuffered","transferMs",…}
//   {"cmd":"media-add","name"?:"stream","audio"?:{frequency?,amplitude?}|false,
//    "video"?:{width?,height?,fps?}|false,"metadata"?:…,"target"?:id|[ids],"onPeerJoin"?:bool}
//       → room.addStream(stream, {target, metadata}) with the synthetic stream `name` (made
//         on first use: a 48 kHz mono sine tone, default 660 Hz amplitude 0.4, from an
//         RTCAudioSource; I420 frames, default 320x240 at 30 fps, left half luma 16 / right
//         half 235, from an RTCVideoSource; fed in real time). Resolves when Trystero's
//         addStream promises do; value {"name","streamId","tracks":[{id,kind}],"info"}.
//         With "onPeerJoin" the stream is instead added to each peer the moment it joins
//         (from onPeerJoin, as an app starting a call does), and the command returns at once.
//   {"cmd":"media-remove","name"?,"target"?,"stop"?:bool}
//       → room.removeStream(stream, {target}); "stop" also stops the sources and tracks.
//   {"cmd":"media-status"}               → value {"local":{name:{streamId,tracks,info,sent,stopped}},
//         "remote":[{trackId,kind,streamIds,mid,peerIds,readyState,muted,frames,firstFrameTs,
//                    lastFrameTs, + video: width,height,luma:[left,right] (middle row, at 1/4
//                    and 3/4 width) | audio: level,maxLevel (RMS, 0..1),sampleRate,channelCount}],
//         "senders":{peerId:[{kind,trackId}]}}
//       Every track any connection receives gets an RTCVideoSink/RTCAudioSink (at most 64
//       tracks per process); "frames" counts decoded frames / audio chunks. A removed remote
//       track stays "live" in wrtc: it just stops receiving frames.
//   {"cmd":"give-up","peerId"}           → Trystero's data-channel error path for that peer: it
//                                           leaves the room, the connection stays open
//   {"cmd":"fail-remote-description","peerId"} → the next setRemoteDescription on the
//                                           connection to that peer fails (OperationError)
//   {"cmd":"leave"}                      → value null, after room.leave() resolves
//   {"cmd":"exit"}                       → value null, then the process exits (no leave)
//
// Events (every event carries "ts": wall-clock ms, float; room events carry "room")
//   {"event":"peer-join","peerId"}   {"event":"peer-leave","peerId"}
//   {"event":"join-error","error","peerId"}                         (onJoinError)
//   {"event":"message","action","peerId","data":<enc>,"metadata"?} (key absent = no metadata)
//   {"event":"progress","action","peerId","percent","metadata"?}    (receive progress)
//   {"event":"send-progress","cmdId","action","peerId","percent","metadata"?}
//   {"event":"request","action","peerId","data":<enc>,"metadata"?} (a request reached a handler)
//   {"event":"handshake-start","peerId","isInitiator"}              (onPeerHandshake called)
//   {"event":"handshake","peerId","isInitiator","data":<enc>,"metadata"?} (received in it)
//   {"event":"handshake-hold","peerId"}  {"event":"handshake-done","peerId"}
//   {"event":"peer-stream","peerId","streamId","tracks":[{id,kind}],"metadata"?} (onPeerStream)
//   {"event":"peer-track","peerId","track":{id,kind},"streamId","tracks","metadata"?} (onPeerTrack)
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
import wrtc from "@roamhq/wrtc";
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

// Node 20 has no global WebSocket (Node 22 does); Trystero's relay sockets need one. As in
// a browser, a socket error (a refused connection when its relay is gone) is an event, not
// an exception: ws throws an "error" nobody listens to.
if (typeof globalThis.WebSocket === "undefined") {
  const { WebSocket } = await import("ws");
  globalThis.WebSocket = class BrowserLikeWebSocket extends WebSocket {
    constructor(...args) {
      super(...args);
      this.on("error", () => {});
    }
  };
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
// Several rooms can be joined at once, each under a label ("room" in commands and events,
// default "main"). Rooms of one strategy package in this process share Trystero's
// connections (one RTCPeerConnection per remote peer and app id).
const DEFAULT_ROOM = "main";
const rooms = new Map(); // label -> {room, info, mod, actions, requestActions, gates}
const joining = new Set(); // labels with a join in progress

// A small integer per RTCPeerConnection object, so tests can tell whether two rooms use the
// same connection ("connections" command).
const pcSerials = new WeakMap();
let nextPcSerial = 1;
const pcSerial = (pc) => {
  if (!pc || typeof pc !== "object") return null;
  let n = pcSerials.get(pc);
  if (n === undefined) {
    n = nextPcSerial++;
    pcSerials.set(pc, n);
  }
  return n;
};

const roomLabel = (msg) => {
  const label = msg?.room ?? DEFAULT_ROOM;
  if (typeof label !== "string" || !label) throw new Error("room label must be a non-empty string");
  return label;
};

const requireState = (msg) => {
  const label = roomLabel(msg);
  const state = rooms.get(label);
  if (!state) throw new Error(label === DEFAULT_ROOM ? "not in a room (send a join command first)" : `not in a room labelled ${JSON.stringify(label)} (send a join command first)`);
  return state;
};

const sleep = (ms) => new Promise((res) => setTimeout(res, ms));

const registerAction = (state, name) => {
  if (typeof name !== "string" || !name) throw new Error("action name must be a non-empty string");
  const existing = state.actions.get(name);
  if (existing) return existing;
  if (state.requestActions.has(name)) throw new Error(`action ${JSON.stringify(name)} is a request action here`);
  const label = state.label;
  const action = state.room.makeAction(name);
  action.onMessage = (data, ctx) => {
    emit(withMeta({ event: "message", room: label, action: name, peerId: ctx?.peerId, data: encodeData(data) }, ctx));
  };
  action.onReceiveProgress = (percent, ctx) => {
    emit(withMeta({ event: "progress", room: label, action: name, peerId: ctx?.peerId, percent }, ctx));
  };
  state.actions.set(name, action);
  return action;
};

// Request handlers, by mode:
//   "echo"  reply with the request's data
//   "error" throw Error(errorText) → the caller gets that text as the error
//   "slow"  wait delayMs (default 5000), then reply with the data
//   "none"  no handler (Trystero answers "request handler unavailable" after 500 ms)
// Every handled request is reported as {"event":"request","room","action","peerId","data","metadata"?}.
const REQUEST_MODES = ["echo", "error", "slow", "none"];
const makeRequestHandler = (label, name, spec) => {
  const mode = spec.mode ?? "echo";
  if (!REQUEST_MODES.includes(mode)) throw new Error(`unknown request mode ${JSON.stringify(mode)} (one of ${REQUEST_MODES.join(", ")})`);
  if (mode === "none") return null;
  return async (data, ctx) => {
    emit(withMeta({ event: "request", room: label, action: name, peerId: ctx?.peerId, data: encodeData(data) }, ctx));
    if (mode === "slow") await sleep(spec.delayMs ?? 5000);
    if (mode === "error") throw new Error(spec.errorText ?? "jspeer request error");
    return data;
  };
};

const registerRequestAction = (state, name, spec = null) => {
  if (typeof name !== "string" || !name) throw new Error("action name must be a non-empty string");
  if (state.actions.has(name)) throw new Error(`action ${JSON.stringify(name)} is a message action here`);
  let entry = state.requestActions.get(name);
  if (!entry) {
    const action = state.room.makeAction(name, { kind: "request" });
    entry = { action, mode: "none" };
    state.requestActions.set(name, entry);
  }
  if (spec) {
    entry.action.onRequest = makeRequestHandler(state.label, name, spec);
    entry.mode = spec.mode ?? "echo";
  }
  return entry;
};

// Handshake gates: a held handshake waits until "handshake-release" for that peer (a release
// that comes first lets the hold pass at once).
const gateFor = (state, peerId) => {
  let gate = state.gates.get(peerId);
  if (!gate) {
    let release;
    const promise = new Promise((res) => (release = res));
    gate = { promise, release, released: false };
    state.gates.set(peerId, gate);
  }
  return gate;
};

// onPeerHandshake from a spec: {"mode":"accept"|"reject", "send"?:<enc>, "metadata"?:…,
// "receive"?:bool (default: true for accept, false for reject), "hold"?:bool, "message"?:str}.
// Order: send (if given), receive (if asked; emits "handshake"), hold (emits "handshake-hold",
// waits for "handshake-release"), then reject (throw Error(message)) or accept (emits
// "handshake-done" just before returning).
const makeHandshake = (label, spec) => {
  const mode = spec.mode ?? "accept";
  if (mode !== "accept" && mode !== "reject") throw new Error(`unknown handshake mode ${JSON.stringify(mode)}`);
  const payload = spec.send === undefined ? undefined : decodeData(spec.send);
  const receiveToo = spec.receive ?? mode === "accept";
  return async (peerId, send, receive, isInitiator) => {
    const state = rooms.get(label);
    emit({ event: "handshake-start", room: label, peerId, isInitiator });
    if (payload !== undefined) await send(payload, spec.metadata);
    if (receiveToo) {
      const got = await receive();
      const ev = { event: "handshake", room: label, peerId, isInitiator, data: encodeData(got?.data) };
      if (got && "metadata" in got && got.metadata !== undefined) ev.metadata = got.metadata;
      emit(ev);
    }
    if (spec.hold && state) {
      emit({ event: "handshake-hold", room: label, peerId });
      await gateFor(state, peerId).promise;
    }
    if (mode === "reject") throw new Error(spec.message ?? "rejected by jspeer");
    emit({ event: "handshake-done", room: label, peerId });
  };
};

// ---- media --------------------------------------------------------------------------------
// Local synthetic streams ("media-add"): a wrtc MediaStream whose video track comes from a
// nonstandard RTCVideoSource fed with I420 frames of a fixed size, left half dark (luma 16)
// and right half bright (235) — the inverse of peermesh's PatternVideoTrack — and whose
// audio track comes from an RTCAudioSource fed with a 48 kHz mono 16-bit sine tone in 10 ms
// chunks. Sources are fed on a timer at real-time pace until the stream is stopped.
//
// Remote media: every RTCPeerConnection Trystero makes is a HarnessPeerConnection, which
// attaches an RTCVideoSink / RTCAudioSink to each track it receives (`track` event) and
// counts what arrives; "media-status" reports the counters. onPeerStream / onPeerTrack are
// reported as "peer-stream" / "peer-track" events.
const { RTCAudioSource, RTCVideoSource, RTCAudioSink, RTCVideoSink } = wrtc.nonstandard;
const MAX_LOCAL_STREAMS = 16;
const MAX_REMOTE_TRACKS = 64;
const AUDIO_RATE = 48000;
const AUDIO_CHUNK = AUDIO_RATE / 100; // 10 ms, what RTCAudioSource requires
const MAX_CATCH_UP = 10; // chunks/frames fed per timer tick at most (after a stall)

const localStreams = new Map(); // name -> {stream, timers, tracks, sent, stopped}
const remoteTracks = new Map(); // track id -> record (insertion order = arrival order)
const pcRemoteTracks = new WeakMap(); // RTCPeerConnection -> Set of track ids

const trackInfo = (track) => ({ id: track.id, kind: track.kind });

const i420Frame = (width, height) => {
  const data = new Uint8ClampedArray((width * height * 3) / 2);
  for (let y = 0; y < height; y++) {
    const row = y * width;
    data.fill(16, row, row + width / 2);
    data.fill(235, row + width / 2, row + width);
  }
  data.fill(128, width * height);
  return { width, height, data };
};

// A timer that calls step() as many times as real time says it should have by now (at most
// MAX_CATCH_UP per tick), so Node's coarse timers do not slow the media down.
const pacedTimer = (periodMs, step) => {
  const start = performance.now();
  let done = 0;
  const tick = () => {
    const due = Math.floor((performance.now() - start) / periodMs) + 1;
    for (let i = 0; done < due && i < MAX_CATCH_UP; i++, done++) step();
    if (done < due) done = due; // drop what we could not catch up with
  };
  tick();
  return setInterval(tick, Math.max(1, Math.floor(periodMs / 2)));
};

const makeSyntheticStream = (spec) => {
  const stream = new wrtc.MediaStream();
  const timers = [];
  const sent = { videoFrames: 0, audioChunks: 0 };
  const info = {};
  if (spec.audio !== false && spec.audio !== null) {
    const { frequency = 660, amplitude = 0.4 } = spec.audio ?? {};
    if (!(frequency > 0 && frequency < AUDIO_RATE / 2)) throw new Error(`bad audio frequency ${frequency}`);
    if (!(amplitude > 0 && amplitude <= 1)) throw new Error(`bad audio amplitude ${amplitude}`);
    const source = new RTCAudioSource();
    const track = source.createTrack();
    stream.addTrack(track);
    let t = 0;
    const step = (2 * Math.PI * frequency) / AUDIO_RATE;
    const peak = amplitude * 32767;
    timers.push(
      pacedTimer(10, () => {
        const samples = new Int16Array(AUDIO_CHUNK);
        for (let i = 0; i < AUDIO_CHUNK; i++) samples[i] = Math.round(peak * Math.sin(step * t++));
        source.onData({ samples, sampleRate: AUDIO_RATE, bitsPerSample: 16, channelCount: 1, numberOfFrames: AUDIO_CHUNK });
        sent.audioChunks++;
      }),
    );
    info.audio = { frequency, amplitude, sampleRate: AUDIO_RATE };
  }
  if (spec.video !== false && spec.video !== null) {
    const { width = 320, height = 240, fps = 30 } = spec.video ?? {};
    for (const [k, v] of [["width", width], ["height", height]]) {
      if (!Number.isInteger(v) || v < 16 || v > 1920 || v % 2) throw new Error(`video ${k} must be an even integer in 16..1920`);
    }
    if (!Number.isInteger(fps) || fps < 1 || fps > 60) throw new Error("video fps must be an integer in 1..60");
    const source = new RTCVideoSource();
    const track = source.createTrack();
    stream.addTrack(track);
    const frame = i420Frame(width, height);
    timers.push(
      pacedTimer(1000 / fps, () => {
        source.onFrame(frame);
        sent.videoFrames++;
      }),
    );
    info.video = { width, height, fps };
  }
  if (!stream.getTracks().length) throw new Error("a stream needs audio or video");
  return { stream, timers, sent, info, stopped: false };
};

const stopLocal = (entry) => {
  if (entry.stopped) return;
  entry.stopped = true;
  entry.timers.forEach(clearInterval);
  for (const track of entry.stream.getTracks()) track.stop();
};

const lumaSample = (frame) => {
  // I420: the luma plane comes first; sample the middle row at 1/4 and 3/4 of the width.
  const row = Math.floor(frame.height / 2) * frame.width;
  return [frame.data[row + Math.floor(frame.width / 4)], frame.data[row + Math.floor((3 * frame.width) / 4)]];
};

const watchRemoteTrack = (pc, event) => {
  const track = event.track;
  if (!track || remoteTracks.has(track.id)) return;
  if (remoteTracks.size >= MAX_REMOTE_TRACKS) {
    log(`media: more than ${MAX_REMOTE_TRACKS} remote tracks, not watching ${track.id}`);
    return;
  }
  const rec = {
    pc,
    track,
    kind: track.kind,
    streamIds: (event.streams ?? []).map((s) => s.id),
    mid: event.transceiver?.mid ?? null,
    frames: 0,
    firstFrameTs: null,
    lastFrameTs: null,
    sink: null,
  };
  if (track.kind === "video") {
    rec.sink = new RTCVideoSink(track);
    rec.sink.onframe = ({ frame }) => {
      rec.frames++;
      rec.lastFrameTs = now();
      rec.firstFrameTs ??= rec.lastFrameTs;
      rec.width = frame.width;
      rec.height = frame.height;
      rec.luma = lumaSample(frame);
    };
  } else if (track.kind === "audio") {
    rec.maxLevel = 0;
    rec.sink = new RTCAudioSink(track);
    rec.sink.ondata = (d) => {
      rec.frames++;
      rec.lastFrameTs = now();
      rec.firstFrameTs ??= rec.lastFrameTs;
      const samples = d.samples;
      let sum = 0;
      for (let i = 0; i < samples.length; i++) sum += samples[i] * samples[i];
      rec.level = samples.length ? Math.sqrt(sum / samples.length) / 32768 : 0;
      rec.maxLevel = Math.max(rec.maxLevel, rec.level);
      rec.sampleRate = d.sampleRate;
      rec.channelCount = d.channelCount;
    };
  }
  remoteTracks.set(track.id, rec);
  let ids = pcRemoteTracks.get(pc);
  if (!ids) pcRemoteTracks.set(pc, (ids = new Set()));
  ids.add(track.id);
  log(`media: remote ${track.kind} track ${track.id} streams=${rec.streamIds.join(",")} mid=${rec.mid}`);
};

const stopRemoteSinks = () => {
  for (const rec of remoteTracks.values()) {
    try {
      rec.sink?.stop();
    } catch {
      /* already stopped */
    }
    rec.sink = null;
  }
};

// Every connection Trystero makes in this process: the polyfill, plus sinks on received tracks.
// Its data channels are remembered for "give-up".
const channelsOf = new WeakMap();
class HarnessPeerConnection extends RTCPeerConnection {
  constructor(config) {
    super(config);
    channelsOf.set(this, []);
    this.addEventListener("track", (e) => watchRemoteTrack(this, e));
    this.addEventListener("datachannel", (e) => channelsOf.get(this).push(e.channel));
  }

  createDataChannel(...args) {
    const channel = super.createDataChannel(...args);
    channelsOf.get(this).push(channel);
    return channel;
  }

  // "fail-remote-description" makes the next call fail, as a browser does with an SDP it
  // cannot take.
  setRemoteDescription(description) {
    if (this.failNextRemoteDescription) {
      this.failNextRemoteDescription = false;
      return Promise.reject(new DOMException("made to fail by the test", "OperationError"));
    }
    return super.setRemoteDescription(description);
  }
}

const peerIdsOfPc = (pc) => {
  const ids = new Set();
  for (const state of rooms.values()) {
    for (const [id, conn] of Object.entries(state.room.getPeers())) if (conn === pc) ids.add(id);
  }
  return [...ids];
};

const remoteTrackStatus = (rec) => {
  const out = {
    trackId: rec.track.id,
    kind: rec.kind,
    streamIds: rec.streamIds,
    mid: rec.mid,
    peerIds: peerIdsOfPc(rec.pc),
    readyState: rec.track.readyState,
    muted: rec.track.muted ?? null,
    frames: rec.frames,
    firstFrameTs: rec.firstFrameTs,
    lastFrameTs: rec.lastFrameTs,
  };
  if (rec.kind === "video") Object.assign(out, { width: rec.width ?? null, height: rec.height ?? null, luma: rec.luma ?? null });
  else Object.assign(out, { level: rec.level ?? null, maxLevel: rec.maxLevel ?? 0, sampleRate: rec.sampleRate ?? null, channelCount: rec.channelCount ?? null });
  return out;
};

const streamEventFields = (stream) => ({ streamId: stream?.id ?? null, tracks: (stream?.getTracks?.() ?? []).map(trackInfo) });

const watchRoomMedia = (label, joined) => {
  joined.onPeerStream = (stream, peerId, metadata) => {
    const ev = { event: "peer-stream", room: label, peerId, ...streamEventFields(stream) };
    if (metadata !== undefined) ev.metadata = metadata;
    log("peer-stream", label, peerId, ev.streamId, JSON.stringify(ev.tracks));
    emit(ev);
  };
  joined.onPeerTrack = (track, stream, peerId, metadata) => {
    const ev = { event: "peer-track", room: label, peerId, track: trackInfo(track), ...streamEventFields(stream) };
    if (metadata !== undefined) ev.metadata = metadata;
    log("peer-track", label, peerId, track.kind, track.id);
    emit(ev);
  };
};

const strategyPackage = (strategy) => {
  if (typeof strategy !== "string" || !/^[a-z][a-z0-9-]*$/.test(strategy)) throw new Error(`bad strategy name ${JSON.stringify(strategy)}`);
  // @trystero-p2p/ws-relay is not on npm: a protocol adapter over the real core stands in.
  if (strategy === "ws-relay") return "./ws-relay-strategy.mjs";
  return `@trystero-p2p/${strategy}`;
};

const commands = {
  async join(msg) {
    const label = roomLabel(msg);
    const current = rooms.get(label);
    if (current) throw new Error(`already in room ${current.info.roomId}${label === DEFAULT_ROOM ? "" : ` (label ${JSON.stringify(label)})`}; leave first`);
    if (joining.has(label)) throw new Error("joined concurrently");
    const strategy = msg.strategy ?? "torrent";
    const pkg = msg.package ?? strategyPackage(strategy);
    const { appId, roomId, relayUrls, password } = msg;
    if (!appId || typeof appId !== "string") throw new Error("appId is required");
    if (!roomId || typeof roomId !== "string") throw new Error("roomId is required");
    if (!Array.isArray(relayUrls) || relayUrls.length === 0) throw new Error("relayUrls is required (the harness never uses public relays)");
    const handshake = msg.handshake ? makeHandshake(label, msg.handshake) : undefined;
    joining.add(label);
    try {
      let mod;
      try {
        mod = await import(pkg);
      } catch (err) {
        throw new Error(`cannot import strategy package ${pkg} (add it to tests/interop/package.json?): ${errText(err)}`);
      }
      if (typeof mod.joinRoom !== "function") throw new Error(`${pkg} exports no joinRoom`);
      if (mod.selfId && mod.selfId !== selfId) log(`warning: ${pkg} selfId ${mod.selfId} differs from core selfId ${selfId}`);
      if (rooms.has(label)) throw new Error("joined concurrently");
      const config = {
        appId,
        ...(password !== undefined && password !== null ? { password } : {}),
        relayConfig: { urls: relayUrls, ...(msg.relayConfig ?? {}) },
        rtcConfig: { iceServers: [], ...(msg.rtcConfig ?? {}) },
        rtcPolyfill: HarnessPeerConnection,
        ...(msg.passive ? { passive: true } : {}),
        ...(msg.config ?? {}),
      };
      const callbacks = {
        onJoinError: ({ error, peerId }) => {
          log("join-error", label, peerId, error);
          emit({ event: "join-error", room: label, error: errText(error), peerId });
        },
        ...(msg.handshakeTimeoutMs !== undefined ? { handshakeTimeoutMs: msg.handshakeTimeoutMs } : {}),
        ...(handshake ? { onPeerHandshake: handshake } : {}),
      };
      log(`join ${strategy} app=${appId} room=${roomId} label=${label} relays=${relayUrls.join(",")}${password ? " (password)" : ""}${config.passive ? " (passive)" : ""}${handshake ? " (handshake)" : ""}`);
      const joined = mod.joinRoom(config, roomId, callbacks);
      for (const other of rooms.values()) {
        if (other.room === joined) throw new Error(`room ${roomId} is already joined as ${JSON.stringify(other.label)}`);
      }
      const state = {
        label,
        room: joined,
        info: { strategy, appId, roomId },
        mod,
        actions: new Map(),
        requestActions: new Map(),
        gates: new Map(),
        streamsOnJoin: [], // {stream, options} added to each peer as it joins ("onPeerJoin")
      };
      rooms.set(label, state);
      joined.onPeerJoin = (peerId) => {
        log("peer-join", label, peerId);
        emit({ event: "peer-join", room: label, peerId });
        for (const { stream, options } of state.streamsOnJoin) {
          Promise.all(joined.addStream(stream, { ...options, target: peerId })).catch((err) => log(`addStream to ${peerId} failed:`, errText(err)));
        }
      };
      joined.onPeerLeave = (peerId) => {
        log("peer-leave", label, peerId);
        emit({ event: "peer-leave", room: label, peerId });
      };
      watchRoomMedia(label, joined);
      for (const name of msg.actions ?? []) registerAction(state, name);
      return { selfId, roomId, strategy, room: label, isPassive: joined.isPassive() };
    } finally {
      joining.delete(label);
    }
  },

  async action(msg) {
    registerAction(requireState(msg), msg.name);
    return { name: msg.name };
  },

  async send(msg) {
    const state = requireState(msg);
    const r = state.room;
    const action = registerAction(state, msg.action);
    const data = decodeData(msg.data);
    const bytes = toBytes(data);
    let targets = msg.target ?? null;
    if (typeof targets === "string") targets = [targets];
    const options = {};
    if (msg.progress !== false) {
      options.onProgress = (percent, ctx) => emit(withMeta({ event: "send-progress", room: state.label, cmdId: msg.id, action: msg.action, peerId: ctx?.peerId, percent }, ctx));
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

  // {"cmd":"request-action","name","mode"?:"echo"|"error"|"slow"|"none","errorText"?,"delayMs"?}
  // makes (or re-configures) a request action; value {"name","mode"}.
  async "request-action"(msg) {
    const entry = registerRequestAction(requireState(msg), msg.name, { mode: msg.mode ?? "echo", errorText: msg.errorText, delayMs: msg.delayMs });
    return { name: msg.name, mode: entry.mode };
  },

  // {"cmd":"request","action","peerId","data":<enc>,"metadata"?,"timeoutMs"?} → value
  // {"status":"fulfilled","data":<enc>} or {"status":"error","kind":<Trystero error kind|null>,
  // "message"}. The request action is made (without a handler) if needed.
  async request(msg) {
    const state = requireState(msg);
    if (typeof msg.peerId !== "string") throw new Error("peerId is required");
    const { action } = registerRequestAction(state, msg.action);
    const options = { target: msg.peerId };
    if ("metadata" in msg) options.metadata = msg.metadata;
    if (msg.timeoutMs !== undefined && msg.timeoutMs !== null) options.timeoutMs = msg.timeoutMs;
    const data = decodeData(msg.data);
    const t0 = performance.now();
    try {
      const value = await action.request(data, options);
      return { status: "fulfilled", data: encodeData(value), ms: performance.now() - t0 };
    } catch (err) {
      return { status: "error", kind: err?.kind ?? null, message: err instanceof Error ? err.message : String(err), ms: performance.now() - t0 };
    }
  },

  // {"cmd":"handshake-release","peerId"} lets a held handshake ("hold":true) with that peer go on.
  async "handshake-release"(msg) {
    const state = requireState(msg);
    if (typeof msg.peerId !== "string") throw new Error("peerId is required");
    const gate = gateFor(state, msg.peerId);
    gate.released = true;
    gate.release();
    return null;
  },

  async ping(msg) {
    if (typeof msg.peerId !== "string") throw new Error("peerId is required");
    return await requireState(msg).room.ping(msg.peerId);
  },

  async peers(msg) {
    const state = rooms.get(roomLabel(msg));
    return state ? Object.keys(state.room.getPeers()) : [];
  },

  // {"cmd":"connections"} → {peerId: serial} where serial identifies the RTCPeerConnection
  // object (equal serials across rooms = one shared connection).
  async connections(msg) {
    const state = requireState(msg);
    return Object.fromEntries(Object.entries(state.room.getPeers()).map(([id, pc]) => [id, pcSerial(pc)]));
  },

  async status(msg) {
    const state = rooms.get(roomLabel(msg)) ?? null;
    const relays = {};
    try {
      for (const [url, socket] of Object.entries(state?.mod?.getRelaySockets?.() ?? {})) relays[url] = socket?.readyState ?? null;
    } catch (err) {
      relays.error = errText(err);
    }
    return {
      selfId,
      joined: Boolean(state),
      ...(state ? { ...state.info, room: state.label, isPassive: state.room.isPassive() } : {}),
      rooms: [...rooms.keys()],
      peers: state ? Object.keys(state.room.getPeers()) : [],
      actions: state ? [...state.actions.keys()] : [],
      requestActions: state ? Object.fromEntries([...state.requestActions].map(([n, e]) => [n, e.mode])) : {},
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

  // {"cmd":"media-add","name","audio"?:{frequency?,amplitude?}|false,"video"?:{width?,height?,fps?}|false,
  //  "metadata"?,"target"?:id|[ids]} → makes the synthetic stream `name` (or reuses it) and
  // awaits room.addStream(stream, {target, metadata}); value {"name","streamId","tracks","info"}.
  async "media-add"(msg) {
    const state = requireState(msg);
    const name = msg.name ?? "stream";
    if (typeof name !== "string" || !name) throw new Error("name must be a non-empty string");
    let entry = localStreams.get(name);
    if (entry?.stopped) throw new Error(`stream ${JSON.stringify(name)} was stopped`);
    if (!entry) {
      if (localStreams.size >= MAX_LOCAL_STREAMS) throw new Error(`at most ${MAX_LOCAL_STREAMS} local streams`);
      entry = makeSyntheticStream(msg);
      localStreams.set(name, entry);
    }
    const options = {};
    if (msg.target !== undefined && msg.target !== null) options.target = msg.target;
    if ("metadata" in msg) options.metadata = msg.metadata;
    if (msg.onPeerJoin) state.streamsOnJoin.push({ stream: entry.stream, options });
    else await Promise.all(state.room.addStream(entry.stream, options));
    log(`media-add ${name} stream=${entry.stream.id} room=${state.label} target=${JSON.stringify(options.target ?? null)}`);
    return { name, streamId: entry.stream.id, tracks: entry.stream.getTracks().map(trackInfo), info: entry.info };
  },

  // {"cmd":"media-remove","name","target"?,"stop"?:bool} → room.removeStream(stream, {target});
  // with "stop" the sources stop and the tracks end too. value null.
  async "media-remove"(msg) {
    const state = requireState(msg);
    const name = msg.name ?? "stream";
    const entry = localStreams.get(name);
    if (!entry) throw new Error(`no local stream ${JSON.stringify(name)}`);
    const options = {};
    if (msg.target !== undefined && msg.target !== null) options.target = msg.target;
    state.room.removeStream(entry.stream, options);
    if (msg.stop) stopLocal(entry);
    log(`media-remove ${name} room=${state.label}${msg.stop ? " (stopped)" : ""}`);
    return null;
  },

  // {"cmd":"media-status"} → {"local":{name:{streamId,tracks,info,sent,stopped}},
  //   "remote":[{trackId,kind,streamIds,mid,peerIds,readyState,muted,frames,firstFrameTs,
  //              lastFrameTs, width,height,luma (video) | level,maxLevel,sampleRate,channelCount (audio)}],
  //   "senders":{peerId:[{kind,trackId}]}}  (process-wide; "senders" for the given room)
  async "media-status"(msg) {
    const state = rooms.get(roomLabel(msg)) ?? null;
    const local = {};
    for (const [name, e] of localStreams) {
      local[name] = { streamId: e.stream.id, tracks: e.stream.getTracks().map(trackInfo), info: e.info, sent: { ...e.sent }, stopped: e.stopped };
    }
    const senders = {};
    for (const [id, pc] of Object.entries(state?.room.getPeers() ?? {})) {
      senders[id] = pc.getSenders().filter((s) => s.track).map((s) => ({ kind: s.track.kind, trackId: s.track.id }));
    }
    return { local, remote: [...remoteTracks.values()].map(remoteTrackStatus), senders };
  },

  // {"cmd":"give-up","peerId"} → calls the error handler Trystero put on the data channel
  // to peerId, as when the channel fails: Trystero drops the peer from its rooms but leaves
  // the RTCPeerConnection open (its shared-peer error path, also taken when a
  // renegotiation fails). value {"connectionState"}
  async "give-up"(msg) {
    const pc = requireState(msg).room.getPeers()[msg.peerId];
    if (!pc) throw new Error(`no peer ${msg.peerId}`);
    const channel = channelsOf.get(pc)?.find((c) => c.readyState === "open");
    if (!channel?.onerror) throw new Error(`no open data channel with an error handler to ${msg.peerId}`);
    channel.onerror({ error: new Error("given up by the test") });
    return { connectionState: pc.connectionState };
  },

  // {"cmd":"fail-remote-description","peerId"} → the next setRemoteDescription on the
  // connection to peerId fails (Trystero then drops the peer and keeps the connection, as
  // with "give-up"). value null
  async "fail-remote-description"(msg) {
    const pc = requireState(msg).room.getPeers()[msg.peerId];
    if (!pc) throw new Error(`no peer ${msg.peerId}`);
    pc.failNextRemoteDescription = true;
    return null;
  },

  async leave(msg) {
    const state = requireState(msg);
    rooms.delete(state.label);
    for (const gate of state.gates.values()) gate.release();
    log("leave", state.label);
    await state.room.leave();
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
  try {
    for (const entry of localStreams.values()) stopLocal(entry);
    stopRemoteSinks();
  } catch (err) {
    log("media cleanup failed:", err?.stack ?? err);
  }
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
