-- The tables the example rules in this directory read (and bridge.example.yaml's targets
-- serve). Run it on an empty database to try the examples:
--   psql "$DATABASE_URL" -f rules/example-tables.sql
-- Rules that read `before.*` need REPLICA IDENTITY FULL on their table.

CREATE TABLE IF NOT EXISTS public.orders (          -- fragment.yaml
    id          bigint PRIMARY KEY,
    status      text NOT NULL,
    amount      numeric(12, 2),
    created_at  timestamptz NOT NULL DEFAULT now(),
    customer    text,
    tags        text[],
    meta        jsonb
);
ALTER TABLE public.orders REPLICA IDENTITY FULL;

CREATE TABLE IF NOT EXISTS public.claims (          -- chains.yaml
    id          bigint PRIMARY KEY,
    customer    text,
    amount      numeric(12, 2)
);

CREATE TABLE IF NOT EXISTS public.onboardings (     -- copilotz.yaml
    id          bigint PRIMARY KEY,
    customer    text,
    stage       int NOT NULL DEFAULT 1,
    status      text NOT NULL DEFAULT 'active',
    notes       jsonb
);
ALTER TABLE public.onboardings REPLICA IDENTITY FULL;

CREATE TABLE IF NOT EXISTS public.incidents (       -- http.yaml
    id          bigint PRIMARY KEY,
    title       text,
    severity    text,
    resolved    boolean NOT NULL DEFAULT false
);
ALTER TABLE public.incidents REPLICA IDENTITY FULL;

CREATE TABLE IF NOT EXISTS public.refunds (         -- humanlambdas.yaml
    id          bigint PRIMARY KEY,
    order_id    bigint,
    amount      numeric(12, 2),
    reason      text,
    status      text
);

CREATE TABLE IF NOT EXISTS public.installations (   -- workflow.yaml
    id                     bigint PRIMARY KEY,
    entity_id              uuid,
    status                 text,
    workflow_execution_id  text,
    visit_step_id          text
);
ALTER TABLE public.installations REPLICA IDENTITY FULL;
