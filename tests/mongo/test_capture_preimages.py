#!/usr/bin/python3
"""MongoDB capture keeps pre-images (fullDocumentBeforeChange) byte for byte.

Collection `img` gets changeStreamPreAndPostImages through collMod, `plain`
has none. Type-zoo documents (test_capture_types.zoo) are updated ($set,
$unset, $inc), replaced and deleted in both while `capture
--full-document-before-change whenAvailable` runs. Checks:
  - every update, replace and delete of `img` carries document_before, the
    source's raw BSON of the document just before that change (read with
    RawBSONDocument before each write), byte for byte;
  - no change of `plain` carries document_before;
  - `--full-document-before-change required` on a database whose `plain`
    collection keeps no pre-images: capture stops at the first update there
    with exit status 3 and a message naming the cause (NoMatchingDocument,
    changeStreamPreAndPostImages), and that update is not in the stream.
"""
import os
import sys
import time

import bson
from bson import Decimal128, Int64
from bson.codec_options import CodecOptions
from bson.raw_bson import RawBSONDocument

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import mongotest as mt  # noqa: E402
import stream_replay as sr  # noqa: E402
from test_capture_types import encode, zoo  # noqa: E402

RAW = CodecOptions(document_class=RawBSONDocument)


def writes(t, coll, raw_coll, expected):
    """Updates, replaces and deletes coll's zoo documents; expected gets
    (ns, op, id key, raw document before) per change, in order."""
    ns = coll.database.name + "." + coll.name

    def before(_id, op):
        doc = raw_coll.find_one({"_id": _id})
        expected.append((ns, op, sr.id_key(bson.encode({"_id": _id})), doc.raw))

    before(0, "update")
    coll.update_one({"_id": 0}, {"$set": {"int32": Int64(2), "newdec": Decimal128("-1.5E-3")}})
    before(1, "update")
    coll.update_one({"_id": 1}, {"$unset": {"nan": ""}, "$set": {"double": -0.0}})
    before(0, "update")
    coll.update_one({"_id": 0}, {"$inc": {"i32max": 1}})
    before(2, "replace")
    coll.replace_one({"_id": 2}, encode(zoo(2, 1)))
    before(2, "update")
    coll.update_one({"_id": 2}, {"$set": {"after_replace": True}})
    before(3, "delete")
    coll.delete_one({"_id": 3})
    before(0, "delete")
    coll.delete_one({"_id": 0})


def main():
    t = mt.Test("mongo_capture_preimages", __doc__)
    client = t.deployment()
    dbname = "sluicet_pre" + t.tag
    db = client[dbname]
    db.drop_collection("img")
    db.drop_collection("plain")
    db.create_collection("img")
    db.create_collection("plain")
    r = db.command("collMod", "img", changeStreamPreAndPostImages={"enabled": True})
    t.check("collMod enables pre-images on img", r.get("ok") == 1, r)
    for name in ("img", "plain"):
        for i in range(4):
            db[name].insert_one(encode(zoo(i, i % 2)))

    cap = t.capture("pre", "--db", dbname, "--full-document-before-change", "whenAvailable")
    cap.start()
    t.wait_marker(client, cap, dbname)
    expected = []
    for name in ("img", "plain"):
        writes(t, db[name], db.get_collection(name, codec_options=RAW), expected)
    last = sr.id_key(bson.encode({"_id": 0}))
    ok = t.wait_stream("pre", lambda ch: ch.type == "delete" and ch.ns == dbname + ".plain"
                       and ch.id == last, timeout=60, cap=cap)
    t.check("the stream reaches the last delete", ok, cap.tail())
    rc = cap.term()
    t.check("capture exits 0 on SIGTERM", rc == 0, cap.tail())
    rc, out = t.verify("pre")
    t.check("sluice verify passes", rc == 0, out)

    txns = t.txns("pre")
    got = [(ch.ns, ch.type, ch.id, ch.document_before) for tx in txns for ch in tx.changes
           if ch.ns in (dbname + ".img", dbname + ".plain")
           and ch.type in ("update", "replace", "delete")]
    t.check("one change record per write (%d)" % len(expected),
            [g[:3] for g in got] == [e[:3] for e in expected],
            "\n".join("%s %s %s" % (g[0], g[1], sr.show_id(g[2])) for g in got))
    img = [(g, e) for g, e in zip(got, expected) if e[0].endswith(".img")]
    bad = ["%s %s: %s" % (e[1], sr.show_id(e[2]),
                          "absent" if g[3] is None else "%d bytes, not the source's %d" %
                          (len(g[3]), len(e[3])))
           for g, e in img if g[3] != e[3]]
    t.check("every update, replace and delete of img carries the document before it, "
            "byte for byte (%d)" % len(img), img and not bad, "\n".join(bad))
    plain = [g for g in got if g[0].endswith(".plain")]
    t.check("no change of plain (no pre-images kept) carries document_before",
            plain and all(g[3] is None for g in plain))
    ins = [ch for tx in txns for ch in tx.changes if ch.type == "insert"]
    t.check("inserts carry no document_before", all(ch.document_before is None for ch in ins))

    # required, and plain keeps no pre-images: the first update there stops capture.
    db.hello.delete_many({})  # wait_marker numbers its markers from 1 again
    req = t.capture("req", "--db", dbname, "--full-document-before-change", "required")
    req.start()
    t.wait_marker(client, req, dbname)
    db.img.update_one({"_id": 1}, {"$set": {"req": 1}})
    db.plain.update_one({"_id": 1}, {"$set": {"req": 2}})
    deadline = time.time() + 60
    while req.alive() and time.time() < deadline:
        time.sleep(0.2)
    rc = req.proc.poll()
    if rc is None:
        req.kill9()
    log = req.log_text()
    t.check("required without pre-images: capture exits 3", rc == 3, req.tail())
    t.check("and says why (NoMatchingDocument, changeStreamPreAndPostImages, whenAvailable)",
            ("NoMatchingDocument" in log or "51770" in log)
            and "changeStreamPreAndPostImages" in log and "whenAvailable" in log, req.tail())
    txns = t.txns("req")
    one = sr.id_key(bson.encode({"_id": 1}))
    ups = [ch for tx in txns for ch in tx.changes if ch.type == "update" and ch.id == one]
    t.check("the img update before it is in the stream with its pre-image, the plain one "
            "is not", len(ups) == 1 and ups[0].ns == dbname + ".img"
            and ups[0].document_before is not None,
            [(u.ns, u.document_before is not None) for u in ups])
    if t.real_uri:
        client.drop_database(dbname)
    return t.finish()


if __name__ == "__main__":
    sys.exit(main())
