#!/usr/bin/python3
"""MongoDB apply --strategy timestamp: every conflict case of conflicts.md on a
target with its own writes, decided by versions (commit time, node).

The target T has "pre" before `sluice prepare --target T --node t` (a
document older than sluice's records), then runs a first apply of the
source's k1..k9, u10, u11 (in db.c and db.d). Then, in this real-time order
(20 ms apart, so the versions differ), with S the source and T the target's
own application:

  k1   S $set (older), T $set (newer)        update_newer_local / kept_local
  k2   T $set (older), S $set (newer)        applied over the local write
  k3   S delete (older), T $set (newer)      delete_newer_local / kept_local;
                                             the tombstone still records S's delete
  k4   S $set (older), T delete (newer)      update_deleted / skipped
  n5   T insert (older), S insert (newer)    insert_exists / remote
  n6   S insert (older), T insert (newer)    insert_exists / kept_local
  n7   S insert, T insert, T delete          insert_deleted / skipped
  k9   T delete (older), S delete (newer)    delete_missing / tombstone (S's)
  pre  S insert                              insert_exists / remote (T's pre was
                                             written before prepare: no version,
                                             older than any)
  db.d T drops it, then S $set u10, S replace u11
                                             update_missing / skipped (no
                                             document) and / inserted

Checked: a dry run's report (the same counters, no document changed), the
exit summary's conflict counters, the target's documents, the
rows of sluice.conflicts (kind, resolution, local_node), the entries of
sluice.versions (node and time of the last writer, tombstones). Then apply
refuses --strategy timestamp on an unprepared target (exit 3, naming sluice
prepare), and `sluice prepare` refuses a second name for a node.
Usage: test_apply_lww.py --sluice BIN --peer PEER [--writer W]
"""
import os
import subprocess
import sys
import time

import bson
from bson import SON

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import applytest as at  # noqa: E402
import mongotest as mt  # noqa: E402


def prepare(t, uri, node, *more):
    p = subprocess.run([t.sluice, "prepare", "--target", uri, "--node", node] + list(more),
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=60)
    return p.returncode, p.stdout


def versions(client):
    """{(ns, _id): entry} of sluice.versions."""
    out = {}
    for raw in client.sluice.versions.find({}):
        d = bson.decode(bytes(raw.raw))
        out[(d["_id"]["ns"], d["_id"]["id"])] = d
    return out


def tick():
    time.sleep(0.02)


def main():
    t = mt.Test("mongo_apply_lww", __doc__)
    if t.real_uri:
        t.say("a source and a separate target are needed: run against the peers only")
        return t.finish()
    db = "sluicet_lww"
    t.start_peer()
    src = mt.connect(t.uri)
    p = at.target_peer(t, "t")
    tgt = mt.connect(p.uri)

    tgt[db].c.insert_one(SON([("_id", "pre"), ("v", "local")]))  # before prepare: no version
    rc, out = prepare(t, p.uri, "t")

    a = at.Apply(t, "lww", "lw", p.uri, "--strategy", "timestamp", "--exit-when-caught-up")
    cap = t.capture("lw", "--db", db)
    cap.start()
    at.wait_marker(t, src, cap, db, "m")
    c, d = src[db].c, src[db].d
    for i in range(1, 10):
        c.insert_one(SON([("_id", "k%d" % i), ("v", 0)]))
    d.insert_one(SON([("_id", "u10"), ("v", 0)]))
    d.insert_one(SON([("_id", "u11"), ("v", 0)]))
    at.stop_capture(t, src, cap, db, 1)
    t.check("prepare --node t exits 0", rc == 0, out)
    t.check("the first apply exits 0", a.run() == 0, a.tail())
    tc, tc_d = tgt[db].c, tgt[db].d
    t.check("the first apply wrote k1..k9, u10, u11",
            len(list(tc.find({}))) == 10 and len(list(tc_d.find({}))) == 2)

    cap.start()
    at.wait_marker(t, src, cap, db, "m2")
    c.update_one({"_id": "k1"}, {"$set": {"v": "S"}}); tick()
    tc.update_one({"_id": "k1"}, {"$set": {"v": "T"}}); tick()
    tc.update_one({"_id": "k2"}, {"$set": {"v": "T"}}); tick()
    c.update_one({"_id": "k2"}, {"$set": {"v": "S"}}); tick()
    c.delete_one({"_id": "k3"}); tick()
    tc.update_one({"_id": "k3"}, {"$set": {"v": "T"}}); tick()
    c.update_one({"_id": "k4"}, {"$set": {"v": "S"}}); tick()
    tc.delete_one({"_id": "k4"}); tick()
    tc.insert_one(SON([("_id", "n5"), ("v", "T")])); tick()
    c.insert_one(SON([("_id", "n5"), ("v", "S")])); tick()
    c.insert_one(SON([("_id", "n6"), ("v", "S")])); tick()
    tc.insert_one(SON([("_id", "n6"), ("v", "T")])); tick()
    c.insert_one(SON([("_id", "n7"), ("v", "S")])); tick()
    tc.insert_one(SON([("_id", "n7"), ("v", "T")])); tick()
    tc.delete_one({"_id": "n7"}); tick()
    tc.delete_one({"_id": "k9"}); tick()
    c.delete_one({"_id": "k9"}); tick()
    c.insert_one(SON([("_id", "pre"), ("v", "S2")])); tick()
    tc_d.drop(); tick()
    d.update_one({"_id": "u10"}, {"$set": {"v": "S"}})
    d.replace_one({"_id": "u11"}, SON([("_id", "u11"), ("v", "S")]))
    at.stop_capture(t, src, cap, db, 2)

    want = {"update_newer_local": 1, "delete_newer_local": 1, "update_deleted": 1,
            "insert_exists": 3, "insert_deleted": 1, "delete_missing": 1, "update_missing": 2}
    before = at.collections(tgt, [db])
    rc = a.run("--dry-run")
    s = a.summary() or {}
    t.check("a dry run exits 0 and reports the conflicts to come (%s)" % s.get("conflicts"),
            rc == 0 and s.get("conflicts") == want, a.tail())
    t.check("the dry run changed no document", at.collections(tgt, [db]) == before)
    rc = a.run()
    t.check("the second apply exits 0", rc == 0, a.tail())
    s = a.summary() or {}
    want = {"update_newer_local": 1, "delete_newer_local": 1, "update_deleted": 1,
            "insert_exists": 3, "insert_deleted": 1, "delete_missing": 1, "update_missing": 2}
    t.check("conflict counters %s" % s.get("conflicts"), s.get("conflicts") == want, a.tail())

    got = {doc["_id"]: bson.decode(bytes(doc.raw)) for doc in tc.find({})}
    got.update({doc["_id"]: bson.decode(bytes(doc.raw)) for doc in tc_d.find({})})
    expect = {
        "k1": {"_id": "k1", "v": "T"}, "k2": {"_id": "k2", "v": "S"}, "k3": {"_id": "k3", "v": "T"},
        "k5": {"_id": "k5", "v": 0}, "k6": {"_id": "k6", "v": 0}, "k7": {"_id": "k7", "v": 0},
        "k8": {"_id": "k8", "v": 0}, "n5": {"_id": "n5", "v": "S"}, "n6": {"_id": "n6", "v": "T"},
        "pre": {"_id": "pre", "v": "S2"}, "u11": {"_id": "u11", "v": "S"},
    }
    t.check("the target holds what last writer wins leaves", got == expect,
            "got %s" % sorted(got.items()))

    rows = {(r["kind"], r["key"]["_id"]): r for r in at.conflicts(tgt)}
    want_rows = {
        ("update_newer_local", "k1"): "kept_local", ("delete_newer_local", "k3"): "kept_local",
        ("update_deleted", "k4"): "skipped", ("insert_exists", "n5"): "remote",
        ("insert_exists", "n6"): "kept_local", ("insert_deleted", "n7"): "skipped",
        ("delete_missing", "k9"): "tombstone", ("insert_exists", "pre"): "remote", ("update_missing", "u10"): "skipped",
        ("update_missing", "u11"): "inserted",
    }
    t.check("sluice.conflicts rows", {k: r["resolution"] for k, r in rows.items()} == want_rows,
            sorted((k, r["resolution"]) for k, r in rows.items()))
    t.check("the conflict log names the local writer (node t) where there was one",
            all(rows[k]["local_node"] == "t" for k in [("update_newer_local", "k1"),
                                                       ("delete_newer_local", "k3"),
                                                       ("update_deleted", "k4"),
                                                       ("insert_exists", "n6")]
                if k in rows),
            [(k, rows[k].get("local_node")) for k in rows])

    v = versions(tgt)
    ns = db + ".c"
    t.check("k2's version is the source's (node lw)", v.get((ns, "k2"), {}).get("node") == "lw", v.get((ns, "k2")))
    t.check("k1's version is the local write's (node t)", v.get((ns, "k1"), {}).get("node") == "t", v.get((ns, "k1")))
    k3 = v.get((ns, "k3"), {})
    t.check("k3 keeps the local version and S's losing delete as its tombstone",
            k3.get("node") == "t" and k3.get("dnode") == "lw" and "h" in k3, k3)
    k9 = v.get((ns, "k9"), {})
    t.check("k9's tombstone is S's newer delete", k9.get("dnode") == "lw" and "h" not in k9, k9)
    k4 = v.get((ns, "k4"), {})
    t.check("k4's tombstone is T's delete", k4.get("dnode") == "t" and "h" not in k4, k4)

    # a later run changes nothing
    before = at.collections(tgt, [db])
    t.check("a later run exits 0 and applies nothing", a.run() == 0 and (a.summary() or {}).get("transactions") == 0,
            a.tail())
    t.check("the target did not change", at.collections(tgt, [db]) == before)

    # refusals
    q = at.target_peer(t, "unprepared")
    u = at.Apply(t, "unprepared", "lw", q.uri, "--strategy", "timestamp", "--exit-when-caught-up")
    rc = u.run()
    t.check("an unprepared target is refused (exit 3, naming sluice prepare)",
            rc == 3 and "sluice prepare" in " ".join(at.log_messages(u.log_text())), u.tail())
    rc, out = prepare(t, p.uri, "other")
    t.check("prepare refuses a second name for a node (exit 3)", rc == 3 and "already" in out, out)
    rc, out = prepare(t, p.uri, "t")
    t.check("prepare again with the same name is fine (exit 0)", rc == 0, out)
    return t.finish()


if __name__ == "__main__":
    sys.exit(main())
