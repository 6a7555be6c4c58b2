// The policy the CLI's end-to-end tests run against: the demo policy (pii masks, roles support,
// billing, dba, the named query get_order_by_id) plus what the CLI must show: a denial naming its
// rule, a named-only role, a role that must give a reason, and a named query with two typed
// parameters.
import { demoPolicy } from '../../src/demo/demo.ts';

const MASK_KEY = 'cli-test-mask-key-0123456789';

/**
 * support may not read payments; dave (auditor) may only run named queries; carol (dba) must give
 * a reason for statements over personal data.
 */
export function cliTestPolicy(): Record<string, unknown> {
  const demo = demoPolicy(MASK_KEY) as { roles: Record<string, Record<string, unknown>>; named_queries: Record<string, Record<string, unknown>> };
  return {
    ...demo,
    roles: {
      ...demo.roles,
      support: { ...demo.roles.support, deny: ['public.payments'] },
      dba: { ...demo.roles.dba, require_reason: true },
      analyst: { groups: ['auditor'], named_only: true },
    },
    named_queries: {
      get_order_by_id: { ...demo.named_queries.get_order_by_id, roles: ['support', 'billing', 'analyst'] },
      orders_of_customer: {
        description: "A customer's orders since a date",
        sql: 'SELECT id, total, status FROM orders WHERE customer_id = $1 AND created_at::date >= $2 ORDER BY id LIMIT 3',
        params: [
          { name: 'customer_id', type: 'bigint' },
          { name: 'since', type: 'date' },
        ],
        roles: ['support', 'billing'],
      },
    },
  };
}

/**
 * Rows the CLI tests assert on exactly, independent of the sample data's generator: two customers
 * (one in EU, one in APAC) and three orders.
 */
export const CLI_FIXTURES_SQL = `
INSERT INTO public.customers (id, email, full_name, iban, ssn, date_of_birth, phone, region, plan_tier) VALUES
  (9001, 'ada@example.org', 'Ada Lovelace', 'DE89370400440532019001', '123456789', '1815-12-10', '+44 20 0000001', 'EU', 'pro'),
  (9002, 'grace@example.org', 'Grace Hopper', 'US12000000000000009002', '987654321', '1906-12-09', '+1 212 0000002', 'APAC', 'free');
INSERT INTO public.orders (id, customer_id, total, status) VALUES
  (9001, 9001, 13.99, 'paid'),
  (9002, 9001, 26.90, 'refunded'),
  (9003, 9002, 100.00, 'paid');
`;
