#!/usr/bin/python3
"""MongoDB apply keeps every BSON value byte for byte.

The type zoo of test_capture_types.py (every BSON type, -0.0/NaN/infinities,
int32/int64/double kept apart, Decimal128 edge values, dates before 1970,
binary subtypes, regex, code with scope, min/max key, nested documents and
arrays, empty ones, field order reversed in some documents, dotted and
'$'-prefixed names below the top level, a top-level '$top', unicode names, a
string with a NUL, a document and a UUID _id, undefined/symbol/DBPointer
written as raw bytes) and 1 MB and 2 MB values, a 20000-element array; some
before `capture --snapshot --full-document updateLookup`, the rest after,
then updates ($set of such values and new fields, a 2 MB $set, $unset, $inc
past int32), replacements in another field order, a delete and a
transaction. Applied into a fresh target peer: every collection equal to the
source's as raw BSON, byte for byte, and a second target with the stream
applied from the progress in two halves (--until-txseq, then the rest) too.
Usage: test_apply_types.py --sluice BIN --peer PEER [--writer W]
"""
import datetime
import os
import sys

import bson
from bson import SON, Binary, Decimal128, Int64, MinKey, Regex, Timestamp

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import applytest as at  # noqa: E402
import mongotest as mt  # noqa: E402
import stream_replay as sr  # noqa: E402
from test_capture_types import deprecated_doc, encode, insert, zoo  # noqa: E402


def main():
    t = mt.Test("mongo_apply_types", __doc__)
    client = t.deployment()
    db = "sluicet_aty" + t.tag
    c = client[db].zoo
    ids = [i for i in range(4) if insert(t, c, zoo(i, i % 2), "zoo document %d" % i)]
    t.check("the source took the zoo documents", len(ids) == 4)
    insert(t, c, SON([("_id", "big"), ("s", "x" * 1000000)]), "a 1 MB document")
    insert(t, c, SON([("_id", "big2"), ("s", "x" * 2000000)]), "a 2 MB document")
    insert(t, c, SON([("_id", "bigarr"), ("arr", list(range(20000)))]), "a 20000-element array")
    deprecated = insert(t, c, deprecated_doc("deprecated"), "undefined/symbol/DBPointer")
    insert(t, c, SON([("_id", "top$"), ("$top", 1), ("a.b", 2)]), "top-level $-prefixed and dotted names")
    insert(t, c, SON([("_id", SON([("compound", 1), ("k", Decimal128("2"))])), ("v", 1)]), "a document _id")
    insert(t, c, SON([("_id", Binary(bytes(16), 4)), ("v", 2)]), "a UUID _id")
    client[db].other.insert_one(encode(zoo("other", 1)))

    cap = t.capture("ty", "--db", db, "--snapshot", "--full-document", "updateLookup")
    cap.start()
    at.wait_marker(t, client, cap, db, "ty")
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
    c.update_one({"_id": "big2"}, {"$set": {"s": "z" * 2000000, "added": 1}})
    c.update_one({"_id": "bigarr"}, {"$set": {"arr": list(range(19999, -1, -1))}})
    c.update_one({"_id": SON([("compound", 1), ("k", Decimal128("2"))])}, {"$set": {"v": Int64(3)}})
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
            client[db].other.delete_one({"_id": "other"}, session=s)
            client[db].other.insert_one(encode(zoo("other2", 0)), session=s)
    at.stop_capture(t, client, cap, db, 1)
    txns = t.txns("ty")
    last = txns[-1].txseq
    t.check("the stream starts with the snapshot", txns[0].kind == "snapshot")
    source = sr.source_collections(client, dbs=[db])
    t.say("stream: %d transactions; source: %s" % (len(txns), {ns: len(d) for ns, d in source.items()}))

    p = at.target_peer(t, "target")
    tgt = mt.connect(p.uri)
    ap = at.Apply(t, "all", "ty", p.uri, "--exit-when-caught-up")
    rc = ap.run()
    t.check("apply exits 0", rc == 0, ap.tail())
    diffs = sr.compare(at.collections(tgt), source)
    t.check("the target equals the source, byte for byte", not diffs, "\n".join(diffs))
    t.check("its progress is the stream's last", at.progress(tgt, "ty")[0] == last)
    s = ap.summary() or {}
    t.check("no conflicts", s.get("conflicts") == {}, s)

    p2 = at.target_peer(t, "target2")
    t2 = mt.connect(p2.uri)
    half = max(1, last // 2)
    ap = at.Apply(t, "halves", "ty", p2.uri)
    ok = ap.run("--until-txseq", str(half)) == 0 and ap.run("--exit-when-caught-up") == 0
    t.check("apply in two halves (until txseq %d, then the rest) exits 0" % half, ok, ap.tail())
    diffs = sr.compare(at.collections(t2), source)
    t.check("that target equals the source too, byte for byte", not diffs, "\n".join(diffs))
    if t.real_uri:
        client.drop_database(db)
    return t.finish()


if __name__ == "__main__":
    sys.exit(main())
