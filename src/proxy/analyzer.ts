// Adapter from the SQL analysis (src/sql) to what the session needs: kinds, tables, columns,
// scalple.* settings, and refusals that do not depend on the caller's role (audit schema,
// session state that a transaction pooler would leak).
import { loadModule, parseSync } from 'libpg-query';
import type { PoolMode } from '../policy/config.ts';
import type { StatementAnalyzer, StatementInfo } from './statement-info.ts';

type Node = Record<string, unknown>;

const AUDIT_SCHEMA = /scalple_audit/i;

export async function createAnalyzer(opts: { poolMode: PoolMode }): Promise<StatementAnalyzer> {
  await loadModule();
  const cache = new Map<string, StatementInfo>();
  return {
    describe(sql: string): StatementInfo {
      let info = cache.get(sql);
      if (!info) {
        info = analyse(sql, opts.poolMode);
        if (cache.size > 5000) cache.delete(cache.keys().next().value as string);
        cache.set(sql, info);
      }
      return info;
    },
    schemaChanged() {
      cache.clear();
    },
  };
}

function analyse(sql: string, poolMode: PoolMode): StatementInfo {
  if (AUDIT_SCHEMA.test(sql)) {
    return { kinds: ['UNKNOWN'], tables: [], columns: [], ddl: false, refusal: { sqlstate: '42501', message: 'statements that touch the scalple_audit schema are not allowed through the proxy', rule: 'audit.schema' } };
  }
  let tree: { stmts?: { stmt: Node }[] };
  try {
    tree = parseSync(sql) as typeof tree;
  } catch {
    return { kinds: ['UNKNOWN'], tables: [], columns: [], ddl: false };
  }
  const stmts = (tree.stmts ?? []).map((s) => s.stmt);
  const kinds = stmts.map(kindOf);
  const tables = new Set<string>();
  for (const s of stmts) collectTables(s, tables);
  const info: StatementInfo = { kinds, tables: [...tables].sort(), columns: [], ddl: kinds.some((k) => /^(CREATE|ALTER|DROP|COMMENT|GRANT|REVOKE)/.test(k)) };
  for (const s of stmts) {
    const set = s.VariableSetStmt as Node | undefined;
    const name = typeof set?.name === 'string' ? set.name : '';
    if (set && name.toLowerCase().startsWith('scalple.')) {
      const arg = ((set.args as Node[] | undefined)?.[0]?.A_Const as Node | undefined);
      const value = arg ? String(((arg.sval as Node | undefined)?.sval ?? (arg.ival as Node | undefined)?.ival ?? '')) : null;
      info.setting = { name: name.slice('scalple.'.length).toLowerCase(), value: set.kind === 'VAR_RESET' ? null : value, local: set.is_local === true };
    }
  }
  if (poolMode === 'transaction' && !info.setting) {
    const leak = stmts.map(sessionStateOf).find(Boolean);
    if (leak) info.refusal = { sqlstate: '0A000', message: `${leak} would outlive the transaction behind the transaction pooler and leak to other people: use SET LOCAL inside a transaction, or protocol-level prepared statements`, rule: 'pooler.session_state' };
  }
  return info;
}

function kindOf(stmt: Node): string {
  const key = Object.keys(stmt)[0] ?? 'Unknown';
  const body = stmt[key] as Node;
  switch (key) {
    case 'SelectStmt': return 'SELECT';
    case 'InsertStmt': return 'INSERT';
    case 'UpdateStmt': return 'UPDATE';
    case 'DeleteStmt': return 'DELETE';
    case 'MergeStmt': return 'MERGE';
    case 'CopyStmt': return 'COPY';
    case 'TransactionStmt': return String(body.kind ?? 'TRANSACTION').replace('TRANS_STMT_', '');
    case 'VariableSetStmt': return body.kind === 'VAR_RESET' || body.kind === 'VAR_RESET_ALL' ? 'RESET' : 'SET';
    case 'VariableShowStmt': return 'SHOW';
    case 'ExplainStmt': return 'EXPLAIN';
    case 'CreateStmt': return 'CREATE TABLE';
    case 'ViewStmt': return 'CREATE VIEW';
    case 'IndexStmt': return 'CREATE INDEX';
    case 'DropStmt': return 'DROP';
    case 'AlterTableStmt': return 'ALTER TABLE';
    case 'TruncateStmt': return 'TRUNCATE';
    case 'DeclareCursorStmt': return 'DECLARE CURSOR';
    case 'FetchStmt': return 'FETCH';
    case 'PrepareStmt': return 'PREPARE';
    case 'ExecuteStmt': return 'EXECUTE';
    case 'DeallocateStmt': return 'DEALLOCATE';
    case 'ListenStmt': return 'LISTEN';
    case 'NotifyStmt': return 'NOTIFY';
    case 'DoStmt': return 'DO';
    case 'CallStmt': return 'CALL';
    default: return key.replace(/Stmt$/, '').replace(/([a-z])([A-Z])/g, '$1 $2').toUpperCase();
  }
}

function sessionStateOf(stmt: Node): string | undefined {
  const set = stmt.VariableSetStmt as Node | undefined;
  if (set && set.is_local !== true) return `SET ${String(set.name ?? '').toUpperCase() || 'ALL'} (session level)`;
  if (stmt.PrepareStmt) return 'SQL-level PREPARE';
  if (stmt.ListenStmt) return 'LISTEN';
  if (stmt.DiscardStmt) return 'DISCARD';
  const dc = stmt.DeclareCursorStmt as Node | undefined;
  if (dc && typeof dc.options === 'number' && (dc.options & 0x20) !== 0) return 'DECLARE … WITH HOLD';
  return undefined;
}

function collectTables(node: unknown, out: Set<string>): void {
  if (Array.isArray(node)) {
    for (const n of node) collectTables(n, out);
    return;
  }
  if (!node || typeof node !== 'object') return;
  const rv = (node as Node).RangeVar as Node | undefined;
  if (rv && typeof rv.relname === 'string') out.add(`${typeof rv.schemaname === 'string' ? rv.schemaname : 'public'}.${rv.relname}`);
  for (const v of Object.values(node)) collectTables(v, out);
}
