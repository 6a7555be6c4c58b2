#!/usr/bin/env node
// Thin launcher: registers the TypeScript loader, runs the CLI, sets the exit code.
import { register } from 'tsx/esm/api';
register();
const { main } = await import('../src/cli/main.ts');
process.exitCode = await main(process.argv);
