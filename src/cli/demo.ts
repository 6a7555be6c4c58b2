// `scalple demo`: everything on this machine in one command (see src/demo/demo.ts).
import type { Command } from 'commander';
import pino from 'pino';
import { hostPort } from '../policy/config.ts';

export function registerDemoCommand(program: Command): void {
  program
    .command('demo')
    .description('Start an embedded PostgreSQL, a development OpenID provider with three demo people, and the proxy with a demo policy')
    .option('--port <port>', 'proxy port on 127.0.0.1 (default: a free port)')
    .option('--state-dir <dir>', 'where the demo writes its config and audit head (default: $XDG_STATE_HOME/scalple/demo)')
    .option('--log-level <level>', 'proxy log level', 'warn')
    .option('--pg-bin <dir|npm>', 'PostgreSQL server binaries: a directory holding initdb and postgres, or "npm" for the npm-packaged PostgreSQL 15 (default: $SCALPLE_PG_BIN, else /usr/lib/postgresql/*/bin, else npm)')
    .addHelpText('after', '\nExample:\n  npm install && npx scalple demo\n  npx scalple demo --pg-bin npm     # the npm-packaged PostgreSQL even when the system has one\n')
    .action(async (opts: { port?: string; stateDir?: string; logLevel: string; pgBin?: string }) => {
      // Loaded here: the demo pulls in the OpenID provider, which other commands never need.
      const { defaultDemoStateDir, demoInstructions, startDemo } = await import('../demo/demo.ts');
      const logger = pino({ name: 'scalple', level: opts.logLevel }, pino.destination(2));
      const port = opts.port ? hostPort(`127.0.0.1:${opts.port}`, '--port').port : undefined;
      process.stderr.write('Starting the Scalple demo…\n');
      const demo = await startDemo({ ...(port ? { port } : {}), ...(opts.pgBin !== undefined ? { pgBin: opts.pgBin } : {}), stateDir: opts.stateDir ?? defaultDemoStateDir(), logger, out: process.stderr });
      process.stdout.write(demoInstructions(demo));
      await new Promise<void>((resolve) => {
        process.once('SIGINT', () => resolve());
        process.once('SIGTERM', () => resolve());
      });
      process.stderr.write('\nStopping the demo…\n');
      await demo.stop();
    });
}
