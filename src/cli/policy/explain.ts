// `scalple policy explain "SQL" --role NAME`: for each output column, where it comes from and what
// the role would receive (plain, which mask, refused and why) — to try a policy before enforcing it.
// Reads the live catalog of the upstream database with the proxy's own config.
import type { Command } from 'commander';
import pg from 'pg';
import Table from 'cli-table3';
import { configPathFrom, loadConfig } from '../../policy/config.ts';
import { effectiveRole, parsePolicy } from '../../policy/policy.ts';
import { analyse, ensureParser, resolveAccess, Catalog } from '../../sql/index.ts';
import { decide } from '../../proxy/mask-plan.ts';
import { ScalpleError } from '../../errors.ts';

export interface ExplainedColumn {
  column: string;
  sources: string[];
  receives: string;
}

export interface Explanation {
  role: string;
  decision: 'allow' | 'refuse';
  rule?: string;
  message?: string;
  columns: ExplainedColumn[];
}

export function registerPolicyCommands(program: Command): void {
  const policy = program.command('policy').description('Try the access policy against real statements');
  policy
    .command('explain')
    .description('Show, for each output column of SQL, where it comes from and what a role would receive')
    .argument('<sql>', 'the statement to explain')
    .requiredOption('--role <name>', 'role from the config (roles:) to explain for')
    .option('-c, --config <file>', 'proxy config file (default: $SCALPLE_CONFIG)')
    .option('--format <format>', 'table or json', 'table')
    .addHelpText('after', '\nExample:\n  scalple policy explain "SELECT id, lower(email), iban FROM customers" --role support --config scalple.yaml\n')
    .action(async (sql: string, opts: { role: string; config?: string; format: string }) => {
      if (!['table', 'json'].includes(opts.format)) throw new ScalpleError('USAGE', '--format must be table or json');
      const config = loadConfig(configPathFrom(opts.config));
      const result = await explainPolicy(sql, opts.role, config.policy, config.upstream);
      if (opts.format === 'json') {
        process.stdout.write(JSON.stringify(result, null, 2) + '\n');
        return;
      }
      if (result.decision === 'refuse') process.stdout.write(`REFUSED for role ${result.role}: ${result.message} (rule ${result.rule})\n`);
      // Plain borders, no colour: the output is often piped or pasted.
      const t = new Table({ head: ['column', 'comes from', `${result.role} receives`], style: { head: [], border: [] } });
      for (const c of result.columns) t.push([c.column, c.sources.join(', ') || '(computed)', c.receives]);
      if (result.columns.length) process.stdout.write(t.toString() + '\n');
    });
}

export async function explainPolicy(sql: string, roleName: string, rawPolicy: Record<string, unknown>, upstreamUrl: string): Promise<Explanation> {
  const policy = parsePolicy(rawPolicy);
  const def = policy.roles.get(roleName);
  if (!def) throw new ScalpleError('USAGE', `no role named ${roleName} in the config (roles: ${[...policy.roles.keys()].join(', ') || 'none'})`);
  const role = effectiveRole(policy, { kind: 'person', sub: 'explain', groups: def.groups.length ? [def.groups[0]!] : [] });
  if ('refused' in role) throw new ScalpleError('USAGE', role.refused);
  await ensureParser();
  const analysis = analyse(sql);
  if (!analysis.ok) throw new ScalpleError('USAGE', `cannot parse the statement: ${analysis.error.message}`);
  const client = new pg.Client({ connectionString: upstreamUrl, application_name: 'scalple-policy-explain' });
  try {
    await client.connect();
  } catch (err) {
    throw new ScalpleError('UPSTREAM', `cannot reach the upstream database to read its catalog: ${(err as Error).message}`);
  }
  try {
    const catalog = new Catalog(client);
    const snap = await catalog.ready();
    const access = resolveAccess(analysis, snap);
    const decision = decide(analysis, access, role, policy.maskKey);
    const outputs = access.statements[0]?.outputs ?? [];
    const plan = decision.kind === 'allow' ? decision.plan : undefined;
    const columns = outputs.map((o, i) => {
      const m = plan?.columns[i];
      const receives = decision.kind === 'refuse' ? 'refused' : m ? (m.label === 'redacted' ? `redacted (computed from ${o.sources.filter((s) => role.masked.has(s)).join(', ')})` : `masked: ${m.label}`) : 'plain';
      return { column: o.name, sources: [...o.sources], receives };
    });
    return {
      role: roleName,
      decision: decision.kind,
      ...(decision.kind === 'refuse' ? { rule: decision.refusal.rule, message: decision.refusal.message } : {}),
      columns,
    };
  } finally {
    await client.end();
  }
}
