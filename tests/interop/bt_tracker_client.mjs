// bittorrent-tracker 11.2.3's own JavaScript `Client` against a WebSocket tracker, for
// peermesh's tracker interop tests.
//
//   node bt_tracker_client.mjs --url ws://127.0.0.1:PORT --info-hash <40 hex>
//        --peer-ids <40 hex>[,<40 hex>...] [--timeout-ms 20000]
//
// Starts one Client per peer id (all in this process; clients of one process share a
// single WebSocket, as in the library's socket pool), announces, and waits until every
// client has a *connected* WebRTC peer that delivered our greeting over its data channel.
// Prints one JSON object per line on stdout:
//   {"event":"update","client":i,"complete":n,"incomplete":n}   announce response
//   {"event":"peer","client":i,"remote":hex}                    'peer' (offer/answer seen)
//   {"event":"connect","client":i,"remote":hex,"localAddress":ip,"remoteAddress":ip}
//                                                               data channel open
//   {"event":"data","client":i,"remote":hex,"data":"..."}       greeting received
//   {"event":"warning","client":i,"message":"..."}
//   {"event":"done"}  then exit 0, or {"event":"timeout"} then exit 1.
// Exits when stdin closes, too.
//
// WebRTC: this bittorrent-tracker uses @thaunknown/simple-peer, which takes its
// RTCPeerConnection from the `webrtc-polyfill` package (node-datachannel) and ignores the
// `wrtc` option except as a "WebRTC is available" flag. node-datachannel's native binary is
// not installed here (its install step downloads a prebuild), so a module-resolution hook
// maps `webrtc-polyfill` to @roamhq/wrtc, whose RTCPeerConnection is what the client
// really uses. Only loopback may be used: ICE servers are empty and every remote
// description/candidate is filtered down to 127.0.0.1 UDP candidates, so every
// connectivity check targets 127.0.0.1.

import { register } from "node:module";
import { parseArgs } from "node:util";
import wrtc from "@roamhq/wrtc";

const { values: args } = parseArgs({
  options: {
    url: { type: "string" },
    "info-hash": { type: "string" },
    "peer-ids": { type: "string" },
    "timeout-ms": { type: "string", default: "20000" },
  },
});
if (!args.url || !args["info-hash"] || !args["peer-ids"]) {
  throw new Error("--url, --info-hash and --peer-ids are required");
}
const emit = (obj) => process.stdout.write(JSON.stringify(obj) + "\n");

const onlyLoopback = (sdp) =>
  sdp
    .split("\r\n")
    .filter((line) => !line.startsWith("a=candidate:") || / udp .* 127\.0\.0\.1 \d+ typ /i.test(line))
    .join("\r\n");

class LoopbackPeerConnection extends wrtc.RTCPeerConnection {
  setRemoteDescription(desc) {
    return super.setRemoteDescription(desc?.sdp ? { type: desc.type, sdp: onlyLoopback(desc.sdp) } : desc);
  }
  addIceCandidate(candidate) {
    const text = candidate?.candidate ?? "";
    if (text && !/ udp .* 127\.0\.0\.1 \d+ typ /i.test(text)) return Promise.resolve();
    return super.addIceCandidate(candidate);
  }
}

globalThis.__peermeshWebrtc = {
  RTCPeerConnection: LoopbackPeerConnection,
  RTCSessionDescription: wrtc.RTCSessionDescription,
  RTCIceCandidate: wrtc.RTCIceCandidate,
};
const shim =
  "data:text/javascript," +
  encodeURIComponent(
    "const w = globalThis.__peermeshWebrtc;" +
      "export const RTCPeerConnection = w.RTCPeerConnection;" +
      "export const RTCSessionDescription = w.RTCSessionDescription;" +
      "export const RTCIceCandidate = w.RTCIceCandidate;" +
      "export default w;",
  );
const hooks =
  "data:text/javascript," +
  encodeURIComponent(
    `export async function resolve(specifier, context, next) {
       if (specifier === "webrtc-polyfill") return { url: ${JSON.stringify(shim)}, shortCircuit: true };
       return next(specifier, context);
     }`,
  );
register(hooks, import.meta.url);
const { default: Client } = await import("bittorrent-tracker");

const peerIds = args["peer-ids"].split(",");
const clients = [];
const satisfied = new Set();
let finished = false;

const finish = (code, event) => {
  if (finished) return;
  finished = true;
  emit({ event });
  for (const client of clients) client.destroy();
  setTimeout(() => process.exit(code), 200).unref();
};

peerIds.forEach((peerId, i) => {
  const client = new Client({
    infoHash: args["info-hash"],
    peerId,
    announce: [args.url],
    port: 6881 + i,
    wrtc, // ignored by simple-peer (see above) but enables the WebSocket tracker
    rtcConfig: { iceServers: [] },
  });
  clients.push(client);
  client.on("update", (data) => emit({ event: "update", client: i, complete: data.complete, incomplete: data.incomplete }));
  client.on("warning", (err) => emit({ event: "warning", client: i, message: String(err?.message ?? err) }));
  client.on("error", (err) => emit({ event: "error", client: i, message: String(err?.message ?? err) }));
  client.on("peer", (peer) => {
    const remote = peer.id;
    emit({ event: "peer", client: i, remote });
    peer.on("error", (err) => emit({ event: "peer-error", client: i, remote, message: String(err?.message ?? err) }));
    peer.on("connect", () => {
      emit({ event: "connect", client: i, remote, localAddress: peer.localAddress, remoteAddress: peer.remoteAddress });
      peer.send(`hello from ${peerId}`);
    });
    peer.on("data", (data) => {
      emit({ event: "data", client: i, remote, data: new TextDecoder().decode(data) });
      satisfied.add(i);
      if (satisfied.size === peerIds.length) finish(0, "done");
    });
  });
  client.start();
});

setTimeout(() => finish(1, "timeout"), Number(args["timeout-ms"])).unref();
process.stdin.on("end", () => finish(1, "stdin-closed"));
process.stdin.resume();
