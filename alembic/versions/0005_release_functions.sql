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

-- Up to v0.1.0 (revision 0004) every function of the schema came from the
-- release's files: they are the ones to compare with the new release.
insert into resilience.release_functions (signature)
select p.oid::regprocedure
from pg_catalog.pg_proc as p
where p.pronamespace = 'resilience'::regnamespace;

-- downgrade --
drop table resilience.release_functions;
