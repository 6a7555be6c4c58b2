// Where one statement ends and the next begins, for `scalple query` and the shell, decided by the
// real PostgreSQL parser (libpg-query), never by counting semicolons: `;` inside strings, dollar
// quotes, comments and `BEGIN ATOMIC … END` bodies does not end a statement.
import { loadModule, parseSync, scanSync } from 'libpg-query';

let loading: Promise<void> | undefined;

/** Loads the parser's WebAssembly module once (about 100 ms); the functions below need it. */
export function sqlParserReady(): Promise<void> {
  loading ??= loadModule();
  return loading;
}

interface RawStmtLocation {
  stmt_location?: number;
  stmt_len?: number;
}

/**
 * The statements of a script, each as its own text (comments between statements dropped, empty
 * statements skipped). A script the parser rejects comes back whole, so the server reports the
 * syntax error with its position and nothing of the script runs.
 *
 * @example
 * await sqlParserReady();
 * splitStatements("SELECT 1; SELECT ';'")  // ["SELECT 1", "SELECT ';'"]
 */
export function splitStatements(text: string): string[] {
  let stmts: RawStmtLocation[];
  try {
    stmts = (parseSync(text) as { stmts?: RawStmtLocation[] }).stmts ?? [];
  } catch {
    return text.trim() ? [text] : [];
  }
  // Locations are byte offsets into the UTF-8 text.
  const bytes = Buffer.from(text, 'utf8');
  const out: string[] = [];
  for (const s of stmts) {
    const start = s.stmt_location ?? 0;
    const end = s.stmt_len ? start + s.stmt_len : bytes.length;
    const stmt = bytes.subarray(start, end).toString('utf8').trim();
    if (stmt) out.push(stmt);
  }
  return out;
}

/**
 * True when the text typed so far in the shell is one or more whole statements: its last token
 * (comments aside) is a `;` that ends a statement. An unterminated string, comment or
 * `BEGIN ATOMIC` body is not complete; a statement with a syntax error elsewhere is, so the
 * server can report it.
 */
export function isCompleteInput(text: string): boolean {
  let tokens: { text: string; tokenName: string }[];
  try {
    tokens = scanSync(text).tokens;
  } catch {
    return false; // unterminated quote or comment
  }
  const significant = tokens.filter((t) => t.tokenName !== 'SQL_COMMENT' && t.tokenName !== 'C_COMMENT');
  if (significant.at(-1)?.text !== ';') return false;
  try {
    parseSync(text);
    return true;
  } catch (err) {
    return !/at end of input/.test(err instanceof Error ? err.message : String(err));
  }
}

/** Quotes a value as a PostgreSQL string literal ('it''s'); NUL cannot be sent and is refused. */
export function sqlLiteral(value: string): string {
  if (value.includes('\u0000')) throw new RangeError('a value cannot contain the NUL character');
  return `'${value.replace(/'/g, "''")}'`;
}
