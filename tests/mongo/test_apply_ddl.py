#!/usr/bin/python3
"""MongoDB apply of namespace changes: drop, rename (within and across
databases) and dropDatabase, captured from the source's change stream, are
applied to the target, outside the transaction and idempotently.

Source: d1.a, d1.b, d1.keep, d2.x, d2.y with documents, captured with
--snapshot; then: drop d1.a, rename d1.b to d1.c, insert into d1.c, rename
d1.keep to d3.moved, dropDatabase d2, a new collection d4.z. Checked:
- apply into a fresh target: every collection equals the source's, raw BSON
  byte for byte, and no dropped or renamed-away collection is left;
- a crash between a namespace change and its progress (the progress document
  set back to before the first change, as a kill there would leave it): apply
  again finds them done (a drop of a missing collection, a rename whose source
  is gone) and ends equal to the source;
- --include 'd1.*' into another fresh target: d1 as on the source (the
  rename of d1.keep out of d1 is a drop there), no d2, d3 or d4 (their
  changes counted as skipped).
Usage: test_apply_ddl.py --sluice BIN --peer PEER [--writer W]
"""
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import applytest as at  # noqa: E402
import mongotest as mt  # noqa: E402


def names(client):
    return sorted("%s.%s" % (d, c) for d in client.list_database_names() if d not in at.SKIP_DBS
                  for c in client[d].list_collection_names())


def main():
    t = mt.Test("mongo_apply_ddl", __doc__)
    if t.real_uri:
        t.say("renames and drops of a real deployment's databases: run against the peer only")
        return t.finish()
    client = t.deployment()
    for db, coll, n in (("d1", "a", 3), ("d1", "b", 4), ("d1", "keep", 2), ("d2", "x", 2),
                        ("d2", "y", 1)):
        client[db][coll].insert_many([{"_id": i, "v": "%s.%s-%d" % (db, coll, i)} for i in range(n)])
    cap = t.capture("ddl", "--snapshot")
    rc = cap.run("--exit-when-caught-up")
    t.check("capture --snapshot exits 0", rc == 0, cap.tail())
    client.d1.a.drop()
    client.d1.b.rename("c")
    client.d1.c.insert_one({"_id": 99, "v": "after the rename"})
    client.admin.command("renameCollection", "d1.keep", to="d3.moved")
    client.drop_database("d2")
    client.d4.z.insert_one({"_id": 1, "v": "new"})
    rc = cap.run("--exit-when-caught-up")
    t.check("capture of the namespace changes exits 0", rc == 0, cap.tail())
    txns = t.txns("ddl")
    ops = [ch.op for tx in txns for ch in tx.changes if ch.type == "namespace_change"]
    t.check("the stream holds the drop, the renames and the dropDatabase (%s)" % ops,
            ops.count("drop") >= 1 and ops.count("rename") == 2 and "dropDatabase" in ops)
    last = txns[-1].txseq
    first_ddl = min(tx.txseq for tx in txns if any(ch.type == "namespace_change" for ch in tx.changes))

    src = at.collections(client)
    want = names(client)
    p1 = at.target_peer(t, "target1")
    tgt = mt.connect(p1.uri)
    ap = at.Apply(t, "t1", "ddl", p1.uri, "--exit-when-caught-up")
    rc = ap.run()
    t.check("apply exits 0", rc == 0, ap.tail())
    t.check("the target has the source's collections (%s)" % names(tgt), names(tgt) == want,
            "want %s" % want)
    t.check("every collection equals the source's, byte for byte", at.collections(tgt) == src)
    t.check("the progress is the last txseq %d" % last, at.progress(tgt, "ddl")[0] == last)

    # a crash after a namespace change and before its progress: the change again
    tgt.sluice.progress.update_one({"_id": "ddl"}, {"$set": {"txseq": first_ddl - 1}})
    rc = ap.run()
    s = ap.summary()
    t.check("applied again from before the first namespace change: exit 0 (%s)" % s, rc == 0,
            ap.tail())
    t.check("it applied txseq %d..%d again" % (first_ddl, last),
            s is not None and s["first"] == first_ddl and s["last"] == last)
    t.check("and the target still equals the source", at.collections(tgt) == src and
            names(tgt) == want, "%s" % names(tgt))

    p2 = at.target_peer(t, "target2")
    tgt2 = mt.connect(p2.uri)
    ap2 = at.Apply(t, "t2", "ddl", p2.uri, "--exit-when-caught-up", "--include", "d1.*")
    rc = ap2.run()
    s = ap2.summary()
    t.check("apply --include 'd1.*' exits 0", rc == 0, ap2.tail())
    d1 = [n for n in want if n.startswith("d1.")]
    t.check("only d1 on that target (%s)" % names(tgt2), names(tgt2) == d1, "want %s" % d1)
    t.check("d1 equals the source's", at.collections(tgt2) ==
            {k: v for k, v in src.items() if k.startswith("d1.")})
    t.check("the other namespaces' changes are counted as skipped (%s)" % s,
            s is not None and s["skipped"] > 0)
    return t.finish()


if __name__ == "__main__":
    sys.exit(main())
