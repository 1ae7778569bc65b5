-- PL/Python side of schema tracking: the diff and severity rules of
-- plpython/schema_diff.py, run at commit. The module source lives in
-- resilience.plpython_modules (written by the installer) and is loaded once
-- per session, cached in GD under its SHA-256 so an upgrade reloads it.

-- json in and out (not jsonb): the text is handed over as is.
create or replace function resilience._schema_diff(deltas json)
returns json
language plpython3u
volatile
security definer
set search_path = ''
as $$
import types
if "sha" not in SD:
    SD["sha"] = plpy.prepare("select sha256 from resilience.plpython_modules where name = 'schema_diff'")
key = "pgresilience.schema_diff." + plpy.execute(SD["sha"])[0]["sha256"]
if key not in GD:
    source = plpy.execute("select source from resilience.plpython_modules where name = 'schema_diff'")
    module = types.ModuleType("schema_diff")
    exec(compile(source[0]["source"], "schema_diff.py", "exec"), module.__dict__)
    GD[key] = module
return GD[key].plpython_diff(deltas)
$$;
