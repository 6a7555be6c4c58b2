// Shared set-up for the src/sql tests: a throwaway PostgreSQL 15 with a small sample schema
// (customers, orders, payments, a view over customers, a view over that view, a materialized view,
// a second schema with a same-named table, and a "$user" schema), reached as an ordinary role.
import pg from 'pg';
import { afterAll, beforeAll } from 'vitest';
import { Catalog, ensureParser } from '../../src/sql/index.ts';
import { startPostgres, superQuery, type PostgresServer } from '../support/services.ts';

export const APP_USER = 'app_user';
export const APP_PASSWORD = 'app-secret';
export const DB = 'app';

export const SCHEMA_SQL = `
CREATE TABLE customers (
  id serial PRIMARY KEY,
  email text NOT NULL,
  iban text,
  ssn text,
  date_of_birth date,
  phone text,
  region text,
  created_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE orders (id serial PRIMARY KEY, customer_id int NOT NULL REFERENCES customers, total numeric(12,2), created_at timestamptz NOT NULL DEFAULT now());
CREATE TABLE payments (id serial PRIMARY KEY, customer_id int NOT NULL REFERENCES customers, amount numeric(12,2));
-- a view over customers, and a view over that view
CREATE VIEW eu_customers AS SELECT id, email, phone FROM customers WHERE region = 'EU';
CREATE VIEW eu_contacts AS SELECT id AS customer_id, lower(email) AS contact FROM eu_customers;
CREATE MATERIALIZED VIEW customer_totals AS
  SELECT c.id AS customer_id, c.region, sum(o.total) AS total FROM customers c JOIN orders o ON o.customer_id = c.id GROUP BY c.id, c.region;
CREATE SCHEMA billing;
CREATE TABLE billing.invoices (id serial PRIMARY KEY, customer_id int, amount numeric, iban text);
CREATE TABLE billing.customers (id int, note text);
INSERT INTO customers (email, iban, ssn, date_of_birth, phone, region) VALUES
  ('ann@example.com', 'DE89370400440532013000', '123-45-6789', '1980-02-03', '+4930123', 'EU'),
  ('bob@example.com', 'FR7630006000011234567890189', '987-65-4321', '1975-07-08', '+3314567', 'EU'),
  ('cy@example.com', NULL, '555-12-3456', '1990-11-12', '+1555123', 'US');
INSERT INTO orders (customer_id, total) VALUES (1, 10.50), (1, 20), (2, 7.25), (3, 99);
INSERT INTO payments (customer_id, amount) VALUES (1, 10.50), (2, 7.25);
REFRESH MATERIALIZED VIEW customer_totals;
CREATE ROLE ${APP_USER} LOGIN PASSWORD '${APP_PASSWORD}';
GRANT ALL ON ALL TABLES IN SCHEMA public, billing TO ${APP_USER};
GRANT ALL ON ALL SEQUENCES IN SCHEMA public, billing TO ${APP_USER};
GRANT USAGE, CREATE ON SCHEMA public, billing TO ${APP_USER};
GRANT CREATE ON DATABASE ${DB} TO ${APP_USER};
-- "$user" comes first in the default search_path: app_user.notes resolves unqualified
CREATE SCHEMA ${APP_USER} AUTHORIZATION ${APP_USER};
CREATE TABLE ${APP_USER}.notes (id int, body text);
ALTER TABLE ${APP_USER}.notes OWNER TO ${APP_USER};
`;

export interface SqlTestDb {
  server: PostgresServer;
  /** A URL for the ordinary role. */
  url: string;
  /** A client connected as the ordinary role (caller ends it). */
  connect(): Promise<pg.Client>;
  stop(): Promise<void>;
}

export async function startSqlTestDb(): Promise<SqlTestDb> {
  const server = await startPostgres();
  await superQuery(server, `CREATE DATABASE ${DB}`);
  await superQuery(server, SCHEMA_SQL, DB);
  const url = `postgres://${APP_USER}:${APP_PASSWORD}@${server.host}:${server.port}/${DB}`;
  return {
    server,
    url,
    async connect() {
      const c = new pg.Client({ connectionString: url });
      await c.connect();
      return c;
    },
    stop: () => server.stop(),
  };
}

/** For a whole test file: a test database, one client on it, and a Catalog loaded from that client. */
export function useCatalogDb(): { readonly db: SqlTestDb; readonly client: pg.Client; readonly catalog: Catalog } {
  const env = {} as { db: SqlTestDb; client: pg.Client; catalog: Catalog };
  beforeAll(async () => {
    await ensureParser();
    env.db = await startSqlTestDb();
    env.client = await env.db.connect();
    env.catalog = new Catalog(env.client);
    await env.catalog.ready();
  });
  afterAll(async () => {
    await env.client?.end();
    await env.db?.stop();
  });
  return env;
}
