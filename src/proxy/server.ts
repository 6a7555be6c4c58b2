// The proxy: accepts PostgreSQL clients, proves who they are, opens their upstream connection with
// the shared credential, and hands the pair to a Session. Also owns cancel routing (our own
// BackendKeyData mapped to the upstream's), the revocation sweep, and the HTTP probes.
import net from 'node:net';
import tls from 'node:tls';
import { readFileSync } from 'node:fs';
import { randomInt, randomUUID, X509Certificate } from 'node:crypto';
import type { AddressInfo } from 'node:net';
import type { Server as HttpServer } from 'node:http';
import pino, { type Logger } from 'pino';
import type { ScalpleConfig } from '../policy/config.ts';
import type { AuditSink } from '../audit/record.ts';
import { ScalpleError, errorMessage } from '../errors.ts';
import { IdentityVerifier } from './identity.ts';
import { runClientStartup } from './client-startup.ts';
import { connectUpstream, parseUpstreamUrl, sendCancel, type UpstreamTarget } from './upstream.ts';
import { Session, type SessionContext } from './session.ts';
import { authenticationOk, backendKeyData, errorResponse, readyForQuery } from './protocol.ts';
import type { StatementAnalyzer } from './statement-info.ts';
import { createAnalyzer } from './analyzer.ts';
import { PolicyGate } from './policy-gate.ts';
import { createRecordStream, type RecordStream } from '../audit/stream.ts';
import { LiveAlerts } from '../audit/alerts.ts';
import { parseAnomaliesConfig } from '../audit/anomalies.ts';
import { Metrics } from './metrics.ts';
import { startHttp } from './http.ts';
import { watchCatalog } from './catalog-watch.ts';

export interface ProxyDeps {
  audit: AuditSink;
  analyzer?: StatementAnalyzer;
  logger?: Logger;
}

export interface RunningProxy {
  host: string;
  port: number;
  httpPort?: number;
  /** Live sessions (for tests and the revocation sweep). */
  sessionCount(): number;
  /** Re-reads the policy part of a new config (SIGHUP). */
  reload(config: ScalpleConfig): void;
  /** Schema changes announced by the database (catalog watch) so far. */
  catalogChanges(): number;
  /** Resolves once more than `after` schema changes have been announced. */
  whenCatalogChanged(after: number): Promise<void>;
  close(): Promise<void>;
}

interface CancelTarget {
  session: Session;
  upstreamKey: { pid: number; secret: number } | undefined;
  target: UpstreamTarget;
}

/**
 * Startup parameters a client may pass upstream. Never `options`, `search_path` or anything that
 * changes how the server reads statement text: the proxy's analysis assumes UTF-8 and standard
 * strings, and a differing lexer would let a statement mean one thing to the proxy and another to
 * PostgreSQL.
 */
const FORWARDED_PARAMS = new Set(['application_name', 'DateStyle', 'TimeZone', 'IntervalStyle', 'extra_float_digits']);
const FORWARDED_BEHIND_POOLER = new Set(['application_name', 'DateStyle', 'TimeZone', 'IntervalStyle']);

/** Every record the store takes is also written as a JSON line (audit.stream), for a SIEM. */
function teeToStream(sink: AuditSink, stream: RecordStream): AuditSink {
  return {
    intent: (r) => sink.intent(r).then(() => stream.write(r)),
    completion: (r) => {
      sink.completion(r);
      stream.write(r);
    },
    event: (r) => sink.event(r).then(() => stream.write(r)),
    healthy: () => sink.healthy(),
    whenRoom: (ms) => sink.whenRoom(ms),
    isRevoked: (p) => sink.isRevoked(p),
    activeGrants: (p) => sink.activeGrants(p),
    revoke: (i) => sink.revoke(i),
    restore: (i) => sink.restore(i),
    grant: (i) => sink.grant(i),
    close: () => sink.close(),
  };
}

export async function startProxy(initial: ScalpleConfig, deps: ProxyDeps): Promise<RunningProxy> {
  let config = initial;
  const stream = config.audit.stream ? createRecordStream(config.audit.stream) : undefined;
  const audit = stream ? teeToStream(deps.audit, stream) : deps.audit;
  const logger = deps.logger ?? pino({ name: 'scalple' }, pino.destination(2));
  const metrics = new Metrics();
  const verifier = new IdentityVerifier(config.identity, config.applications);
  const gate = new PolicyGate(config);
  const analyzer = deps.analyzer ?? (await createAnalyzer({ poolMode: config.upstreamPoolMode, upstreamUrl: config.upstream, logger, shareable: (info) => !gate.subjectPlan(info)?.upstreamSql }));
  const watchUrl = config.catalogWatchUrl ?? (config.upstreamPoolMode === 'transaction' ? undefined : config.upstream);
  let catalogChanges = 0;
  let catalogWaiters: { after: number; resolve: () => void }[] = [];
  const schemaChangedElsewhere = (): void => {
    analyzer.schemaChanged();
    catalogChanges++;
    const due = catalogWaiters.filter((w) => w.after < catalogChanges);
    catalogWaiters = catalogWaiters.filter((w) => w.after >= catalogChanges);
    for (const w of due) w.resolve();
  };
  const catalogWatch = watchUrl ? watchCatalog(watchUrl, schemaChangedElsewhere, logger) : undefined;
  if (!watchUrl) logger.warn('no catalog.watch_url (a direct connection to the upstream database, needed behind a transaction pooler): schema changes made outside Scalple are seen within the catalog TTL (60 s)');
  const upstream: UpstreamTarget = parseUpstreamUrl(config.upstream);
  const upstreamReadonly: UpstreamTarget | undefined = config.upstreamReadonly ? parseUpstreamUrl(config.upstreamReadonly) : undefined;
  const secureContext = config.tls
    ? tls.createSecureContext({
        cert: readFileSync(config.tls.cert),
        key: readFileSync(config.tls.key),
        ...(config.tls.clientCa ? { ca: readFileSync(config.tls.clientCa) } : {}),
      })
    : undefined;
  // PEM bundle -> certificates (a bundle may hold several CAs).
  const clientCas = config.tls?.clientCa
    ? (readFileSync(config.tls.clientCa, 'utf8').match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g) ?? []).map((pem) => new X509Certificate(pem))
    : [];
  const anomalies = config.policy.anomalies !== undefined ? parseAnomaliesConfig(config.policy.anomalies) : undefined;
  const alerts = anomalies ? new LiveAlerts(anomalies, { log: (o) => logger.warn(o, 'scalple alert') }, anomalies.alerts.webhookUrl) : undefined;
  const ctx: SessionContext = { config, audit, analyzer, verifier, logger, metrics, gate, ...(alerts ? { alerts } : {}) };
  const sessions = new Set<Session>();
  const cancelKeys = new Map<string, CancelTarget>();

  const server = net.createServer({ noDelay: true, pauseOnConnect: true }, (socket) => {
    void accept(socket);
  });

  async function accept(raw: net.Socket): Promise<void> {
    raw.setNoDelay(true);
    raw.on('error', () => undefined);
    const clientAddr = `${raw.remoteAddress ?? '?'}:${raw.remotePort ?? 0}`;
    let socket: net.Socket = raw;
    const timer = setTimeout(() => {
      logger.info({ client: clientAddr }, 'startup timed out');
      raw.destroy();
    }, config.startupTimeoutMs);
    try {
      const outcome = await runClientStartup(raw, {
        ...(secureContext ? { secureContext } : {}),
        tlsRequired: config.tls?.mode === 'required',
        requestClientCert: !!config.tls?.clientCa,
        clientCas,
        allowPlaintextPassword: config.identity.allowPlaintextPassword,
        verifier,
      }, (s) => {
        socket = s;
      });
      if (outcome.kind === 'cancel') {
        clearTimeout(timer);
        raw.destroy();
        const target = cancelKeys.get(`${outcome.pid}:${outcome.secret}`);
        logger.info({ client: clientAddr, session: target?.session.id, known: !!target }, 'cancel request');
        if (target?.upstreamKey) await sendCancel(target.target, target.upstreamKey).catch((err) => logger.warn({ err: errorMessage(err) }, 'cancel failed'));
        return;
      }
      socket = outcome.socket;
      // The client has proven who it is: the startup timeout was for it; upstream has its own.
      clearTimeout(timer);
      const { principal, expiresAt } = outcome.identity;
      if (await ctx.audit.isRevoked(principal)) throw new ScalpleError('AUTH_FAILED', 'access revoked: ask your administrator', { sqlstate: '28000' });
      const grants = await ctx.audit.activeGrants(principal);
      const role = gate.roleFor(principal, grants.map((g) => g.role));
      if ('refused' in role) throw new ScalpleError('AUTH_FAILED', role.refused, { sqlstate: '28000' });
      const enc = outcome.params.client_encoding;
      if (enc && !/^(utf-?8|unicode)$/i.test(enc.replace(/'/g, ''))) {
        throw new ScalpleError('PROTOCOL', `client_encoding ${enc} is not supported through Scalple: use UTF8`, { sqlstate: '22023' });
      }
      const scs = outcome.params.standard_conforming_strings;
      if (scs && !/^(on|true|1)$/i.test(scs)) throw new ScalpleError('PROTOCOL', 'standard_conforming_strings must stay on through Scalple', { sqlstate: '22023' });
      const allowed = config.upstreamPoolMode === 'none' ? FORWARDED_PARAMS : FORWARDED_BEHIND_POOLER;
      const forwarded: Record<string, string> = {};
      for (const [k, v] of Object.entries(outcome.params)) if (allowed.has(k)) forwarded[k] = v;
      forwarded.client_encoding = 'UTF8';
      // Read-only roles: PostgreSQL itself refuses their writes, through a read-only upstream role,
      // or (straight to PostgreSQL) read-only transactions by default for the session.
      const target = !role.write && upstreamReadonly ? upstreamReadonly : upstream;
      if (!role.write && !upstreamReadonly && config.upstreamPoolMode === 'none') forwarded.default_transaction_read_only = 'on';
      const up = await connectUpstream(target, forwarded, config.startupTimeoutMs);
      clearTimeout(timer);
      const id = randomUUID();
      const pid = randomInt(1, 2 ** 31 - 1);
      const secret = randomInt(0, 2 ** 31 - 1);
      const session = new Session(
        {
          id,
          client: socket,
          upstream: up.socket,
          principal,
          expiresAt,
          clientAddr,
          applicationName: outcome.params.application_name ?? '',
          dbRole: target.user,
          database: target.database,
          status: up.status,
          settings: outcome.settings,
          role,
          grants,
        },
        ctx,
      );
      const key = `${pid}:${secret}`;
      cancelKeys.set(key, { session, upstreamKey: up.backendKey, target });
      sessions.add(session);
      metrics.sessionOpened();
      session.onClose = () => {
        sessions.delete(session);
        cancelKeys.delete(key);
      };
      socket.cork();
      socket.write(authenticationOk);
      for (const m of up.relay) socket.write(m);
      socket.write(backendKeyData(pid, secret));
      socket.write(readyForQuery(up.status));
      socket.uncork();
      logger.info({ session: id, sub: principal.sub, email: principal.email, kind: principal.kind, client: clientAddr, tls: outcome.tls }, 'session started');
      session.start(outcome.leftover, up.leftover);
    } catch (err) {
      clearTimeout(timer);
      const e = err instanceof ScalpleError ? err : undefined;
      const sqlstate = e?.sqlstate ?? '08P01';
      if (sqlstate === '28000') metrics.authFailed();
      logger.info({ client: clientAddr, sqlstate, err: errorMessage(err) }, 'connection refused');
      // Only our own messages go back: never an upstream detail to an unauthenticated client.
      const message = e ? e.message : `protocol violation: ${errorMessage(err)}`;
      if (!socket.destroyed && socket.writable) socket.end(errorResponse({ severity: 'FATAL', code: sqlstate, message }));
      else socket.destroy();
    }
  }

  // Revoked people lose their live sessions within one sweep, even with a valid token.
  const sweep = setInterval(() => {
    void (async () => {
      const bySub = new Map<string, Session[]>();
      for (const s of sessions) bySub.set(s.principal.sub, [...(bySub.get(s.principal.sub) ?? []), s]);
      for (const list of bySub.values()) {
        try {
          if (await ctx.audit.isRevoked(list[0]!.principal)) for (const s of list) s.terminate('28000', 'access revoked: ask your administrator');
        } catch (err) {
          logger.warn({ err: errorMessage(err) }, 'revocation check failed');
        }
      }
    })();
  }, config.identity.revocationCheckMs);
  sweep.unref();

  await new Promise<void>((resolve, reject) => {
    server.once('error', (err) => reject(new ScalpleError('CONFIG', `cannot listen on ${config.listen.host}:${config.listen.port}: ${err.message}`)));
    server.listen(config.listen.port, config.listen.host, () => resolve());
  });
  const addr = server.address() as AddressInfo;

  let http: { server: HttpServer; port: number } | undefined;
  if (config.http) {
    http = await startHttp(config.http.host, config.http.port, {
      ready: async () => {
        const auditOk = ctx.audit.healthy();
        const upstreamOk = await new Promise<boolean>((resolve) => {
          const s = net.connect({ host: upstream.host, port: upstream.port });
          const t = setTimeout(() => {
            s.destroy();
            resolve(false);
          }, 2000);
          s.once('connect', () => {
            clearTimeout(t);
            s.destroy();
            resolve(true);
          });
          s.once('error', () => {
            clearTimeout(t);
            resolve(false);
          });
        });
        return { ok: auditOk && upstreamOk, detail: { audit: auditOk, upstream: upstreamOk } };
      },
      metrics: () => metrics.render(),
    });
  }
  logger.info({ listen: `${addr.address}:${addr.port}`, upstream: `${upstream.host}:${upstream.port}`, pool_mode: config.upstreamPoolMode, durability: config.audit.durability, tls: config.tls?.mode ?? 'off', http: http?.port }, 'proxy listening');

  return {
    host: addr.address,
    port: addr.port,
    ...(http ? { httpPort: http.port } : {}),
    sessionCount: () => sessions.size,
    catalogChanges: () => catalogChanges,
    whenCatalogChanged: (after: number) => (catalogChanges > after ? Promise.resolve() : new Promise<void>((resolve) => catalogWaiters.push({ after, resolve }))),
    reload(next: ScalpleConfig) {
      gate.reload(next);
      config = next;
      ctx.config = next;
      logger.info({ policy_version: next.policyVersion }, 'policy reloaded');
    },
    async close() {
      clearInterval(sweep);
      await new Promise<void>((resolve) => {
        server.close(() => resolve());
        for (const s of [...sessions]) s.terminate('57P01', 'the proxy is shutting down');
      });
      if (http) await new Promise<void>((resolve) => http!.server.close(() => resolve()));
      await catalogWatch?.close();
      await analyzer.close();
      await alerts?.drain();
      await stream?.close();
    },
  };
}
