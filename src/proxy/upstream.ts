// The upstream connection: one per client, to PostgreSQL or PgBouncer, with the shared credential
// from the config (SCRAM-SHA-256, md5, cleartext or trust), optionally over TLS (sslmode in the URL,
// verify-full included). Returns once the server is ready, with what the client must be relayed.
import net from 'node:net';
import tls from 'node:tls';
import { readFileSync } from 'node:fs';
import { createHash } from 'node:crypto';
import sasl from 'pg/lib/crypto/sasl.js';
import { ScalpleError } from '../errors.ts';
import {
  Auth, Back, Reader, decodeFields, passwordMessage, saslInitialResponse, saslResponse, sslRequest, startupMessage, cancelRequest,
  type TxStatus,
} from './protocol.ts';
import { MessageFramer, type Frame } from './framing.ts';

export type SslMode = 'disable' | 'prefer' | 'require' | 'verify-ca' | 'verify-full';

export interface UpstreamTarget {
  host: string;
  port: number;
  user: string;
  password: string;
  database: string;
  sslMode: SslMode;
  sslRootCert?: string;
}

export interface UpstreamReady {
  socket: net.Socket;
  /** ParameterStatus / NoticeResponse messages to relay to the client, raw. */
  relay: Buffer[];
  backendKey: { pid: number; secret: number } | undefined;
  status: TxStatus;
  /** Bytes that arrived after ReadyForQuery (none in practice). */
  leftover: Buffer[];
}

export function parseUpstreamUrl(url: string): UpstreamTarget {
  const u = new URL(url);
  const sslMode = (u.searchParams.get('sslmode') ?? 'prefer') as SslMode;
  if (!['disable', 'prefer', 'require', 'verify-ca', 'verify-full', 'allow'].includes(sslMode)) {
    throw new ScalpleError('CONFIG', `upstream sslmode=${sslMode} is not supported (disable, prefer, require, verify-ca, verify-full)`);
  }
  const root = u.searchParams.get('sslrootcert');
  return {
    host: decodeURIComponent(u.hostname).replace(/^\[|\]$/g, ''),
    port: u.port ? Number(u.port) : 5432,
    user: decodeURIComponent(u.username),
    password: decodeURIComponent(u.password),
    database: decodeURIComponent(u.pathname.replace(/^\//, '')) || decodeURIComponent(u.username),
    sslMode: sslMode === ('allow' as SslMode) ? 'prefer' : sslMode,
    ...(root ? { sslRootCert: root } : {}),
  };
}

class UpstreamError extends ScalpleError {
  constructor(message: string, cause?: unknown) {
    super('UPSTREAM', message, { cause, sqlstate: '08006' });
  }
}

/** Reads whole messages from a socket during the login exchange. */
class LoginReader {
  private framer = new MessageFramer();
  private queue: Frame[] = [];
  private waiter: { resolve: (f: Frame) => void; reject: (e: Error) => void } | undefined;
  private failure: Error | undefined;
  private readonly onData = (chunk: Buffer) => {
    try {
      this.queue.push(...this.framer.push(chunk));
    } catch (err) {
      this.fail(err as Error);
      return;
    }
    this.pump();
  };
  private readonly onEnd = () => this.fail(new UpstreamError('upstream closed the connection during login'));
  private readonly onError = (err: Error) => this.fail(new UpstreamError(`upstream connection failed: ${err.message}`, err));

  constructor(private socket: net.Socket) {
    socket.on('data', this.onData);
    socket.on('end', this.onEnd);
    socket.on('error', this.onError);
  }
  private fail(err: Error) {
    this.failure ??= err;
    if (this.waiter) {
      this.waiter.reject(this.failure);
      this.waiter = undefined;
    }
  }
  private pump() {
    if (this.waiter && this.queue.length) {
      const w = this.waiter;
      this.waiter = undefined;
      w.resolve(this.queue.shift()!);
    }
  }
  next(): Promise<Frame> {
    if (this.queue.length) return Promise.resolve(this.queue.shift()!);
    if (this.failure) return Promise.reject(this.failure);
    return new Promise((resolve, reject) => {
      this.waiter = { resolve, reject };
    });
  }
  /** Stops listening and returns unread bytes (already framed) as raw buffers. */
  detach(): Buffer[] {
    this.socket.off('data', this.onData);
    this.socket.off('end', this.onEnd);
    this.socket.off('error', this.onError);
    return this.queue.map((f) => f.raw);
  }
}

function connectTcp(host: string, port: number, timeoutMs: number): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const s = net.connect({ host, port });
    const timer = setTimeout(() => {
      s.destroy();
      reject(new UpstreamError(`upstream ${host}:${port} did not answer within ${timeoutMs} ms`));
    }, timeoutMs);
    s.once('connect', () => {
      clearTimeout(timer);
      s.setNoDelay(true);
      s.setKeepAlive(true, 30_000);
      resolve(s);
    });
    s.once('error', (err) => {
      clearTimeout(timer);
      reject(new UpstreamError(`cannot reach upstream ${host}:${port}: ${err.message}`, err));
    });
  });
}

async function negotiateTls(socket: net.Socket, t: UpstreamTarget, timeoutMs: number): Promise<net.Socket> {
  if (t.sslMode === 'disable') return socket;
  socket.write(sslRequest());
  const answer = await new Promise<number>((resolve, reject) => {
    const timer = setTimeout(() => reject(new UpstreamError('upstream did not answer the TLS request')), timeoutMs);
    socket.once('data', (d: Buffer) => {
      clearTimeout(timer);
      if (d.length !== 1) reject(new UpstreamError('unexpected answer to the TLS request'));
      else resolve(d[0]!);
    });
    socket.once('error', (err) => {
      clearTimeout(timer);
      reject(new UpstreamError(`upstream connection failed: ${err.message}`, err));
    });
  });
  if (answer !== 0x53) {
    if (t.sslMode === 'prefer') return socket;
    throw new UpstreamError(`upstream refused TLS but sslmode=${t.sslMode} requires it`);
  }
  const verify = t.sslMode === 'verify-ca' || t.sslMode === 'verify-full';
  const secure = tls.connect({
    socket,
    servername: net.isIP(t.host) ? undefined : t.host,
    rejectUnauthorized: verify,
    ...(t.sslRootCert ? { ca: readFileSync(t.sslRootCert) } : {}),
    // verify-ca checks the chain only; verify-full also the host name (Node's default check).
    ...(t.sslMode === 'verify-ca' ? { checkServerIdentity: () => undefined } : {}),
  });
  await new Promise<void>((resolve, reject) => {
    secure.once('secureConnect', resolve);
    secure.once('error', (err) => reject(new UpstreamError(`upstream TLS failed: ${err.message}`, err)));
  });
  secure.setNoDelay(true);
  return secure;
}

export async function connectUpstream(t: UpstreamTarget, clientParams: Record<string, string>, timeoutMs = 10_000): Promise<UpstreamReady> {
  const raw = await connectTcp(t.host, t.port, timeoutMs);
  let socket: net.Socket = raw;
  try {
    socket = await negotiateTls(raw, t, timeoutMs);
    const reader = new LoginReader(socket);
    socket.write(startupMessage({ ...clientParams, user: t.user, database: t.database }));
    const relay: Buffer[] = [];
    let backendKey: UpstreamReady['backendKey'];
    let session: ReturnType<typeof sasl.startSession> | undefined;
    const deadline = setTimeout(() => socket.destroy(new Error('login timed out')), timeoutMs);
    try {
      for (;;) {
        const m = await reader.next();
        const r = new Reader(m.body);
        switch (m.type) {
          case Back.Authentication: {
            const code = r.int32();
            if (code === Auth.Ok) break;
            if (code === Auth.CleartextPassword) socket.write(passwordMessage(t.password));
            else if (code === Auth.MD5Password) {
              const salt = r.bytes(4);
              const inner = createHash('md5').update(t.password + t.user).digest('hex');
              socket.write(passwordMessage('md5' + createHash('md5').update(Buffer.concat([Buffer.from(inner), salt])).digest('hex')));
            } else if (code === Auth.SASL) {
              const mechanisms: string[] = [];
              for (let s = r.cstring(); s; s = r.cstring()) mechanisms.push(s);
              session = sasl.startSession(mechanisms);
              socket.write(saslInitialResponse(session.mechanism, session.response));
            } else if (code === Auth.SASLContinue && session) {
              await sasl.continueSession(session, t.password, r.rest().toString('utf8'));
              socket.write(saslResponse(session.response));
            } else if (code === Auth.SASLFinal && session) {
              sasl.finalizeSession(session, r.rest().toString('utf8'));
            } else throw new UpstreamError(`upstream asked for an unsupported authentication method (${code})`);
            break;
          }
          case Back.ParameterStatus:
          case Back.NoticeResponse:
            relay.push(m.raw);
            break;
          case Back.BackendKeyData:
            backendKey = { pid: r.int32(), secret: r.int32() };
            break;
          case Back.NegotiateProtocolVersion:
            break;
          case Back.ErrorResponse: {
            const f = decodeFields(m.body);
            throw new UpstreamError(`upstream refused the connection: ${f.get('M') ?? 'unknown error'} (${f.get('C') ?? '?'})`);
          }
          case Back.ReadyForQuery: {
            const status = String.fromCharCode(m.body[0] ?? 0x49) as TxStatus;
            const leftover = reader.detach();
            return { socket, relay, backendKey, status, leftover };
          }
          default:
            throw new UpstreamError(`unexpected message '${String.fromCharCode(m.type)}' from upstream during login`);
        }
      }
    } finally {
      clearTimeout(deadline);
    }
  } catch (err) {
    socket.destroy();
    if (err instanceof ScalpleError) throw err;
    throw new UpstreamError(`upstream login failed: ${(err as Error).message}`, err);
  }
}

/**
 * Forwards a client's CancelRequest to the upstream connection that serves it. The connection is
 * held until the upstream closes it: PgBouncer drops a cancel whose sender hung up first.
 */
export async function sendCancel(t: UpstreamTarget, key: { pid: number; secret: number }): Promise<void> {
  const s = await connectTcp(t.host, t.port, 5000);
  await new Promise<void>((resolve) => {
    const timer = setTimeout(() => resolve(), 5000);
    s.once('close', () => {
      clearTimeout(timer);
      resolve();
    });
    s.once('error', () => undefined);
    s.on('data', () => undefined);
    s.write(cancelRequest(key.pid, key.secret));
  });
  s.destroy();
}
