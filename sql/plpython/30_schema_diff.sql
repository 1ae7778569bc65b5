-- PL/Python side of schema tracking: the diff and severity rules of
-- plpython/schema_diff.py, run at commit. The module source lives in
-- resilience.plpython_modules (written by the installer) and is loaded once
-- per session, cached in GD under its SHA-256 so an upgrade reloads it; its
-- compiled code is kept beside it (bytecode) for the next sessions. Nothing
-- here nor in the module imports more than builtins at load: a new
-- session's first commit pays for every import.

-- json in and out (not jsonb): the text is handed over as is.
create or replace function resilience._schema_diff(deltas json)
returns json
language plpython3u
volatile
security definer
set search_path = ''
as $$
import sys
if "row" not in SD:
    SD["row"] = plpy.prepare(
        "select sha256, bytecode, bytecode_key from resilience.plpython_modules where name = 'schema_diff'"
    )
row = plpy.execute(SD["row"])[0]
key = "pgresilience.schema_diff." + row["sha256"]
if key not in GD:
    import marshal
    import _frozen_importlib_external
    # Compiled once per source and interpreter (its bytecode magic number),
    # then loaded (marshal) by every new session: compiling costs ~10 ms at
    # the first DDL's commit. Cached code that does not load is compiled again.
    tag = ":".join((row["sha256"], sys.implementation.cache_tag, _frozen_importlib_external.MAGIC_NUMBER.hex()))
    code = None
    if row["bytecode_key"] == tag:
        try:
            code = marshal.loads(row["bytecode"])
        except (ValueError, EOFError, TypeError):
            code = None
        if not hasattr(code, "co_code"):
            code = None
    if code is None:
        source = plpy.execute("select source from resilience.plpython_modules where name = 'schema_diff'")
        code = compile(source[0]["source"], "schema_diff.py", "exec")
        if not plpy.execute("select pg_catalog.current_setting('transaction_read_only') = 'on' as ro")[0]["ro"]:
            store = plpy.prepare(
                "update resilience.plpython_modules set bytecode = $1, bytecode_key = $2 where name = 'schema_diff'",
                ["bytea", "text"],
            )
            plpy.execute(store, [marshal.dumps(code), tag])
    # type(sys): the module type, without importing types.
    module = type(sys)("schema_diff")
    exec(code, module.__dict__)
    GD[key] = module
return GD[key].plpython_diff(deltas)
$$;
