// `scalple audit retention --before YYYY-MM-DD --admin-url URL --config FILE`: drops whole monthly
// partitions older than the date, after verifying the chains and committing a signed retention
// cut that verify recognises (so retention is told apart from tampering).
import { Option, type Command } from 'commander';
import { ADMIN_CHAIN, applyRetention, parseDay } from '../../audit/retention.ts';
import { adminUrlFrom, loadAuditConfig, out, status } from './common.ts';

interface RetentionFlags {
  before: string;
  adminUrl?: string;
  config?: string;
  chainId: string;
  dryRun?: boolean;
  force?: boolean;
  by?: string;
  format: 'table' | 'json';
}

export function registerRetention(audit: Command): void {
  audit
    .command('retention')
    .description('Drop monthly audit partitions older than a date, recorded as a signed retention cut')
    .requiredOption('--before <date>', 'drop partitions whose whole month lies before this date (YYYY-MM-DD, UTC)')
    .option('--admin-url <url>', 'PostgreSQL URL of the schema owner (default: $SCALPLE_AUDIT_ADMIN_URL)')
    .option('-c, --config <file>', 'config file (default: $SCALPLE_CONFIG); needs audit.hmac_key')
    .option('--chain-id <id>', 'chain that records the cut', ADMIN_CHAIN)
    .option('--by <who>', 'who runs it, for the record (default: $USER)')
    .option('--dry-run', 'show what would be dropped')
    .option('--force', 'drop even when verify finds a problem (recorded in the cut)')
    .addOption(new Option('--format <format>', 'output format').choices(['table', 'json']).default('table'))
    .action(async (flags: RetentionFlags) => {
      const before = parseDay(flags.before);
      const adminUrl = adminUrlFrom(flags.adminUrl);
      const config = loadAuditConfig(flags.config);
      const result = await applyRetention({
        adminUrl, audit: config.audit, policyVersion: config.policyVersion, before, chainId: flags.chainId,
        actor: flags.by ?? process.env.USER ?? 'unknown', dryRun: flags.dryRun === true, force: flags.force === true,
      });
      if (flags.format === 'json') {
        out(JSON.stringify(result, null, 2));
        return;
      }
      if (result.partitions.length === 0) {
        status(`nothing to drop: no monthly partition lies wholly before ${flags.before} (the current month is never dropped)`);
        return;
      }
      const verb = result.dryRun ? 'would drop' : 'dropped';
      const lines = [`${verb} ${result.partitions.join(', ')}`];
      for (const [chain, d] of Object.entries(result.dropped)) lines.push(`  chain ${chain}: ${d.records} records, up to seq ${d.seq} (hash ${d.hash})`);
      if (result.event) lines.push(`retention cut recorded in chain ${result.event.chainId} at seq ${result.event.seq} (log_id ${result.event.logId}, hash ${result.event.hash})`);
      out(lines.join('\n'));
    });
}
