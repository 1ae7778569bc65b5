-- upgrade --
-- One logical transaction: spans many database transactions (RPC calls).
create table resilience.transactions (
    id uuid primary key default gen_random_uuid(),
    owner_role text not null,
    owner_sub text,
    status text not null default 'active'
        check (status in ('active', 'committed', 'rolled_back', 'timed_out', 'failed')),
    started_at timestamptz not null default clock_timestamp(),
    expires_at timestamptz not null,
    finished_at timestamptz,
    label text,
    -- Why it ended ('rollback reason', the conflicts that failed a reap, ...).
    outcome jsonb,
    constraint transactions_expiry_after_start check (expires_at > started_at),
    constraint transactions_finished_iff_not_active
        check ((status = 'active') = (finished_at is null))
);
comment on table resilience.transactions is
    'Logical transactions (DESIGN.md section 1); rows are written only by the tx_* functions';
-- The reaper's and the lazy expiry probe's index: only active rows.
create index transactions_active_expiry_idx on resilience.transactions (expires_at)
    where status = 'active';
create index transactions_active_owner_idx on resilience.transactions (owner_role, owner_sub)
    where status = 'active';
-- Retention purge walks finished transactions by age.
create index transactions_finished_idx on resilience.transactions (finished_at)
    where finished_at is not null;

-- ONE global order for restore points and savepoint markers: a captured
-- statement takes one value, a savepoint takes one value.
create sequence resilience.restore_point_seq as bigint;

-- Restore points: the rows one captured statement changed. No foreign key to
-- transactions on purpose: a 100,000-row statement would run 100,000 RI checks
-- on the same transaction row; the capture trigger has validated (and share-
-- locked) the transaction, and the purge deletes images with their transaction.
create table resilience.restore_points (
    tx_id uuid not null,
    seq bigint not null,
    row_no integer not null check (row_no > 0),
    relation regclass not null,
    operation text not null check (operation in ('insert', 'update', 'delete')),
    -- Primary key of the row before/after the write, as {column: value}.
    key_before jsonb,
    key_after jsonb,
    before jsonb,
    after jsonb,
    primary key (tx_id, seq, row_no),
    constraint restore_points_images_match_operation check (
        case operation
            when 'insert' then before is null and key_before is null
                and after is not null and key_after is not null
            when 'delete' then after is null and key_after is null
                and before is not null and key_before is not null
            else before is not null and after is not null
                and key_before is not null and key_after is not null
        end
    )
);
comment on table resilience.restore_points is
    'Before/after images captured by statement-level AFTER triggers; one seq per captured statement';

create table resilience.savepoints (
    tx_id uuid not null references resilience.transactions (id) on delete cascade,
    name text not null check (name <> ''),
    -- Position in the global restore-point order: rolling back to it undoes
    -- every restore point with a greater seq.
    seq bigint not null,
    created_at timestamptz not null default clock_timestamp(),
    primary key (tx_id, name)
);

-- Claims: a row written in a logical transaction belongs to it until commit
-- or rollback. The primary key makes two claimers of one row collide. It is
-- a 64-bit hash of the key (jsonb_hash_extended(key, 0)), not the jsonb key:
-- a fixed-width btree key costs half as much per claimed row. Equal keys
-- always hash equal, so no claim is ever missed; two different keys of one
-- table that happen to hash equal (about 1 in 2^64 per pair) only make the
-- second writer fail with a spurious 55P03 - the safe direction. The key
-- itself is kept, unindexed, for messages. No index on tx_id: commit and
-- rollback delete a transaction's claims with one scan of this table, which
-- only ever holds the claims of ACTIVE transactions; an index would cost
-- every claimed row one more btree insert.
create table resilience.claims (
    relation regclass not null,
    key_hash bigint not null,
    tx_id uuid not null,
    key jsonb not null check (jsonb_typeof(key) = 'object'),
    primary key (relation, key_hash)
);
comment on table resilience.claims is
    'Rows claimed by active logical transactions; other writes to them fail with 55P03';

-- Which tables an active logical transaction holds claims on: one row per
-- (table, transaction), written by the capture trigger with the claims and
-- deleted with them. A plain write (outside any logical transaction) probes
-- this small table, not claims, to learn whether its table has claims at
-- all: after a 100,000-row transaction finishes, claims_pkey holds 100,000
-- dead entries under that table until vacuum, and a probe of claims would
-- step over all of them on every plain write; here it is one dead entry.
create table resilience.claimed_tables (
    relation regclass not null,
    tx_id uuid not null,
    primary key (relation, tx_id)
);

-- A running restore (rollback, rollback_to, reap) puts a random token here
-- and in the setting resilience.restoring, and deletes it before returning:
-- the capture triggers skip only statements whose token is in this table, in
-- this very database transaction, so a client cannot forge the flag. Rows are
-- never committed.
create table resilience.restore_tokens (
    token uuid primary key
);

-- Tables whose writes are captured (manage_table / unmanage_table).
create table resilience.managed_tables (
    relation regclass primary key,
    managed_at timestamptz not null default clock_timestamp(),
    managed_by text not null
);

insert into resilience.settings (name, value, description) values
    ('default_timeout_ms', '30000', 'Timeout of a logical transaction when tx_begin gets null'),
    ('max_timeout_ms', '86400000', 'Longest timeout tx_begin accepts'),
    ('reap_batch', '100', 'How many expired transactions a lazy reap (tx_begin, tx_execute) rolls back at most'),
    ('purge_batch', '1000', 'How many finished transactions / audit rows one tx_reap call purges at most')
on conflict (name) do nothing;

alter table resilience.transactions enable row level security;
alter table resilience.restore_points enable row level security;
alter table resilience.savepoints enable row level security;
alter table resilience.claims enable row level security;
alter table resilience.claimed_tables enable row level security;
alter table resilience.managed_tables enable row level security;
alter table resilience.restore_tokens enable row level security;

-- downgrade --
-- Capture triggers on managed tables go with their trigger functions (0001's
-- downgrade drops every function of ours with cascade); drop them here too so
-- that a downgrade to 0001 leaves no trigger behind.
do $$
declare
    obj record;
begin
    for obj in
        select t.tgname, t.tgrelid::regclass as relation
        from pg_trigger as t
        join pg_proc as p on p.oid = t.tgfoid
        where p.pronamespace = 'resilience'::regnamespace
            and p.proname in ('_capture', '_guard_truncate')
    loop
        execute format('drop trigger if exists %I on %s', obj.tgname, obj.relation);
    end loop;
end;
$$;

drop table if exists resilience.managed_tables cascade;
drop table if exists resilience.restore_tokens cascade;
drop table if exists resilience.claimed_tables cascade;
drop table if exists resilience.claims cascade;
drop table if exists resilience.savepoints cascade;
drop table if exists resilience.restore_points cascade;
drop sequence if exists resilience.restore_point_seq;
drop table if exists resilience.transactions cascade;
delete from resilience.settings
where name in ('default_timeout_ms', 'max_timeout_ms', 'reap_batch', 'purge_batch');
