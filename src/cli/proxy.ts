// `scalple proxy --config FILE`: run the proxy until SIGINT/SIGTERM; SIGHUP reloads the policy.
import type { Command } from 'commander';

export function registerProxyCommand(program: Command): void {
  program
    .command('proxy')
    .description('Run the PostgreSQL proxy')
    .option('-c, --config <file>', 'config file (default: $SCALPLE_CONFIG)')
    .action(async () => {
      throw new Error('not implemented yet');
    });
}
