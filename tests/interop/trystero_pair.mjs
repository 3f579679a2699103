// One real Trystero 0.25.4 peer (@trystero-p2p/torrent + @roamhq/wrtc) that joins a room
// through the given WebTorrent tracker, for peermesh's tracker interop test. Run two of
// these processes (Trystero's selfId is per process, so two peers cannot share one) and
// each reports when it sees the other and receives its greeting over the data channel.
//
//   node trystero_pair.mjs --url ws://127.0.0.1:PORT [--app-id X] [--room R]
//        [--timeout-ms 25000]
//
// stdout, one JSON object per line:
//   {"event":"ready","selfId":"..."}                       joinRoom() called
//   {"event":"join","peerId":"..."}                       onPeerJoin (handshake done)
//   {"event":"message","peerId":"...","data":"..."}       the other peer's greeting
//   {"event":"done"} then exit 0; {"event":"timeout"} then exit 1.
// Exits when stdin closes, too. Diagnostics (Trystero's warnings) go to stderr.
//
// Self-contained on purpose (the general harness is jspeer.mjs). wrtc 0.10 lacks the
// argument-less setLocalDescription() Trystero uses, so the subclass below creates the
// offer/answer itself. Only loopback may be used: no ICE servers, and remote
// descriptions/candidates are filtered down to 127.0.0.1 UDP candidates.

import { parseArgs } from "node:util";
import wrtc from "@roamhq/wrtc";
import { joinRoom, selfId } from "@trystero-p2p/torrent";
import { WebSocket } from "ws";

// Node 20 has no global WebSocket (Node 22 does); Trystero's tracker sockets need one.
globalThis.WebSocket ??= WebSocket;

const { values: args } = parseArgs({
  options: {
    url: { type: "string" },
    "app-id": { type: "string", default: "peermesh-tracker-test" },
    room: { type: "string", default: "tracker-room" },
    "timeout-ms": { type: "string", default: "25000" },
  },
});
if (!args.url) throw new Error("--url is required");
const emit = (obj) => process.stdout.write(JSON.stringify(obj) + "\n");

const LOOPBACK_UDP = / udp .* 127\.0\.0\.1 \d+ typ /i;
const onlyLoopback = (sdp) =>
  sdp
    .split("\r\n")
    .filter((line) => !line.startsWith("a=candidate:") || LOOPBACK_UDP.test(line))
    .join("\r\n");

class LoopbackPeerConnection extends wrtc.RTCPeerConnection {
  async setLocalDescription(desc) {
    if (!desc || !desc.sdp) {
      const answering = this.signalingState === "have-remote-offer" || this.signalingState === "have-local-pranswer";
      desc = answering ? await this.createAnswer() : await this.createOffer();
    }
    return super.setLocalDescription(desc);
  }
  setRemoteDescription(desc) {
    return super.setRemoteDescription(desc?.sdp ? { type: desc.type, sdp: onlyLoopback(desc.sdp) } : desc);
  }
  addIceCandidate(candidate) {
    const text = candidate?.candidate ?? "";
    if (text && !LOOPBACK_UDP.test(text)) return Promise.resolve();
    return super.addIceCandidate(candidate);
  }
}

const room = joinRoom(
  {
    appId: args["app-id"],
    relayConfig: { urls: [args.url] },
    rtcConfig: { iceServers: [] },
    rtcPolyfill: LoopbackPeerConnection,
  },
  args.room,
  { onJoinError: (e) => console.error("join error:", e?.error ?? e) },
);

const greet = room.makeAction("greet");
let finished = false;
const finish = async (code, event) => {
  if (finished) return;
  finished = true;
  emit({ event });
  setTimeout(() => process.exit(code), 1000).unref();
  try {
    await room.leave();
  } finally {
    setTimeout(() => process.exit(code), 150).unref();
  }
};

room.onPeerJoin = (peerId) => {
  emit({ event: "join", peerId });
  greet.send(`hello from ${selfId}`, { target: peerId });
};
greet.onMessage = (data, { peerId }) => {
  emit({ event: "message", peerId, data });
  setTimeout(() => finish(0, "done"), 300); // give our own greeting time to arrive too
};

emit({ event: "ready", selfId });
setTimeout(() => finish(1, "timeout"), Number(args["timeout-ms"])).unref();
process.stdin.on("end", () => finish(1, "stdin-closed"));
process.stdin.resume();
