// `scalple proxy --config FILE`: run the proxy until SIGINT/SIGTERM; SIGHUP reloads the policy.
import type { Command } from 'commander';
import pino from 'pino';
import { configPathFrom, loadConfig } from '../policy/config.ts';
import { openAuditStore } from '../audit/writer.ts';
import { startProxy } from '../proxy/server.ts';
import { errorMessage } from '../errors.ts';

export function registerProxyCommand(program: Command): void {
  program
    .command('proxy')
    .description('Run the PostgreSQL proxy: authenticates people by OIDC token, audits and forwards every statement')
    .option('-c, --config <file>', 'config file (default: $SCALPLE_CONFIG)')
    .option('--log-level <level>', 'log level: debug, info, warn, error', 'info')
    .addHelpText('after', '\nExample:\n  scalple proxy --config scalple.yaml\n\nSignals: SIGHUP reloads the policy; SIGINT/SIGTERM stop after closing sessions.')
    .action(async (opts: { config?: string; logLevel: string }) => {
      const file = configPathFrom(opts.config);
      const config = loadConfig(file);
      const logger = pino({ name: 'scalple', level: opts.logLevel }, pino.destination(2));
      const audit = await openAuditStore(config.audit, { policyVersion: config.policyVersion, logger });
      const proxy = await startProxy(config, { audit, logger });
      process.on('SIGHUP', () => {
        try {
          const next = loadConfig(file);
          proxy.reload(next);
          audit.setPolicyVersion(next.policyVersion);
        } catch (err) {
          logger.error({ err: errorMessage(err) }, 'reload failed; keeping the previous policy');
        }
      });
      await new Promise<void>((resolve) => {
        process.once('SIGINT', () => resolve());
        process.once('SIGTERM', () => resolve());
      });
      logger.info('shutting down');
      await proxy.close();
      await audit.close();
    });
}
