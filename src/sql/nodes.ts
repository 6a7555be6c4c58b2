// Typed access to libpg-query's JSON parse tree. The node types come from @pgsql/types (generated
// from PostgreSQL's own node definitions, re-exported by libpg-query). In the JSON, a `Node` is an
// object with exactly one key, the node tag (`{ "ColumnRef": { … } }`); fields typed as a concrete
// struct (RangeVar in InsertStmt.relation, SelectStmt in larg/rarg, WithClause, Alias, TypeName…)
// are NOT wrapped. Default values (false, 0, empty lists) are omitted.
import type { Node } from 'libpg-query';

export type { Node };

type KeysOf<U> = U extends unknown ? keyof U : never;
/** Every node tag: 'SelectStmt' | 'ColumnRef' | … */
export type NodeTag = KeysOf<Node>;
/** The payload type of a node tag: NodeOf<'ColumnRef'> is ColumnRef. */
export type NodeOf<K extends NodeTag> = Extract<Node, { [P in K]: unknown }>[K];

/** The tag of a wrapped node, or undefined when `n` is not one (a plain struct, an array, a scalar). */
export function tagOf(n: unknown): NodeTag | undefined {
  if (n === null || typeof n !== 'object' || Array.isArray(n)) return undefined;
  let tag: string | undefined;
  for (const k in n) {
    if (tag !== undefined) return undefined; // more than one key: a struct, not a wrapped node
    tag = k;
  }
  if (tag === undefined) return undefined;
  const c = tag.charCodeAt(0);
  // Node tags start with an upper-case letter (A_Const, SelectStmt…); struct fields never do.
  return c >= 65 && c <= 90 ? (tag as NodeTag) : undefined;
}

/** The payload of `n` when it is a wrapped node with tag `tag`. */
export function as<K extends NodeTag>(n: unknown, tag: K): NodeOf<K> | undefined {
  if (n === null || typeof n !== 'object') return undefined;
  const v = (n as Record<string, unknown>)[tag];
  return v === undefined || v === null || typeof v !== 'object' ? undefined : (v as NodeOf<K>);
}

/** The payload of a wrapped node whose tag was already checked with tagOf(). */
export function payload<K extends NodeTag>(n: Node, tag: K): NodeOf<K> {
  return (n as Record<string, unknown>)[tag] as NodeOf<K>;
}

/** `String` node value (identifiers and name parts are String nodes). */
export function str(n: unknown): string | undefined {
  const s = as(n, 'String');
  return s ? (s.sval ?? '') : undefined;
}

/** A list of String nodes as strings (qualified names: funcname, DropStmt objects, TypeName.names). */
export function names(list: readonly unknown[] | undefined): string[] {
  const out: string[] = [];
  if (!list) return out;
  for (const n of list) {
    const s = str(n);
    if (s !== undefined) out.push(s);
  }
  return out;
}

/** A scalar constant as text (A_Const: string, integer, float, boolean, bit string), else undefined. */
export function constText(n: unknown): string | undefined {
  const c = as(n, 'A_Const');
  if (!c) return undefined;
  if (c.isnull) return undefined;
  if (c.sval) return c.sval.sval ?? '';
  if (c.ival) return String(c.ival.ival ?? 0);
  if (c.fval) return c.fval.fval ?? '0';
  if (c.boolval) return c.boolval.boolval ? 'true' : 'false';
  if (c.bsval) return c.bsval.bsval ?? '';
  return undefined;
}

export function isObject(v: unknown): v is Record<string, unknown> {
  return v !== null && typeof v === 'object' && !Array.isArray(v);
}

/** An unwrapped RangeVar struct (InsertStmt.relation, IntoClause.rel, …) recognised by its shape. */
export function looksLikeRangeVar(v: unknown): v is { relname: string; schemaname?: string; catalogname?: string; location?: number } {
  return isObject(v) && typeof v.relname === 'string' && ('inh' in v || 'relpersistence' in v || 'location' in v || 'schemaname' in v);
}
