// RTCPeerConnection for Trystero's `rtcPolyfill` option, built on @roamhq/wrtc 0.10.
//
// wrtc 0.10 lacks two things Trystero 0.25 relies on:
//
// 1. Argument-less `setLocalDescription()` (perfect negotiation, used by Trystero's
//    `createOffer()` and when answering). wrtc's native binding throws "Expected an object".
//    We create the description ourselves: an answer when the signalling state is
//    `have-remote-offer` / `have-local-pranswer`, otherwise an offer. A description given
//    with a `type` but no `sdp` (e.g. `{type: "answer"}`) is completed the same way.
//    All setLocalDescription calls (implicit or not) go through one promise chain so that
//    an implicit call never interleaves its createOffer/createAnswer with another call
//    (Trystero starts an offer from a microtask and wrtc also fires `negotiationneeded`).
//
// 2. The `bufferedamountlow` event on data channels. wrtc never fires it, and
//    `bufferedAmountLowThreshold` is not even a native property. Trystero
//    (core/dist/action-wire.mjs) checks `channel.bufferedAmount > channel.bufferedAmountLowThreshold`
//    before each 16 KiB chunk and, when above, waits for `bufferedamountlow` via
//    addEventListener for up to 10 s. If the event never comes it *silently stops sending
//    the rest of the message* (the send promise still resolves). We emulate the event:
//    after every `send()`, if bufferedAmount is above the threshold, a short interval
//    timer (POLL_MS) polls bufferedAmount and, on the downward crossing to <= threshold,
//    dispatches `new Event("bufferedamountlow")` through the channel's EventTarget, which
//    calls both addEventListener listeners and the `onbufferedamountlow` property.
//    The timer stops when the event fires or the channel is no longer open.
//
// 3. (fidelity, not a gap) `negotiationneeded` is held back while an operation is in flight
//    or the signalling state is not stable, and fired once the operations chain is empty
//    and the state stable again — unless an offer was created meanwhile, which covers the
//    change — as browsers do (the spec's "update the negotiation-needed flag"); see the
//    constructor. Dropping it instead lost a track added while an answer was being set.
//
// 4. (fidelity) Browsers run setLocalDescription, setRemoteDescription and addIceCandidate
//    through one operations chain; wrtc runs each at once. Trystero's polite side answers a
//    colliding offer with `all([setLocalDescription({type: "rollback"}),
//    setRemoteDescription(offer)])` while its own implicit offer may still be in flight:
//    in a browser the three run in order, with wrtc the remote offer landed first and the
//    pending local offer then failed ("Called in wrong state: have-remote-offer"), which
//    made Trystero drop the connection. All three go through `#enqueue` here.
//
// Media needs nothing extra: wrtc delivers `track` events with `streams`, carries audio and
// video (nonstandard RTCAudioSource/RTCVideoSource/…Sink), and libwebrtc re-fires
// `negotiationneeded` when the signalling state returns to stable, so a track added during a
// negotiation (when we drop the event, point 3) is still offered afterwards. Trystero's
// in-band renegotiation (addStream → negotiationneeded → implicit offer over @_signal) works
// through this class; tests/interop/test_trystero_media.py checks it Node ⇄ Node.
//
// Channels are patched in place (they stay real wrtc RTCDataChannel objects), both the
// ones returned by createDataChannel() and the ones delivered by the `datachannel` event.

import wrtc from "@roamhq/wrtc";

const POLL_MS = 2;

// Counters for tests/diagnostics (jspeer.mjs reports them in its "status" command).
export const polyfillStats = {
  implicitOffers: 0,
  implicitAnswers: 0,
  channelsPatched: 0,
  aboveThresholdEpisodes: 0, // times a send() left bufferedAmount above the threshold (poll started)
  bufferedAmountLowEvents: 0, // emulated events dispatched (one per episode, unless the channel closed)
  maxBufferedAmount: 0,
  negotiationNeededDropped: 0,
};
// Diagnostics only: PEERMESH_WRTC_NO_BUFFEREDAMOUNTLOW=1 turns the emulation off, to show
// that a large send then stalls for 10 s and is silently truncated by Trystero.
const EMULATION_DISABLED = process.env.PEERMESH_WRTC_NO_BUFFEREDAMOUNTLOW === "1";
const PATCHED = Symbol("peermesh.bufferedamountlow-patched");
const BUFFERED_LOW = "bufferedamountlow";

export const patchDataChannel = (channel) => {
  if (!channel || channel[PATCHED]) return channel;
  Object.defineProperty(channel, PATCHED, { value: true });
  polyfillStats.channelsPatched++;

  let threshold = 0;
  let timer = null;
  let wasAbove = false;

  const stop = () => {
    if (timer !== null) {
      clearInterval(timer);
      timer = null;
    }
  };
  const check = () => {
    if (channel.readyState !== "open") {
      wasAbove = false;
      stop();
      return;
    }
    const amount = channel.bufferedAmount;
    if (amount > threshold) {
      wasAbove = true;
      return;
    }
    stop();
    if (wasAbove) {
      wasAbove = false;
      polyfillStats.bufferedAmountLowEvents++;
      channel.dispatchEvent(new Event(BUFFERED_LOW));
    }
  };
  const arm = () => {
    const amount = channel.bufferedAmount;
    if (amount > polyfillStats.maxBufferedAmount) polyfillStats.maxBufferedAmount = amount;
    if (EMULATION_DISABLED) return;
    if (amount > threshold) {
      wasAbove = true;
      if (timer === null) {
        polyfillStats.aboveThresholdEpisodes++;
        timer = setInterval(check, POLL_MS);
        // Never keep the process alive just for this.
        timer.unref?.();
      }
    }
  };

  Object.defineProperty(channel, "bufferedAmountLowThreshold", {
    configurable: true,
    enumerable: true,
    get: () => threshold,
    set: (value) => {
      const n = Number(value);
      threshold = Number.isFinite(n) && n >= 0 ? Math.floor(n) : 0;
    },
  });
  if (!("onbufferedamountlow" in channel)) channel.onbufferedamountlow = null;

  const nativeSend = channel.send;
  Object.defineProperty(channel, "send", {
    configurable: true,
    writable: true,
    value: function send(data) {
      const result = nativeSend.call(this, data);
      arm();
      return result;
    },
  });
  channel.addEventListener("close", stop);
  return channel;
};

const isAnswerState = (state) => state === "have-remote-offer" || state === "have-local-pranswer";

export class RTCPeerConnection extends wrtc.RTCPeerConnection {
  #operations = Promise.resolve();
  #opsInFlight = 0;
  #negotiationPending = false;
  #fireNegotiationNeeded = () => {};

  constructor(config = {}) {
    super(config);
    // wrtc's JS wrapper installs its own handler on the native object and re-dispatches a
    // `datachannel` event; patch the channel before anyone sees it.
    const native = this._pc;
    const deliver = native.ondatachannel;
    native.ondatachannel = (channel) => {
      patchDataChannel(channel);
      deliver(channel);
    };
    // Browsers only fire `negotiationneeded` when the signalling state is stable and no
    // operation is in flight (WebRTC spec, "update the negotiation-needed flag"). wrtc fires
    // it unconditionally after the first createDataChannel, while Trystero has usually
    // started its own offer from a microtask already, so every pool peer would make two
    // offers. Drop the event in those cases, as a browser would.
    this.#fireNegotiationNeeded = native.onnegotiationneeded;
    native.onnegotiationneeded = () => {
      if (this.#opsInFlight > 0 || this.signalingState !== "stable") {
        polyfillStats.negotiationNeededDropped++;
        this.#negotiationPending = true;
        return;
      }
      this.#negotiationPending = false;
      const fire = this.#fireNegotiationNeeded; // wrtc's handler, called unbound as wrtc does
      fire();
    };
  }

  createDataChannel(...args) {
    return patchDataChannel(super.createDataChannel(...args));
  }

  // One operations chain, as browsers have (point 4). `run` must not enqueue again.
  #enqueue(run) {
    this.#opsInFlight++;
    const p = this.#operations.then(run, run).finally(() => {
      this.#opsInFlight--;
      this.#firePendingNegotiation();
    });
    this.#operations = p.catch(() => {});
    return p;
  }

  #firePendingNegotiation() {
    if (!this.#negotiationPending || this.#opsInFlight > 0) return;
    if (this.signalingState !== "stable") return;
    this.#negotiationPending = false;
    if (!this.#mediaNeedsNegotiation()) return;
    const fire = this.#fireNegotiationNeeded;
    queueMicrotask(() => fire());
  }

  // The held-back event is only worth firing for a media change the current description
  // does not cover (a sender with a track but no negotiated sending, or the reverse); the
  // data channel is negotiated by the connection's first offer.
  #mediaNeedsNegotiation() {
    return this.getTransceivers().some((t) => {
      const sends = t.currentDirection === "sendrecv" || t.currentDirection === "sendonly";
      return Boolean(t.sender?.track) !== sends || t.mid === null;
    });
  }

  createOffer(...args) {
    this.#negotiationPending = false; // this offer includes every change made so far
    return super.createOffer(...args);
  }

  setRemoteDescription(description) {
    return this.#enqueue(() => super.setRemoteDescription(description));
  }

  addIceCandidate(candidate) {
    return this.#enqueue(() => super.addIceCandidate(candidate));
  }

  setLocalDescription(description) {
    const run = async () => {
      if (description && description.type === "rollback") return super.setLocalDescription(description);
      let desc = description;
      if (!desc || !desc.sdp) {
        const type = desc?.type ?? (isAnswerState(this.signalingState) ? "answer" : "offer");
        desc = type === "answer" || type === "pranswer" ? await this.createAnswer() : await this.createOffer();
        if (type === "pranswer") desc = { type: "pranswer", sdp: desc.sdp };
        if (desc.type === "offer") polyfillStats.implicitOffers++;
        else polyfillStats.implicitAnswers++;
      }
      return super.setLocalDescription(desc);
    };
    return this.#enqueue(run);
  }
}

export default RTCPeerConnection;
