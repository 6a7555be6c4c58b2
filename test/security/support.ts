// Helpers for the attack tests in test/security: raw protocol messages drivers do not send in the
// order an attacker would, and decoders for what comes back. Not a test file itself.
import { Writer, Front, Back, decodeFields, parseMessage, describeMessage, syncMessage, queryMessage } from '../../src/proxy/protocol.ts';
import type { Frame } from '../../src/proxy/framing.ts';
import { WireClient } from '../support/wire.ts';

export { Front, Back, syncMessage, queryMessage };

export function parse(name: string, sql: string): Buffer {
  return parseMessage(name, sql, Buffer.from([0, 0]));
}

/** Bind with text parameters and the given result format codes (none: all text). */
export function bind(portal: string, statement: string, params: (string | null)[] = [], resultFormats: number[] = []): Buffer {
  const w = new Writer().cstring(portal).cstring(statement).int16(0).int16(params.length);
  for (const p of params) {
    if (p === null) w.int32(-1);
    else {
      const b = Buffer.from(p, 'utf8');
      w.int32(b.length).bytes(b);
    }
  }
  w.int16(resultFormats.length);
  for (const f of resultFormats) w.int16(f);
  return w.message(Front.Bind);
}

export function execute(portal = '', maxRows = 0): Buffer {
  return new Writer().cstring(portal).int32(maxRows).message(Front.Execute);
}

export function describe(kind: 'S' | 'P', name = ''): Buffer {
  return describeMessage(kind, name);
}

export function closePortal(name: string): Buffer {
  return new Writer().bytes(Buffer.from('P')).cstring(name).message(Front.Close);
}

export const flushMessage = new Writer().message(Front.Flush);

export function copyData(s: string): Buffer {
  return new Writer().bytes(Buffer.from(s, 'utf8')).message(Front.CopyData);
}
export const copyDone = new Writer().message(Front.CopyDone);

/** Text cells of every DataRow (NULL as null); binary cells come out as latin1. */
export function rowsOf(frames: Frame[]): (string | null)[][] {
  return frames
    .filter((f) => f.type === Back.DataRow)
    .map((f) => {
      const n = f.body.readInt16BE(0);
      const out: (string | null)[] = [];
      let off = 2;
      for (let i = 0; i < n; i++) {
        const len = f.body.readInt32BE(off);
        off += 4;
        if (len < 0) out.push(null);
        else {
          out.push(f.body.toString('latin1', off, off + len));
          off += len;
        }
      }
      return out;
    });
}

export function errorsOf(frames: Frame[]): { code: string; message: string }[] {
  return frames.filter((f) => f.type === Back.ErrorResponse).map((f) => {
    const m = decodeFields(f.body);
    return { code: m.get('C') ?? '', message: m.get('M') ?? '' };
  });
}

export async function simple(w: WireClient, sql: string): Promise<Frame[]> {
  w.send(queryMessage(sql));
  return w.readUntil((f) => f.type === Back.ReadyForQuery);
}

/** Sends the messages and reads until `syncs` ReadyForQuery messages arrived (or the socket closed). */
export async function roundTrip(w: WireClient, messages: Buffer[], syncs = 1, timeoutMs = 5000): Promise<Frame[]> {
  w.send(...messages);
  const out: Frame[] = [];
  let seen = 0;
  const deadline = Date.now() + timeoutMs;
  while (seen < syncs) {
    const got = await Promise.race([
      w.readUntil((f) => f.type === Back.ReadyForQuery),
      new Promise<Frame[]>((resolve) => setTimeout(() => resolve([]), Math.max(0, deadline - Date.now()))),
    ]);
    out.push(...got);
    if (!got.length || got[got.length - 1]!.type !== Back.ReadyForQuery) break;
    seen++;
  }
  return out;
}

/** Everything the client received, as latin1 text, for leak searches. */
export function textOf(frames: Frame[]): string {
  return Buffer.concat(frames.map((f) => f.raw)).toString('latin1');
}

export { WireClient };

/** The clear PII values of customers 1..n, read directly as superuser (what must never reach a masked role). */
export async function piiValues(sql: (text: string) => Promise<{ rows: { v: string | null }[] }>, n = 10): Promise<string[]> {
  const r = await sql(`SELECT unnest(ARRAY[email, iban, ssn, date_of_birth::text, phone]) AS v FROM customers WHERE id <= ${n}`);
  return r.rows.map((x) => x.v).filter((v): v is string => !!v);
}

/** Which of `values` occur whole in `text`. */
export function leaked(text: string, values: readonly string[]): string[] {
  return values.filter((v) => text.includes(v));
}

import { demoPolicy } from '../../src/demo/demo.ts';

/** The policy of test/masking: alice (support) has every PII column masked and is read-only. */
export function maskedPolicy(roles: Record<string, unknown> = {}): Record<string, unknown> {
  const base = demoPolicy('mask-key-for-the-security-tests-0123456789');
  // hash_equality on: the attacks on equality between hash columns need it allowed.
  return { ...base, hash_equality: true, roles: { ...(base.roles as object), auditor: { groups: ['auditor'], deny: ['public.customers.ssn'] }, ...roles } };
}
