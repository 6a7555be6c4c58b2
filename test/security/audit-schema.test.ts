// "Client statements that touch the scalple_audit schema are refused" (issue 2). The check is a
// text match (/scalple_audit/i) plus the parse tree's relation names. When the audit store is the
// upstream itself with the upstream's role as writer (audit.url defaults to the upstream URL), the
// shared role may read and insert audit rows, so the check is all that stands between a client and
// everybody's audit trail. Setup grants that role what `audit init` gives the writer.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startStack, type Stack } from '../support/stack.ts';
import { WireClient, simple, textOf, errorsOf, maskedPolicy } from './support.ts';

let stack: Stack;

beforeAll(async () => {
  stack = await startStack({ poolMode: 'transaction', config: maskedPolicy() });
  await stack.sql('GRANT USAGE ON SCHEMA scalple_audit TO app_user; GRANT SELECT, INSERT ON ALL TABLES IN SCHEMA scalple_audit TO app_user');
  // Something of bob's in the trail.
  const bob = await stack.connect('bob@example.com');
  await bob.query("SELECT id FROM orders WHERE id = 1 /* bob-private-marker */");
  await bob.end();
  await stack.flushAudit();
});
afterAll(async () => {
  await stack?.stop();
});

describe('the audit schema cannot be reached through the proxy', () => {
  it('the plain name is refused (the baseline)', async () => {
    const w = await stack.wire('carol@example.com');
    const frames = await simple(w, 'SELECT statement FROM scalple_audit.records LIMIT 1');
    w.close();
    expect(errorsOf(frames).map((e) => e.code)).toEqual(['42501']);
  });

  it('a Unicode-escaped schema name in a statement the proxy cannot parse', async () => {
    const w = await stack.wire('alice@example.com');
    const frames = await simple(w, 'SELECT email, statement FROM U&"scalple\\005faudit".records system_user WHERE statement IS NOT NULL');
    w.close();
    expect(textOf(frames)).not.toContain('bob-private-marker');
  });

  it('search_path set through set_config() with the name built at run time', async () => {
    const w = await stack.wire('carol@example.com');
    await simple(w, 'BEGIN');
    await simple(w, "SELECT set_config('search_path', 'scalple' || '_audit', true)");
    const frames = await simple(w, 'SELECT email, statement FROM records WHERE statement IS NOT NULL');
    await simple(w, 'ROLLBACK');
    w.close();
    expect(textOf(frames)).not.toContain('bob-private-marker');
  });
});
