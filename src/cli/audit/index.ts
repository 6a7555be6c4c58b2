// `scalple audit …`: reading, verifying and initialising the audit store.
import type { Command } from 'commander';
import { registerInit } from './init.ts';
import { registerLog } from './log.ts';
import { registerRetention } from './retention.ts';
import { registerVerify } from './verify.ts';

export function registerAuditCommands(program: Command): void {
  const audit = program.command('audit').description('Inspect, verify and initialise the audit store');
  registerInit(audit);
  registerVerify(audit);
  registerLog(audit);
  registerRetention(audit);
}
