-- demo_existing --
-- What of the demo's objects exists before it runs (it leaves those alone).
select to_regclass('demo_users') is not null,
    to_regclass('demo_profiles') is not null,
    to_regnamespace('pgresilience_demo_shop') is not null;

-- demo_unmanage --
-- Stop capturing a demo table (when pgresilience stays installed).
select resilience.unmanage_table(%s::regclass) where to_regclass(%s) is not null;

-- demo_drop_circuit --
delete from resilience.circuits where name = 'demo-ai-endpoint';

-- demo_drop_shop --
drop schema if exists pgresilience_demo_shop cascade;
