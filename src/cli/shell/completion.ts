// Tab completion in the shell: table and column names, loaded once from
// information_schema.columns through the proxy (so a person sees only what the proxy lets them
// list), and the shell's backslash commands.
import type { ProxySession } from '../sql/session.ts';

export const CATALOG_QUERY = `SELECT table_schema, table_name, column_name FROM information_schema.columns
WHERE table_schema NOT IN ('pg_catalog', 'information_schema') ORDER BY 1, 2, ordinal_position`;

export const BACKSLASH_COMMANDS = ['\\d', '\\x', '\\timing', '\\q', '\\?'];

export interface Catalog {
  /** Table names as typed: bare for public, schema.table otherwise. */
  tables: string[];
  /** Column names per table name (bare and qualified). */
  columns: Map<string, string[]>;
  allColumns: string[];
}

export function buildCatalog(rows: readonly (readonly (string | null)[])[]): Catalog {
  const columns = new Map<string, string[]>();
  const tables = new Set<string>();
  const all = new Set<string>();
  for (const [schema, table, column] of rows) {
    if (!schema || !table || !column) continue;
    const names = schema === 'public' ? [table, `${schema}.${table}`] : [`${schema}.${table}`];
    tables.add(names[0]!);
    for (const n of names) columns.set(n, [...(columns.get(n) ?? []), column]);
    all.add(column);
  }
  return { tables: [...tables].sort(), columns, allColumns: [...all].sort() };
}

/**
 * Completions for the word before the cursor: `\` commands at the start of a line; after
 * `table.`, that table's columns; otherwise table names and column names.
 */
export function complete(line: string, catalog: Catalog | undefined): [string[], string] {
  if (/^\s*\\\w*$/.test(line)) {
    const word = line.trim();
    return [BACKSLASH_COMMANDS.filter((c) => c.startsWith(word)), word];
  }
  const word = /[\w.$"]*$/.exec(line)?.[0] ?? '';
  if (!catalog) return [[], word];
  const lower = word.toLowerCase();
  const dot = word.lastIndexOf('.');
  let candidates: string[];
  if (dot > 0) {
    const table = word.slice(0, dot).toLowerCase();
    const cols = catalog.columns.get(table) ?? [];
    candidates = [...cols.map((c) => `${word.slice(0, dot)}.${c}`), ...catalog.tables.filter((t) => t.includes('.'))];
  } else {
    const afterBackslashD = /^\s*\\d\s+\S*$/.test(line);
    candidates = afterBackslashD ? catalog.tables : [...catalog.tables, ...catalog.allColumns];
  }
  const hits = [...new Set(candidates.filter((c) => c.toLowerCase().startsWith(lower)))];
  return [hits, word];
}

/** Loads the catalog once, on first use; a failure leaves completion empty (and is tried again later). */
export function catalogLoader(session: () => ProxySession): () => Promise<Catalog | undefined> {
  let loaded: Catalog | undefined;
  let loading: Promise<Catalog | undefined> | undefined;
  return () => {
    if (loaded) return Promise.resolve(loaded);
    loading ??= session()
      .execute(CATALOG_QUERY, undefined, { reportMasking: false })
      .then((o) => (loaded = buildCatalog(o.result?.rows ?? [])))
      .catch(() => undefined)
      .finally(() => {
        loading = undefined;
      });
    return loading;
  };
}
