-- upgrade --
-- The functions of schema resilience that the installed release's sql/ files
-- define (not those generated at run time, e.g. by manage_table): an upgrade
-- drops the ones the new release no longer defines, or defines with another
-- signature, before re-creating the rest (DESIGN.md, "Upgrades").
create table resilience.release_functions (
    signature regprocedure primary key
);
comment on table resilience.release_functions is
'Functions the installed release defined; written by the installer only';

-- Until now every function of the schema came from the release's files
-- (v0.1.0, then revisions 0005-0006), except what manage_table generated for each
-- managed table (its registry names them): the rest is what the new release
-- is compared with.
insert into resilience.release_functions (signature)
select p.oid::regprocedure
from pg_catalog.pg_proc as p
where p.pronamespace = 'resilience'::regnamespace
    and not exists (
        select 1 from resilience.managed_tables as m
        where p.oid in (m.capture_function, m.undo_function, m.lock_function)
    );

-- downgrade --
drop table resilience.release_functions;
