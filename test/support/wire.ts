// A raw PostgreSQL protocol client for tests that need messages drivers do not send
// (FunctionCall, odd pipelines, CancelRequest): bytes out, whole messages back.
import net from 'node:net';
import { MessageFramer, type Frame } from '../../src/proxy/framing.ts';
import { startupMessage, Back, decodeFields } from '../../src/proxy/protocol.ts';

export class WireClient {
  private framer = new MessageFramer();
  private frames: Frame[] = [];
  private waiters: (() => void)[] = [];
  closed = false;
  pid = 0;
  secret = 0;

  private constructor(readonly socket: net.Socket) {
    socket.on('data', (d: Buffer) => {
      this.frames.push(...this.framer.push(d));
      for (const w of this.waiters.splice(0)) w();
    });
    socket.on('close', () => {
      this.closed = true;
      for (const w of this.waiters.splice(0)) w();
    });
    socket.on('error', () => undefined);
  }

  /** Wraps a socket that is already logged in (see connectUpstream). */
  static fromSocket(socket: net.Socket, leftover: Buffer[] = []): WireClient {
    const c = new WireClient(socket);
    for (const b of leftover) c.frames.push(...c.framer.push(b));
    return c;
  }

  static async connect(port: number, params: Record<string, string>): Promise<WireClient> {
    const socket = net.connect({ host: '127.0.0.1', port });
    await new Promise<void>((resolve, reject) => socket.once('connect', resolve).once('error', reject));
    const c = new WireClient(socket);
    socket.write(startupMessage(params));
    const login = await c.readUntil((f) => f.type === Back.ReadyForQuery || f.type === Back.ErrorResponse);
    const err = login.find((f) => f.type === Back.ErrorResponse);
    if (err) throw new Error(decodeFields(err.body).get('M'));
    const key = login.find((f) => f.type === Back.BackendKeyData);
    if (key) {
      c.pid = key.body.readInt32BE(0);
      c.secret = key.body.readInt32BE(4);
    }
    return c;
  }

  send(...messages: Buffer[]): void {
    this.socket.write(Buffer.concat(messages));
  }

  /** Collects messages until `done` matches one (included), or the connection closes. */
  async readUntil(done: (f: Frame) => boolean): Promise<Frame[]> {
    const out: Frame[] = [];
    for (;;) {
      while (this.frames.length) {
        const f = this.frames.shift()!;
        out.push(f);
        if (done(f)) return out;
      }
      if (this.closed) return out;
      await new Promise<void>((r) => this.waiters.push(r));
    }
  }

  close(): void {
    this.socket.destroy();
  }
}

export function typesOf(frames: Frame[]): string {
  return frames.map((f) => String.fromCharCode(f.type)).join('');
}
