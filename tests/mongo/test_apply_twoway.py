#!/usr/bin/python3
"""MongoDB two-way replication without echo: A and B each run a capture of
their own deployment and an apply of the other's stream (replace strategy),
while both take writes (inserts, updates, replacements, deletes,
multi-document transactions; A's documents and B's never collide: conflicting
writes need the timestamp strategy, tested by test_apply_converge.py),
and a drop on A and a rename on B.

Apply writes the stream's progress document (sluice.progress) first in each
of its transactions, and a capture leaves out every transaction that starts
with it. Checked: A and B end equal, byte for byte; stream A holds only
changes of A's own documents and stream B only B's (nothing applied from the
other side came back), and only its own namespace change (apply announces
the ones it runs in its progress document); each capture counted the
transactions it left out; neither stream holds anything of the sluice
database.
Usage: test_apply_twoway.py --sluice BIN --peer PEER [--writer W]
"""
import os
import random
import re
import sys
import time

from bson import SON

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import applytest as at  # noqa: E402
import mongotest as mt  # noqa: E402


def workload(client, db, prefix, n, rng):
    """N changes of PREFIX-k documents in DB.items and DB.logs."""
    items = client[db].items
    live = []
    for k in range(n):
        r = rng.random()
        if r < 0.35 or len(live) < 5:
            _id = "%s-%d" % (prefix, k)
            items.insert_one(SON([("_id", _id), ("v", k), ("by", prefix)]))
            live.append(_id)
        elif r < 0.6:
            items.update_one({"_id": rng.choice(live)}, {"$set": {"v": k, "u": prefix}})
        elif r < 0.7:
            _id = rng.choice(live)
            items.replace_one({"_id": _id}, SON([("_id", _id), ("r", k)]))
        elif r < 0.8:
            _id = live.pop(rng.randrange(len(live)))
            items.delete_one({"_id": _id})
        else:
            with client.start_session() as s:
                with s.start_transaction():
                    _id = "%s-t%d" % (prefix, k)
                    items.insert_one(SON([("_id", _id), ("t", k)]), session=s)
                    client[db].logs.insert_one(SON([("_id", _id), ("k", k)]), session=s)
            live.append(_id)


def main():
    t = mt.Test("mongo_apply_twoway", __doc__)
    if t.real_uri:
        t.say("two deployments are needed: run against the peer only")
        return t.finish()
    db = "sluicet_tw"
    pa = t.start_peer()
    pb = at.target_peer(t, "b")
    a, b = mt.connect(pa.uri), mt.connect(pb.uri)
    t.uri = pa.uri
    # whole deployments: a database or collection stream does not see apply's
    # marker in the sluice database (README: two-way replication)
    cap_a = t.capture("a")
    t.uri = pb.uri
    cap_b = t.capture("b")
    t.uri = pa.uri
    cap_a.start()
    cap_b.start()
    if not (cap_a.wait_watching() and cap_b.wait_watching()):
        t.die("a capture did not start watching", cap_a if not cap_a.alive() else cap_b)
    app_b = at.Apply(t, "into-b", "a", pb.uri)
    app_a = at.Apply(t, "into-a", "b", pa.uri)
    app_b.start()
    app_a.start()
    rng = random.Random(t.seed)
    n = 600 if t.long else 200
    a[db].tmp_a.insert_many([{"_id": i} for i in range(5)])
    b[db].ren_b.insert_many([{"_id": i} for i in range(5)])
    workload(a, db, "a", n, rng)
    workload(b, db, "b", n, rng)
    # namespace changes: apply runs them outside transactions and announces them first
    wait_ns = time.time() + 30
    while time.time() < wait_ns and not (db in b.list_database_names() and
                                         "tmp_a" in b[db].list_collection_names() and
                                         "ren_b" in a[db].list_collection_names()):
        time.sleep(0.2)
    a[db].tmp_a.drop()
    b[db].ren_b.rename("ren_b2")

    deadline = time.time() + 60
    same = False
    while time.time() < deadline and not same:
        time.sleep(0.5)
        same = at.collections(a, [db]) == at.collections(b, [db])
        for p in (cap_a, cap_b, app_a, app_b):
            if not p.alive():
                t.die("a capture or apply exited", p)
    t.check("A and B hold the same documents, byte for byte", same)
    time.sleep(1.0)  # what is in flight reaches the streams before they are read
    for p in (cap_a, cap_b):
        t.check("capture %s stops on SIGTERM with status 0" % p.stream, p.term() == 0, p.tail())
    for p in (app_a, app_b):
        t.check("apply %s stops on SIGTERM with status 0" % p.name, p.term() == 0, p.tail())

    for stream, own, other in (("a", "a-", "b-"), ("b", "b-", "a-")):
        txns = t.txns(stream)
        ids = [ch.id for tx in txns for ch in tx.changes if ch.type != "namespace_change"
               and ch.ns in (db + ".items", db + ".logs")]
        extra = sorted({ch.ns for tx in txns for ch in tx.changes if ch.type != "namespace_change"
                        and ch.ns not in (db + ".items", db + ".logs")})
        t.check("stream %s's other changes are of its own collection (%s)" % (stream, extra),
                extra == [db + (".tmp_a" if stream == "a" else ".ren_b")])
        strs = [i[1][4:-1].decode("utf-8", "replace") for i in ids if i[0] == 0x02]
        foreign = [i for i in strs if i.startswith(other)]
        t.check("stream %s holds %d changes, none of %s's documents (no echo)" % (stream, len(ids), other),
                len(ids) > n // 2 and len(strs) == len(ids) and not foreign,
                "foreign: %s" % foreign[:5])
        t.check("stream %s holds nothing of the sluice database" % stream,
                all(not ch.ns.startswith("sluice.") for tx in txns for ch in tx.changes))
        ns_changes = sorted((ch.op, ch.ns) for tx in txns for ch in tx.changes
                            if ch.type == "namespace_change")
        own = ("drop", db + ".tmp_a") if stream == "a" else ("rename", db + ".ren_b")
        t.check("stream %s holds its own namespace change and none of the other side's (%s)"
                % (stream, ns_changes), ns_changes == [own])
        log = open(os.path.join(t.dir, "cap-%s-1.log" % stream)).read()
        m = re.findall(r"(\d+) skipped \(origin\)", log)
        t.check("capture %s left out apply's transactions (%s)" % (stream, m[-1] if m else None),
                bool(m) and int(m[-1]) > 0)
    return t.finish()


if __name__ == "__main__":
    sys.exit(main())
