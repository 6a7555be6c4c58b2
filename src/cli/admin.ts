// `scalple admin revoke|restore|grant`: one action cuts a person off (live sessions too, within
// seconds), or gives them a role for a while (break glass). Run on the proxy host with its config
// (every action an event in the audit chain, by the operating-system user who ran it), or, without
// --config and SCALPLE_CONFIG, through the proxy as the logged-in person when their role has
// `admin: true` (scalple.admin_revoke() and the others; the event names them).
import type { Command } from 'commander';
import os from 'node:os';
import { openAuditStore, type AuditStore } from '../audit/writer.ts';
import { checkpointPathFor } from '../audit/checkpoint.ts';
import { parsePolicy } from '../policy/policy.ts';
import { ScalpleError } from '../errors.ts';
import { loadAuditConfig, status } from './audit/common.ts';
import { askProxy, callSql, throughProxy } from './audit/through-proxy.ts';

const CONFIG_HELP = 'proxy config file (default: $SCALPLE_CONFIG); without either, through the proxy as you (your role needs admin: true)';
const PROFILE_HELP = 'without --config: the login profile to ask the proxy with (default: $SCALPLE_PROFILE, else "default")';

/** Through the proxy, as the logged-in person: scalple.admin_revoke(…) and the others. */
async function viaProxy(profile: string | undefined, command: string, fn: string, args: (string | undefined)[]): Promise<void> {
  await askProxy({ ...(profile ? { profile } : {}), command }, callSql(fn, args));
}

const ADMIN_CHAIN = 'admin';
const MAX_GRANT_MS = 7 * 24 * 3600_000;

function operator(): string {
  return `${os.userInfo().username}@${os.hostname()}`;
}

async function withStore<T>(configFlag: string | undefined, fn: (store: AuditStore, policyRoles: string[]) => Promise<T>): Promise<T> {
  const config = loadAuditConfig(configFlag);
  // Its own chain: never contends with the proxy's lock on the main chain.
  const store = await openAuditStore({ ...config.audit, chainId: ADMIN_CHAIN, durability: 'strict', checkpointFile: checkpointPathFor(config.audit, ADMIN_CHAIN) }, { policyVersion: config.policyVersion });
  try {
    return await fn(store, [...parsePolicy(config.policy).roles.keys()]);
  } finally {
    await store.close();
  }
}

/** "2h", "30m", "1d", "90s" -> ms. */
export function parseDuration(v: string): number {
  const m = /^(\d+)\s*(s|m|h|d)$/.exec(v.trim());
  if (!m) throw new ScalpleError('USAGE', `--for takes a duration like 30m, 2h or 1d (got "${v}")`);
  const ms = Number(m[1]) * { s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 }[m[2] as 's' | 'm' | 'h' | 'd'];
  if (ms <= 0 || ms > MAX_GRANT_MS) throw new ScalpleError('USAGE', '--for must be more than zero and at most 7d');
  return ms;
}

function checkEmail(email: string): string {
  if (!/^[^@\s]+@[^@\s]+$/.test(email)) throw new ScalpleError('USAGE', `"${email}" is not an email address`);
  return email;
}

export function registerAdminCommands(program: Command): void {
  const admin = program.command('admin').description('Revoke or restore a person, or grant a role for a while (break glass)');
  admin
    .command('revoke')
    .description('Refuse the person\'s new connections and close their live sessions within seconds, even with a valid token')
    .argument('<email>', 'the person')
    .option('--reason <text>', 'why, for the audit log')
    .option('-c, --config <file>', CONFIG_HELP)
    .option('--profile <name>', PROFILE_HELP)
    .addHelpText('after', '\nExample:\n  scalple admin revoke mallory@example.com --reason "left the company" --config scalple.yaml\n')
    .action(async (email: string, opts: { reason?: string; config?: string; profile?: string }) => {
      if (throughProxy(opts.config, opts.profile)) await viaProxy(opts.profile, 'scalple admin revoke', 'admin_revoke', [checkEmail(email), opts.reason]);
      else await withStore(opts.config, (s) => s.revoke({ email: checkEmail(email), ...(opts.reason ? { reason: opts.reason } : {}), by: operator() }));
      status(`✓ ${email} revoked: new connections are refused and live sessions close within seconds`);
    });
  admin
    .command('restore')
    .description('Take a person off the revocation list')
    .argument('<email>', 'the person')
    .option('--reason <text>', 'why, for the audit log')
    .option('-c, --config <file>', CONFIG_HELP)
    .option('--profile <name>', PROFILE_HELP)
    .addHelpText('after', '\nExample:\n  scalple admin restore mallory@example.com --config scalple.yaml\n')
    .action(async (email: string, opts: { reason?: string; config?: string; profile?: string }) => {
      if (throughProxy(opts.config, opts.profile)) await viaProxy(opts.profile, 'scalple admin restore', 'admin_restore', [checkEmail(email), opts.reason]);
      else await withStore(opts.config, (s) => s.restore({ email: checkEmail(email), ...(opts.reason ? { reason: opts.reason } : {}), by: operator() }));
      status(`✓ ${email} restored`);
    });
  admin
    .command('grant')
    .description('Give a person a role for a limited time (break glass); recorded, shown in every record it covers, and ending by itself')
    .argument('<email>', 'the person')
    .requiredOption('--role <name>', 'a role from the config')
    .requiredOption('--for <duration>', 'how long: 30m, 2h, 1d (at most 7d)')
    .requiredOption('--reason <text>', 'why, for the audit log')
    .option('-c, --config <file>', CONFIG_HELP)
    .option('--profile <name>', PROFILE_HELP)
    .addHelpText('after', '\nExample:\n  scalple admin grant alice@example.com --role dba --for 2h --reason "INC-4411: fix stuck payments" --config scalple.yaml\n')
    .action(async (email: string, opts: { role: string; for: string; reason: string; config?: string; profile?: string }) => {
      const ms = parseDuration(opts.for);
      const until = new Date(Date.now() + ms);
      if (throughProxy(opts.config, opts.profile)) await viaProxy(opts.profile, 'scalple admin grant', 'admin_grant', [checkEmail(email), opts.role, opts.for.trim(), opts.reason]);
      else await withStore(opts.config, async (s, roles) => {
        if (!roles.includes(opts.role)) throw new ScalpleError('USAGE', `no role named ${opts.role} in the config (roles: ${roles.join(', ') || 'none'})`);
        await s.grant({ email: checkEmail(email), role: opts.role, reason: opts.reason, by: operator(), until });
      });
      status(`✓ ${email} has role ${opts.role} until ${until.toISOString()} (new sessions; it ends by itself)`);
    });
}
