// `scalple auth …`: the state of the CLI's own authentication.
import type { Command } from 'commander';
import { processIo, type CliIo } from '../io.ts';
import { registerAuthStatusCommand } from './status.ts';

export function registerAuthCommands(program: Command, io: CliIo = processIo()): void {
  const auth = program.command('auth').description("Inspect the CLI's authentication");
  registerAuthStatusCommand(auth, io);
}
