// Payload helpers shared by the Node peers (tests/interop/jspeer.mjs, bench/js_peer.mjs).
// deterministicBytes matches tests/interop/jspeer.py's deterministic_bytes: SHAKE-256 of
// "peermesh-deterministic-bytes:" + seed, `length` bytes long.
import { createHash } from "node:crypto";

export const deterministicBytes = (length, seed) => {
  if (!Number.isSafeInteger(length) || length < 0) throw new Error(`bad length ${length}`);
  if (!(typeof seed === "string" || Number.isSafeInteger(seed))) throw new Error(`seed must be an integer or a string, got ${JSON.stringify(seed)}`);
  if (length === 0) return new Uint8Array(0);
  const buf = createHash("shake256", { outputLength: length }).update(`peermesh-deterministic-bytes:${String(seed)}`, "utf8").digest();
  return new Uint8Array(buf.buffer, buf.byteOffset, buf.byteLength);
};

export const sha256Hex = (bytes) => createHash("sha256").update(bytes).digest("hex");

// A received binary payload as a Uint8Array, or null when it is not binary.
export const toBytes = (data) => {
  if (data instanceof Uint8Array) return data;
  if (data instanceof ArrayBuffer) return new Uint8Array(data);
  if (ArrayBuffer.isView(data)) return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  return null;
};
