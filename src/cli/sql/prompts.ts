// Questions to the person at the terminal (@inquirer/prompts, written to stderr so stdout stays
// data): an access reason when the policy wants one, and missing named-query parameters.
import { input } from '@inquirer/prompts';
import { ScalpleError } from '../../errors.ts';
import type { CliIo } from '../io.ts';
import { checkParamValue, describeType, flagName, type ParamSpec } from './named.ts';

/** Someone can answer: both stdin and stderr are terminals. */
export function canPrompt(io: CliIo): boolean {
  return io.stdin.isTTY === true && io.stderr.isTTY === true;
}

function context(io: CliIo): { input: NodeJS.ReadableStream; output: NodeJS.WritableStream } {
  return { input: io.stdin, output: io.stderr as unknown as NodeJS.WritableStream };
}

/** Ctrl-C or Ctrl-D in a prompt is a cancellation (exit 2). */
function cancelled(err: unknown): never {
  if (err instanceof Error && (err.name === 'ExitPromptError' || err.name === 'AbortPromptError')) {
    throw new ScalpleError('CANCELLED', 'Cancelled.');
  }
  throw err;
}

/** Asks for the access reason recorded with the following statements, after saying why (the proxy's refusal). */
export async function promptReason(io: CliIo, why: string): Promise<string | undefined> {
  if (!canPrompt(io)) return undefined;
  io.stderr.write(`! ${why}\n`);
  try {
    const reason = await input(
      { message: 'Reason for this access (recorded in the audit log):', validate: (v) => (v.trim() ? true : 'A reason is required, e.g. a ticket number') },
      context(io),
    );
    return reason.trim();
  } catch (err) {
    return cancelled(err);
  }
}

/** Asks for one named-query parameter, validating it for its type as the person types. */
export async function promptParam(param: ParamSpec, io: CliIo): Promise<string> {
  try {
    return await input(
      {
        message: `${flagName(param.name)} (${describeType(param.type)}):`,
        validate: (v) => checkParamValue(param.type, v) ?? true,
      },
      context(io),
    );
  } catch (err) {
    return cancelled(err);
  }
}
