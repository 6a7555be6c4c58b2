// `scalple audit …`: reading, verifying and initialising the audit store.
import type { Command } from 'commander';
import { registerAnomalies } from './anomalies.ts';
import { registerInit } from './init.ts';
import { registerLog } from './log.ts';
import { registerReport } from './report.ts';
import { registerRetention } from './retention.ts';
import { registerVerify } from './verify.ts';
import { registerWhoAccessed } from './who-accessed.ts';

export function registerAuditCommands(program: Command): void {
  const audit = program.command('audit').description('Inspect, verify and initialise the audit store');
  registerInit(audit);
  registerVerify(audit);
  registerLog(audit);
  registerRetention(audit);
  registerAnomalies(audit);
  registerWhoAccessed(audit);
  registerReport(audit);
}
