// The shell's backslash commands: \d (relations), \d NAME (its columns), \x, \timing, \q, \?.
// Catalog lookups go through the proxy like any statement (information_schema shows only what the
// upstream role may see).
import type { CliIo } from '../io.ts';
import type { Display } from '../sql/runner.ts';
import { showOutcome, type RunnerDeps } from '../sql/runner.ts';
import type { ProxySession } from '../sql/session.ts';

export const LIST_RELATIONS = `SELECT table_schema AS "Schema", table_name AS "Name",
  CASE table_type WHEN 'BASE TABLE' THEN 'table' WHEN 'VIEW' THEN 'view' WHEN 'FOREIGN' THEN 'foreign table' ELSE lower(table_type) END AS "Type"
FROM information_schema.tables WHERE table_schema NOT IN ('pg_catalog', 'information_schema') ORDER BY 1, 2`;

/** Columns of one relation; $1 the schema ('' for the first schema on the search path that has it), $2 the name. */
export const DESCRIBE_RELATION = `SELECT table_schema, column_name AS "Column", data_type AS "Type",
  CASE is_nullable WHEN 'NO' THEN 'not null' ELSE '' END AS "Nullable", coalesce(column_default, '') AS "Default"
FROM information_schema.columns
WHERE table_name = $2 AND (table_schema = $1 OR ($1 = '' AND table_schema = ANY (current_schemas(false))))
ORDER BY array_position(current_schemas(false), table_schema::text), ordinal_position`;

export const SHELL_HELP = `General
  \\q                quit (Ctrl-D too)
  \\?                this help
Informational
  \\d                list tables and views
  \\d NAME           describe a table or view (columns, types, nullability, defaults)
Formatting
  \\x [on|off]       toggle expanded output (one record per block)
  \\timing [on|off]  toggle showing how long each statement took
Statements end with ";" and may span several lines. Tab completes table and column names.
Ctrl-C cancels the running statement (a second Ctrl-C quits) or clears the line being typed.
Masked cells are marked ⊘ and named in the footer; NULL is shown as [NULL].
`;

export type MetaResult = 'quit' | 'done';

export interface MetaContext {
  io: CliIo;
  display: Display;
  session: ProxySession;
  deps: RunnerDeps;
}

function toggle(current: boolean, arg: string | undefined): boolean | undefined {
  if (arg === undefined) return !current;
  if (/^(on|true|1)$/i.test(arg)) return true;
  if (/^(off|false|0)$/i.test(arg)) return false;
  return undefined;
}

/** Splits `schema.table` (double-quoted parts kept as written, others lowercased as PostgreSQL does). */
export function relationName(text: string): { schema: string; name: string } {
  const parts = text.match(/"(?:[^"]|"")*"|[^.]+/g) ?? [text];
  const ident = (p: string) => (p.startsWith('"') ? p.slice(1, -1).replace(/""/g, '"') : p.toLowerCase());
  if (parts.length >= 2) return { schema: ident(parts[0]!), name: ident(parts.slice(1).join('.')) };
  return { schema: '', name: ident(parts[0]!) };
}

export async function runMeta(line: string, ctx: MetaContext): Promise<MetaResult> {
  const [command, ...args] = line.trim().split(/\s+/);
  const { io, display } = ctx;
  switch (command) {
    case '\\q':
      return 'quit';
    case '\\?':
      io.stderr.write(SHELL_HELP);
      return 'done';
    case '\\x': {
      const next = toggle(display.expanded, args[0]);
      if (next === undefined) io.stderr.write(`\\x: unrecognized value "${args[0]}": use on or off\n`);
      else {
        display.expanded = next;
        io.stderr.write(`Expanded display is ${next ? 'on' : 'off'}.\n`);
      }
      return 'done';
    }
    case '\\timing': {
      const next = toggle(display.timing, args[0]);
      if (next === undefined) io.stderr.write(`\\timing: unrecognized value "${args[0]}": use on or off\n`);
      else {
        display.timing = next;
        io.stderr.write(`Timing is ${next ? 'on' : 'off'}.\n`);
      }
      return 'done';
    }
    case '\\d':
      if (args.length === 0) {
        const outcome = await ctx.session.execute(LIST_RELATIONS, undefined, { reportMasking: false });
        if (!outcome.result?.rows.length) io.stderr.write('Did not find any relations.\n');
        else await showOutcome(outcome, { ...display, timing: false }, ctx.deps);
        return 'done';
      }
      await describeRelation(args.join(' '), ctx);
      return 'done';
    default:
      io.stderr.write(`Invalid command ${command}. Try \\? for help.\n`);
      return 'done';
  }
}

async function describeRelation(text: string, ctx: MetaContext): Promise<void> {
  const { schema, name } = relationName(text);
  const outcome = await ctx.session.execute(DESCRIBE_RELATION, [schema, name], { reportMasking: false });
  const result = outcome.result;
  if (!result || !result.rows.length) {
    ctx.io.stderr.write(`Did not find any relation named "${text}".\n`);
    return;
  }
  // Only the first schema that has the name (as psql does with the search path).
  const found = result.rows[0]![0]!;
  const rows = result.rows.filter((r) => r[0] === found).map((r) => r.slice(1));
  ctx.io.stdout.write(`Table "${found}.${name}"\n`);
  await showOutcome({ ...outcome, result: { fields: result.fields.slice(1), rows, masked: new Set() } }, { ...ctx.display, timing: false }, ctx.deps);
}
