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
  /**
   * Longest message accepted (the password message before login is held to much less), and the
   * message types accepted: an unknown type byte ends the session before its body is buffered.
   */
  constructor(
    private readonly maxLength = MAX_FRONTEND_MESSAGE,
    private readonly types?: ReadonlySet<number>,
  ) {}
  /** Bytes of an incomplete message, kept as a list so a large message is copied once, not per chunk. */
  private parts: Buffer[] = [];
  private partsLength = 0;
  private needed = 5;

  /** Adds a chunk; returns the messages completed by it, in order. */
  push(chunk: Buffer): Frame[] {
    let buf = chunk;
    if (this.partsLength) {
      this.parts.push(chunk);
      this.partsLength += chunk.length;
      if (this.partsLength < this.needed) return [];
      buf = Buffer.concat(this.parts, this.partsLength);
      this.parts = [];
      this.partsLength = 0;
    }
    const frames: Frame[] = [];
    let off = 0;
    this.needed = 5;
    while (buf.length - off >= 5) {
      if (this.types && !this.types.has(buf[off]!)) throw new ProtocolViolation(`unknown message type ${buf[off]}`);
      const len = buf.readInt32BE(off + 1);
      if (len < 4 || len > this.maxLength) throw new ProtocolViolation(`invalid message length ${len}`);
      const end = off + 1 + len;
      if (end > buf.length) {
        this.needed = 1 + len;
        break;
      }
      frames.push({ type: buf[off]!, body: buf.subarray(off + 5, end), raw: buf.subarray(off, end) });
      off = end;
    }
    if (off < buf.length) {
      this.parts = [buf.subarray(off)];
      this.partsLength = buf.length - off;
    }
    return frames;
  }

  get pendingBytes(): number {
    return this.partsLength;
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
