// Schema changes made outside the proxy (a migration, a DBA in psql) reach the catalog cache at
// once: an event trigger in the upstream database notifies channel `scalple_ddl` at the end of
// every DDL command, and the proxy LISTENs on a direct connection. Without the trigger (or while
// the connection is down) the cache falls back to its TTL, and the proxy says so in its log.
import pg from 'pg';
import type { Logger } from 'pino';
import { errorMessage } from '../errors.ts';

export const DDL_CHANNEL = 'scalple_ddl';
const TRIGGER = 'scalple_ddl_notify';

/** Installed by `scalple catalog install --admin-url URL` (a superuser of the upstream database). */
export const CATALOG_TRIGGER_SQL = `
CREATE OR REPLACE FUNCTION public.scalple_ddl_notify() RETURNS event_trigger LANGUAGE plpgsql
  SET search_path = pg_catalog AS $$
BEGIN
  PERFORM pg_catalog.pg_notify('${DDL_CHANNEL}', tg_tag);
END
$$;
DROP EVENT TRIGGER IF EXISTS ${TRIGGER};
CREATE EVENT TRIGGER ${TRIGGER} ON ddl_command_end EXECUTE FUNCTION public.scalple_ddl_notify();
`;

export interface CatalogWatch {
  /** Whether notifications are being received right now (trigger present, connection up). */
  readonly live: boolean;
  close(): Promise<void>;
}

/**
 * LISTENs on `url` (direct PostgreSQL, the upstream's database: notifications are per database
 * and do not pass a transaction pooler) and calls `changed` on every DDL notification, and also
 * whenever the connection is lost or regained (notifications may have been missed meanwhile).
 */
export function watchCatalog(url: string, changed: () => void, logger: Logger): CatalogWatch {
  let client: pg.Client | undefined;
  let closed = false;
  let live = false;
  let retryMs = 1000;
  let timer: NodeJS.Timeout | undefined;
  let warnedMissing = false;

  const schedule = (): void => {
    if (closed || timer) return;
    timer = setTimeout(() => {
      timer = undefined;
      void connect();
    }, retryMs);
    timer.unref();
    retryMs = Math.min(retryMs * 2, 30_000);
  };

  const lost = (why: string): void => {
    if (live) logger.warn({ err: why }, 'catalog watch connection lost; schema changes made outside Scalple are seen within the catalog TTL until it is back');
    live = false;
    client = undefined;
    changed();
    schedule();
  };

  const connect = async (): Promise<void> => {
    if (closed) return;
    const c = new pg.Client({ connectionString: url, application_name: 'scalple-catalog-watch' });
    // Known to close() from now on, so a connect still in flight at shutdown is ended too.
    client = c;
    c.on('error', (err) => {
      if (client === c && !closed) lost(errorMessage(err));
    });
    c.on('end', () => {
      if (client === c && !closed) lost('connection ended');
    });
    c.on('notification', (n) => {
      if (n.channel === DDL_CHANNEL) changed();
    });
    try {
      await c.connect();
      const r = await c.query<{ n: string }>(`SELECT count(*) AS n FROM pg_event_trigger WHERE evtname = '${TRIGGER}' AND evtenabled <> 'D'`);
      await c.query(`LISTEN ${DDL_CHANNEL}`);
      if (closed) return;
      retryMs = 1000;
      if (Number(r.rows[0]?.n) === 0) {
        if (!warnedMissing) logger.warn('the scalple_ddl_notify event trigger is not installed upstream: schema changes made outside Scalple are seen within the catalog TTL (60 s); install it with `scalple catalog install --admin-url URL`');
        warnedMissing = true;
        live = false;
      } else {
        live = true;
        logger.info('watching the upstream catalog for schema changes');
      }
      // Anything may have changed while nobody listened.
      changed();
    } catch (err) {
      if (client === c) client = undefined;
      await c.end().catch(() => undefined);
      if (closed) return;
      if (!warnedMissing) logger.warn({ err: errorMessage(err) }, 'catalog watch could not connect; retrying');
      warnedMissing = true;
      schedule();
    }
  };

  void connect();
  return {
    get live() {
      return live;
    },
    async close() {
      closed = true;
      if (timer) clearTimeout(timer);
      const c = client;
      client = undefined;
      await c?.end().catch(() => undefined);
    },
  };
}

/** Installs the event trigger (needs a superuser connection to the upstream database). */
export async function installCatalogTrigger(adminUrl: string): Promise<void> {
  const c = new pg.Client({ connectionString: adminUrl });
  await c.connect();
  try {
    await c.query(CATALOG_TRIGGER_SQL);
  } finally {
    await c.end();
  }
}
