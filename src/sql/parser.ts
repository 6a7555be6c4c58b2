// The real PostgreSQL parser (libpg-query, WebAssembly build of PostgreSQL's own grammar), loaded
// once, then used synchronously on the hot path. Every distinct statement text is parsed once: an
// LRU keyed by the exact text keeps the tree (or the syntax error) and the fingerprint.
import { loadModule, parseSync, fingerprintSync } from 'libpg-query';
import type { ParseResult } from 'libpg-query';
import { ScalpleError } from '../errors.ts';

export type { ParseResult };

/** A statement text PostgreSQL's grammar rejects. PostgreSQL itself will report it to the client. */
export class SqlSyntaxError extends ScalpleError {
  /** 0-based character offset into the text where the parser gave up, when it says. */
  readonly position: number | null;
  constructor(message: string, position: number | null) {
    super('USAGE', message, { sqlstate: '42601' });
    this.name = 'SqlSyntaxError';
    this.position = position;
  }
}

let loading: Promise<void> | undefined;
let loaded = false;

/** Loads the parser (WebAssembly) once; every later call returns the same promise. */
export function ensureParser(): Promise<void> {
  if (!loading) {
    loading = loadModule().then(
      () => {
        loaded = true;
      },
      (err: unknown) => {
        loading = undefined;
        throw new ScalpleError('INTERNAL', `could not load the SQL parser (libpg-query): ${String(err)}`, { cause: err });
      },
    );
  }
  return loading;
}

export function parserReady(): boolean {
  return loaded;
}

function requireLoaded(): void {
  if (!loaded) throw new ScalpleError('INTERNAL', 'the SQL parser is not loaded: await ensureParser() at start-up');
}

/**
 * An approximate LRU with O(1) hits that cost one Map lookup: two generations ("hashlru"). Hits
 * in the young generation are a plain Map.get; an entry found in the old generation moves to the
 * young one; when the young generation reaches half the capacity it becomes the old one and the
 * previous old generation is dropped. So an entry survives as long as it is used at least once
 * per capacity/2 insertions, and at most `capacity` entries are kept. (A Map delete+set per hit,
 * the textbook Map LRU, measured ~3 µs per hit here: V8 rehashes away the tombstones.)
 */
export class Lru<K, V> {
  private young = new Map<K, V>();
  private old = new Map<K, V>();
  private half: number;
  constructor(capacity: number) {
    this.half = Math.max(1, Math.ceil(capacity / 2));
  }
  get size(): number {
    return this.young.size + this.old.size;
  }
  get capacity(): number {
    return this.half * 2;
  }
  get(key: K): V | undefined {
    const v = this.young.get(key);
    if (v !== undefined) return v;
    const o = this.old.get(key);
    if (o !== undefined) {
      this.old.delete(key);
      this.promote(key, o);
    }
    return o;
  }
  set(key: K, value: V): void {
    if (this.young.has(key)) {
      this.young.set(key, value);
      return;
    }
    this.old.delete(key);
    this.promote(key, value);
  }
  private promote(key: K, value: V): void {
    this.young.set(key, value);
    if (this.young.size >= this.half) {
      this.old = this.young;
      this.young = new Map();
    }
  }
  resize(capacity: number): void {
    this.half = Math.max(1, Math.ceil(capacity / 2));
    if (this.young.size >= this.half) {
      this.old = this.young;
      this.young = new Map();
    }
    if (this.old.size > this.half) this.old = new Map([...this.old].slice(-this.half));
  }
  clear(): void {
    this.young.clear();
    this.old.clear();
  }
}

interface ParseEntry {
  tree?: ParseResult;
  error?: SqlSyntaxError;
  fingerprint?: string;
}

/** Texts longer than this are parsed every time rather than cached (bulk one-off statements). */
export const MAX_CACHED_TEXT = 64 * 1024;
const cache = new Lru<string, ParseEntry>(5000);

export function setParseCacheSize(max: number): void {
  cache.resize(max);
}

export function parseCacheStats(): { size: number; capacity: number } {
  return { size: cache.size, capacity: cache.capacity };
}

function entryFor(sql: string): ParseEntry {
  let e = cache.get(sql);
  if (!e) {
    e = {};
    if (sql.length <= MAX_CACHED_TEXT) cache.set(sql, e);
  }
  return e;
}

function toSyntaxError(err: unknown): SqlSyntaxError {
  if (err instanceof Error) {
    const details = (err as { sqlDetails?: { cursorPosition?: unknown } }).sqlDetails;
    const pos = details && typeof details.cursorPosition === 'number' && details.cursorPosition >= 0 ? details.cursorPosition : null;
    return new SqlSyntaxError(err.message, pos);
  }
  return new SqlSyntaxError(String(err), null);
}

/**
 * PostgreSQL's raw parse tree of `sql` (JSON form, version 180004). Throws SqlSyntaxError when the
 * grammar rejects the text. The returned tree is shared with the cache: never mutate it.
 */
export function parse(sql: string): ParseResult {
  requireLoaded();
  const e = entryFor(sql);
  if (e.tree) return e.tree;
  if (e.error) throw e.error;
  try {
    e.tree = parseSync(sql);
    return e.tree;
  } catch (err) {
    e.error = toSyntaxError(err);
    throw e.error;
  }
}

/** Like parse(), but returns the error instead of throwing it. */
export function tryParse(sql: string): { ok: true; tree: ParseResult } | { ok: false; error: SqlSyntaxError } {
  try {
    return { ok: true, tree: parse(sql) };
  } catch (err) {
    if (err instanceof SqlSyntaxError) return { ok: false, error: err };
    throw err;
  }
}

/**
 * libpg-query's fingerprint (hex): equal for statements that differ only in literal values,
 * whitespace and comments. Throws SqlSyntaxError for text the grammar rejects.
 */
export function fingerprint(sql: string): string {
  requireLoaded();
  const e = entryFor(sql);
  if (e.fingerprint !== undefined) return e.fingerprint;
  if (e.error) throw e.error;
  try {
    e.fingerprint = fingerprintSync(sql);
    return e.fingerprint;
  } catch (err) {
    e.error = toSyntaxError(err);
    throw e.error;
  }
}
