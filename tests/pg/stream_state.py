#!/usr/bin/env python3
"""Replays a sluice stream (via `sluice inspect --records --json`) into table
states and compares them with a live PostgreSQL database.

  stream_state.py compare --sluice BIN --store S --stream N --trust PUB \
      --conninfo CONNINFO [--until-txseq N] [--tables schema.t,...]
  stream_state.py dump    --sluice BIN --store S --stream N --trust PUB [--until-txseq N]
  stream_state.py check-once --sluice BIN ... --table schema.t --column id
      every value of column id appears in exactly one insert, in commit order

Exit status 0 when equal / the check holds, 1 otherwise (with a diff)."""
import argparse
import json
import subprocess
import sys


def records(args):
    cmd = [args.sluice, "inspect", "--store", args.store, "--stream", args.stream,
           "--trust", args.trust, "--records", "--json"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    for line in proc.stdout:
        yield json.loads(line)
    if proc.wait() != 0:
        sys.exit("sluice inspect failed with exit status %d" % proc.returncode)


class State:
    def __init__(self):
        self.relations = {}   # id -> (name, [columns], [key columns])
        self.tables = {}      # name -> {key tuple: [values]}
        self.begins = []      # (txseq, source_lsn)
        self.inserts = []     # (relation, row dict)

    def key_of(self, rel_id, row):
        name, cols, keys = self.relations[rel_id]
        use = keys if keys else cols
        return tuple(json.dumps(row.get(c)) for c in use)

    def values(self, rel_id, row, old=None):
        name, cols, keys = self.relations[rel_id]
        out = []
        for i, c in enumerate(cols):
            v = row.get(c)
            if isinstance(v, dict) and v.get("unchanged_toast"):
                if old is None:
                    raise SystemExit("unchanged TOAST value of %s.%s without an old row" % (name, c))
                v = old[i]
            out.append(v)
        return out

    def apply(self, r, until):
        t = r["type"]
        if until is not None and r.get("txseq") is not None and r["txseq"] > until:
            return False
        if t == "relation":
            cols = [c["name"] for c in r["columns"]]
            keys = [c["name"] for c in r["columns"] if c.get("key")]
            self.relations[r["relation_id"]] = (r["relation"], cols, keys)
            self.tables.setdefault(r["relation"], {})
        elif t == "begin":
            self.begins.append((r["txseq"], r.get("lsn")))
        elif t in ("insert", "snapshot_row"):
            rid = r["relation_id"]
            row = r["new"] if t == "insert" else r["row"]
            tab = self.tables[self.relations[rid][0]]
            tab[self.key_of(rid, row)] = self.values(rid, row)
            if t == "insert":
                self.inserts.append((self.relations[rid][0], row, r["txseq"]))
        elif t == "update":
            rid = r["relation_id"]
            tab = self.tables[self.relations[rid][0]]
            newkey = self.key_of(rid, {c: v for c, v in r["new"].items()
                                       if not isinstance(v, dict)})
            oldkey = self.key_of(rid, r["old"]) if "old" in r else newkey
            old = tab.pop(oldkey, None)
            tab[newkey] = self.values(rid, r["new"], old)
        elif t == "delete":
            rid = r["relation_id"]
            tab = self.tables[self.relations[rid][0]]
            key = self.key_of(rid, r["old"])
            if key not in tab:
                raise SystemExit("delete of a row the stream never had: %s %s" % (self.relations[rid][0], key))
            del tab[key]
        elif t == "truncate":
            for name in r["relations"]:
                self.tables[name] = {}
        return True


def replay(args):
    st = State()
    until = getattr(args, "until_txseq", None)
    for r in records(args):
        st.apply(r, until)
    return st


def db_rows(conninfo, table, cols):
    """Rows as the type output functions print them (what pgoutput sends): COPY text."""
    sel = ", ".join(quote_ident(c) for c in cols)
    schema, name = table.split(".", 1)
    sql = "COPY (SELECT %s FROM %s.%s) TO STDOUT" % (sel, quote_ident(schema), quote_ident(name))
    out = subprocess.run(["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", conninfo, "-c", sql],
                         check=True, capture_output=True).stdout
    rows = []
    for line in out.split(b"\n"):
        if not line and not cols:
            continue
        if line == b"" :
            continue
        rows.append([copy_field(f) for f in line.split(b"\t")])
    return rows


COPY_ESCAPES = {ord("b"): 8, ord("f"): 12, ord("n"): 10, ord("r"): 13, ord("t"): 9, ord("v"): 11}


def copy_field(f):
    if f == b"\\N":
        return None
    out = bytearray()
    i = 0
    while i < len(f):
        c = f[i]
        if c != 0x5C:
            out.append(c)
            i += 1
            continue
        i += 1
        c = f[i]
        if c in COPY_ESCAPES:
            out.append(COPY_ESCAPES[c])
            i += 1
        elif c == ord("x"):
            j = i + 1
            while j < len(f) and j < i + 3 and chr(f[j]) in "0123456789abcdefABCDEF":
                j += 1
            out.append(int(f[i + 1:j], 16))
            i = j
        elif 0x30 <= c <= 0x37:
            j = i
            while j < len(f) and j < i + 3 and 0x30 <= f[j] <= 0x37:
                j += 1
            out.append(int(f[i:j], 8))
            i = j
        else:
            out.append(c)
            i += 1
    return out.decode("utf-8")


def quote_ident(s):
    return '"' + s.replace('"', '""') + '"'


def short(s, n=160):
    return s if len(s) <= n else s[:n] + "...(%d chars)" % len(s)


def canon(rows):
    return sorted(json.dumps(r) for r in rows)


def cmd_compare(args):
    st = replay(args)
    wanted = args.tables.split(",") if args.tables else sorted(st.tables)
    bad = 0
    for table in wanted:
        rel = [v for v in st.relations.values() if v[0] == table]
        if not rel:
            print("table %s is not in the stream" % table)
            bad += 1
            continue
        cols = rel[-1][1]
        mine = canon(st.tables.get(table, {}).values())
        theirs = canon(db_rows(args.conninfo, table, cols))
        if mine != theirs:
            bad += 1
            a, b = set(mine), set(theirs)
            print("table %s differs: %d rows in the stream, %d in the database" % (table, len(mine), len(theirs)))
            only_a = [json.loads(x) for x in sorted(a - b)]
            only_b = {json.dumps(r[0]): r for r in (json.loads(x) for x in sorted(b - a))}
            for row in only_a[:10]:
                other = only_b.pop(json.dumps(row[0]), None)
                if other is None:
                    print("  only in stream:   " + short(json.dumps(row)))
                    continue
                for c, x, y in zip(cols, row, other):
                    if x != y:
                        print("  row %s column %s: stream %s, database %s" % (short(json.dumps(row[0])), c, short(json.dumps(x)), short(json.dumps(y))))
            for row in list(only_b.values())[:10]:
                print("  only in database: " + short(json.dumps(row)))
        else:
            print("table %s: %d rows equal" % (table, len(mine)))
    return 1 if bad else 0


def cmd_dump(args):
    st = replay(args)
    print(json.dumps({t: canon(rows.values()) for t, rows in st.tables.items()}, indent=1))
    return 0


def cmd_check_once(args):
    st = replay(args)
    seen = {}
    order = []
    for table, row, txseq in st.inserts:
        if table != args.table:
            continue
        v = row[args.column]
        seen[v] = seen.get(v, 0) + 1
        order.append((txseq, v))
    dups = [v for v, n in seen.items() if n > 1]
    lsns = [l for _, l in st.begins if l is not None]
    ordered = all(parse_lsn(a) < parse_lsn(b) for a, b in zip(lsns, lsns[1:]))
    txseqs = [t for t, _ in st.begins]
    print("%d distinct %s values inserted, %d duplicated, begins in LSN order: %s" % (len(seen), args.column, len(dups), ordered))
    if dups:
        print("duplicated: %s" % dups[:20])
    return 0 if not dups and ordered else 1


def parse_lsn(s):
    hi, lo = s.split("/")
    return (int(hi, 16) << 32) | int(lo, 16)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("command", choices=["compare", "dump", "check-once"])
    p.add_argument("--sluice", required=True)
    p.add_argument("--store", required=True)
    p.add_argument("--stream", required=True)
    p.add_argument("--trust", required=True)
    p.add_argument("--conninfo")
    p.add_argument("--until-txseq", type=int)
    p.add_argument("--tables")
    p.add_argument("--table")
    p.add_argument("--column")
    args = p.parse_args()
    sys.exit({"compare": cmd_compare, "dump": cmd_dump, "check-once": cmd_check_once}[args.command](args))


if __name__ == "__main__":
    main()
