// PostgreSQL wire protocol 3.0: message codes, the few decoders the proxy needs, and builders for
// the messages it writes itself. Everything else is relayed as raw bytes.

/** Frontend (client -> server) message types. */
export const Front = {
  Bind: 0x42, // B
  Close: 0x43, // C
  CopyData: 0x64, // d
  CopyDone: 0x63, // c
  CopyFail: 0x66, // f
  Describe: 0x44, // D
  Execute: 0x45, // E
  Flush: 0x48, // H
  FunctionCall: 0x46, // F
  Parse: 0x50, // P
  Password: 0x70, // p (also SASLInitialResponse / SASLResponse)
  Query: 0x51, // Q
  Sync: 0x53, // S
  Terminate: 0x58, // X
} as const;

/** Backend (server -> client) message types. */
export const Back = {
  Authentication: 0x52, // R
  BackendKeyData: 0x4b, // K
  BindComplete: 0x32, // 2
  CloseComplete: 0x33, // 3
  CommandComplete: 0x43, // C
  CopyData: 0x64, // d
  CopyDone: 0x63, // c
  CopyInResponse: 0x47, // G
  CopyOutResponse: 0x48, // H
  CopyBothResponse: 0x57, // W
  DataRow: 0x44, // D
  EmptyQueryResponse: 0x49, // I
  ErrorResponse: 0x45, // E
  NegotiateProtocolVersion: 0x76, // v
  NoData: 0x6e, // n
  NoticeResponse: 0x4e, // N
  NotificationResponse: 0x41, // A
  ParameterDescription: 0x74, // t
  ParameterStatus: 0x53, // S
  ParseComplete: 0x31, // 1
  PortalSuspended: 0x73, // s
  ReadyForQuery: 0x5a, // Z
  RowDescription: 0x54, // T
} as const;

/** Codes of untyped startup-phase messages (the int32 after the length). */
export const StartupCode = {
  Protocol3: 196608,
  SSLRequest: 80877103,
  GSSENCRequest: 80877104,
  CancelRequest: 80877102,
} as const;

export const Auth = {
  Ok: 0,
  CleartextPassword: 3,
  MD5Password: 5,
  SASL: 10,
  SASLContinue: 11,
  SASLFinal: 12,
} as const;

export type TxStatus = 'I' | 'T' | 'E';

/** Reads NUL-terminated strings and integers from a message body. */
export class Reader {
  offset: number;
  constructor(readonly buf: Buffer, offset = 0) {
    this.offset = offset;
  }
  cstring(): string {
    const end = this.buf.indexOf(0, this.offset);
    if (end < 0) throw new ProtocolViolation('unterminated string in message');
    const s = this.buf.toString('utf8', this.offset, end);
    this.offset = end + 1;
    return s;
  }
  int16(): number {
    if (this.offset + 2 > this.buf.length) throw new ProtocolViolation('message too short');
    const v = this.buf.readInt16BE(this.offset);
    this.offset += 2;
    return v;
  }
  int32(): number {
    if (this.offset + 4 > this.buf.length) throw new ProtocolViolation('message too short');
    const v = this.buf.readInt32BE(this.offset);
    this.offset += 4;
    return v;
  }
  bytes(n: number): Buffer {
    if (n < 0 || this.offset + n > this.buf.length) throw new ProtocolViolation('message too short');
    const b = this.buf.subarray(this.offset, this.offset + n);
    this.offset += n;
    return b;
  }
  rest(): Buffer {
    const b = this.buf.subarray(this.offset);
    this.offset = this.buf.length;
    return b;
  }
}

export class ProtocolViolation extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ProtocolViolation';
  }
}

/** Builds one typed message: type byte, int32 length, body. */
export class Writer {
  private parts: Buffer[] = [];
  private size = 0;
  cstring(s: string): this {
    const b = Buffer.from(s + '\0', 'utf8');
    this.parts.push(b);
    this.size += b.length;
    return this;
  }
  int16(v: number): this {
    const b = Buffer.allocUnsafe(2);
    b.writeInt16BE(v);
    this.parts.push(b);
    this.size += 2;
    return this;
  }
  int32(v: number): this {
    const b = Buffer.allocUnsafe(4);
    b.writeInt32BE(v);
    this.parts.push(b);
    this.size += 4;
    return this;
  }
  bytes(b: Buffer): this {
    this.parts.push(b);
    this.size += b.length;
    return this;
  }
  byte(v: number): this {
    this.parts.push(Buffer.from([v]));
    this.size += 1;
    return this;
  }
  /** The finished message; `type` undefined for untyped startup messages. */
  message(type?: number): Buffer {
    const header = Buffer.allocUnsafe(type === undefined ? 4 : 5);
    if (type === undefined) header.writeInt32BE(this.size + 4, 0);
    else {
      header[0] = type;
      header.writeInt32BE(this.size + 4, 1);
    }
    return Buffer.concat([header, ...this.parts], header.length + this.size);
  }
}

// ---------------------------------------------------------------- fields of ErrorResponse / Notice

export interface ErrorFields {
  severity: 'ERROR' | 'FATAL' | 'PANIC' | 'WARNING' | 'NOTICE' | 'DEBUG' | 'INFO' | 'LOG';
  code: string;
  message: string;
  detail?: string;
  hint?: string;
}

export function errorResponse(f: ErrorFields, type: number = Back.ErrorResponse): Buffer {
  const w = new Writer();
  w.byte(0x53).cstring(f.severity); // S
  w.byte(0x56).cstring(f.severity); // V (non-localised)
  w.byte(0x43).cstring(f.code); // C
  w.byte(0x4d).cstring(f.message); // M
  if (f.detail) w.byte(0x44).cstring(f.detail);
  if (f.hint) w.byte(0x48).cstring(f.hint);
  w.byte(0);
  return w.message(type);
}

/** Field code -> value of an ErrorResponse / NoticeResponse body. */
export function decodeFields(body: Buffer): Map<string, string> {
  const fields = new Map<string, string>();
  let i = 0;
  while (i < body.length && body[i] !== 0) {
    const code = String.fromCharCode(body[i]!);
    const end = body.indexOf(0, i + 1);
    if (end < 0) break;
    fields.set(code, body.toString('utf8', i + 1, end));
    i = end + 1;
  }
  return fields;
}

export function encodeFields(fields: Map<string, string>, type: number): Buffer {
  const w = new Writer();
  for (const [k, v] of fields) w.byte(k.charCodeAt(0)).cstring(v);
  w.byte(0);
  return w.message(type);
}

// ---------------------------------------------------------------- backend messages the proxy writes

export const authenticationOk = new Writer().int32(Auth.Ok).message(Back.Authentication);
export const authenticationCleartext = new Writer().int32(Auth.CleartextPassword).message(Back.Authentication);
export const parseComplete = new Writer().message(Back.ParseComplete);
export const bindComplete = new Writer().message(Back.BindComplete);
export const closeComplete = new Writer().message(Back.CloseComplete);
export const noData = new Writer().message(Back.NoData);
export const emptyParameterDescription = new Writer().int16(0).message(Back.ParameterDescription);

export function readyForQuery(status: TxStatus): Buffer {
  return new Writer().byte(status.charCodeAt(0)).message(Back.ReadyForQuery);
}
export function commandComplete(tag: string): Buffer {
  return new Writer().cstring(tag).message(Back.CommandComplete);
}
export function backendKeyData(pid: number, secret: number): Buffer {
  return new Writer().int32(pid).int32(secret).message(Back.BackendKeyData);
}
export function parameterStatus(name: string, value: string): Buffer {
  return new Writer().cstring(name).cstring(value).message(Back.ParameterStatus);
}

// ---------------------------------------------------------------- frontend messages the proxy writes

export function startupMessage(params: Record<string, string>): Buffer {
  const w = new Writer().int32(StartupCode.Protocol3);
  for (const [k, v] of Object.entries(params)) w.cstring(k).cstring(v);
  w.byte(0);
  return w.message();
}
export function sslRequest(): Buffer {
  return new Writer().int32(StartupCode.SSLRequest).message();
}
export function cancelRequest(pid: number, secret: number): Buffer {
  return new Writer().int32(StartupCode.CancelRequest).int32(pid).int32(secret).message();
}
export function passwordMessage(password: string): Buffer {
  return new Writer().cstring(password).message(Front.Password);
}
export function saslInitialResponse(mechanism: string, data: string): Buffer {
  const body = Buffer.from(data, 'utf8');
  return new Writer().cstring(mechanism).int32(body.length).bytes(body).message(Front.Password);
}
export function saslResponse(data: string): Buffer {
  return new Writer().bytes(Buffer.from(data, 'utf8')).message(Front.Password);
}
export function queryMessage(sql: string): Buffer {
  return new Writer().cstring(sql).message(Front.Query);
}
export function parseMessage(name: string, sql: string, paramTypes: Buffer): Buffer {
  return new Writer().cstring(name).cstring(sql).bytes(paramTypes).message(Front.Parse);
}
/** A Bind with its statement name replaced; `rest` is everything after the statement name. */
export function bindMessage(portal: string, statement: string, rest: Buffer): Buffer {
  return new Writer().cstring(portal).cstring(statement).bytes(rest).message(Front.Bind);
}
export function describeMessage(kind: 'S' | 'P', name: string): Buffer {
  return new Writer().byte(kind.charCodeAt(0)).cstring(name).message(Front.Describe);
}
export const syncMessage = new Writer().message(Front.Sync);
export const flushMessage = new Writer().message(Front.Flush);
export const terminateMessage = new Writer().message(Front.Terminate);

/** Rows of a CommandComplete tag: "SELECT 3", "INSERT 0 5", "UPDATE 2", "COPY 7". */
export function rowsFromTag(tag: string): number | null {
  const m = /(\d+)$/.exec(tag);
  return m ? Number(m[1]) : null;
}
