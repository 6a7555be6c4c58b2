// Every audit read is itself recorded: an 'audit_read' event on a chain of its own
// ('audit-reads'), so a reader never contends with the proxy for its chain's writer lock. One
// writer per chain still holds (the lock is taken as for any chain); two readers at the same moment
// take turns: the second waits for the lock for a bounded time instead of failing.
//
// The event is committed before the command prints anything: a read that cannot be recorded
// shows nothing (fail closed).
import { randomUUID } from 'node:crypto';
import os from 'node:os';
import { AuditUnavailable, errorMessage } from '../errors.ts';
import type { ScalpleConfig } from '../policy/config.ts';
import type { Json } from './chain.ts';
import { checkpointPathFor } from './checkpoint.ts';
import type { Principal } from './record.ts';
import { type AuditLogger, openAuditStore } from './writer.ts';

export const AUDIT_READS_CHAIN = 'audit-reads';
export const AUDIT_READ_EVENT = 'audit_read';

/**
 * Who ran an audit command. With --config on the proxy host there is no OIDC identity: the OS user
 * and host name (and the sudo caller, when there is one) are what is known. Through the proxy the
 * person is the event's principal (their own login); `by` then names the proxy host and process and
 * the person's session (client address, application name, session id).
 */
export interface AuditReader {
  via: 'config' | 'proxy';
  os_user: string | null;
  sudo_user: string | null;
  hostname: string;
  pid: number;
  client_addr?: string;
  application_name?: string;
  session_id?: string;
}

export function localReader(): AuditReader {
  let user: string | null = null;
  try {
    user = os.userInfo().username;
  } catch {
    user = process.env.USER ?? process.env.LOGNAME ?? null;
  }
  return { via: 'config', os_user: user, sudo_user: process.env.SUDO_USER ?? null, hostname: os.hostname(), pid: process.pid };
}

/** The reader of an audit function answered by the proxy (scalple.who_accessed() and the others). */
export function proxyReader(session: { sessionId: string; clientAddr: string; applicationName: string }): AuditReader {
  return {
    via: 'proxy', os_user: null, sudo_user: null, hostname: os.hostname(), pid: process.pid,
    client_addr: session.clientAddr, application_name: session.applicationName, session_id: session.sessionId,
  };
}

export interface AuditReadInput {
  /** The audit command: 'who-accessed', 'report', … */
  command: string;
  /** Its arguments and options as given (secrets never included). */
  arguments: Record<string, Json>;
  /** How many results it returned. */
  results?: number;
  reader?: AuditReader;
  /** The person, when the read came through the proxy with their own login. */
  principal?: Principal;
  /** How long to wait for another reader to release the chain, in ms. Default 15000. */
  lockWaitMs?: number;
}

/** Warnings of the store as short lines on stderr (a CLI's stdout is data). */
const cliLogger: AuditLogger = {
  info: () => undefined,
  warn: (obj, msg) => process.stderr.write(`warning: ${msg ?? 'audit store'}${obj.err ? ` (${String(obj.err)})` : ''}\n`),
  error: (obj, msg) => process.stderr.write(`error: ${msg ?? 'audit store'}${obj.err ? ` (${String(obj.err)})` : ''}\n`),
};

/**
 * Appends the audit_read event (strict: committed when this resolves). Its detail is
 * { command, arguments, results, by: AuditReader }.
 */
export async function recordAuditRead(config: ScalpleConfig, input: AuditReadInput, logger: AuditLogger = cliLogger): Promise<{ logId: string; seq: number }> {
  const audit = { ...config.audit, chainId: AUDIT_READS_CHAIN, durability: 'strict' as const, checkpointFile: checkpointPathFor(config.audit, AUDIT_READS_CHAIN) };
  const deadline = Date.now() + (input.lockWaitMs ?? 15_000);
  let delay = 20;
  let store;
  for (;;) {
    try {
      store = await openAuditStore(audit, { policyVersion: config.policyVersion, autoMigrate: false, logger });
      break;
    } catch (err) {
      // Another audit reader holds the chain right now: it lets go within moments.
      if (!/already being written by another Scalple instance/.test(errorMessage(err)) || Date.now() > deadline) {
        throw new AuditUnavailable(`this audit read could not be recorded, so it was not shown: ${errorMessage(err)}`, err);
      }
      await new Promise((r) => setTimeout(r, delay));
      delay = Math.min(delay * 2, 500);
    }
  }
  const logId = randomUUID();
  try {
    await store.event({
      type: 'event', logId, ts: new Date(), event: AUDIT_READ_EVENT,
      ...(input.principal ? { principal: input.principal } : {}),
      detail: {
        command: input.command,
        arguments: input.arguments,
        ...(input.results !== undefined ? { results: input.results } : {}),
        by: (input.reader ?? localReader()) as unknown as Json,
      },
    });
    const seq = store.head().seq;
    await store.close();
    return { logId, seq };
  } catch (err) {
    // Give up on the record quickly: the command fails and shows nothing.
    await store.close({ timeoutMs: 1000 }).catch(() => undefined);
    throw new AuditUnavailable(`this audit read could not be recorded, so it was not shown: ${errorMessage(err)}`, err);
  }
}
