// `scalple catalog install --admin-url URL`: installs the event trigger through which the proxy
// learns at once of schema changes made outside it (src/proxy/catalog-watch.ts).
import type { Command } from 'commander';
import { installCatalogTrigger } from '../proxy/catalog-watch.ts';
import { ScalpleError, errorMessage } from '../errors.ts';

export function registerCatalogCommands(program: Command): void {
  const catalog = program.command('catalog').description('the proxy\'s view of the upstream schema');
  catalog
    .command('install')
    .description('install the DDL event trigger in the upstream database (needs a superuser), so schema changes made outside Scalple reach the proxy at once')
    .requiredOption('--admin-url <url>', 'superuser connection to the upstream database (direct PostgreSQL, not a pooler)')
    .action(async (opts: { adminUrl: string }) => {
      try {
        await installCatalogTrigger(opts.adminUrl);
      } catch (err) {
        throw new ScalpleError('UPSTREAM', `could not install the event trigger: ${errorMessage(err)}`);
      }
      process.stderr.write('✓ event trigger scalple_ddl_notify installed: the proxy (catalog.watch_url) now sees schema changes at once\n');
    });
}
