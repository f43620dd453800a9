#!/usr/bin/python3
"""Checks the capture tests' own tools without sluice: the writers (mongo_writer,
workload.py), the replay reader (stream_replay.py) and the exactly-once checks
(mongotest.py).

1. apply_update on hand-made update descriptions (dotted paths into documents
   and arrays, new parents, removals, truncated arrays, disambiguatedPaths),
   byte for byte against documents built with pymongo.
2. Both writers run concurrently against a peer (or SLUICE_TEST_MONGO_URI)
   while nothing else writes; the deployment's own change stream, turned into
   the lines `sluice inspect --records --json` prints for a MongoDB stream (one
   transaction per source transaction), must pass check_writer_txns and replay
   to exactly the source's documents; a stream with one transaction dropped,
   one duplicated, one split, or an aborted write added must fail them.
3. parse_records on hand-made inspect lines: a record that repeats a key is
   refused (a document may repeat one), a cut document's base64 (inspect
   without --full-values) is refused with that advice, a 2 MB one is decoded.
"""
import base64
import json
import os
import sys

import bson
from bson.int64 import Int64
from bson.son import SON

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import mongotest as mt  # noqa: E402
import stream_replay as sr  # noqa: E402


def enc(d):
    return bson.encode(SON(d) if isinstance(d, list) else d, check_keys=False)


def test_apply_update(t):
    cases = [
        ("set existing keeps its place",
         [("_id", 1), ("a", 1), ("b", 2)],
         {"updatedFields": {"a": Int64(5)}, "removedFields": [], "truncatedArrays": []},
         [("_id", 1), ("a", Int64(5)), ("b", 2)]),
        ("set new appends; unset removes",
         [("_id", 1), ("a", 1), ("b", 2)],
         {"updatedFields": {"c": "x"}, "removedFields": ["a"], "truncatedArrays": []},
         [("_id", 1), ("b", 2), ("c", "x")]),
        ("dotted path into a document, a missing parent created",
         [("_id", 1), ("d", SON([("x", 1), ("y", 2)]))],
         {"updatedFields": SON([("d.y", 3.5), ("e.f.g", True)]), "removedFields": ["d.x"]},
         [("_id", 1), ("d", SON([("y", 3.5)])), ("e", SON([("f", SON([("g", True)]))]))]),
        ("array element, array growth padded with null",
         [("_id", 1), ("arr", [1, 2, 3])],
         {"updatedFields": SON([("arr.1", "two"), ("arr.5", 6)]), "removedFields": []},
         [("_id", 1), ("arr", [1, "two", 3, None, None, 6])]),
        ("truncated array, then an element set; unset of an element leaves null",
         [("_id", 1), ("arr", [1, 2, 3, 4, 5]), ("o", SON([("l", [1, 2])]))],
         {"updatedFields": {"arr.1": 9}, "removedFields": ["o.l.0"],
          "truncatedArrays": [{"field": "arr", "newSize": 2}]},
         [("_id", 1), ("arr", [1, 9]), ("o", SON([("l", [None, 2])]))]),
        ("disambiguatedPaths: a field name with a dot",
         [("_id", 1), ("a.b", 1), ("a", SON([("b", 2)]))],
         {"updatedFields": {"a.b": 7}, "removedFields": [],
          "disambiguatedPaths": {"a.b": ["a.b"]}},
         [("_id", 1), ("a.b", 7), ("a", SON([("b", 2)]))]),
        ("value types kept: Decimal128, -0.0, int64 in a nested array",
         [("_id", "k"), ("v", [SON([("n", 1)])])],
         {"updatedFields": SON([("v.0.n", Int64(-1)), ("z", bson.Decimal128("-0")),
                                ("w", -0.0)])},
         [("_id", "k"), ("v", [SON([("n", Int64(-1))])]), ("z", bson.Decimal128("-0")),
          ("w", -0.0)]),
    ]
    for desc, before, ud, after in cases:
        try:
            got = sr.apply_update(enc(before), enc(ud))
        except Exception as e:  # noqa: BLE001
            got = repr(e).encode()
        t.check("apply_update: " + desc, got == enc(after),
                "got  %s\nwant %s" % (sr.show_doc(got), sr.show_doc(enc(after))))
    raw = enc([("z", 1), ("a", SON([("q", [1, {"x": None}])])), ("c", bson.Code("f", {"s": 1})),
               ("r", bson.Regex("^a", "im")), ("t", bson.Timestamp(5, 6)),
               ("m", bson.MinKey()), ("M", bson.MaxKey()), ("b", bson.Binary(b"\x01", 0x80))])
    t.check("elements/build round-trip keeps the bytes", sr.build(sr.elements(raw)) == raw)
    t.check("tree/untree round-trip keeps the bytes", sr.untree(sr.tree(raw)) == raw)


def test_parse_records(t):
    big = enc([("_id", 1), ("s", "x" * 2000000)])
    line = ('{"type":"update","txseq":3,"document":{"twice":1,"twice":2},'
            '"document_bson_base64":"%s"}' % b64(big))
    recs = sr.parse_records([line])
    t.check("parse_records: a 2 MB document decoded; a document may repeat a key",
            len(recs) == 1 and recs[0]["bson"]["document"] == big)

    def refused(desc, line, says):
        try:
            sr.parse_records([line])
            t.check("parse_records refuses " + desc, False)
        except ValueError as e:
            t.check("parse_records refuses " + desc, says in str(e), str(e))
    refused("a record with a key twice",
            '{"type":"update","txseq":3,"document_bson_base64":"","truncated":true,"bytes":9,'
            '"document_key_bson_base64":"","truncated":true,"bytes":9}', "twice")
    refused("a cut document",
            '{"type":"insert","txseq":3,"document_bson_base64":'
            '{"truncated":true,"bytes":2000030,"prefix":"AAAA"}}', "--full-values")


def b64(raw):
    return base64.b64encode(raw).decode()


def events_to_lines(events, snapshot=None):
    """What inspect --records --json would print for a stream of these events."""
    lines = []
    txseq = 0
    if snapshot is not None:
        txseq += 1
        lines.append({"type": "snapshot_begin", "txseq": txseq})
        for ns, docs in snapshot.items():
            lines.append({"type": "relation", "txseq": txseq, "relation": ns})
            for raw in docs.values():
                lines.append({"type": "snapshot_row", "txseq": txseq, "relation": ns,
                              "document_bson_base64": b64(raw)})
        lines.append({"type": "snapshot_end", "txseq": txseq})
    last = None
    for raw in events:
        lsid, txn = sr.field(raw, "lsid"), sr.field(raw, "txnNumber")
        tkey = (lsid, txn) if lsid is not None else None
        if tkey is None or tkey != last:
            if txseq and lines[-1]["type"] != "commit" and lines[-1]["type"] != "snapshot_end":
                lines.append({"type": "commit", "txseq": txseq})
            txseq += 1
            lines.append({"type": "begin", "txseq": txseq,
                          "resume_token_bson_base64": b64(sr.doc_field(raw, "_id"))})
        last = tkey
        k = mt.event_key(raw)
        rec = {"txseq": txseq, "relation": k[2] if k[0] == "namespace_change" else k[1]}
        if k[0] == "insert":
            rec.update(type="insert", document_bson_base64=b64(k[2]))
        elif k[0] == "update":
            rec.update(type="update", document_key_bson_base64=b64(k[2]),
                       update_description_bson_base64=b64(k[3]))
        elif k[0] == "replace":
            rec.update(type="update", document_key_bson_base64=b64(k[2]),
                       document_bson_base64=b64(k[3]))
        elif k[0] == "delete":
            rec.update(type="delete", document_key_bson_base64=b64(k[2]))
        else:
            db, _, coll = (k[2] or "").partition(".")
            rec = {"type": "namespace_change", "txseq": txseq, "operation": k[1],
                   "database": db, "collection": coll, "event_bson_base64": b64(raw)}
        lines.append(rec)
    if txseq and lines[-1]["type"] not in ("commit", "snapshot_end"):
        lines.append({"type": "commit", "txseq": txseq})
    return [json.dumps(x) for x in lines]


def test_writers(t):
    client = t.deployment()
    db = "sluicet_tools" + t.tag
    start = mt.cluster_time(client)
    # a document before: the "snapshot" part of the generated stream
    client[db].items.insert_one({"_id": "pre", "op": "pre", "v": 1})
    snap = sr.source_collections(client, dbs=[db, db + "_b"])
    after_snap = mt.cluster_time(client)
    n = 120 if not t.long else 600
    if not t.args.writer:
        t.die("--writer (mongo_writer) is required")
    ws = [t.writer("c", "C1", db, n), t.writer("py", "P1", db, n)]
    t.wait_writers(ws)
    logs = t.writer_logs(ws)
    t.check("both writers logged every transaction", len(logs) == 2 * n, len(logs))
    for kind in ("committed", "aborted"):
        c = sum(1 for e in logs if e["status"] == kind and e["writer"] == "C1")
        p = sum(1 for e in logs if e["status"] == kind and e["writer"] == "P1")
        t.check("C and Python writers: the same number of %s transactions (%d, %d)" % (kind, c, p),
                c == p and c > 0)
    events = mt.source_events(client, after_snap, dbs=[db, db + "_b"])
    t.check("the source's history has events after the snapshot", len(events) > 2 * n)
    groups = mt.group_events(events)
    multi = [g for g in groups if len(g) > 1]
    t.check("the history groups multi-document transactions (%d)" % len(multi), multi)

    lines = events_to_lines(events, snapshot=snap)
    txns = sr.transactions(sr.parse_records(lines))
    t.check("the generated stream has a snapshot and %d change transactions" % (len(txns) - 1),
            txns[0].kind == "snapshot" and len(txns) == len(groups) + 1)
    fails = t.fails
    mt.check_writer_txns(t, txns, logs, "generated stream: ")
    sg = mt.stream_groups(txns)
    t.check("generated stream: its transactions equal the source's history",
            not mt.compare_groups(sg, mt.group_events(mt.source_events(client, start, dbs=[db, db + "_b"]))))
    model = sr.Model().replay(txns)
    diffs = sr.compare(model.nonempty(), sr.source_collections(client, dbs=[db, db + "_b"]))
    t.check("generated stream: the replay equals the source", not diffs, "\n".join(diffs))
    t.check("generated stream: no update of a missing document", model.skipped == 0, model.skipped)
    if t.fails != fails:
        return

    # The checks must catch a broken stream.
    def broken(desc, mutate, what="writers"):
        tx = sr.transactions(sr.parse_records(lines))
        mutate(tx)
        before = t.fails
        quiet = Quiet(t)
        if what == "writers":
            mt.check_writer_txns(quiet, tx, logs)
        else:
            quiet.check("", not mt.compare_groups(mt.stream_groups(tx), groups))
        t.check("a stream with %s fails the %s checks" % (desc, what), quiet.fails > 0)
        t.fails = max(t.fails, before)

    multi_at = next(i for i, tx in enumerate(txns) if len(tx.changes) > 3)
    broken("a transaction dropped", lambda tx: tx.pop(5))
    broken("a transaction twice", lambda tx: tx.insert(7, tx[6]))
    broken("a multi-document transaction split in two",
           lambda tx: tx.insert(multi_at + 1, split(tx[multi_at])))
    broken("two transactions in one", lambda tx: tx[3].changes.extend(tx.pop(4).changes))
    broken("two transactions swapped", lambda tx: tx.insert(3, tx.pop(4)), "history")
    broken("a transaction dropped", lambda tx: tx.pop(9), "history")

    aborted = next(e for e in logs if e["status"] == "aborted")
    fake = sr.Change({"type": "insert", "relation": aborted["ops"][0][1], "bson": {
        "document": bson.encode(SON([("_id", aborted["ops"][0][2]), ("op", aborted["m"])]))}})
    broken("a write of an aborted transaction", lambda tx: tx[2].changes.append(fake))


def split(tx):
    other = sr.Txn(tx.txseq, tx.kind, tx.opening)
    other.changes = tx.changes[1:]
    tx.changes = tx.changes[:1]
    return other


class Quiet:
    """A stand-in for Test that counts failures without printing."""

    def __init__(self, t):
        self.fails = 0

    def check(self, desc, cond, detail=None):
        if not cond:
            self.fails += 1

    def say(self, msg):
        pass


def main():
    t = mt.Test("mongo_tools", __doc__)
    test_apply_update(t)
    test_parse_records(t)
    test_writers(t)
    return t.finish()


if __name__ == "__main__":
    sys.exit(main())
