// The client's side of connection start: TLS negotiation (SSLRequest -> 'S' + handshake,
// GSSENCRequest -> 'N'), the StartupMessage, and the identity from one of its three carriers:
//   1. startup parameter `scalple.identity`,
//   2. `-c scalple.identity=…` inside the `options` parameter,
//   3. the password message (cleartext, over TLS unless identity.allow_plaintext_password).
// All carriers are stripped before anything goes upstream. Nothing about the server is said
// before the identity is proven.
import net from 'node:net';
import tls from 'node:tls';
import type { X509Certificate } from 'node:crypto';
import { AuthError, ScalpleError } from '../errors.ts';
import { StartupFramer, MessageFramer } from './framing.ts';
import { Front, Reader, StartupCode, authenticationCleartext, ProtocolViolation } from './protocol.ts';
import type { IdentityVerifier, VerifiedIdentity } from './identity.ts';
import { looksLikeJwt } from './identity.ts';

export type StartupOutcome =
  | { kind: 'session'; socket: net.Socket; tls: boolean; params: Record<string, string>; identity: VerifiedIdentity; settings: Record<string, string>; leftover: Buffer }
  | { kind: 'cancel'; pid: number; secret: number };

export interface StartupOptions {
  secureContext?: tls.SecureContext;
  tlsRequired: boolean;
  requestClientCert: boolean;
  /** CA certificates client certificates must be issued by (tls.client_ca). */
  clientCas: readonly X509Certificate[];
  allowPlaintextPassword: boolean;
  verifier: IdentityVerifier;
}

const IDENTITY = 'scalple.identity';

/**
 * Feeds the socket's data to `take` until it returns a value; the socket is paused again then, so
 * the next phase decides when to read on. Rejects when the client goes away first.
 */
function readUntil<T>(socket: net.Socket, take: (chunk: Buffer) => T | undefined, what: string): Promise<T> {
  return new Promise((resolve, reject) => {
    const onData = (chunk: Buffer) => {
      let got: T | undefined;
      try {
        got = take(chunk);
      } catch (err) {
        cleanup();
        reject(err);
        return;
      }
      if (got !== undefined) {
        cleanup();
        socket.pause();
        resolve(got);
      }
    };
    const onEnd = () => {
      cleanup();
      reject(new ProtocolViolation(`client closed the connection ${what}`));
    };
    const cleanup = () => {
      socket.off('data', onData);
      socket.off('end', onEnd);
      socket.off('error', onEnd);
    };
    socket.on('data', onData);
    socket.once('end', onEnd);
    socket.once('error', onEnd);
    socket.resume();
  });
}

function readStartupMessage(socket: net.Socket, framer: StartupFramer): Promise<{ body: Buffer; rest: Buffer }> {
  return readUntil(socket, (chunk) => framer.push(chunk) ?? undefined, 'during startup');
}

async function readPassword(socket: net.Socket, first: Buffer): Promise<{ password: string; rest: Buffer }> {
  // Before login nothing large is buffered: a token fits in far less than 64 KiB.
  const framer = new MessageFramer(64 * 1024);
  const take = (chunk: Buffer) => {
    const frames = framer.push(chunk);
    if (!frames.length) return undefined;
    const f = frames[0]!;
    if (f.type !== Front.Password) throw new ProtocolViolation('expected a password message');
    return { password: new Reader(f.body).cstring(), rest: Buffer.concat(frames.slice(1).map((x) => x.raw)) };
  };
  return (first.length ? take(first) : undefined) ?? readUntil(socket, take, 'before sending a password');
}

function upgradeToTls(socket: net.Socket, opts: StartupOptions): Promise<tls.TLSSocket> {
  return new Promise((resolve, reject) => {
    const secure = new tls.TLSSocket(socket, {
      isServer: true,
      secureContext: opts.secureContext!,
      requestCert: opts.requestClientCert,
      rejectUnauthorized: false,
    });
    secure.once('secure', () => {
      secure.off('error', reject);
      resolve(secure);
    });
    secure.once('error', reject);
  });
}

/** `onSocket` learns the TLS socket as soon as it exists, so a refusal is written encrypted. */
export async function runClientStartup(raw: net.Socket, opts: StartupOptions, onSocket: (s: net.Socket) => void = () => undefined): Promise<StartupOutcome> {
  let socket: net.Socket = raw;
  let isTls = false;
  let framer = new StartupFramer();
  for (let round = 0; round < 4; round++) {
    const { body, rest } = await readStartupMessage(socket, framer);
    const r = new Reader(body);
    const code = r.int32();
    if (code === StartupCode.SSLRequest || code === StartupCode.GSSENCRequest) {
      // Bytes sent before our answer would be injected past the TLS handshake: refuse.
      if (rest.length) throw new ProtocolViolation('data received after the encryption request');
      if (code === StartupCode.SSLRequest && opts.secureContext && !isTls) {
        socket.write('S');
        socket = await upgradeToTls(socket, opts);
        isTls = true;
        onSocket(socket);
      } else socket.write('N');
      framer = new StartupFramer();
      continue;
    }
    if (code === StartupCode.CancelRequest) return { kind: 'cancel', pid: r.int32(), secret: r.int32() };
    if (code >> 16 !== 3) throw new ScalpleError('PROTOCOL', `unsupported frontend protocol ${code >> 16}.${code & 0xffff}: Scalple speaks 3.0`, { sqlstate: '0A000' });
    const params: Record<string, string> = {};
    for (;;) {
      const k = r.cstring();
      if (!k) break;
      params[k] = r.cstring();
    }
    if (params.replication !== undefined && params.replication !== 'false' && params.replication !== '0') {
      throw new ScalpleError('PROTOCOL', 'replication connections are not supported through Scalple', { sqlstate: '0A000' });
    }
    if (opts.tlsRequired && !isTls) {
      throw new AuthError('this proxy requires TLS: connect with sslmode=require');
    }
    const settings = takeScalpleSettings(params);
    let token = settings[IDENTITY];
    delete settings[IDENTITY];
    let leftover = rest;
    let identity: VerifiedIdentity | undefined;
    if (!token && isTls && opts.clientCas.length && socket instanceof tls.TLSSocket) {
      const cert = socket.getPeerX509Certificate();
      identity = cert ? opts.verifier.verifyCertificate(cert, opts.clientCas) : undefined;
    }
    if (!token && !identity) {
      if (!isTls && !opts.allowPlaintextPassword) {
        throw new AuthError('no identity in the startup packet, and a token is only accepted as the password over TLS: connect with sslmode=require and PGPASSWORD=$(scalple token)');
      }
      socket.write(authenticationCleartext);
      const got = await readPassword(socket, leftover);
      token = got.password;
      leftover = got.rest;
      if (!token) throw new AuthError('empty password: pass your token, PGPASSWORD=$(scalple token)');
      if (!looksLikeJwt(token)) {
        identity = opts.verifier.verifyStaticKey(token);
        if (!identity) throw new AuthError('password is neither a valid token nor a known application key: run `scalple login` and use `scalple token`');
      }
    }
    identity ??= await opts.verifier.verifyToken(token!);
    return { kind: 'session', socket, tls: isTls, params, identity, settings, leftover };
  }
  throw new ProtocolViolation('too many startup requests');
}

/**
 * Removes every `scalple.*` setting from the startup parameters: as a parameter of its own, or as
 * `-c scalple.x=v` / `--scalple.x=v` inside `options` (libpq escapes spaces with backslashes).
 */
export function takeScalpleSettings(params: Record<string, string>): Record<string, string> {
  const out: Record<string, string> = {};
  for (const k of Object.keys(params)) {
    if (k.toLowerCase().startsWith('scalple.')) {
      out[k.toLowerCase()] = params[k]!;
      delete params[k];
    }
  }
  if (params.options !== undefined) {
    const tokens = splitOptions(params.options);
    const kept: string[] = [];
    for (let i = 0; i < tokens.length; i++) {
      const t = tokens[i]!;
      let setting: string | undefined;
      let consumed = 0;
      if (t === '-c' && i + 1 < tokens.length) {
        setting = tokens[i + 1];
        consumed = 1;
      } else if (t.startsWith('-c')) setting = t.slice(2);
      else if (t.startsWith('--')) setting = t.slice(2);
      const eq = setting?.indexOf('=') ?? -1;
      if (setting && eq > 0 && setting.slice(0, eq).toLowerCase().startsWith('scalple.')) {
        out[setting.slice(0, eq).toLowerCase()] = setting.slice(eq + 1);
        i += consumed;
        continue;
      }
      kept.push(t);
    }
    if (kept.length) params.options = kept.map((t) => t.replace(/([\\\s])/g, '\\$1')).join(' ');
    else delete params.options;
  }
  return out;
}

function splitOptions(s: string): string[] {
  const out: string[] = [];
  let cur = '';
  let has = false;
  for (let i = 0; i < s.length; i++) {
    const ch = s[i]!;
    if (ch === '\\' && i + 1 < s.length) {
      cur += s[++i];
      has = true;
    } else if (/\s/.test(ch)) {
      if (has) out.push(cur);
      cur = '';
      has = false;
    } else {
      cur += ch;
      has = true;
    }
  }
  if (has) out.push(cur);
  return out;
}
