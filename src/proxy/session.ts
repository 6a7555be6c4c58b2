// One client session in the Ready state: relays the PostgreSQL protocol between the client and its
// upstream connection, audits every execution (intent before forwarding, completion after), and
// keeps the client's prepared statements itself so they survive a transaction pooler.
//
// Client -> upstream: every message is framed and looked at (they are few and small).
// Upstream -> client: headers are scanned in place; rows (DataRow, CopyData) pass through as
// slices of the received chunk, never copied or decoded. Responses are matched to what the client
// sent through a queue of expected replies, which also lets the proxy insert messages of its own
// (re-Parse of a statement upstream lost) and hide their replies, or answer locally in order.
import type net from 'node:net';
import { randomUUID } from 'node:crypto';
import type { Logger } from 'pino';
import type { ScalpleConfig } from '../policy/config.ts';
import { isConstantMask } from '../policy/masks.ts';
import type { AuditSink, GrantInForce, IntentRecord, Principal } from '../audit/record.ts';
import { AuditUnavailable, errorMessage, ScalpleError } from '../errors.ts';
import type { IdentityVerifier } from './identity.ts';
import type { StatementAnalyzer, StatementInfo, ScalpleSetting, Refusal } from './statement-info.ts';
import { MessageFramer, type Frame } from './framing.ts';
import {
  Back, Front, Reader, Writer, syncMessage, flushMessage, bindComplete, bindMessage, closeComplete, commandComplete, decodeFields, describeMessage,
  emptyParameterDescription, encodeFields, errorResponse, noData, parseComplete, parseMessage, queryMessage,
  readyForQuery, rowsFromTag, type ErrorFields, type TxStatus,
} from './protocol.ts';
import { encodeTagValue, principalLabel, tagFor } from './tag.ts';
import type { Metrics } from './metrics.ts';
import type { EffectiveRole } from '../policy/policy.ts';
import type { PolicyGate } from './policy-gate.ts';
import { maskForOrigin, type ColumnMask, type PolicyDecision } from './mask-plan.ts';
import { DEFAULT_SEARCH_PATH } from '../sql/index.ts';
import { normalizeSync } from 'libpg-query';
import { scalpleCall, checkArgs, paramTypeOid, textResult, type ScalpleCall } from './scalple-functions.ts';
import { CopyKeyReader, type SubjectPlan } from './subject-plan.ts';
import type { LiveAlerts } from '../audit/alerts.ts';

export interface SessionContext {
  config: ScalpleConfig;
  audit: AuditSink;
  analyzer: StatementAnalyzer;
  verifier: IdentityVerifier;
  logger: Logger;
  metrics: Metrics;
  gate: PolicyGate;
  /** Live insider alerts (config `anomalies:`), told about every completed statement. */
  alerts?: LiveAlerts;
}

export interface SessionInit {
  id: string;
  client: net.Socket;
  upstream: net.Socket;
  principal: Principal;
  expiresAt: number | undefined;
  clientAddr: string;
  applicationName: string;
  dbRole: string;
  database: string;
  status: TxStatus;
  /** `scalple.*` settings from the startup packet (e.g. scalple.reason). */
  settings: Record<string, string>;
  role: EffectiveRole;
  /** Time-boxed roles in force when the session began; the session ends when the first expires. */
  grants: GrantInForce[];
}

/** The masks of one execution: a copy of the statement's plan, completed by RowDescription. */
interface ActivePlan {
  /** How this execution's data subjects are read from its rows (and hidden columns stripped). */
  subjects?: SubjectPlan;
  /** Masks from the statement's lineage. */
  base: readonly (ColumnMask | undefined)[];
  /** Masks in force for the rows now arriving (base, completed by RowDescription's origins). */
  columns: (ColumnMask | undefined)[];
  /** Errors and notices may echo values: scrub them while this execution runs. */
  scrub: boolean;
}

interface Execution {
  logId: string;
  started: bigint;
  rows: number | null;
  sqlstate?: string;
  error?: string;
  /** Characters the tag added in front of the text, to correct error positions. */
  tagLength: number;
  ddl: boolean;
  /** SET search_path that takes effect when this execution succeeds. */
  searchPath?: string[];
  /** For live alerts: the statement and whether it read PII columns. */
  statement?: string;
  readsPii?: boolean;
  /** Data subjects seen in the rows ('customer:42'), and subjects touched with unknown keys. */
  subjectKeys?: Set<string>;
  subjectsPossible?: Record<string, string>;
}

/** What the proxy expects upstream to answer next, in order. */
type Pending =
  | { k: 'query'; exec: Execution | undefined; seq: number; plan: ActivePlan | undefined }
  | { k: 'parse'; hidden: boolean; tagLength: number }
  | { k: 'bind'; hidden: boolean }
  | { k: 'describe'; hidden: boolean; plan: ActivePlan | undefined }
  | { k: 'execute'; exec: Execution; plan: ActivePlan | undefined }
  | { k: 'close' }
  | { k: 'sync'; seq: number }
  | { k: 'local'; bytes: Buffer[]; endsBatch: boolean }
  /** A statement sent only to fail upstream; its error is replaced by the proxy's refusal. */
  | { k: 'poison'; bytes: Buffer };

interface Statement {
  sql: string;
  /** Parameter type section of the Parse message (int16 count + oids), raw. */
  paramTypes: Buffer;
  info: StatementInfo;
  decision: PolicyDecision;
  /** Reads a table with masked columns: results are checked against RowDescription's origins. */
  guarded: boolean;
  subjects: SubjectPlan | undefined;
  /** The log id already tagged into the upstream Parse and not yet used by an execution. */
  unusedTagLogId?: string;
  tagLength: number;
}

interface Portal {
  stmt: Statement;
  params: (string | null)[];
  plan: ActivePlan | undefined;
  described: boolean;
}

const MAX_PARAM_CHARS = 2000;
/** How long a statement waits for room in a full buffered audit queue before it is refused. */
const QUEUE_FULL_WAIT_MS = 2000;
/** Fails at parse time upstream, on purpose: see poisonUpstream(). */
const POISON_SQL = '/* scalple: the previous statement was refused; this error aborts its transaction */ SCALPLE_REFUSED';
const NO_PARAM_TYPES = Buffer.from([0, 0]);
const INBOX_HIGH_WATER = 512;

export class Session {
  readonly id: string;
  readonly principal: Principal;
  private readonly client: net.Socket;
  private readonly upstream: net.Socket;
  private readonly ctx: SessionContext;
  private readonly init: SessionInit;
  private readonly userLabel: string;
  private readonly transactionPooled: boolean;
  private readonly buffered: boolean;
  private readonly framer = new MessageFramer(undefined, new Set(Object.values(Front)));

  private inbox: Frame[] = [];
  private processing = false;
  private upOut: Buffer[] = [];

  private readonly statements = new Map<string, Statement>();
  private readonly portals = new Map<string, Portal>();
  /** Which client statement the upstream's unnamed statement holds right now, and since which batch. */
  private upstreamUnnamed: Statement | undefined;
  private upstreamUnnamedSeq = 0;
  private skipUntilSync = false;

  private readonly pending: Pending[] = [];
  private pendingHead = 0;
  private idleWaiters: (() => void)[] = [];
  private syncSeq = 0;
  private status: TxStatus;

  // Upstream framing state: bytes still to pass of a streamed row, or a partial message.
  private streamRemaining = 0;
  /** A COPY TO STDOUT whose subject keys are read from its CopyData, and whether the message being streamed is one of its. */
  private copyOut: { reader: CopyKeyReader; exec: Execution } | undefined;
  private streamCopy = false;
  private upTail: Buffer | null = null;

  private actingFor: { principal: Principal; label: string; untilSeq: number } | undefined;
  private reason: string | undefined;
  private localReason: { value: string; untilSeq: number } | undefined;
  private closed = false;
  private expiryTimer: NodeJS.Timeout | undefined;
  private grantTimer: NodeJS.Timeout | undefined;
  private searchPath: readonly string[] = DEFAULT_SEARCH_PATH;
  /** Masked outputs of the last statement, for scalple.last_masked(). */
  private lastMasked: { column: string; source: string; mask: string }[] = [];
  private ddlInTransaction = false;
  /** The server is in COPY FROM STDIN: it ignores Sync until CopyDone/CopyFail. */
  private copyIn = false;
  private readonly role: EffectiveRole;
  private readonly roleKey: string;

  constructor(init: SessionInit, ctx: SessionContext) {
    this.id = init.id;
    this.init = init;
    this.principal = init.principal;
    this.client = init.client;
    this.upstream = init.upstream;
    this.ctx = ctx;
    this.status = init.status;
    this.userLabel = principalLabel(init.principal);
    this.transactionPooled = ctx.config.upstreamPoolMode === 'transaction';
    this.buffered = ctx.config.audit.durability === 'buffered';
    if (init.settings['scalple.reason']) this.reason = init.settings['scalple.reason'];
    this.role = init.role;
    this.roleKey = ctx.gate.roleKey(init.role);
  }

  /** Starts relaying; `leftover` are client bytes that arrived with the startup. */
  start(leftover: Buffer, upstreamLeftover: Buffer[]): void {
    this.client.on('data', (chunk: Buffer) => this.onClientData(chunk));
    this.upstream.on('data', (chunk: Buffer) => this.onUpstreamData(chunk));
    this.client.on('close', () => this.close());
    this.upstream.on('close', () => this.close());
    this.client.on('error', (err) => this.ctx.logger.debug({ session: this.id, err: err.message }, 'client socket error'));
    this.upstream.on('error', (err) => this.ctx.logger.warn({ session: this.id, err: err.message }, 'upstream socket error'));
    this.client.on('drain', () => this.upstream.resume());
    this.upstream.on('drain', () => {
      if (this.inbox.length < INBOX_HIGH_WATER) this.client.resume();
    });
    if (this.init.expiresAt !== undefined) this.armExpiry(this.init.expiresAt);
    const grantEnd = Math.min(...this.init.grants.map((g) => g.until.getTime()));
    if (Number.isFinite(grantEnd)) {
      // The elevated role ends by itself: the session is closed so the next one gets the plain role.
      const t = setTimeout(() => this.terminate('28000', 'your temporary role has expired: reconnect to continue with your usual role'), Math.min(Math.max(grantEnd - Date.now(), 0), 2 ** 31 - 1));
      t.unref();
      this.grantTimer = t;
    }
    for (const b of upstreamLeftover) this.onUpstreamData(b);
    if (leftover.length) this.onClientData(leftover);
    this.client.resume();
    this.upstream.resume();
  }

  private armExpiry(at: number): void {
    // setTimeout holds at most ~24.8 days; re-arm for longer-lived tokens.
    const delay = Math.min(at - Date.now(), 2 ** 31 - 1);
    this.expiryTimer = setTimeout(() => {
      if (Date.now() >= at) this.terminate('28000', 'token expired: run `scalple login`');
      else this.armExpiry(at);
    }, Math.max(delay, 0));
    this.expiryTimer.unref();
  }

  /** Ends the session with a FATAL error the client can read (expiry, revocation, shutdown). */
  terminate(sqlstate: string, message: string): void {
    if (this.closed) return;
    this.ctx.logger.info({ session: this.id, sub: this.principal.sub, reason: message }, 'session terminated');
    this.client.end(errorResponse({ severity: 'FATAL', code: sqlstate, message }));
    this.upstream.destroy();
    this.close(true);
  }

  /** `lingering`: the client is being told why (FATAL written): let it flush, destroy it later. */
  close(lingering = false): void {
    if (this.closed) return;
    this.closed = true;
    if (this.expiryTimer) clearTimeout(this.expiryTimer);
    if (this.grantTimer) clearTimeout(this.grantTimer);
    if (lingering) setTimeout(() => this.client.destroy(), 2000).unref();
    else this.client.destroy();
    this.upstream.destroy();
    // A COPY cut off by the close keeps the keys of the rows already relayed.
    this.endCopyOut();
    // Executions that never completed still get a completion record.
    for (let i = this.pendingHead; i < this.pending.length; i++) {
      const p = this.pending[i]!;
      if ((p.k === 'execute' || p.k === 'query') && p.exec) this.complete(p.exec, '08006', 'connection closed before the statement completed');
    }
    this.pending.length = 0;
    this.pendingHead = 0;
    this.wakeIdleWaiters();
    this.ctx.metrics.sessionClosed();
    this.onClose?.();
  }

  onClose: (() => void) | undefined;

  // ------------------------------------------------------------------ client -> upstream

  private onClientData(chunk: Buffer): void {
    let frames: Frame[];
    try {
      frames = this.framer.push(chunk);
    } catch (err) {
      this.terminate('08P01', `protocol violation: ${errorMessage(err)}`);
      return;
    }
    for (const f of frames) this.inbox.push(f);
    if (this.inbox.length >= INBOX_HIGH_WATER) this.client.pause();
    if (!this.processing) void this.drainInbox();
  }

  private async drainInbox(): Promise<void> {
    this.processing = true;
    try {
      while (this.inbox.length && !this.closed) {
        const f = this.inbox.shift()!;
        const r = this.handleFrontend(f);
        if (r) {
          this.flushUpstream();
          await r;
        }
      }
      this.flushUpstream();
    } catch (err) {
      this.ctx.logger.error({ session: this.id, err: errorMessage(err) }, 'session failed');
      this.terminate('08P01', err instanceof ScalpleError ? err.message : `protocol violation: ${errorMessage(err)}`);
    } finally {
      this.processing = false;
      if (!this.closed && this.inbox.length < INBOX_HIGH_WATER) this.client.resume();
    }
  }

  private sendUp(b: Buffer): void {
    this.upOut.push(b);
  }

  private flushUpstream(): void {
    if (!this.upOut.length || this.closed) return;
    const ok = this.upOut.length === 1 ? this.upstream.write(this.upOut[0]!) : this.upstream.write(Buffer.concat(this.upOut));
    this.upOut = [];
    if (!ok) this.client.pause();
  }

  private handleFrontend(f: Frame): void | Promise<void> {
    if (this.skipUntilSync && f.type !== Front.Sync) return;
    switch (f.type) {
      case Front.Query:
        return this.onQuery(new Reader(f.body).cstring());
      case Front.Parse:
        return this.onParse(f);
      case Front.Bind:
        return this.onBind(f);
      case Front.Describe:
        return this.onDescribe(f);
      case Front.Execute:
        return this.onExecute(f);
      case Front.Close:
        return this.onCloseMessage(f);
      case Front.Sync:
        this.skipUntilSync = false;
        this.sendUp(f.raw);
        // PostgreSQL ignores a Sync sent during COPY FROM STDIN: expect no reply for it.
        if (!this.copyIn) this.expect({ k: 'sync', seq: ++this.syncSeq });
        return;
      case Front.Flush:
        this.sendUp(f.raw);
        return;
      case Front.CopyData:
        this.sendUp(f.raw);
        return;
      case Front.CopyDone:
      case Front.CopyFail:
        this.copyIn = false;
        this.sendUp(f.raw);
        return;
      case Front.Terminate:
        this.flushUpstream();
        this.upstream.end(f.raw);
        this.client.end();
        return;
      case Front.FunctionCall:
        this.refuseSimple({ sqlstate: '0A000', message: 'fast-path function calls are not allowed through Scalple: call the function in a SELECT', rule: 'protocol.function_call' }, 'FUNCTION CALL');
        return;
      default:
        throw new ScalpleError('PROTOCOL', `unexpected message '${String.fromCharCode(f.type)}' from client`);
    }
  }

  // ---- simple query

  private onQuery(sql: string): void | Promise<void> {
    // Synchronous on the hot path (analysis cached, buffered audit): one write upstream per batch.
    const info = this.ctx.analyzer.describe(sql, this.searchPath);
    return info instanceof Promise ? info.then((i) => this.queryWith(sql, i)) : this.queryWith(sql, info);
  }

  private queryWith(sql: string, info: StatementInfo): void | Promise<void> {
    if (info.setting) return this.settingQuery(sql, info, info.setting);
    const call = info.analysis?.ok ? scalpleCall(sql, info.analysis.statements.flatMap((st) => st.functions)) : undefined;
    if (call) return this.answerScalpleCall(call, sql, info);
    const { refusal, decision, observed } = this.judge(info);
    if (refusal) {
      this.refuseSimple(refusal, sql, info, decision);
      return;
    }
    this.lastMasked = [];
    const logId = randomUUID();
    const tag = this.tag(logId);
    const exec = this.newExecution(logId, tag.length, info);
    const forward = (recorded: boolean): void => {
      if (!recorded) {
        this.answerLocally([errorResponse(this.auditUnavailable())], true);
        return;
      }
      if (info.searchPath && !this.transactionPooled) exec.searchPath = info.searchPath;
      const subjects = this.ctx.gate.subjectPlan(info);
      this.startSubjects(exec, subjects);
      this.sendUp(queryMessage(tag + (subjects?.upstreamSql ?? sql)));
      // A simple query replaces the server's unnamed statement.
      this.upstreamUnnamed = undefined;
      this.endsTransaction(info);
      this.expect({ k: 'query', exec, seq: ++this.syncSeq, plan: this.activePlan(decision, this.guards(info), subjects) });
    };
    const recorded = this.recordIntent(exec, sql, info, undefined, decision, observed);
    return typeof recorded === 'boolean' ? forward(recorded) : recorded.then(forward);
  }

  private async settingQuery(sql: string, info: StatementInfo, setting: ScalpleSetting): Promise<void> {
    const refusal = info.kinds.length > 1 ? 'a scalple.* setting must be sent as a statement of its own' : await this.applySetting(setting);
    if (refusal) this.refuseSimple({ sqlstate: '22023', message: refusal, rule: 'scalple.setting' }, sql, info);
    else this.answerLocally([commandComplete(setting.value === null ? 'RESET' : 'SET')], true);
  }

  /** scalple.named_queries(), scalple.run(…), scalple.last_masked(): answered here, never forwarded as such. */
  private async answerScalpleCall(call: ScalpleCall, sql: string, info: StatementInfo): Promise<void> {
    const policy = this.ctx.gate.current;
    const mayRun = (roles: string[]) => roles.some((r) => this.role.names.includes(r));
    switch (call.fn) {
      case 'invalid':
        this.refuseSimple({ sqlstate: '42883', message: call.message, rule: 'scalple.functions' }, sql, info);
        return;
      case 'last_masked':
        this.answerLocally(textResult(['column_name', 'source', 'mask'], this.lastMasked.map((m) => [m.column, m.source, m.mask])), true);
        return;
      case 'named_queries': {
        const rows = [...policy.namedQueries.values()].filter((q) => mayRun(q.roles)).map((q) => [q.name, q.description, JSON.stringify(q.params), q.roles.join(',')]);
        this.answerLocally(textResult(['name', 'description', 'params', 'roles'], rows), true);
        return;
      }
      case 'who_accessed':
      case 'access_report':
      case 'anomalies': {
        // Audit answers for roles with audit: true, from the store; each read is recorded (audit-answers.ts).
        const { answerAuditFunction } = await import('./audit-answers.ts');
        const answer = await answerAuditFunction(call.fn, call.args, call.named, this.ctx.config, {
          principal: this.principal, roleNames: this.role.names, audit: this.role.audit, restricted: [...this.role.denied.keys()],
          sessionId: this.id, clientAddr: this.init.clientAddr, applicationName: this.init.applicationName,
        });
        if ('refusal' in answer) this.refuseSimple(answer.refusal, sql, info);
        else this.answerLocally(answer.messages, true);
        return;
      }
      case 'admin_revoke':
      case 'admin_restore':
      case 'admin_grant': {
        const refusal = await this.adminCall(call.fn, call.args);
        if (refusal) this.refuseSimple(refusal, sql, info);
        else this.answerLocally(textResult(['status'], [[`${call.fn.replace('admin_', '')} done`]]), true);
        return;
      }
      case 'run': {
        const q = policy.namedQueries.get(call.name);
        if (!q || !mayRun(q.roles)) {
          this.refuseSimple({ sqlstate: '42501', message: `named query ${call.name} does not exist or is not available to your role (${this.role.names.join(', ') || 'default'})`, rule: 'named_queries.roles' }, sql, info);
          return;
        }
        const bad = checkArgs(q, call.args);
        if (bad) {
          this.refuseSimple({ sqlstate: '22P02', message: bad, rule: `named_queries.${q.name}.params` }, sql, info);
          return;
        }
        const nqInfo = await this.ctx.analyzer.describe(q.sql, this.searchPath);
        const { refusal, decision, observed } = this.judge(nqInfo, true);
        if (refusal) {
          this.refuseSimple(refusal, q.sql, nqInfo, decision);
          return;
        }
        this.lastMasked = [];
        const logId = randomUUID();
        const tag = this.tag(logId);
        const exec = this.newExecution(logId, tag.length, nqInfo);
        if (!(await this.recordIntent(exec, q.sql, nqInfo, call.args, decision, observed, q.name))) {
          this.answerLocally([errorResponse(this.auditUnavailable())], true);
          return;
        }
        // Run as an extended-protocol statement with typed parameters; the client, which sent a
        // simple query, sees RowDescription, rows, CommandComplete and ReadyForQuery.
        const subjects = this.ctx.gate.subjectPlan(nqInfo);
        this.startSubjects(exec, subjects);
        const plan = this.activePlan(decision, this.guards(nqInfo), subjects);
        const types = new Writer().int16(q.params.length);
        for (const p of q.params) types.int32(paramTypeOid(p.type));
        this.sendUp(parseMessage('', tag + (subjects?.upstreamSql ?? q.sql), types.message(0).subarray(5)));
        this.expect({ k: 'parse', hidden: true, tagLength: tag.length });
        const bind = new Writer().cstring('').cstring('').int16(0).int16(call.args.length);
        for (const a of call.args) {
          const b = Buffer.from(a, 'utf8');
          bind.int32(b.length).bytes(b);
        }
        bind.int16(0);
        this.sendUp(bind.message(Front.Bind));
        this.expect({ k: 'bind', hidden: true });
        this.sendUp(describeMessage('P', ''));
        this.expect({ k: 'describe', hidden: false, plan });
        this.sendUp(new Writer().cstring('').int32(0).message(Front.Execute));
        this.expect({ k: 'execute', exec, plan });
        this.sendUp(syncMessage);
        this.expect({ k: 'sync', seq: ++this.syncSeq });
        this.upstreamUnnamed = undefined;
        return;
      }
    }
  }

  /** Admin actions through the proxy: only for roles with `admin: true`, done as the caller. */
  private async adminCall(fn: 'admin_revoke' | 'admin_restore' | 'admin_grant', args: string[]): Promise<Refusal | undefined> {
    const roleName = this.role.names.join('+') || 'default';
    if (!this.role.admin) return { sqlstate: '42501', message: `scalple.${fn}() needs a role with admin: true (yours: ${roleName})`, rule: `roles.${roleName}.admin` };
    const by = this.principal.email ?? this.principal.sub;
    const email = args[0] ?? '';
    if (!/^[^@\s]+@[^@\s]+$/.test(email)) return { sqlstate: '22023', message: `scalple.${fn}() needs the person's email first`, rule: 'scalple.functions' };
    try {
      if (fn === 'admin_revoke') await this.ctx.audit.revoke({ email, ...(args[1] ? { reason: args[1] } : {}), by });
      else if (fn === 'admin_restore') await this.ctx.audit.restore({ email, ...(args[1] ? { reason: args[1] } : {}), by });
      else {
        const [, role, duration, reason] = args;
        const m = /^(\d+)\s*(s|m|h|d)$/.exec(duration ?? '');
        const ms = m ? Number(m[1]) * { s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 }[m[2] as 's'] : 0;
        if (!role || !this.ctx.gate.current.roles.has(role)) return { sqlstate: '22023', message: `no role named ${role ?? '(none)'} in the policy`, rule: 'scalple.functions' };
        if (!ms || ms > 7 * 86_400_000 || !reason) return { sqlstate: '22023', message: "scalple.admin_grant('email', 'role', '2h', 'reason'): a duration up to 7d and a reason are required", rule: 'scalple.functions' };
        if (email.toLowerCase() === by.toLowerCase()) return { sqlstate: '42501', message: 'a grant must be given by another person', rule: 'admin.grant' };
        await this.ctx.audit.grant({ email, role, reason, by, until: new Date(Date.now() + ms) });
      }
    } catch (err) {
      return { sqlstate: err instanceof ScalpleError ? err.sqlstate : '57P03', message: errorMessage(err), rule: 'admin' };
    }
    return undefined;
  }

  /** The policy decision for this caller; with `enforce: false` it is only observed and recorded. */
  private judge(info: StatementInfo, named = false): { refusal?: Refusal; decision: PolicyDecision; observed?: string } {
    if (info.refusal) return { refusal: info.refusal, decision: { kind: 'refuse', refusal: info.refusal } };
    const roleName = this.role.names.join('+') || 'default';
    const control = info.kinds.every((k) => ['BEGIN', 'START TRANSACTION', 'COMMIT', 'ROLLBACK', 'SAVEPOINT', 'RELEASE', 'ROLLBACK TO', 'SHOW'].includes(k));
    let decision = this.ctx.gate.decide(info, this.role, this.roleKey);
    if (decision.kind === 'allow' && this.hasMasks() && this.fetchesProtocolPortal(info)) {
      // A portal bound through the protocol carries its masks on the proxy's side only; SQL FETCH
      // or MOVE on it would read its rows past them.
      decision = { kind: 'refuse', refusal: { sqlstate: '42501', message: `FETCH and MOVE of a portal bound with the extended protocol are not allowed to roles with masked columns (${roleName}): use Execute`, rule: 'protocol.portal_fetch' } };
    }
    if (decision.kind === 'allow' && !named && this.role.namedOnly && !control) {
      const refusal = { sqlstate: '42501', message: `your role (${roleName}) may run named queries only: see scalple queries, or SELECT * FROM scalple.named_queries()`, rule: `roles.${roleName}.named_only` };
      decision = { kind: 'refuse', refusal };
    }
    if (decision.kind === 'allow' && this.role.requireReason && !this.currentReason()) {
      const pii = this.ctx.gate.current.pii;
      if (info.columns.some((c) => pii.has(c))) {
        const refusal = { sqlstate: '42501', message: `a reason is required for statements that touch personal data: run with --reason "…", or SET scalple.reason = '…' (rule roles.${roleName}.require_reason)`, rule: `roles.${roleName}.require_reason` };
        decision = { kind: 'refuse', refusal };
      }
    }
    if (this.ctx.gate.enforce) return decision.kind === 'refuse' ? { refusal: decision.refusal, decision } : { decision };
    const observed = decision.kind === 'refuse' ? `would deny: ${decision.refusal.rule}` : decision.plan ? `would mask: ${Object.entries(decision.plan.maskedFields).map(([c, m]) => `${c}=${m}`).join(', ')}` : undefined;
    return { decision: { kind: 'allow' }, ...(observed ? { observed } : {}) };
  }

  private hasMasks(): boolean {
    return this.role.masked.size > 0 || this.role.denied.size > 0;
  }

  /** Does the statement FETCH or MOVE a portal the client bound through the extended protocol? */
  private fetchesProtocolPortal(info: StatementInfo): boolean {
    if (!info.analysis?.ok || !this.portals.size) return false;
    return info.analysis.statements.some((st) => {
      if (st.command?.type !== 'fetch' || st.command.cursor === null) return false;
      const cursor = st.command.cursor.toLowerCase();
      return [...this.portals.keys()].some((k) => k.toLowerCase() === cursor);
    });
  }

  /** Does this statement read a table that has columns masked for this caller? */
  private guards(info: StatementInfo): boolean {
    if (!this.ctx.gate.enforce || this.role.masked.size === 0 || !info.tables.length) return false;
    for (const col of this.role.masked.keys()) {
      const t = col.split('.').slice(0, 2).join('.');
      if (info.tables.includes(t)) return true;
    }
    return false;
  }

  private activePlan(decision: PolicyDecision, guarded: boolean, subjects?: SubjectPlan): ActivePlan | undefined {
    const plan = decision.kind === 'allow' ? decision.plan : undefined;
    if (!plan && !guarded && !subjects) return undefined;
    const base = plan ? plan.columns : [];
    return { base, columns: [...base], scrub: !!plan || guarded, ...(subjects ? { subjects } : {}) };
  }

  // ---- extended protocol

  private onParse(f: Frame): void | Promise<void> {
    const r = new Reader(f.body);
    const name = r.cstring();
    const sql = r.cstring();
    const paramTypes = r.rest();
    const described = this.ctx.analyzer.describe(sql, this.searchPath);
    if (described instanceof Promise) return described.then((info) => this.parseWith(name, sql, paramTypes, info));
    return this.parseWith(name, sql, paramTypes, described);
  }

  private parseWith(name: string, sql: string, paramTypes: Buffer, info: StatementInfo): void | Promise<void> {
    const call = info.analysis?.ok && scalpleCall(sql, info.analysis.statements.flatMap((st) => st.functions));
    const judged: { refusal?: Refusal; decision: PolicyDecision; observed?: string } = call
      ? { refusal: { sqlstate: '0A000', message: 'scalple.* functions are answered on the simple query protocol only (psql, or preferQueryMode=simple for JDBC)', rule: 'scalple.functions' }, decision: { kind: 'allow' } }
      : info.setting
      ? info.kinds.length > 1
        ? { refusal: { sqlstate: '22023', message: 'a scalple.* setting must be sent as a statement of its own', rule: 'scalple.setting' }, decision: { kind: 'allow' } }
        : { decision: { kind: 'allow' } }
      : this.judge(info);
    if (judged.refusal) {
      const refusal = judged.refusal;
      return this.recordRefusal(sql, info, refusal, judged.decision).then(() => this.failExtended(refusal));
    }
    const stmt: Statement = { sql, paramTypes: Buffer.from(paramTypes), info, decision: judged.decision, guarded: this.guards(info), subjects: this.ctx.gate.subjectPlan(info), tagLength: 0 };
    if (name && this.statements.has(name)) {
      this.failExtended({ sqlstate: '42P05', message: `prepared statement "${name}" already exists`, rule: 'protocol' });
      return;
    }
    this.statements.set(name, stmt);
    if (info.setting) {
      // Handled by the proxy alone; nothing goes upstream.
      this.answerLocally([parseComplete], false);
      return;
    }
    this.parseUpstream(stmt, false);
  }

  /** Parses `stmt` as the upstream's unnamed statement, tagged with a fresh log id. */
  private parseUpstream(stmt: Statement, hidden: boolean): void {
    const logId = randomUUID();
    const tag = this.tag(logId);
    stmt.unusedTagLogId = logId;
    stmt.tagLength = tag.length;
    this.sendUp(parseMessage('', tag + (stmt.subjects?.upstreamSql ?? stmt.sql), stmt.paramTypes));
    this.expect({ k: 'parse', hidden, tagLength: tag.length });
    this.upstreamUnnamed = stmt;
    this.upstreamUnnamedSeq = this.syncSeq;
  }

  /**
   * Does the upstream's unnamed statement still hold `stmt`? Behind a transaction pooler only
   * within the same batch (no Sync since): the next batch may run on another server connection.
   */
  private upstreamHolds(stmt: Statement): boolean {
    return this.upstreamUnnamed === stmt && (!this.transactionPooled || this.upstreamUnnamedSeq === this.syncSeq);
  }

  private onBind(f: Frame): void | Promise<void> {
    const r = new Reader(f.body);
    const portal = r.cstring();
    const name = r.cstring();
    const rest = f.body.subarray(r.offset);
    const stmt = this.statements.get(name);
    if (!stmt) {
      this.failExtended({ sqlstate: '26000', message: name ? `prepared statement "${name}" does not exist` : 'unnamed prepared statement does not exist', rule: 'protocol' });
      return;
    }
    if (!stmt.info.setting && !this.ctx.analyzer.isCurrent(stmt.info)) {
      // The schema changed since this statement was planned (a view replaced, a column added):
      // plan it again before it runs, as PostgreSQL itself re-plans it.
      const described = this.ctx.analyzer.describe(stmt.sql, this.searchPath);
      return (described instanceof Promise ? described : Promise.resolve(described)).then((info) => {
        const refusal = this.replan(stmt, info);
        if (refusal) return this.recordRefusal(stmt.sql, info, refusal).then(() => this.failExtended(refusal));
        this.bindWith(f, portal, name, rest, stmt);
      });
    }
    this.bindWith(f, portal, name, rest, stmt);
  }

  /** Re-judges a kept statement against a new analysis; the refusal when it is now refused. */
  private replan(stmt: Statement, info: StatementInfo): Refusal | undefined {
    const judged = this.judge(info);
    if (judged.refusal) return judged.refusal;
    stmt.info = info;
    stmt.decision = judged.decision;
    stmt.guarded = this.guards(info);
    stmt.subjects = this.ctx.gate.subjectPlan(info);
    // Parsed upstream again, with whatever the new plan sends (hidden key columns).
    if (this.upstreamUnnamed === stmt) this.upstreamUnnamed = undefined;
    return undefined;
  }

  private bindWith(f: Frame, portal: string, name: string, rest: Buffer, stmt: Statement): void {
    if (portal !== '' && this.portals.has(portal)) {
      // PostgreSQL refuses it and keeps the first portal: so must the proxy's bookkeeping.
      this.failExtended({ sqlstate: '42P03', message: `cursor "${portal}" already exists`, rule: 'protocol' });
      return;
    }
    const plan = this.activePlan(stmt.decision, stmt.guarded, stmt.subjects);
    this.portals.set(portal, { stmt, params: decodeBindParams(rest), plan, described: false });
    if (stmt.info.setting) {
      this.answerLocally([bindComplete], false);
      return;
    }
    if (!this.upstreamHolds(stmt)) this.parseUpstream(stmt, true);
    // Nothing masked may travel in binary: masked columns are asked for as text.
    let bindRest = plan && plan.columns.some(Boolean) ? textForMasked(rest, plan.columns) : rest;
    if (stmt.subjects?.hidden.length) bindRest = withHiddenFormats(bindRest, stmt.subjects);
    this.sendUp(name === '' && bindRest === rest ? f.raw : bindMessage(portal, '', bindRest));
    this.expect({ k: 'bind', hidden: false });
  }

  private onDescribe(f: Frame): void {
    const r = new Reader(f.body);
    const what = String.fromCharCode(r.bytes(1)[0]!);
    const name = r.cstring();
    if (what === 'S') {
      const stmt = this.statements.get(name);
      if (!stmt) {
        this.failExtended({ sqlstate: '26000', message: `prepared statement "${name}" does not exist`, rule: 'protocol' });
        return;
      }
      if (stmt.info.setting) {
        this.answerLocally([emptyParameterDescription, noData], false);
        return;
      }
      if (!this.upstreamHolds(stmt)) this.parseUpstream(stmt, true);
      this.sendUp(name === '' ? f.raw : describeMessage('S', ''));
      this.expect({ k: 'describe', hidden: false, plan: this.activePlan(stmt.decision, stmt.guarded, stmt.subjects) });
      return;
    }
    const portal = this.portals.get(name);
    if (portal?.stmt.info.setting) {
      this.answerLocally([noData], false);
      return;
    }
    if (portal) portal.described = true;
    this.sendUp(f.raw);
    this.expect({ k: 'describe', hidden: false, plan: portal?.plan });
  }

  private onExecute(f: Frame): void | Promise<void> {
    const name = new Reader(f.body).cstring();
    const portal = this.portals.get(name);
    if (!portal && this.hasMasks()) {
      // Not bound through the proxy (a cursor DECLAREd in SQL): its rows would carry no masks.
      this.failExtended({ sqlstate: '34000', message: `portal "${name}" does not exist here: roles with masked columns can Execute only portals bound through Scalple`, rule: 'protocol.portal_unknown' });
      return;
    }
    const setting = portal?.stmt.info.setting;
    if (setting) {
      return this.applySetting(setting).then((refusal) => {
        if (refusal) this.failExtended({ sqlstate: '22023', message: refusal, rule: 'scalple.setting' });
        else this.answerLocally([commandComplete(setting.value === null ? 'RESET' : 'SET')], false);
      });
    }
    const stmt = portal?.stmt;
    const info = stmt?.info ?? { kinds: ['UNKNOWN'], tables: [], columns: [], ddl: false };
    // The first execution after an upstream Parse uses the log id that Parse carried, so the
    // pgAudit line and the record match; later executions get their own.
    const logId = stmt?.unusedTagLogId ?? randomUUID();
    if (stmt) stmt.unusedTagLogId = undefined;
    const exec = this.newExecution(logId, stmt?.tagLength ?? 0, info);
    this.startSubjects(exec, stmt?.subjects);
    this.lastMasked = [];
    if (info.searchPath && !this.transactionPooled) exec.searchPath = info.searchPath;
    const decision = stmt?.decision ?? { kind: 'allow' as const };
    const observed = stmt && !this.ctx.gate.enforce ? this.judge(stmt.info).observed : undefined;
    const forward = (recorded: boolean): void => {
      if (!recorded) {
        this.failExtended(this.auditUnavailableRefusal());
        return;
      }
      this.forwardExecute(f, name, portal, exec);
    };
    const recorded = this.recordIntent(exec, stmt?.sql ?? '(unknown portal)', info, portal?.params, decision, observed);
    return typeof recorded === 'boolean' ? forward(recorded) : recorded.then(forward);
  }

  private forwardExecute(f: Frame, name: string, portal: Portal | undefined, exec: Execution): void {
    if (portal?.plan && !portal.described) {
      // Executed without Describe (pgjdbc after prepareThreshold): ask for the row description
      // ourselves, hidden from the client, to check the plan against the columns' origins.
      this.sendUp(describeMessage('P', name));
      this.expect({ k: 'describe', hidden: true, plan: portal.plan });
      portal.described = true;
    }
    this.sendUp(f.raw);
    this.expect({ k: 'execute', exec, plan: portal?.plan });
    if (portal) this.endsTransaction(portal.stmt.info);
  }

  /** COMMIT/ROLLBACK sent: what follows in the pipeline is outside the transaction's settings. */
  private endsTransaction(info: StatementInfo): void {
    if (info.kinds.some((k) => k === 'COMMIT' || k === 'ROLLBACK' || k === 'COMMIT PREPARED' || k === 'ROLLBACK PREPARED' || k === 'PREPARE TRANSACTION')) {
      this.actingFor = undefined;
      this.localReason = undefined;
    }
  }

  private onCloseMessage(f: Frame): void {
    const r = new Reader(f.body);
    const what = String.fromCharCode(r.bytes(1)[0]!);
    const name = r.cstring();
    if (what === 'S') {
      const stmt = this.statements.get(name);
      this.statements.delete(name);
      if (stmt && this.upstreamUnnamed === stmt && name !== '') this.upstreamUnnamed = undefined;
      this.answerLocally([closeComplete], false);
      return;
    }
    this.portals.delete(name);
    this.sendUp(f.raw);
    this.expect({ k: 'close' });
  }

  // ---- policy, settings, audit

  /** Applies a `SET scalple.*`; returns an error message, or undefined when applied. */
  private async applySetting(s: ScalpleSetting): Promise<string | undefined> {
    switch (s.name) {
      case 'reason':
        if (s.local) this.localReason = s.value === null ? undefined : { value: s.value, untilSeq: this.syncSeq + 1 };
        else this.reason = s.value ?? undefined;
        return undefined;
      case 'on_behalf_of': {
        if (s.value === null) {
          this.actingFor = undefined;
          return undefined;
        }
        if (!s.local) return 'scalple.on_behalf_of is per transaction: use SET LOCAL inside BEGIN … COMMIT';
        // Whether a transaction block is open is known only once everything sent before has been
        // answered (a pipelined BEGIN may still fail, a pipelined COMMIT may end it): wait for that.
        await this.whenUpstreamIdle();
        if (this.closed) return 'session closed';
        if (this.status === 'I') return 'SET LOCAL scalple.on_behalf_of only works inside a transaction block (BEGIN first)';
        try {
          const { principal } = await this.ctx.verifier.verifyToken(s.value);
          if (principal.kind !== 'person') return 'scalple.on_behalf_of must be a person\'s token, not an application\'s';
          // A revoked person may not act through an application either (fails closed if the store cannot tell).
          if (await this.ctx.audit.isRevoked(principal).catch(() => true)) return 'scalple.on_behalf_of refused: that person\'s access is revoked';
          this.actingFor = { principal, label: principalLabel(principal), untilSeq: this.syncSeq + 1 };
          return undefined;
        } catch (err) {
          return `scalple.on_behalf_of refused: ${errorMessage(err)}`;
        }
      }
      case 'identity':
        return 'scalple.identity can only be given when connecting';
      default:
        return `unknown setting scalple.${s.name} (known: scalple.reason, scalple.on_behalf_of)`;
    }
  }

  private currentReason(): string | undefined {
    return this.localReason?.value ?? this.reason;
  }

  private tag(logId: string): string {
    return tagFor(logId, this.userLabel, this.actingFor?.label);
  }

  private newExecution(logId: string, tagLength: number, info: StatementInfo): Execution {
    const exec: Execution = { logId, started: process.hrtime.bigint(), rows: null, tagLength, ddl: info.ddl };
    if (this.ctx.alerts) {
      const pii = this.ctx.gate.current.pii;
      exec.readsPii = info.columns.some((c) => pii.has(c));
      exec.statement = info.analysis?.sql ?? '';
    }
    return exec;
  }

  private intentRecord(logId: string, sql: string, info: StatementInfo, params: (string | null)[] | undefined, decision: IntentRecord['decision'], rule?: string, maskedFields?: Record<string, string>, namedQuery?: string): IntentRecord {
    const reason = this.currentReason();
    // Statements that run never compare masked columns (that is refused), so only refused ones
    // can carry a literal or parameter aimed at a masked value.
    if (decision === 'deny') ({ sql, params } = this.redactForAudit(sql, info, params));
    return {
      type: 'intent',
      logId,
      ts: new Date(),
      sessionId: this.id,
      principal: this.principal,
      ...(this.actingFor ? { actingFor: this.actingFor.principal } : {}),
      dbRole: this.init.dbRole,
      database: this.init.database,
      clientAddr: this.init.clientAddr,
      applicationName: this.init.applicationName,
      statement: sql,
      ...(params ? { params } : {}),
      kinds: info.kinds,
      tables: info.tables,
      columns: info.columns,
      decision,
      ...(rule ? { rule } : {}),
      policyVersion: this.ctx.config.policyVersion,
      ...(reason ? { reason } : {}),
      ...(maskedFields && Object.keys(maskedFields).length ? { maskedFields } : {}),
      ...(namedQuery ? { namedQuery } : {}),
      ...(this.init.grants.length ? { grants: this.init.grants } : {}),
    };
  }

  /**
   * Literals and parameters of a refused statement that reads columns masked for this caller are
   * kept out of the record: the text is stored normalised (literals become $n), parameters redacted.
   */
  private redactForAudit(sql: string, info: StatementInfo, params: (string | null)[] | undefined): { sql: string; params: (string | null)[] | undefined } {
    if (!this.role.masked.size || !info.columns.some((c) => this.role.masked.has(c))) return { sql, params };
    let text = sql;
    try {
      text = normalizeSync(sql);
    } catch {
      text = '(statement withheld: it compares masked columns and could not be normalised)';
    }
    return { sql: text, params: params?.map((p) => (p === null ? null : '[redacted]')) };
  }

  /** Writes the intent; false when the audit store cannot take it (the statement must not run). */
  /**
   * Writes the intent; false when the audit store cannot take it (the statement must not run).
   * buffered: decided synchronously (the queue has room and the store is up), so the hot path never
   * waits; strict: resolves once the intent is committed.
   */
  private recordIntent(exec: Execution, sql: string, info: StatementInfo, params: (string | null)[] | undefined, decision: PolicyDecision, observed?: string, namedQuery?: string): boolean | Promise<boolean> {
    const maskedFields = decision.kind === 'allow' ? decision.maskedFields : undefined;
    const record = this.intentRecord(exec.logId, sql, info, params, maskedFields ? 'mask' : 'allow', observed, maskedFields, namedQuery);
    const refused = (err: unknown): false => {
      this.ctx.metrics.auditRefusal();
      this.ctx.logger.error({ session: this.id, err: errorMessage(err) }, 'audit store refused an intent; statement not forwarded');
      return false;
    };
    if (this.buffered) {
      const accept = (): true => {
        // Accepted: healthy() is exactly the condition under which a buffered intent is queued.
        this.ctx.audit.intent(record).catch((err) => this.ctx.logger.error({ session: this.id, log_id: exec.logId, err: errorMessage(err) }, 'buffered intent could not be queued after its statement was forwarded'));
        this.ctx.metrics.statement();
        return true;
      };
      if (this.ctx.audit.healthy()) return accept();
      // A full queue with the store up is backpressure: the statement waits (bounded) for room
      // rather than failing at the first burst; an unreachable store refuses at once.
      const deadline = Date.now() + QUEUE_FULL_WAIT_MS;
      const wait = (): Promise<boolean> =>
        this.ctx.audit.whenRoom(Math.max(0, deadline - Date.now())).then((room) => {
          if (this.closed) return false;
          if (room && this.ctx.audit.healthy()) return accept();
          return room && Date.now() < deadline ? wait() : refused(new AuditUnavailable('audit queue full or store unreachable'));
        });
      return wait();
    }
    return this.ctx.audit.intent(record).then(() => {
      this.ctx.metrics.statement();
      return true;
    }, refused);
  }

  private async recordRefusal(sql: string, info: StatementInfo, refusal: Refusal, _decision?: PolicyDecision): Promise<void> {
    const logId = randomUUID();
    this.ctx.metrics.denied();
    try {
      await this.ctx.audit.intent(this.intentRecord(logId, sql, info, undefined, 'deny', refusal.rule));
      this.ctx.audit.completion({ type: 'completion', logId, ts: new Date(), sessionId: this.id, rows: null, sqlstate: refusal.sqlstate, error: refusal.message, durationMs: 0 });
    } catch {
      // The statement is refused either way; the audit failure is logged by the store.
    }
  }

  private auditUnavailable(): ErrorFields {
    const e = new AuditUnavailable('audit store unavailable: statement refused (nothing runs unrecorded); try again shortly');
    return { severity: 'ERROR', code: e.sqlstate, message: e.message };
  }
  private auditUnavailableRefusal(): Refusal {
    const f = this.auditUnavailable();
    return { sqlstate: f.code, message: f.message, rule: 'audit.unavailable' };
  }

  private refuseSimple(refusal: Refusal, sql: string, info?: StatementInfo, decision?: PolicyDecision): void {
    void this.recordRefusal(sql, info ?? { kinds: ['UNKNOWN'], tables: [], columns: [], ddl: false }, refusal, decision);
    const err = errorResponse({ severity: 'ERROR', code: refusal.sqlstate, message: refusal.message });
    if (!this.upstreamMayHoldWork()) return this.answerLocally([err], true);
    this.poisonUpstream(queryMessage(POISON_SQL), err);
    this.expect({ k: 'sync', seq: ++this.syncSeq });
  }

  /** An error in the extended protocol: answered in order, then the client's messages are skipped until Sync. */
  private failExtended(refusal: Refusal): void {
    const err = errorResponse({ severity: 'ERROR', code: refusal.sqlstate, message: refusal.message });
    if (this.upstreamMayHoldWork()) this.poisonUpstream(parseMessage('', POISON_SQL, NO_PARAM_TYPES), err);
    else this.answerLocally([err], false);
    this.skipUntilSync = true;
  }

  /**
   * Could the upstream hold effects of this client that an error must undo: an open transaction
   * block, or messages of an unfinished batch (an implicit transaction) or of pipelined queries?
   */
  private upstreamMayHoldWork(): boolean {
    return this.status !== 'I' || this.pendingCount() > 0;
  }

  /**
   * A refusal must fail upstream too, as PostgreSQL's own error would: the implicit transaction of
   * the batch rolls back and an open transaction block is aborted, so nothing sent before the
   * refused statement commits behind the client's back. The upstream's syntax error is replaced by
   * the refusal.
   */
  private poisonUpstream(message: Buffer, refusal: Buffer): void {
    this.sendUp(message);
    this.upstreamUnnamed = undefined;
    this.expect({ k: 'poison', bytes: refusal });
  }

  // ------------------------------------------------------------------ reply queue

  private expect(p: Pending): void {
    this.pending.push(p);
  }

  private pendingCount(): number {
    return this.pending.length - this.pendingHead;
  }

  /** Queues replies produced by the proxy itself; `endsBatch` adds a ReadyForQuery (simple query). */
  private answerLocally(bytes: Buffer[], endsBatch: boolean): void {
    if (endsBatch) this.syncSeq++;
    if (this.pendingCount() === 0) {
      this.writeClient(endsBatch ? [...bytes, readyForQuery(this.status)] : bytes);
      return;
    }
    this.pending.push({ k: 'local', bytes, endsBatch });
  }

  private head(): Pending | undefined {
    return this.pendingHead < this.pending.length ? this.pending[this.pendingHead] : undefined;
  }

  private pop(): void {
    this.pending[this.pendingHead++] = undefined as unknown as Pending;
    if (this.pendingHead > 1024 && this.pendingHead * 2 > this.pending.length) {
      this.pending.splice(0, this.pendingHead);
      this.pendingHead = 0;
    }
    if (this.idleWaiters.length && this.pendingCount() === 0) this.wakeIdleWaiters();
  }

  /** Resolves once every reply expected from upstream has arrived (or the session closed). */
  private whenUpstreamIdle(): Promise<void> {
    if (this.pendingCount() === 0 || this.closed) return Promise.resolve();
    // Within an unfinished extended batch PostgreSQL holds its replies until Sync or Flush.
    const last = this.pending[this.pending.length - 1]!;
    if (last.k !== 'sync' && last.k !== 'query') {
      this.sendUp(flushMessage);
      this.flushUpstream();
    }
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }

  private wakeIdleWaiters(): void {
    const waiters = this.idleWaiters;
    this.idleWaiters = [];
    for (const w of waiters) w();
  }

  /** Local replies that reached the head of the queue, in order. */
  private takeLocals(out: Buffer[]): void {
    for (let h = this.head(); h && h.k === 'local'; h = this.head()) {
      out.push(...h.bytes);
      if (h.endsBatch) out.push(readyForQuery(this.status));
      this.pop();
    }
  }

  // ------------------------------------------------------------------ upstream -> client

  private onUpstreamData(chunk: Buffer): void {
    let buf = chunk;
    if (this.upTail) {
      buf = Buffer.concat([this.upTail, chunk]);
      this.upTail = null;
    }
    const out: Buffer[] = [];
    let off = 0;
    let fwd = 0; // start of the range still to forward unchanged
    if (this.streamRemaining > 0) {
      const n = Math.min(this.streamRemaining, buf.length);
      if (this.streamCopy) this.copyOut?.reader.push(buf.subarray(0, n));
      this.streamRemaining -= n;
      if (this.streamRemaining === 0) this.streamCopy = false;
      off = n;
    }
    while (off < buf.length) {
      if (buf.length - off < 5) {
        this.upTail = Buffer.from(buf.subarray(off));
        break;
      }
      const type = buf[off]!;
      const end = off + 1 + buf.readInt32BE(off + 1);
      if (type === Back.DataRow && !this.rowPlan()) {
        // The hot path: rows pass through as slices, across chunk boundaries if need be.
        if (end > buf.length) {
          this.streamRemaining = end - buf.length;
          off = buf.length;
          break;
        }
        off = end;
        continue;
      }
      if (type === Back.CopyData) {
        // Likewise; a COPY whose keys are read sees the same bytes, whole or in parts, as they pass.
        if (this.copyOut) this.copyOut.reader.push(buf.subarray(off + 5, Math.min(end, buf.length)));
        if (end > buf.length) {
          this.streamRemaining = end - buf.length;
          this.streamCopy = this.copyOut !== undefined;
          off = buf.length;
          break;
        }
        off = end;
        continue;
      }
      if (end > buf.length) {
        this.upTail = Buffer.from(buf.subarray(off));
        break;
      }
      const action = this.onBackendMessage(type, buf.subarray(off + 5, end));
      if (action !== 'forward') {
        if (fwd < off) out.push(buf.subarray(fwd, off));
        if (action !== 'drop') out.push(action);
        fwd = end;
      }
      if (this.head()?.k === 'local') {
        if (fwd < end) out.push(buf.subarray(fwd, end));
        fwd = end;
        this.takeLocals(out);
      }
      off = end;
    }
    const stop = this.upTail ? buf.length - this.upTail.length : off;
    if (fwd < stop) out.push(buf.subarray(fwd, stop));
    if (out.length) this.writeClient(out);
  }

  private writeClient(parts: Buffer[]): void {
    if (this.closed) return;
    // One write per chunk: a copy of a few kilobytes costs less than a writev of many slices.
    const ok = this.client.write(parts.length === 1 ? parts[0]! : Buffer.concat(parts));
    if (!ok) this.upstream.pause();
  }

  /** Returns 'forward' to pass the message unchanged, 'drop' to hide it, or replacement bytes. */
  private onBackendMessage(type: number, body: Buffer): 'forward' | 'drop' | Buffer {
    const h = this.head();
    switch (type) {
      case Back.ParseComplete:
        if (h?.k === 'parse') {
          this.pop();
          return h.hidden ? 'drop' : 'forward';
        }
        return 'forward';
      case Back.BindComplete:
        if (h?.k === 'bind') {
          this.pop();
          return h.hidden ? 'drop' : 'forward';
        }
        return 'forward';
      case Back.CloseComplete:
        if (h?.k === 'close') this.pop();
        return 'forward';
      case Back.ParameterDescription:
        return h?.k === 'describe' && h.hidden ? 'drop' : 'forward';
      case Back.RowDescription: {
        const plan = h && (h.k === 'describe' || h.k === 'query') ? h.plan : undefined;
        let out: Buffer | 'forward' | 'drop' = plan ? this.maskRowDescription(body, plan) : 'forward';
        // RETURNING added only to learn the subjects: the client expected no rows at all.
        if (plan?.subjects?.dropAll) out = h?.k === 'describe' ? noData : 'drop';
        if (h?.k === 'describe') {
          this.pop();
          return h.hidden ? 'drop' : out;
        }
        return out;
      }
      case Back.NoData:
        if (h?.k === 'describe') {
          this.pop();
          return h.hidden ? 'drop' : 'forward';
        }
        return 'forward';
      case Back.DataRow: {
        const plan = this.rowPlan();
        if (!plan) return 'forward';
        const exec = h && (h.k === 'execute' || h.k === 'query') ? h.exec : undefined;
        const sp = plan.subjects;
        if (sp && exec?.subjectKeys) collectSubjectKeys(body, sp, exec.subjectKeys);
        if (sp?.dropAll) return 'drop';
        return maskDataRow(body, plan.columns, sp?.hidden.length ?? 0);
      }
      case Back.NoticeResponse:
        // A notice during a statement over masked tables may quote a value: withheld.
        return h && (h.k === 'query' || h.k === 'execute') && h.plan ? 'drop' : 'forward';
      case Back.CommandComplete: {
        const rows = rowsFromTag(new Reader(body).cstring());
        if (h?.k === 'execute') {
          h.exec.rows = rows;
          this.pop();
          this.complete(h.exec);
        } else if (h?.k === 'query' && h.exec) h.exec.rows = (h.exec.rows ?? 0) + (rows ?? 0);
        return 'forward';
      }
      case Back.EmptyQueryResponse:
      case Back.PortalSuspended:
        if (h?.k === 'execute') {
          this.pop();
          this.complete(h.exec);
        }
        return 'forward';
      case Back.CopyInResponse:
        this.copyIn = true;
        return 'forward';
      case Back.CopyOutResponse: {
        // COPY … TO STDOUT in text or CSV with the key in its output: read the keys from its rows.
        const sp = h && (h.k === 'query' || h.k === 'execute') ? h.plan?.subjects : undefined;
        const exec = h && (h.k === 'query' || h.k === 'execute') ? h.exec : undefined;
        if (!sp?.copy || !exec) return 'forward';
        const reader = CopyKeyReader.start(sp, body);
        if (typeof reader === 'string') {
          exec.subjectsPossible ??= {};
          for (const s of new Set(sp.capture.values())) exec.subjectsPossible[s] = `keys unknown (${reader}): every row the statement's predicate matched`;
        } else this.copyOut = { reader, exec };
        return 'forward';
      }
      case Back.CopyDone:
        this.endCopyOut();
        return 'forward';
      case Back.ErrorResponse:
        this.copyIn = false;
        this.endCopyOut();
        return this.onBackendError(body, h);
      case Back.ParameterStatus: {
        // The analysis assumes UTF-8 and standard strings; if either changes, the proxy and the
        // server could read a statement differently: end the session.
        const r = new Reader(body);
        const name = r.cstring();
        const value = r.cstring();
        if ((name === 'client_encoding' && !/^utf-?8$/i.test(value)) || (name === 'standard_conforming_strings' && value !== 'on')) {
          queueMicrotask(() => this.terminate('22023', `${name} changed to ${value}: not supported through Scalple`));
          return 'drop';
        }
        return 'forward';
      }
      case Back.ReadyForQuery: {
        this.status = String.fromCharCode(body[0] ?? 0x49) as TxStatus;
        if (h?.k === 'query' || h?.k === 'sync') {
          this.pop();
          if (h.k === 'query' && h.exec) this.complete(h.exec);
          this.endOfBatch(h.seq);
        }
        return 'forward';
      }
      default:
        return 'forward';
    }
  }

  private onBackendError(body: Buffer, h: Pending | undefined): 'forward' | Buffer {
    if (h?.k === 'poison') {
      this.pop();
      this.skipToSync();
      return h.bytes;
    }
    const fields = decodeFields(body);
    const severity = fields.get('V') ?? fields.get('S');
    const scrub = h && (h.k === 'query' || h.k === 'execute' || h.k === 'describe') && h.plan?.scrub;
    let tagLength = 0;
    if (h?.k === 'query' && h.exec) {
      h.exec.sqlstate ??= fields.get('C');
      h.exec.error ??= fields.get('M');
      tagLength = h.exec.tagLength;
    } else if (h && h.k !== 'sync' && h.k !== 'local') {
      // The server skips the rest of the batch, pending Parses included.
      this.upstreamUnnamed = undefined;
      if (h.k === 'execute') {
        h.exec.sqlstate = fields.get('C');
        h.exec.error = fields.get('M');
        this.complete(h.exec);
        tagLength = h.exec.tagLength;
      } else if (h.k === 'parse') tagLength = h.tagLength;
      this.pop();
      this.skipToSync();
    }
    if (severity === 'FATAL' || severity === 'PANIC') this.ctx.logger.warn({ session: this.id, code: fields.get('C'), message: fields.get('M') }, 'upstream ended the session');
    let changed = false;
    if (scrub) {
      // Errors can echo a masked value ("invalid input syntax … '123-45-6789'", "Failing row
      // contains …"): quoted text is withheld and detail, hint and context dropped.
      fields.set('M', (fields.get('M') ?? '').replace(/"[^"]*"|'[^']*'|\([^)]*\)/g, '"…"') + ' (details withheld: the statement reads masked columns)');
      for (const k of ['D', 'H', 'W', 'q', 'p']) fields.delete(k);
      changed = true;
    }
    // Positions point into the text the client sent, not into our tagged copy.
    const pos = fields.get('P');
    if (pos && tagLength) {
      fields.set('P', String(Math.max(1, Number(pos) - tagLength)));
      changed = true;
    }
    return changed ? encodeFields(fields, Back.ErrorResponse) : 'forward';
  }

  /** The server skips everything up to Sync after an error; so do we. */
  private skipToSync(): void {
    for (let p = this.head(); p && p.k !== 'sync'; p = this.head()) {
      if ((p.k === 'execute' || p.k === 'query') && p.exec) this.complete(p.exec, '57014', 'skipped after an earlier error');
      this.pop();
    }
  }

  /** The masks for rows arriving now, when any column is masked. */
  private rowPlan(): ActivePlan | undefined {
    const h = this.head();
    if (!h || (h.k !== 'execute' && h.k !== 'query') || !h.plan) return undefined;
    const sp = h.plan.subjects;
    return h.plan.columns.some(Boolean) || (sp && (sp.capture.size || sp.hidden.length)) ? h.plan : undefined;
  }

  /**
   * Completes the plan with what PostgreSQL says each column is (table OID, attnum): a column that
   * comes straight from a masked column is masked even if the lineage missed it. Masked columns are
   * re-described as text.
   */
  private maskRowDescription(body: Buffer, plan: ActivePlan): Buffer | 'forward' {
    const hidden = plan.subjects?.hidden.length ?? 0;
    const all = parseRowDescription(body);
    // Hidden subject-key columns are the last ones: the client never sees them.
    const fields = hidden ? all.slice(0, Math.max(0, all.length - hidden)) : all;
    const columns: (ColumnMask | undefined)[] = [];
    const lineageKnown = plan.base.length === fields.length;
    for (let i = 0; i < fields.length; i++) {
      const f = fields[i]!;
      let m = lineageKnown ? plan.base[i] : undefined;
      if (!m && f.tableOid) m = maskForOrigin(this.ctx.analyzer.columnOf(f.tableOid, f.attnum), this.role, this.ctx.gate.maskKey);
      // The lineage says something was masked but not where: everything is redacted.
      if (!m && !lineageKnown && plan.base.some(Boolean)) m = { label: 'redacted', fn: () => '[redacted]' };
      columns.push(m);
    }
    plan.columns = columns;
    this.lastMasked = fields.flatMap((f, i) => (columns[i] ? [{ column: f.name.toString('utf8'), source: columns[i]!.source ?? '', mask: columns[i]!.label }] : []));
    if (!columns.some(Boolean) && !hidden) return 'forward';
    return encodeRowDescription(fields.map((f, i) => (columns[i] ? { ...f, tableOid: 0, attnum: 0, typeOid: 25, typlen: -1, typmod: -1, format: 0 } : f)));
  }

  /** The COPY TO STDOUT being read ended (CopyDone or an error): its keys go to its execution. */
  private endCopyOut(): void {
    if (!this.copyOut) return;
    this.copyOut.reader.finish(this.copyOut.exec);
    this.copyOut = undefined;
    this.streamCopy = false;
  }

  private startSubjects(exec: Execution, plan: SubjectPlan | undefined): void {
    if (!plan) return;
    if (plan.capture.size || plan.hidden.length) exec.subjectKeys = new Set();
    if (plan.possible.size) exec.subjectsPossible = Object.fromEntries(plan.possible);
  }

  /** A ReadyForQuery ended the batch `seq`: per-transaction settings end with the transaction. */
  private endOfBatch(seq: number): void {
    if (this.status !== 'I') return;
    // Named portals live only as long as their transaction.
    for (const name of [...this.portals.keys()]) if (name !== '') this.portals.delete(name);
    if (this.ddlInTransaction) {
      this.ddlInTransaction = false;
      this.ctx.analyzer.schemaChanged();
    }
    if (this.actingFor && seq >= this.actingFor.untilSeq) this.actingFor = undefined;
    if (this.localReason && seq >= this.localReason.untilSeq) this.localReason = undefined;
  }

  private complete(exec: Execution, sqlstate?: string, error?: string): void {
    const durationMs = Number(process.hrtime.bigint() - exec.started) / 1e6;
    if (sqlstate) {
      exec.sqlstate ??= sqlstate;
      exec.error ??= error;
    }
    this.ctx.audit.completion({
      type: 'completion',
      logId: exec.logId,
      ts: new Date(),
      sessionId: this.id,
      rows: exec.rows,
      ...(exec.sqlstate ? { sqlstate: exec.sqlstate } : {}),
      ...(exec.error ? { error: exec.error } : {}),
      durationMs,
      ...(exec.subjectKeys?.size ? { subjectKeys: [...exec.subjectKeys] } : {}),
      ...(exec.subjectsPossible ? { subjectsPossible: exec.subjectsPossible } : {}),
    });
    this.ctx.metrics.observe(durationMs, exec.sqlstate !== undefined);
    if (this.ctx.alerts && !exec.sqlstate) {
      const who = this.actingFor?.principal ?? this.principal;
      this.ctx.alerts.observe({
        ts: new Date(),
        logId: exec.logId,
        sub: who.sub,
        ...(who.email ? { email: who.email } : {}),
        groups: who.groups,
        subjectKeys: [...(exec.subjectKeys ?? []), ...Object.keys(exec.subjectsPossible ?? {}).map((s) => `${s}:*`)],
        readsPii: exec.readsPii ?? false,
        ...(this.currentReason() ? { reason: this.currentReason()! } : {}),
        requireReason: this.role.requireReason,
        statement: exec.statement ?? '',
      });
    }
    if (exec.ddl && !exec.sqlstate) {
      this.ctx.analyzer.schemaChanged();
      // The catalog is read on another connection: it sees this DDL only once it commits.
      this.ddlInTransaction = true;
    }
    if (exec.searchPath && !exec.sqlstate) this.searchPath = exec.searchPath;
  }
}

interface FieldDescription {
  name: Buffer;
  tableOid: number;
  attnum: number;
  typeOid: number;
  typlen: number;
  typmod: number;
  format: number;
}

function parseRowDescription(body: Buffer): FieldDescription[] {
  const n = body.readInt16BE(0);
  const out: FieldDescription[] = [];
  let off = 2;
  for (let i = 0; i < n; i++) {
    const end = body.indexOf(0, off);
    const name = body.subarray(off, end);
    off = end + 1;
    out.push({ name, tableOid: body.readUInt32BE(off), attnum: body.readInt16BE(off + 4), typeOid: body.readUInt32BE(off + 6), typlen: body.readInt16BE(off + 10), typmod: body.readInt32BE(off + 12), format: body.readInt16BE(off + 16) });
    off += 18;
  }
  return out;
}

function encodeRowDescription(fields: FieldDescription[]): Buffer {
  const size = 2 + fields.reduce((a, f) => a + f.name.length + 1 + 18, 0);
  const b = Buffer.allocUnsafe(5 + size);
  b[0] = Back.RowDescription;
  b.writeInt32BE(size + 4, 1);
  b.writeInt16BE(fields.length, 5);
  let off = 7;
  for (const f of fields) {
    f.name.copy(b, off);
    off += f.name.length;
    b[off++] = 0;
    b.writeUInt32BE(f.tableOid, off);
    b.writeInt16BE(f.attnum, off + 4);
    b.writeUInt32BE(f.typeOid, off + 6);
    b.writeInt16BE(f.typlen, off + 10);
    b.writeInt32BE(f.typmod, off + 12);
    b.writeInt16BE(f.format, off + 16);
    off += 18;
  }
  return b;
}

/** Reads the subject keys of one row: captured output columns and the hidden ones at the end. */
function collectSubjectKeys(body: Buffer, plan: SubjectPlan, into: Set<string>): void {
  const n = body.readInt16BE(0);
  const firstHidden = n - plan.hidden.length;
  let off = 2;
  for (let i = 0; i < n; i++) {
    const len = body.readInt32BE(off);
    const subject = i >= firstHidden ? plan.hidden[i - firstHidden] : plan.capture.get(i);
    if (subject && len >= 0) into.add(`${subject}:${keyText(body.subarray(off + 4, off + 4 + len))}`);
    off += 4 + Math.max(len, 0);
  }
}

/** A key as text: binary int4/int8 (a client asked for binary) decoded, anything else as UTF-8. */
function keyText(v: Buffer): string {
  if (v.length === 4 && v.some((b) => b < 0x20)) return String(v.readInt32BE(0));
  if (v.length === 8 && v.some((b) => b < 0x20)) return v.readBigInt64BE(0).toString();
  return v.toString('utf8');
}

/** Where Bind's result format codes start in the part after the statement name, and the codes. */
function resultFormats(rest: Buffer): { start: number; codes: number[] } {
  const r = new Reader(rest);
  const nParamFormats = r.int16();
  r.bytes(nParamFormats * 2);
  const nParams = r.int16();
  for (let i = 0; i < nParams; i++) {
    const len = r.int32();
    if (len > 0) r.bytes(len);
  }
  const start = r.offset;
  const n = r.int16();
  const codes: number[] = [];
  for (let i = 0; i < n; i++) codes.push(r.int16());
  return { start, codes };
}

function withResultFormats(rest: Buffer, start: number, codes: number[]): Buffer {
  const tail = Buffer.allocUnsafe(2 + codes.length * 2);
  tail.writeInt16BE(codes.length, 0);
  codes.forEach((c, i) => tail.writeInt16BE(c, 2 + i * 2));
  return Buffer.concat([rest.subarray(0, start), tail]);
}

/** Bind's result formats extended with text for the hidden subject-key columns. */
function withHiddenFormats(rest: Buffer, plan: SubjectPlan): Buffer {
  const { start, codes } = resultFormats(rest);
  // No codes (all text) or one code for all columns stays valid for the hidden ones too
  // (binary keys are decoded).
  if (codes.length <= 1) return rest;
  return withResultFormats(rest, start, [...codes, ...plan.hidden.map(() => 0)]);
}

/** A DataRow with the masked columns' values replaced and `hidden` trailing columns removed. */
function maskDataRow(body: Buffer, columns: readonly (ColumnMask | undefined)[], hidden = 0): Buffer {
  const n = body.readInt16BE(0) - hidden;
  // Pass 1: mask the values and size the row; pass 2: write it into one buffer. Unmasked runs of
  // columns are copied as they came.
  const masked: (string | null | undefined)[] = new Array(n);
  const byteLen: number[] = new Array(n);
  let off = 2;
  let size = 2;
  let end = 2;
  for (let i = 0; i < n; i++) {
    const len = body.readInt32BE(off);
    const valueEnd = off + 4 + Math.max(len, 0);
    const mask = columns[i];
    if (!mask || len < 0) size += valueEnd - off;
    else {
      const v = isConstantMask(mask.fn) ? mask.fn('') : mask.fn(body.toString('utf8', off + 4, valueEnd));
      masked[i] = v;
      const b = v === null ? 0 : Buffer.byteLength(v, 'utf8');
      byteLen[i] = b;
      size += 4 + b;
    }
    off = valueEnd;
  }
  end = off;
  const out = Buffer.allocUnsafe(5 + size);
  out[0] = Back.DataRow;
  out.writeInt32BE(size + 4, 1);
  out.writeInt16BE(n, 5);
  let pos = 7;
  off = 2;
  let runStart = 2; // start of the unmasked run not yet copied
  for (let i = 0; i < n; i++) {
    const len = body.readInt32BE(off);
    const valueEnd = off + 4 + Math.max(len, 0);
    const v = masked[i];
    if (v !== undefined) {
      if (runStart < off) pos += body.copy(out, pos, runStart, off);
      if (v === null) out.writeInt32BE(-1, pos);
      else {
        out.writeInt32BE(byteLen[i]!, pos);
        out.write(v, pos + 4, 'utf8');
      }
      pos += 4 + (v === null ? 0 : byteLen[i]!);
      runStart = valueEnd;
    }
    off = valueEnd;
  }
  if (runStart < end) body.copy(out, pos, runStart, end);
  return out;
}

/** Bind's result format codes with every masked column asked for as text. */
function textForMasked(rest: Buffer, columns: readonly (ColumnMask | undefined)[]): Buffer {
  const { start, codes } = resultFormats(rest);
  if (!codes.some((c) => c !== 0)) return rest;
  const per = codes.length === 1 ? columns.map(() => codes[0]!) : codes;
  return withResultFormats(rest, start, per.map((c, i) => (columns[i] ? 0 : c)));
}

/** Bind parameters as text for the audit record (binary ones as \x hex), each capped in length. */
function decodeBindParams(rest: Buffer): (string | null)[] {
  try {
    const r = new Reader(rest);
    const nFormats = r.int16();
    const formats: number[] = [];
    for (let i = 0; i < nFormats; i++) formats.push(r.int16());
    const n = r.int16();
    const out: (string | null)[] = [];
    for (let i = 0; i < n; i++) {
      const len = r.int32();
      if (len < 0) {
        out.push(null);
        continue;
      }
      const bytes = r.bytes(len);
      const binary = (nFormats === 1 ? formats[0] : formats[i]) === 1;
      const s = binary ? '\\x' + bytes.subarray(0, MAX_PARAM_CHARS / 2).toString('hex') : bytes.toString('utf8', 0, Math.min(len, MAX_PARAM_CHARS * 4));
      out.push(s.length > MAX_PARAM_CHARS ? s.slice(0, MAX_PARAM_CHARS) + '…' : s);
    }
    return out;
  } catch {
    return [];
  }
}

export { encodeTagValue };
