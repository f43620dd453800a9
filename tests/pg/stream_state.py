#!/usr/bin/env python3
"""Replays a sluice stream (via `sluice inspect --records --json --full-values`) into table
states and compares them with a live PostgreSQL database.

  stream_state.py compare --sluice BIN --store S --stream N --trust PUB \
      --conninfo CONNINFO [--until-txseq N] [--tables schema.t,...]
  stream_state.py dump    --sluice BIN --store S --stream N --trust PUB [--until-txseq N]
  stream_state.py check-once --sluice BIN ... --table schema.t --column id [--include-snapshot]
      every value of column id appears in exactly one insert, in commit order;
      with --include-snapshot snapshot rows count as inserts too, and every
      transaction after a snapshot commits at or after its consistent LSN
  stream_state.py summary --sluice BIN ...
      JSON counts: records by type, snapshots (txseq, consistent LSN, rows per
      table, SnapshotEnd counts), first and last txseq, begins in LSN order
  stream_state.py check --sluice BIN ... [--conninfo C [--tables ...]]
      [--once schema.t:col ...] [--include-snapshot] [--summary-out FILE]
      all of the above from one replay (large streams): compare when
      --conninfo is given, check-once for every --once, summary into FILE

Exit status 0 when equal / the check holds, 1 otherwise (with a diff)."""
import argparse
import json
import subprocess
import sys


def records(args):
    # --full-values: every value whole (inspect cuts one over 1 MiB otherwise)
    cmd = [args.sluice, "inspect", "--store", args.store, "--stream", args.stream,
           "--trust", args.trust, "--records", "--json", "--full-values"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    for line in proc.stdout:
        yield json.loads(line)
    if proc.wait() != 0:
        sys.exit("sluice inspect failed with exit status %d" % proc.returncode)


class State:
    def __init__(self, watch=None):
        # watch: {table: [columns]} to keep of inserted and snapshot rows; None keeps whole rows
        self.watch = watch
        self.relations = {}   # id -> (name, [columns], [key columns])
        self.tables = {}      # name -> {key tuple: [values]}
        self.begins = []      # (txseq, source_lsn)
        self.inserts = []     # (relation, row dict, txseq)
        self.snapshot_rows = []  # (relation, row dict, txseq)
        self.snapshots = []   # {"txseq", "consistent_lsn", "rows": {relation: n}, "end": record or None}
        self.counts = {}      # record type -> number of records

    def key_of(self, rel_id, row):
        name, cols, keys = self.relations[rel_id]
        use = keys if keys else cols
        return tuple(v if v is None or isinstance(v, str) else json.dumps(v)
                     for v in (row.get(c) for c in use))

    def values(self, rel_id, row, old=None):
        name, cols, keys = self.relations[rel_id]
        out = [row.get(c) for c in cols]
        for i, v in enumerate(out):
            if isinstance(v, dict) and v.get("unchanged_toast"):
                if old is None:
                    raise SystemExit("unchanged TOAST value of %s.%s without an old row" % (name, cols[i]))
                out[i] = old[i]
        return out

    def apply(self, r, until):
        t = r["type"]
        if until is not None and r.get("txseq") is not None and r["txseq"] > until:
            return False
        self.counts[t] = self.counts.get(t, 0) + 1
        if t == "snapshot_begin":
            self.snapshots.append({"txseq": r.get("txseq"), "consistent_lsn": r.get("consistent_lsn"),
                                   "rows": {}, "end": None, "after_begins": len(self.begins)})
        elif t == "snapshot_end" and self.snapshots:
            self.snapshots[-1]["end"] = r
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
            name = self.relations[rid][0]
            tab[self.key_of(rid, row)] = self.values(rid, row)
            kept = row
            if self.watch is not None:
                kept = {c: row.get(c) for c in self.watch[name]} if name in self.watch else None
            if t == "insert":
                if kept is not None:
                    self.inserts.append((name, kept, r["txseq"]))
            else:
                if kept is not None:
                    self.snapshot_rows.append((name, kept, r["txseq"]))
                if self.snapshots:
                    rows = self.snapshots[-1]["rows"]
                    rows[name] = rows.get(name, 0) + 1
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


def replay(args, watch=None):
    st = State(watch)
    until = getattr(args, "until_txseq", None)
    for r in records(args):
        st.apply(r, until)
    return st


def db_rows(conninfo, table, cols):
    """Rows as the type output functions print them (what pgoutput sends): COPY text."""
    sel = ", ".join(quote_ident(c) for c in cols)
    schema, name = table.split(".", 1)
    sql = "COPY (SELECT %s FROM %s.%s) TO STDOUT" % (sel, quote_ident(schema), quote_ident(name))
    # the settings sluice prints values with (sluice_pg_set_canonical)
    canonical = ("SET TimeZone = 'UTC'; SET DateStyle = 'ISO, MDY'; SET IntervalStyle = 'postgres'; "
                 "SET extra_float_digits = 1; SET bytea_output = 'hex'; ")
    out = subprocess.run(["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", conninfo, "-c", canonical + sql],
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
    if b"\\" not in f:
        return f.decode("utf-8")  # nothing escaped: the byte loop below would copy it unchanged
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


def cmd_compare(args, st=None):
    if st is None:
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


def cmd_check_once(args, st=None, table=None, column=None):
    table = table or args.table
    column = column or args.column
    if st is None:
        st = replay(args, {table: [column]})
    seen = {}
    order = []
    rows = st.inserts
    if args.include_snapshot:
        rows = st.snapshot_rows + st.inserts
    for t, row, txseq in rows:
        if t != table:
            continue
        v = row[column]
        seen[v] = seen.get(v, 0) + 1
        order.append((txseq, v))
    dups = [v for v, n in seen.items() if n > 1]
    lsns = [l for _, l in st.begins if l is not None]
    ordered = all(parse_lsn(a) < parse_lsn(b) for a, b in zip(lsns, lsns[1:]))
    txseqs = [t for t, _ in st.begins]
    print("%s: %d distinct %s values inserted, %d duplicated, begins in LSN order: %s"
          % (table, len(seen), column, len(dups), ordered))
    if dups:
        print("duplicated: %s" % dups[:20])
    after_snapshot = True
    if args.include_snapshot:
        for snap in st.snapshots:
            cons = snap["consistent_lsn"]
            later = [l for _, l in st.begins[snap["after_begins"]:] if l is not None]
            early = [l for l in later if cons is not None and parse_lsn(l) < parse_lsn(cons)]
            if early:
                after_snapshot = False
                print("transactions after snapshot txseq %s commit before its consistent LSN %s: %s"
                      % (snap["txseq"], cons, early[:10]))
        print("%s: %d snapshot rows counted; transactions after each snapshot commit at or after its consistent LSN: %s"
              % (table, sum(1 for t, _, _ in st.snapshot_rows if t == table), after_snapshot))
    return 0 if not dups and ordered and after_snapshot else 1


def summary(st):
    txseqs = [t for t, _ in st.begins] + [s["txseq"] for s in st.snapshots]
    lsns = [l for _, l in st.begins if l is not None]
    snaps = []
    for s in st.snapshots:
        end = s["end"]
        snaps.append({"txseq": s["txseq"], "consistent_lsn": s["consistent_lsn"], "rows": s["rows"],
                      "complete": end is not None,
                      "end_rows": end.get("rows") if end else None,
                      "end_relations": end.get("relations") if end else None,
                      "begins_before": s["after_begins"]})
    return {"counts": st.counts, "snapshots": snaps,
            "first_txseq": min(txseqs) if txseqs else None,
            "last_txseq": max(txseqs) if txseqs else None,
            "first_begin_lsn": lsns[0] if lsns else None,
            "begins_in_lsn_order": all(parse_lsn(a) < parse_lsn(b) for a, b in zip(lsns, lsns[1:]))}


def cmd_summary(args):
    print(json.dumps(summary(replay(args, {})), sort_keys=True))
    return 0


def cmd_check(args):
    """One replay for compare, check-once of every --once TABLE:COLUMN and the summary."""
    watch = {}
    for tc in args.once or []:
        table, column = tc.rsplit(":", 1)
        watch.setdefault(table, []).append(column)
    st = replay(args, watch)
    bad = 0
    if args.conninfo:
        bad |= cmd_compare(args, st)
    for tc in args.once or []:
        table, column = tc.rsplit(":", 1)
        bad |= cmd_check_once(args, st, table, column)
    if args.summary_out:
        with open(args.summary_out, "w") as f:
            json.dump(summary(st), f, sort_keys=True)
            f.write("\n")
    return 1 if bad else 0


def parse_lsn(s):
    hi, lo = s.split("/")
    return (int(hi, 16) << 32) | int(lo, 16)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("command", choices=["compare", "dump", "check-once", "summary", "check"])
    p.add_argument("--sluice", required=True)
    p.add_argument("--store", required=True)
    p.add_argument("--stream", required=True)
    p.add_argument("--trust", required=True)
    p.add_argument("--conninfo")
    p.add_argument("--until-txseq", type=int)
    p.add_argument("--tables")
    p.add_argument("--table")
    p.add_argument("--column")
    p.add_argument("--include-snapshot", action="store_true")
    p.add_argument("--once", action="append", metavar="TABLE:COLUMN")
    p.add_argument("--summary-out")
    args = p.parse_args()
    sys.exit({"compare": cmd_compare, "dump": cmd_dump, "check-once": cmd_check_once,
              "summary": cmd_summary, "check": cmd_check}[args.command](args))


if __name__ == "__main__":
    main()
