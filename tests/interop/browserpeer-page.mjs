// The page half of browserpeer.mjs: a real Trystero 0.25.4 peer in Chromium, using the
// browser's own RTCPeerConnection (no polyfill). browserpeer.mjs calls window.harness(msg)
// for every command and relays the result; events go out through window.__emit (a
// Playwright binding). Commands and events are a subset of jspeer.mjs's (see there and the
// header of browserpeer.mjs).

import { selfId } from "@trystero-p2p/core";

const emit = (obj) => window.__emit({ ...obj, ts: performance.timeOrigin + performance.now() });
const errText = (err) => (err instanceof Error ? `${err.name}: ${err.message}` : String(err));
const DEFAULT_ROOM = "main";
const rooms = new Map(); // label -> {room, info, actions}
const localStreams = new Map(); // name -> MediaStream
const pcSerials = new WeakMap();
let nextPcSerial = 1;

// Every RTCPeerConnection Trystero makes: remembered with its data channels, so that
// "give-up" can fire the channel's error event (Trystero's own error path).
const channelsOf = new WeakMap();
class HarnessPeerConnection extends RTCPeerConnection {
  constructor(config) {
    super(config);
    channelsOf.set(this, []);
    this.addEventListener("datachannel", (e) => channelsOf.get(this).push(e.channel));
    this.addEventListener("track", (e) => {
      const ids = (e.streams ?? []).map((s) => s.id).join(",");
      console.info(`track ${e.track.kind} ${e.track.id} mid=${e.transceiver?.mid} streams=${ids}`);
    });
  }
  createDataChannel(...args) {
    const channel = super.createDataChannel(...args);
    channelsOf.get(this).push(channel);
    return channel;
  }
}

const pcSerial = (pc) => {
  let n = pcSerials.get(pc);
  if (n === undefined) pcSerials.set(pc, (n = nextPcSerial++));
  return n;
};

const label = (msg) => msg?.room ?? DEFAULT_ROOM;
const stateOf = (msg) => {
  const state = rooms.get(label(msg));
  if (!state) throw new Error(`not in a room labelled ${JSON.stringify(label(msg))}`);
  return state;
};

const encodeData = (data) => {
  if (typeof data === "string") return { type: "string", value: data };
  if (data instanceof ArrayBuffer || ArrayBuffer.isView(data)) {
    const bytes = data instanceof ArrayBuffer ? new Uint8Array(data) : new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
    let text = "";
    for (let i = 0; i < bytes.length; i += 0x8000) text += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
    return { type: "bytes", length: bytes.length, base64: btoa(text) };
  }
  return { type: "json", value: data === undefined ? null : data };
};

const decodeData = (enc) => {
  if (enc?.type === "string") return enc.value;
  if (enc?.type === "json") return enc.value;
  if (enc?.type === "bytes" && typeof enc.base64 === "string") return Uint8Array.from(atob(enc.base64), (c) => c.charCodeAt(0));
  throw new Error(`unsupported data encoding ${JSON.stringify(enc)?.slice(0, 80)}`);
};

const registerAction = (state, name) => {
  let action = state.actions.get(name);
  if (action) return action;
  action = state.room.makeAction(name);
  action.onMessage = (data, ctx) => {
    const ev = { event: "message", room: state.label, action: name, peerId: ctx?.peerId, data: encodeData(data) };
    if (ctx && ctx.metadata !== undefined) ev.metadata = ctx.metadata;
    emit(ev);
  };
  state.actions.set(name, action);
  return action;
};

// Decoded media per remote track, from the receiving connection's statistics.
const inboundStats = async (pc) => {
  const out = [];
  const receivers = new Map(pc.getReceivers().map((r) => [r.track.id, r]));
  const report = await pc.getStats();
  for (const s of report.values()) {
    if (s.type !== "inbound-rtp") continue;
    out.push({
      kind: s.kind,
      trackId: s.trackIdentifier,
      mid: s.mid ?? null,
      live: receivers.get(s.trackIdentifier)?.track.readyState === "live",
      frames: (s.kind === "video" ? s.framesDecoded : s.packetsReceived) ?? 0,
      width: s.frameWidth ?? null,
      height: s.frameHeight ?? null,
      audioLevel: s.audioLevel ?? null,
      bytes: s.bytesReceived ?? 0,
    });
  }
  return out;
};

const commands = {
  async join(msg) {
    const name = label(msg);
    if (rooms.has(name)) throw new Error(`already in room ${name}`);
    const strategy = msg.strategy ?? "torrent";
    const mod = await import(`@trystero-p2p/${strategy}`);
    const config = {
      appId: msg.appId,
      relayConfig: { urls: msg.relayUrls },
      rtcConfig: { iceServers: [] },
      rtcPolyfill: HarnessPeerConnection,
      ...(msg.password ? { password: msg.password } : {}),
      ...(msg.config ?? {}),
    };
    const room = mod.joinRoom(config, msg.roomId, {
      onJoinError: ({ error, peerId }) => emit({ event: "join-error", room: name, error: errText(error), peerId }),
    });
    const state = { label: name, room, info: { strategy, appId: msg.appId, roomId: msg.roomId }, actions: new Map() };
    rooms.set(name, state);
    state.streamsOnJoin = [];
    room.onPeerJoin = (peerId) => {
      emit({ event: "peer-join", room: name, peerId });
      for (const { stream, options } of state.streamsOnJoin) {
        Promise.all(room.addStream(stream, { ...options, target: peerId })).catch((err) => console.error(`addStream to ${peerId} failed: ${errText(err)}`));
      }
    };
    room.onPeerLeave = (peerId) => emit({ event: "peer-leave", room: name, peerId });
    room.onPeerStream = (stream, peerId, metadata) => {
      const ev = { event: "peer-stream", room: name, peerId, streamId: stream.id, tracks: stream.getTracks().map((t) => ({ id: t.id, kind: t.kind })) };
      if (metadata !== undefined) ev.metadata = metadata;
      emit(ev);
    };
    for (const action of msg.actions ?? []) registerAction(state, action);
    return { selfId, roomId: msg.roomId, strategy, room: name, isPassive: room.isPassive() };
  },

  async action(msg) {
    registerAction(stateOf(msg), msg.name);
    return { name: msg.name };
  },

  async send(msg) {
    const state = stateOf(msg);
    const options = {};
    if (msg.target !== undefined && msg.target !== null) options.target = msg.target;
    if ("metadata" in msg) options.metadata = msg.metadata;
    const targets = options.target ?? Object.keys(state.room.getPeers());
    const t0 = performance.now();
    await registerAction(state, msg.action).send(decodeData(msg.data), options);
    return { ms: performance.now() - t0, targets };
  },

  async ping(msg) {
    return await stateOf(msg).room.ping(msg.peerId);
  },

  async peers(msg) {
    const state = rooms.get(label(msg));
    return state ? Object.keys(state.room.getPeers()) : [];
  },

  async connections(msg) {
    return Object.fromEntries(Object.entries(stateOf(msg).room.getPeers()).map(([id, pc]) => [id, pcSerial(pc)]));
  },

  // {"cmd":"media-add","name"?,"audio"?:bool,"video"?:{width,height}|false,"metadata"?,"target"?,
  //  "onPeerJoin"?:bool} → getUserMedia (Chromium's fake devices) once per name, then
  // room.addStream; with "onPeerJoin" the stream is instead added to every peer the moment
  // it joins (from onPeerJoin), as an app starting a call does.
  async "media-add"(msg) {
    const state = stateOf(msg);
    const name = msg.name ?? "stream";
    let stream = localStreams.get(name);
    if (!stream) {
      const video = msg.video === false ? false : { width: msg.video?.width ?? 320, height: msg.video?.height ?? 240, frameRate: 30 };
      stream = await navigator.mediaDevices.getUserMedia({ audio: msg.audio !== false, video });
      localStreams.set(name, stream);
    }
    const options = {};
    if (msg.target !== undefined && msg.target !== null) options.target = msg.target;
    if ("metadata" in msg) options.metadata = msg.metadata;
    if (msg.onPeerJoin) state.streamsOnJoin.push({ stream, options });
    else await Promise.all(state.room.addStream(stream, options));
    return { name, streamId: stream.id, tracks: stream.getTracks().map((t) => ({ id: t.id, kind: t.kind })) };
  },

  // {"cmd":"media-status"} → {peerId: [inbound track stats…]} for the room's peers.
  async "media-status"(msg) {
    const out = {};
    for (const [id, pc] of Object.entries(stateOf(msg).room.getPeers())) out[id] = await inboundStats(pc);
    return out;
  },

  // {"cmd":"give-up","peerId"} → fires the error event of the data channel to peerId, as
  // Chromium does when the channel fails: Trystero then drops the peer from its rooms but
  // leaves the RTCPeerConnection open (its shared-peer error path).
  async "give-up"(msg) {
    const pc = stateOf(msg).room.getPeers()[msg.peerId];
    if (!pc) throw new Error(`no peer ${msg.peerId}`);
    const channel = channelsOf.get(pc)?.find((c) => c.readyState === "open");
    if (!channel) throw new Error(`no open data channel to ${msg.peerId}`);
    const error = new RTCError({ errorDetail: "data-channel-failure" }, "given up by the test");
    channel.dispatchEvent(new RTCErrorEvent("error", { error }));
    return { connectionState: pc.connectionState };
  },

  async leave(msg) {
    const state = stateOf(msg);
    rooms.delete(state.label);
    await state.room.leave();
    return null;
  },
};

window.harness = async (msg) => {
  const handler = Object.hasOwn(commands, msg?.cmd) ? commands[msg.cmd] : null;
  if (!handler) throw new Error(`unknown command ${JSON.stringify(msg?.cmd)}`);
  const value = await handler(msg);
  return value === undefined ? null : value;
};
window.harnessSelfId = selfId;
