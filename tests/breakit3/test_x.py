import subprocess, sys, os, threading
from catalog import catalog_listing


def cli(*a):
    e = dict(os.environ)
    e.pop("DATABASE_URL", None)
    return subprocess.run(
        [sys.executable, "-m", "pgresilience.cli", *a],
        capture_output=True,
        text=True,
        env=e,
        timeout=120,
    )


def test_x(bare_dsn, tmp_path):
    before = catalog_listing(bare_dsn)
    r = cli("install", "--dsn", bare_dsn, "--expose", 'My "API"')
    print(r.returncode, r.stdout[-600:], r.stderr[-600:])
    import psycopg

    with psycopg.connect(bare_dsn, autocommit=True) as c:
        print(
            c.execute(
                "select n.nspname, count(*) from pg_proc p join pg_namespace n on n.oid=p.pronamespace where nspname not in ('pg_catalog','information_schema','resilience') group by 1"
            ).fetchall()
        )
    r = cli("uninstall", "--dsn", bare_dsn)
    print(r.returncode, r.stdout[-600:], r.stderr[-600:])
    after = catalog_listing(bare_dsn)
    print(set(before) ^ set(after))
    # concurrent installs
    out = []
    ts = [
        threading.Thread(target=lambda: out.append(cli("install", "--dsn", bare_dsn)))
        for _ in range(3)
    ]
    [t.start() for t in ts]
    [t.join() for t in ts]
    print([o.returncode for o in out], [o.stderr[-300:] for o in out if o.returncode])
