#!/usr/bin/python3
"""MongoDB capture keeps every BSON value byte for byte.

Documents of every BSON type (Decimal128; int32, int64 and double kept apart,
with -0.0, NaN and infinities; dates before and after 1970; timestamps;
binary subtypes 0, 3, 4, 5 and 0x80; regex; min/max key; code and code with
scope; ObjectId; nested arrays and documents, empty ones too; field names
with dots and with a leading $ below the top level; unicode names and
strings, a string with a NUL; a 1 MB and a 2 MB string and a 20000-element
array; the deprecated undefined, symbol and DBPointer where the server takes
them) are written as raw BSON (pymongo RawBSONDocument, no client-side key
checks). Some exist before `capture --snapshot --full-document updateLookup`,
the rest are inserted after it starts; then updated ($set of such values and
a new field, a 2 MB $set, $unset, $inc past int32, dotted paths on a real
server), replaced (other key order) and one deleted. The stream is read
through `inspect --full-values` (stream_replay.py), which prints documents
over 1 MiB whole. Checks:
  - every snapshot_row's document is the source's raw BSON of that document;
  - the change records equal the source's change events byte for byte
    (document, document_key, update_description), transaction by transaction;
  - the replay equals the source byte for byte;
  - the 2 MB $set is one update whose update_description and looked-up
    document (each over 1 MiB: inspect would cut both) are whole, the
    document the source's;
  - where inspect prints canonical Extended JSON (`document`, ...), it means
    the same values as pymongo's canonical Extended JSON of those bytes.
"""
import datetime
import hashlib
import json
import math
import os
import struct
import sys

import bson
from bson import SON, Binary, Code, Decimal128, Int64, MaxKey, MinKey, ObjectId, Regex, Timestamp
from bson.binary import UuidRepresentation
from bson.codec_options import CodecOptions
from bson.raw_bson import RawBSONDocument

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import mongotest as mt  # noqa: E402
import stream_replay as sr  # noqa: E402

MD5 = hashlib.md5(b"sluice").digest()


def zoo(_id, variant=0):
    d = SON([
        ("_id", _id),
        ("int32", 1 + variant), ("int64", Int64(1)), ("double", 1.0), ("negzero", -0.0),
        ("nan", float("nan")), ("inf", float("inf")), ("ninf", float("-inf")),
        ("i32max", 2 ** 31 - 1), ("i32min", -2 ** 31),
        ("i64max", Int64(2 ** 63 - 1)), ("i64min", Int64(-2 ** 63)), ("small", 5e-324),
        ("dec", Decimal128("1.10")), ("decneg0", Decimal128("-0")), ("decnan", Decimal128("NaN")),
        ("decninf", Decimal128("-Infinity")),
        ("decbig", Decimal128("9.999999999999999999999999999999999E+6144")),
        ("dectiny", Decimal128("1E-6176")),
        ("date", datetime.datetime(2024, 2, 29, 12, 34, 56, 789000)),
        ("predate", datetime.datetime(1901, 12, 13, 20, 45, 52, 1000)),
        ("ts", Timestamp(1700000000, 7)),
        ("bin0", Binary(b"\x00\x01\xfe\xff", 0)), ("binempty", Binary(b"", 0)),
        ("bin3", Binary(bytes(range(16)), 3)), ("bin4", Binary(bytes(range(16, 32)), 4)),
        ("bin5", Binary(MD5, 5)), ("bin80", Binary(b"user defined", 0x80)),
        ("regex", Regex("^a.*b$", "imsx")), ("regex0", Regex("", "")),
        ("minkey", MinKey()), ("maxkey", MaxKey()),
        ("code", Code("function () { return 1; }")), ("codews", Code("x + y", {"y": Int64(2)})),
        ("oid", ObjectId("65a1b2c3d4e5f60718293a4b")), ("t", True), ("f", False), ("null", None),
        ("arr", [1, "two", [3, [4.0, SON([("five", Int64(5))])]], {}, []]),
        ("doc", SON([("z", 1), ("a", SON([("b", SON([("c", [])]))])), ("empty", {})])),
        ("a.b", "a dotted name"), ("nested", SON([("$price", 1), ("x.y", 2), ("$", "dollar")])),
        ("uni", "h\u00e9llo w\u00f6rld \u2713 \U0001d11e \u65e5\u672c\u8a9e"),
        ("\u043a\u043b\u044e\u0447", "a unicode name"), ("nul", "a\x00b"), ("empty", ""),
    ])
    if variant:
        d = SON([("_id", _id)] + list(reversed([(k, v) for k, v in d.items() if k != "_id"])))
    return d


def encode(d):
    return RawBSONDocument(bson.encode(d, check_keys=False))


def deprecated_doc(_id):
    """undefined, symbol and DBPointer: pymongo cannot write them, so raw bytes."""
    def s(x):
        b = x.encode() + b"\0"
        return struct.pack("<i", len(b)) + b
    return sr.build([("_id", 0x02, s(_id)), ("undef", 0x06, b""), ("sym", 0x0E, s("a symbol")),
                     ("dbp", 0x0C, s("db.coll") + bytes.fromhex("65a1b2c3d4e5f60718293a4b"))])


def insert(t, coll, raw_or_doc, what):
    raw = raw_or_doc if isinstance(raw_or_doc, bytes) else bson.encode(raw_or_doc, check_keys=False)
    try:
        coll.insert_one(RawBSONDocument(raw))
        return True
    except Exception as e:  # noqa: BLE001 - the server may refuse a type or a name
        t.say("the server refused %s (skipped): %s" % (what, str(e)[:200]))
        return False


# ---- extended JSON: inspect's canonical form against pymongo's

class Obj(list):
    pass


def _loads(text):
    return json.loads(text, object_pairs_hook=Obj)


def _norm(x):
    """Canonical extended JSON with doubles compared by value (formats differ)."""
    if isinstance(x, Obj):
        if len(x) == 1 and x[0][0] == "$numberDouble":
            s = x[0][1]
            v = float(s)  # "Infinity", "-Infinity", "NaN" parse too
            return ("double", "nan" if math.isnan(v) else struct.pack("<d", v).hex())
        return Obj((k, _norm(v)) for k, v in x)
    if isinstance(x, list):
        return [_norm(v) for v in x]
    return x


def pymongo_canonical(raw):
    from bson import json_util
    opts = json_util.JSONOptions(json_mode=json_util.JSONMode.CANONICAL,
                                 uuid_representation=UuidRepresentation.UNSPECIFIED)
    doc = bson.decode(raw, CodecOptions(document_class=SON, tz_aware=True,
                                        uuid_representation=UuidRepresentation.UNSPECIFIED))
    return json_util.dumps(doc, json_options=opts)


def has_deprecated(raw):
    def walk(tr):
        for _, t, v in tr:
            if t in (0x06, 0x0C, 0x0E):
                return True
            if t in (0x03, 0x04) and walk(v):
                return True
        return False
    return walk(sr.tree(raw))


def check_extjson(t, records):
    fields = ("document", "document_key", "update_description")
    n = 0
    bad = []
    for rec in records:
        for f in fields:
            if f not in rec or f not in rec["bson"]:
                continue
            raw = rec["bson"][f]
            if has_deprecated(raw):  # pymongo does not keep these types apart
                continue
            n += 1
            got = _norm(_loads(json.dumps(rec[f])))
            want = _norm(_loads(pymongo_canonical(raw)))
            if got != want:
                bad.append("%s %s:\n  inspect %s\n  pymongo %s" % (rec["type"], f, json.dumps(rec[f])[:600],
                                                                   pymongo_canonical(raw)[:600]))
    if n == 0:
        t.say("inspect prints no extended JSON yet: that check is skipped")
        return
    t.check("inspect's canonical extended JSON of %d values means what pymongo's does" % n, not bad,
            "\n".join(bad[:3]))


def main():
    t = mt.Test("mongo_capture_types", __doc__)
    client = t.deployment()
    db = "sluicet_types" + t.tag
    c = client[db].zoo
    start = mt.cluster_time(client)
    # before the snapshot
    ids = []
    for i in range(4):
        if insert(t, c, zoo(i, i % 2), "zoo document %d" % i):
            ids.append(i)
    t.check("the server took the zoo documents", len(ids) == 4)
    insert(t, c, SON([("_id", "big"), ("s", "x" * 1000000)]), "a 1 MB document")
    # over inspect's 1 MiB cut: read with --full-values
    insert(t, c, SON([("_id", "big2"), ("s", "x" * 2000000)]), "a 2 MB document")
    insert(t, c, SON([("_id", "bigarr"), ("arr", list(range(20000)))]), "a 20000-element array")
    deprecated = insert(t, c, deprecated_doc("deprecated"), "undefined/symbol/DBPointer")
    insert(t, c, SON([("_id", "top$"), ("$top", 1)]), "a top-level $-prefixed name")
    insert(t, c, SON([("_id", SON([("compound", 1), ("k", Decimal128("2"))])), ("v", 1)]), "a document _id")
    insert(t, c, SON([("_id", Binary(bytes(16), 4)), ("v", 2)]), "a UUID _id")
    before = sr.source_collections(client, dbs=[db])
    cap = t.capture("ty", "--db", db, "--snapshot", "--full-document", "updateLookup")
    cap.start()
    t.wait_marker(client, cap, db)

    # after the snapshot: inserts, then updates, replaces, a delete
    for i in range(4, 8):
        insert(t, c, zoo(i, i % 2), "zoo document %d" % i)
    if deprecated:
        insert(t, c, deprecated_doc("deprecated2"), "undefined/symbol/DBPointer")
    c.update_one({"_id": 0}, {"$set": {"int32": Int64(2), "newdec": Decimal128("-1.5E-3")}})
    c.update_one({"_id": 1}, {"$unset": {"nan": ""}, "$set": {"double": -0.0}})
    c.update_one({"_id": 2}, {"$inc": {"i32max": 1, "int64": Int64(-5), "double": 0.5}})
    c.update_one({"_id": 4}, {"$set": {"bin4": Binary(b"y" * 16, 4), "arr": [[], {"k": MinKey()}],
                                       "ts": Timestamp(1, 1), "date": datetime.datetime(1970, 1, 1)}})
    c.update_one({"_id": 5}, {"$set": {"dec": Decimal128("NaN"), "nan": float("-nan")}})
    c.update_one({"_id": "big"}, {"$set": {"s": "y" * 1000000}})
    c.update_one({"_id": "big2"}, {"$set": {"s": "z" * 2000000}})
    c.update_one({"_id": "bigarr"}, {"$set": {"arr": list(range(19999, -1, -1))}})
    if t.real_uri:  # dotted paths in updates: the peer refuses them
        c.update_one({"_id": 6}, {"$set": {"doc.a.b.c": [1], "arr.1": "TWO", "doc.new.deep": 1}})
        c.update_one({"_id": 7}, {"$unset": {"doc.z": ""}, "$set": {"arr.2.1.0": Decimal128("4")}})
    else:
        t.say("dotted paths in updates: skipped (the peer refuses them)")
    c.replace_one({"_id": 3}, encode(zoo(3, 1)))
    c.replace_one({"_id": 7}, encode(SON([("_id", 7), ("only", Regex("x", "u")), ("a.b", 1)])))
    c.delete_one({"_id": 2})
    with client.start_session() as s:
        with s.start_transaction():
            c.insert_one(encode(zoo("in-txn", 1)), session=s)
            c.update_one({"_id": 1}, {"$set": {"txn": Decimal128("0.001")}}, session=s)
    t.wait_stream("ty", lambda ch: ch.type == "update" and ch.id == sr.id_key(bson.encode({"_id": 1}))
                  and b"txn" in (ch.update_description or b""), timeout=60, cap=cap)
    rc = cap.term()
    t.check("capture exits 0 on SIGTERM", rc == 0, cap.tail())

    rc, out = t.verify("ty")
    t.check("sluice verify passes", rc == 0, out)
    records = t.records("ty")
    txns = sr.transactions(records)
    snap = txns[0] if txns else None
    t.check("txseq 1 is the snapshot", snap is not None and snap.kind == "snapshot")
    rows = {ch.id: ch.document for ch in snap.changes if ch.ns == db + ".zoo"} if snap else {}
    want = before.get(db + ".zoo", {})
    t.check("the snapshot holds the %d documents written before it" % len(want),
            rows.keys() == want.keys(), (len(rows), len(want)))
    differ = [sr.show_id(k) for k in want if k in rows and rows[k] != want[k]]
    t.check("each snapshot row is the source's raw BSON, byte for byte", not differ, differ)

    groups = mt.group_events(mt.source_events(client, start, dbs=[db]))
    diffs = mt.compare_groups(mt.stream_groups(txns), groups)
    t.check("the change records are the source's change events, byte for byte", not diffs,
            "\n".join(diffs))
    model = sr.Model().replay(txns)
    diffs = sr.compare(model.nonempty(lambda ns: ns == db + ".zoo"),
                       sr.source_collections(client, namespaces=[db + ".zoo"]))
    t.check("the replay equals the source, byte for byte", not diffs, "\n".join(diffs))
    big2 = sr.id_key(bson.encode({"_id": "big2"}))
    ups = [ch for tx in txns for ch in tx.changes if ch.type == "update" and ch.id == big2]
    src = sr.source_collections(client, namespaces=[db + ".zoo"]).get(db + ".zoo", {})
    t.check("the 2 MB $set: one update, its update_description and looked-up document "
            "(each over 1 MiB) whole, the document the source's",
            len(ups) == 1 and len(ups[0].update_description or b"") > 2000000
            and ups[0].document is not None and ups[0].document == src.get(big2),
            [(len(u.update_description or b""), len(u.document or b"")) for u in ups])
    check_extjson(t, records)
    if t.real_uri:
        client.drop_database(db)
    return t.finish()


if __name__ == "__main__":
    sys.exit(main())
