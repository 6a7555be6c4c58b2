-- Sample schema for `scalple demo` and the test suite: customers with personal data, their orders
-- and payments.
CREATE TABLE IF NOT EXISTS public.customers (
  id            bigint PRIMARY KEY,
  email         text NOT NULL,
  full_name     text NOT NULL,
  iban          text,
  ssn           text,
  date_of_birth date,
  phone         text,
  region        text NOT NULL,
  plan_tier     text NOT NULL DEFAULT 'free',
  created_at    timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS public.orders (
  id          bigint PRIMARY KEY,
  customer_id bigint NOT NULL REFERENCES public.customers(id),
  total       numeric(12,2) NOT NULL,
  status      text NOT NULL DEFAULT 'paid',
  created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS public.payments (
  id          bigint PRIMARY KEY,
  customer_id bigint NOT NULL REFERENCES public.customers(id),
  amount      numeric(12,2) NOT NULL,
  paid_at     timestamptz NOT NULL DEFAULT now()
);

INSERT INTO public.customers (id, email, full_name, iban, ssn, date_of_birth, phone, region, plan_tier)
SELECT g,
       'customer' || g || '@example.org',
       'Customer ' || g,
       'DE89370400440532013' || lpad(g::text, 3, '0'),
       lpad((100000000 + g * 7919)::text, 9, '0'),
       date '1960-01-01' + (g * 97 % 15000),
       '+49 30 ' || lpad((g * 31337 % 10000000)::text, 7, '0'),
       CASE WHEN g % 3 = 0 THEN 'EU' WHEN g % 3 = 1 THEN 'US' ELSE 'APAC' END,
       CASE WHEN g % 5 = 0 THEN 'pro' ELSE 'free' END
FROM generate_series(1, 500) g
ON CONFLICT DO NOTHING;

INSERT INTO public.orders (id, customer_id, total, status)
SELECT g, (g * 7 % 500) + 1, round((g * 13 % 1000)::numeric + 0.99, 2), CASE WHEN g % 10 = 0 THEN 'refunded' ELSE 'paid' END
FROM generate_series(1, 2000) g
ON CONFLICT DO NOTHING;

INSERT INTO public.payments (id, customer_id, amount)
SELECT g, (g * 11 % 500) + 1, round((g * 17 % 500)::numeric + 0.50, 2)
FROM generate_series(1, 1000) g
ON CONFLICT DO NOTHING;
