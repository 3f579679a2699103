// A Trystero ws-relay strategy for the interop harness. @trystero-p2p/ws-relay is not
// published on npm, so this adapter — written from the protocol in the wire notes §3.7 —
// plugs the relay transport into the real, pinned @trystero-p2p/core's createTopicStrategy,
// which is what the unpublished package does. Everything above the transport (topics,
// leader rule, offers, encryption, handshake) is real Trystero 0.25.4.
//
// Client → server: {"type":"subscribe"|"unsubscribe","topic":T},
//                  {"type":"publish","topic":T,"payload":<JSON string>}
// Server → client: {"topic":T,"payload":…} to every subscriber, the sender included.
import { createTopicStrategy, selfId } from "@trystero-p2p/core";

const relays = new Map(); // url → relay

const openRelay = (url) => {
  const relay = { url, handlers: new Map(), ws: null };
  relay.ready = new Promise((resolve, reject) => {
    const ws = new globalThis.WebSocket(url);
    relay.ws = ws;
    ws.onopen = () => resolve(relay);
    ws.onerror = (err) => reject(new Error(`ws-relay ${url}: ${err?.message ?? "error"}`));
    ws.onmessage = (event) => {
      let frame;
      try {
        frame = JSON.parse(String(event.data));
      } catch {
        return;
      }
      if (!frame || typeof frame.topic !== "string") return;
      for (const handler of relay.handlers.get(frame.topic) ?? []) handler(frame.topic, frame.payload);
    };
  });
  relay.send = (frame) => {
    if (relay.ws.readyState === 1) relay.ws.send(JSON.stringify(frame));
  };
  return relay;
};

export const joinRoom = createTopicStrategy({
  init: (config) =>
    config.relayConfig.urls.map((url) => {
      if (!relays.has(url)) relays.set(url, openRelay(url));
      return relays.get(url).ready;
    }),
  subscribeTopic: (relay, topic, onMessage) => {
    let set = relay.handlers.get(topic);
    if (!set) {
      set = new Set();
      relay.handlers.set(topic, set);
      relay.send({ type: "subscribe", topic });
    }
    set.add(onMessage);
    return () => {
      set.delete(onMessage);
      if (set.size === 0) {
        relay.handlers.delete(topic);
        relay.send({ type: "unsubscribe", topic });
      }
    };
  },
  publishTopic: (relay, topic, msg) => relay.send({ type: "publish", topic, payload: msg }),
});

export { selfId };
