// Message framing from TCP chunks (split and coalesced). Two framers:
// - MessageFramer yields whole typed messages (client side: small, every one is looked at);
// - the backend relay scans headers in place so rows pass through without being copied
//   (see relay.ts).
import { ProtocolViolation } from './protocol.ts';

export interface Frame {
  type: number;
  /** Body without the 5-byte header. */
  body: Buffer;
  /** The whole message as received, for forwarding unchanged. */
  raw: Buffer;
}

const MAX_FRONTEND_MESSAGE = 1 << 30;

export class MessageFramer {
  private tail: Buffer | null = null;

  /** Adds a chunk; returns the messages completed by it, in order. */
  push(chunk: Buffer): Frame[] {
    let buf = chunk;
    if (this.tail) {
      buf = Buffer.concat([this.tail, chunk]);
      this.tail = null;
    }
    const frames: Frame[] = [];
    let off = 0;
    while (buf.length - off >= 5) {
      const len = buf.readInt32BE(off + 1);
      if (len < 4 || len > MAX_FRONTEND_MESSAGE) throw new ProtocolViolation(`invalid message length ${len}`);
      const end = off + 1 + len;
      if (end > buf.length) break;
      frames.push({ type: buf[off]!, body: buf.subarray(off + 5, end), raw: buf.subarray(off, end) });
      off = end;
    }
    if (off < buf.length) this.tail = buf.subarray(off);
    return frames;
  }

  get pendingBytes(): number {
    return this.tail?.length ?? 0;
  }
}

/** Untyped startup-phase message: int32 length then body. */
export class StartupFramer {
  private tail: Buffer | null = null;
  constructor(private readonly maxLength = 10_000) {}

  /** Returns the first complete startup message body (after the length) and any bytes after it. */
  push(chunk: Buffer): { body: Buffer; rest: Buffer } | null {
    const buf = this.tail ? Buffer.concat([this.tail, chunk]) : chunk;
    this.tail = null;
    if (buf.length < 4) {
      this.tail = buf;
      return null;
    }
    const len = buf.readInt32BE(0);
    if (len < 8 || len > this.maxLength) throw new ProtocolViolation(`invalid startup packet length ${len}`);
    if (buf.length < len) {
      this.tail = buf;
      return null;
    }
    return { body: buf.subarray(4, len), rest: buf.subarray(len) };
  }
}
