// `scalple audit verify`: exit 0 when every chain is intact, 1 naming the first broken record of
// each broken chain. Prints the head hash of every chain so it can be kept elsewhere and passed
// back with --expect-head (which catches a cut tail even without the checkpoint file).
import { Option, type Command } from 'commander';
import Table from 'cli-table3';
import { checkpointFilesNear } from '../../audit/checkpoint.ts';
import { headLines, verify, type VerifyReport } from '../../audit/verify.ts';
import { collect, loadAuditConfig, out, status } from './common.ts';

interface VerifyFlags {
  config?: string;
  expectHead?: string[];
  chain?: string;
  format: 'table' | 'json';
  checkpoint?: string[] | false;
  url?: string;
}

export function registerVerify(audit: Command): void {
  audit
    .command('verify')
    .description('Recompute the keyed hash chains; exit 1 naming the first broken record (modified, deleted, inserted, reordered, tail cut)')
    .option('-c, --config <file>', 'config file (default: $SCALPLE_CONFIG); needs audit.hmac_key')
    .option('--expect-head <hash>', 'a head hash kept elsewhere ("HASH" or "CHAIN:HASH"); repeatable', collect)
    .option('--chain <id>', 'verify only this chain')
    .option('--checkpoint <file>', 'checkpoint file to check the tail against; repeatable (default: audit.checkpoint_file and its siblings)', collect)
    .option('--no-checkpoint', 'do not read checkpoint files')
    .option('--url <url>', 'read the store with this URL instead of audit.url')
    .addOption(new Option('--format <format>', 'output format').choices(['table', 'json']).default('table'))
    .action(async (flags: VerifyFlags) => {
      const config = loadAuditConfig(flags.config);
      const checkpointFile = flags.checkpoint === false ? [] : flags.checkpoint ?? (await checkpointFilesNear(config.audit));
      const report = await verify(flags.url ?? config.audit.url, config.audit.hmacKey, {
        ...(flags.chain ? { chainId: flags.chain } : {}),
        checkpointFile,
        ...(flags.expectHead ? { expectHead: flags.expectHead } : {}),
      });
      if (flags.format === 'json') out(JSON.stringify({ ...report, heads: headLines(report) }, null, 2));
      else out(renderTable(report));
      for (const p of report.problems) status(`TAMPERED: chain ${p.chainId}${p.seq !== null ? ` seq ${p.seq}` : ''}${p.logId ? ` (log_id ${p.logId})` : ''}: ${p.kind}: ${p.message}`);
      if (!report.ok) process.exitCode = 1;
      else status(`✓ audit log intact: ${report.chains.length} chain${report.chains.length === 1 ? '' : 's'}, ${report.chains.reduce((n, c) => n + c.verified, 0)} records verified`);
    });
}

function renderTable(report: VerifyReport): string {
  const t = new Table({ head: ['chain', 'status', 'verified', 'from seq', 'head seq', 'head time', 'retention cut'], style: { head: [], border: [] } });
  for (const c of report.chains) {
    t.push([
      c.chainId,
      c.status === 'intact' ? 'intact' : `TAMPERED (${c.problem?.kind})`,
      String(c.verified),
      c.firstSeq === null ? '-' : String(c.firstSeq),
      c.headSeq === null ? '-' : String(c.headSeq),
      c.headTs ?? '-',
      c.retentionCut ? `≤ ${c.retentionCut.seq} dropped before ${c.retentionCut.before} (cut: ${c.retentionCut.recordedIn.chainId} seq ${c.retentionCut.recordedIn.seq})` : '-',
    ]);
  }
  const lines = [report.chains.length ? t.toString() : '(no audit chains)'];
  for (const p of report.problems) lines.push(`first broken record: chain ${p.chainId}${p.seq !== null ? ` seq ${p.seq}` : ''}${p.logId ? ` log_id ${p.logId}` : ''}: ${p.kind}: ${p.message}`);
  for (const h of headLines(report)) lines.push(`head ${h}`);
  return lines.join('\n');
}
