// `scalple audit …`: reading, verifying and initialising the audit store.
import type { Command } from 'commander';

export function registerAuditCommands(program: Command): void {
  program.command('audit').description('Inspect, verify and initialise the audit store');
}
