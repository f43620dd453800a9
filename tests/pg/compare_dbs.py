#!/usr/bin/env python3
"""Compares user tables between two PostgreSQL databases (or saved dumps), row by row.

  compare_dbs.py dump    CONNINFO DIR [--tables schema.t,...]
      writes DIR/<schema.table>.rows: one line per row, "md5<TAB>row text (cut
      at 160 characters)", sorted by md5 of the whole row text
  compare_dbs.py compare A B [--tables schema.t,...] [--quiet]
      A and B are each a conninfo or a DIR written by dump; every table must
      hold exactly the same rows (as a multiset) on both sides

Rows are compared by an md5 over the md5 of each column's value (its text form
under fixed session settings: UTC, ISO dates, shortest exact floats; bytea as
bytes), so any column type compares and large values cost no memory. Without --tables every ordinary table
of A outside pg_catalog, information_schema and sluice is compared, and both
sides must have the same set of tables.

Exit status 0 when equal, 1 otherwise (with the differences), 2 on errors."""
import argparse
import os
import subprocess
import sys

SETTINGS = ("-c TimeZone=UTC -c DateStyle=ISO,YMD -c IntervalStyle=postgres "
            "-c bytea_output=hex -c extra_float_digits=1")
SKIP_SCHEMAS = ("pg_catalog", "information_schema", "sluice")


def psql(conninfo, sql):
    env = dict(os.environ)
    env["PGOPTIONS"] = SETTINGS
    proc = subprocess.run(["psql", "-X", "-At", "-q", "-v", "ON_ERROR_STOP=1", "-F", "\t",
                           conninfo, "-c", sql], capture_output=True, env=env)
    if proc.returncode != 0:
        sys.stderr.write("compare_dbs: %s: %s" % (sql[:100], proc.stderr.decode(errors="replace")))
        sys.exit(2)
    return proc.stdout.decode("utf-8", errors="replace")


def quote_ident(s):
    return '"' + s.replace('"', '""') + '"'


def tables_of(side):
    if os.path.isdir(side):
        return sorted(f[:-5] for f in os.listdir(side) if f.endswith(".rows"))
    out = psql(side, "SELECT n.nspname || '.' || c.relname FROM pg_class c JOIN pg_namespace n "
                     "ON n.oid = c.relnamespace WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition "
                     "AND n.nspname NOT IN %s AND n.nspname NOT LIKE 'pg\\_%%' ORDER BY 1"
               % ("(" + ", ".join("'%s'" % s for s in SKIP_SCHEMAS) + ")"))
    return [l for l in out.split("\n") if l]


def rows_of(side, table):
    """[(md5, preview)] sorted by md5."""
    if os.path.isdir(side):
        path = os.path.join(side, table + ".rows")
        if not os.path.exists(path):
            return None
        with open(path, encoding="utf-8") as f:
            lines = [l.rstrip("\n") for l in f]
    else:
        schema, name = table.split(".", 1)
        q = "%s.%s" % (quote_ident(schema), quote_ident(name))
        cols = psql(side, "SELECT a.attname, format_type(a.atttypid, NULL) FROM pg_attribute a "
                          "WHERE a.attrelid = to_regclass('%s') AND a.attnum > 0 AND NOT a.attisdropped "
                          "ORDER BY a.attnum" % q.replace("'", "''"))
        cols = [l.split("\t") for l in cols.split("\n") if l]
        if not cols:
            return None
        # Per column: md5 of the value (bytea as bytes, no hex text); the row
        # hash covers every column and NULL. The preview cuts each value
        # before converting it, so large values cost little.
        hashes, previews = [], []
        for col, typ in cols:
            c = "r." + quote_ident(col)
            raw = c if typ == "bytea" else "%s::text" % c
            hashes.append("CASE WHEN %s IS NULL THEN 'N' ELSE md5(%s) END" % (c, raw))
            short = "substring(%s from 1 for 24)::text" % c if typ == "bytea" else "left(%s::text, 40)" % c
            previews.append("coalesce(%s, 'NULL')" % short)
        # psql -A prints newlines of values as they are: keep the preview to one line.
        out = psql(side, "SELECT md5(concat_ws(',', %s)), translate(left(concat_ws(',', %s), 160), "
                         "E'\\n\\t\\r', '   ') FROM %s AS r ORDER BY 1, 2"
                   % (", ".join(hashes), ", ".join(previews), q))
        lines = [l for l in out.split("\n") if l]
    rows = []
    for l in lines:
        h, _, preview = l.partition("\t")
        rows.append((h, preview))
    rows.sort()
    return rows


def cmd_dump(args):
    os.makedirs(args.dir, exist_ok=True)
    tables = args.tables.split(",") if args.tables else tables_of(args.conninfo)
    for t in tables:
        rows = rows_of(args.conninfo, t)
        if rows is None:
            sys.stderr.write("compare_dbs: table %s does not exist\n" % t)
            return 2
        with open(os.path.join(args.dir, t + ".rows"), "w", encoding="utf-8") as f:
            for h, p in rows:
                f.write("%s\t%s\n" % (h, p))
        if not args.quiet:
            print("dumped %s: %d rows" % (t, len(rows)))
    return 0


def cmd_compare(args):
    bad = 0
    if args.tables:
        tables = args.tables.split(",")
    else:
        tables = tables_of(args.a)
        other = tables_of(args.b)
        for t in sorted(set(other) - set(tables)):
            print("table %s is only in %s" % (t, args.b))
            bad += 1
    for t in tables:
        ra, rb = rows_of(args.a, t), rows_of(args.b, t)
        if ra is None or rb is None:
            print("table %s is missing in %s" % (t, args.a if ra is None else args.b))
            bad += 1
            continue
        if ra == rb or [h for h, _ in ra] == [h for h, _ in rb]:
            if not args.quiet:
                print("table %s: %d rows equal" % (t, len(ra)))
            continue
        bad += 1
        ca, cb = {}, {}
        for h, p in ra:
            ca.setdefault(h, []).append(p)
        for h, p in rb:
            cb.setdefault(h, []).append(p)
        only_a = [(h, p) for h, ps in ca.items() for p in ps[len(cb.get(h, [])):]]
        only_b = [(h, p) for h, ps in cb.items() for p in ps[len(ca.get(h, [])):]]
        print("table %s differs: %d rows in A, %d in B; %d only in A, %d only in B"
              % (t, len(ra), len(rb), len(only_a), len(only_b)))
        for _, p in sorted(only_a, key=lambda x: x[1])[:10]:
            print("  only in A: %s" % p)
        for _, p in sorted(only_b, key=lambda x: x[1])[:10]:
            print("  only in B: %s" % p)
    if bad:
        print("compare_dbs: %d tables differ (A = %s, B = %s)" % (bad, args.a, args.b))
    return 1 if bad else 0


def main():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="command", required=True)
    d = sub.add_parser("dump")
    d.add_argument("conninfo")
    d.add_argument("dir")
    d.add_argument("--tables")
    d.add_argument("--quiet", action="store_true")
    c = sub.add_parser("compare")
    c.add_argument("a")
    c.add_argument("b")
    c.add_argument("--tables")
    c.add_argument("--quiet", action="store_true")
    args = p.parse_args()
    sys.exit(cmd_dump(args) if args.command == "dump" else cmd_compare(args))


if __name__ == "__main__":
    main()
