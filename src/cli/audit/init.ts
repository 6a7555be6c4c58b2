// `scalple audit init --admin-url URL [--config FILE] [--writer ROLE]`: creates and migrates the
// scalple_audit schema owned by the admin role, and grants the writer (the user in audit.url)
// INSERT and SELECT only.
import type { Command } from 'commander';
import { ScalpleError } from '../../errors.ts';
import { connect, describeUrl, roleOfUrl } from '../../audit/db.ts';
import { initAuditSchema } from '../../audit/schema.ts';
import { adminUrlFrom, loadAuditConfig, status } from './common.ts';

export function registerInit(audit: Command): void {
  audit
    .command('init')
    .description('Create or migrate the audit schema (owned by --admin-url\'s role) and grant the writer role INSERT and SELECT only')
    .option('--admin-url <url>', 'PostgreSQL URL of the role that owns the audit schema (default: $SCALPLE_AUDIT_ADMIN_URL)')
    .option('-c, --config <file>', 'config file; its audit.url names the writer role (default: $SCALPLE_CONFIG)')
    .option('--writer <role>', 'writer role, when there is no config file')
    .action(async (opts: { adminUrl?: string; config?: string; writer?: string }) => {
      const adminUrl = adminUrlFrom(opts.adminUrl);
      let writer = opts.writer;
      if (!writer && (opts.config || process.env.SCALPLE_CONFIG)) {
        const config = loadAuditConfig(opts.config);
        writer = roleOfUrl(config.audit.url);
        if (!writer) throw new ScalpleError('CONFIG', 'audit.url names no user: put the writer role in it (postgres://writer:pw@host/db).');
      }
      const client = await connect(adminUrl, { applicationName: 'scalple-audit-init' });
      try {
        const r = await initAuditSchema(client, writer);
        const applied = r.migrated.applied.map((m) => `${m.version} ${m.name}`);
        status(`✓ scalple_audit at version ${r.migrated.to} in ${describeUrl(adminUrl)}, owned by ${r.owner}`
          + (applied.length ? ` (applied: ${applied.join('; ')})` : ' (already up to date)'));
        if (!writer) status('! no writer role granted: pass --config FILE (its audit.url user) or --writer ROLE');
        else if (r.writerIsOwner) status(`! the writer role ${writer} owns the schema: the triggers still refuse UPDATE, DELETE and TRUNCATE, but an owner can disable them. Use a separate owner.`);
        else status(`✓ writer role ${writer}: INSERT and SELECT only`);
      } finally {
        await client.end().catch(() => undefined);
      }
    });
}
