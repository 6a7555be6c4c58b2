// May the CLI run a statement again after the proxy ended the session in the middle of it (token
// expiry)? Only when running it twice cannot change anything. A statement cut short may well have
// run upstream: the proxy forwarded it before the session ended, and PostgreSQL finishes (and
// commits) a statement whose client went away — no error and no missing result proves otherwise.
//
// So the answer comes from the statement itself, read by the proxy's own analyser (the real
// PostgreSQL parser, src/sql/analyse.ts), conservatively: every statement of the text is SELECT,
// TABLE, VALUES, SHOW or EXPLAIN without ANALYZE; nothing writes (no INSERT/UPDATE/DELETE/MERGE in
// a CTE, no SELECT INTO, no FOR UPDATE/SHARE), no known side-effect function (nextval, set_config,
// pg_advisory_lock, lo_*, dblink_exec, pg_terminate_backend…), no `scalple.run()`; and no
// transaction block was open. A user-defined function can still write where the text cannot show
// it: the caller runs the statement again inside BEGIN READ ONLY, where PostgreSQL refuses any write.
import { analyse } from '../../sql/analyse.ts';
import { ensureParser } from '../../sql/parser.ts';

export type RepeatDecision =
  /** Reads only: safe to run again (in a read-only transaction). */
  | { repeat: true }
  /** The statement may have had an effect: do not run it again. */
  | { repeat: false; reason: 'may-have-written' | 'commit' | 'transaction' };

/** Statement kinds (command tags) that only read, given the checks below. */
const READING_KINDS = new Set(['SELECT', 'SHOW', 'EXPLAIN']);
/** scalple.* functions the proxy answers without running anything upstream. */
const READING_SCALPLE_FUNCTIONS = new Set(['named_queries', 'last_masked']);
/** Transaction control whose interruption leaves the outcome unknown (the rest rolls back). */
const COMMITTING = new Set(['COMMIT', 'PREPARE TRANSACTION', 'COMMIT PREPARED', 'ROLLBACK PREPARED']);

/**
 * Whether `sql`, cut short when the proxy ended the session, may be run again.
 * `inTransaction`: a transaction block was open when it was sent (its work is gone with the
 * session, unless the statement was the COMMIT itself).
 *
 * @example
 * await repeatDecision('SELECT id FROM orders', false)   // { repeat: true }
 * await repeatDecision('UPDATE orders SET total = 1', false)  // { repeat: false, reason: 'may-have-written' }
 */
export async function repeatDecision(sql: string, inTransaction: boolean): Promise<RepeatDecision> {
  await ensureParser();
  let analysis: ReturnType<typeof analyse>;
  try {
    analysis = analyse(sql);
  } catch {
    return { repeat: false, reason: inTransaction ? 'transaction' : 'may-have-written' };
  }
  if (!analysis.ok || analysis.statements.length === 0) return { repeat: false, reason: inTransaction ? 'transaction' : 'may-have-written' };
  const statements = analysis.statements;
  // COMMIT anywhere in the text (END and COMMIT AND CHAIN are COMMIT too): it may have committed.
  if (statements.some((st) => st.transaction !== null && COMMITTING.has(st.transaction.op))) return { repeat: false, reason: 'commit' };
  if (inTransaction) return { repeat: false, reason: 'transaction' };
  const reads = statements.every(
    (st) =>
      READING_KINDS.has(st.kind) &&
      st.readOnly &&
      !(st.command?.type === 'explain' && st.command.analyze) &&
      st.sessionState.length === 0 &&
      st.scalpleSetting === null &&
      st.relations.every((r) => r.access === 'read') &&
      st.functions.every((f) => f.schema !== 'scalple' || READING_SCALPLE_FUNCTIONS.has(f.name)),
  );
  return reads ? { repeat: true } : { repeat: false, reason: 'may-have-written' };
}
