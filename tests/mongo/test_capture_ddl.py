#!/usr/bin/python3
"""MongoDB capture records drop, rename, dropDatabase and invalidate as
namespace_change records and keeps running after them.

Three captures run at once:
  coll     --collection D1.c: a collection stream, invalidated by the drop of
           D1.c, its rename and the drop of D1; after each invalidate capture
           must go on (startAfter), so writes to a re-created D1.c are captured
  db       --db D2: a database stream (drop and rename of its collections,
           then dropDatabase, which invalidates it; D2 is written again after)
  cluster  no filter: the whole deployment (drop, rename within a database and
           across databases, dropDatabase; never invalidated)
while pymongo drops, renames and re-creates; the coll and db captures are
killed -9 and restarted right after some of these. For each capture: it is still
running at the end and exits 0 on SIGTERM; the stream verifies; its
transactions are, one by one, the change events a reader of the same scope
gets (pymongo, starting after each invalidate with startAfter), each
namespace_change with the operation, database, collection, to_database,
to_collection of its event and the event's raw BSON; the expected records are
there (drop, invalidate, rename with its target, later inserts); and the
replay (drops, renames, dropDatabase applied) equals the source.
"""
import os
import sys
import time

import bson

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import mongotest as mt  # noqa: E402
import stream_replay as sr  # noqa: E402


def has_insert(ns, _id):
    key = sr.id_key(bson.encode({"_id": _id}))
    return lambda ch: ch.type == "insert" and ch.ns == ns and ch.id == key


def ops_of(txns):
    out = []
    for tx in txns:
        for ch in tx.changes:
            if ch.type == "namespace_change":
                out.append((ch.op, ch.ns, ch.to))
            else:
                out.append((ch.type, ch.ns, sr.show_id(ch.id)))
    return out


def check_stream(t, name, txns, events, keep):
    """The stream's transactions against the scope's events (one per transaction)."""
    sg = mt.stream_groups(txns, keep)
    groups = mt.group_events(events)
    diffs = mt.compare_groups(sg, groups)  # from the stream's first (capture started later)
    t.check("%s: the stream's transactions are the scope's change events, in order" % name,
            not diffs, "\n".join(diffs))
    by_token = {}
    for raw in events:
        by_token[sr.doc_field(raw, "_id")] = raw
    nsc = [ch for tx in txns for ch in tx.changes if ch.type == "namespace_change"]
    noevent = [ch for ch in nsc if ch.event is None]
    t.check("%s: each of its %d namespace_change records has its event" % (name, len(nsc)),
            nsc and not noevent, noevent[:3])
    wrong = []
    for ch in nsc:
        if ch.event is None:
            continue
        src = by_token.get(sr.doc_field(ch.event, "_id"))
        if src is None or src != ch.event:
            wrong.append("%r: event %s; the source's %s" % (ch, sr.show_doc(ch.event),
                                                           src and sr.show_doc(src)))
            continue
        op = sr.str_field(src, "operationType")
        ns = mt.event_ns(src) if op != "invalidate" else ch.ns
        to = mt.event_ns(src, "to")
        if ch.op != op or ch.ns != ns or ch.to != to:
            wrong.append("%r: operation/database/collection/to do not match the event %s"
                         % (ch, sr.show_doc(src)))
    t.check("%s: namespace_change records carry the raw event and its names" % name, not wrong,
            "\n".join(wrong[:3]))


def main():
    t = mt.Test("mongo_capture_ddl", __doc__)
    client = t.deployment()
    d1, d2, d3 = "sluicet_d1" + t.tag, "sluicet_d2" + t.tag, "sluicet_d3" + t.tag
    ours = (d1, d2, d3, d3 + "b")
    start = mt.cluster_time(client)
    caps = {
        "coll": t.capture("coll", "--collection", d1 + ".c"),
        "db": t.capture("db", "--db", d2),
        "cluster": t.capture("cluster"),
    }
    for cap in caps.values():
        cap.start()
    t.wait_marker(client, caps["cluster"], d3)
    for name in ("coll", "db"):
        if not caps[name].wait_watching():
            t.die("capture %s did not start watching" % name, caps[name])
    # the two scoped captures start "from now": a first write each, until seen
    for name, ns in (("coll", d1 + ".c"), ("db", d2 + ".a")):
        k = 0
        while True:
            k += 1
            db, coll = ns.split(".", 1)
            client[db][coll].insert_one({"_id": "hello-%d" % k})
            if t.wait_stream(name, has_insert(ns, "hello-%d" % k), timeout=3, cap=caps[name]):
                break
            if k == 10 or not caps[name].alive():
                t.die("capture %s streams nothing" % name, caps[name])
    t.say("three captures stream; drops, renames and re-creations follow")

    kills = [0]

    def kill_soon(name):
        """kill -9 a scoped capture 0-100 ms after a namespace change and restart it:
        around an invalidate too, the stream must hold everything once."""
        time.sleep(t.rng.uniform(0, 0.1))
        caps[name].kill9()
        caps[name].start()
        kills[0] += 1

    c1 = client[d1]
    c1.c.insert_many([{"_id": 1}, {"_id": 2}])
    c1.other.insert_one({"_id": "not watched by coll"})
    c1.drop_collection("c")                                   # coll: drop, invalidate
    kill_soon("coll")
    c1.c.insert_one({"_id": 3, "after": "drop"})              # a re-created D1.c
    client.admin.command("renameCollection", d1 + ".c", to=d1 + ".c_renamed")  # rename, invalidate
    time.sleep(0.3)
    kill_soon("coll")
    c1.c.insert_one({"_id": 4, "after": "rename"})
    c1.c_renamed.insert_one({"_id": 5})
    client.drop_database(d1)                                   # coll: invalidated again
    c1.c.insert_one({"_id": 6, "after": "dropDatabase"})

    c2 = client[d2]
    c2.b.insert_one({"_id": 1})
    c2.drop_collection("a")                                   # db: drop
    kill_soon("db")
    client.admin.command("renameCollection", d2 + ".b", to=d2 + ".b2")  # db: rename
    c2.b2.insert_one({"_id": 2})
    client.drop_database(d2)                                   # db: dropDatabase, invalidate
    kill_soon("db")
    c2.x.insert_one({"_id": 9, "after": "dropDatabase"})
    t.say("%d kills of the scoped captures around the namespace changes" % kills[0])

    c3 = client[d3]
    c3.r.insert_one({"_id": 1})
    try:
        client.admin.command("renameCollection", d3 + ".r", to=d3 + "b.r2")  # across databases
        cross = True
    except Exception as e:  # noqa: BLE001
        t.say("a rename across databases was refused (skipped): %s" % e)
        cross = False
    c3.s.insert_one({"_id": 1})
    client.drop_database(d3)
    c3.s.insert_one({"_id": "end"})
    client[d1].c.insert_one({"_id": "end"})
    client[d2].x.insert_one({"_id": "end"})

    ends = {"coll": d1 + ".c", "db": d2 + ".x", "cluster": d3 + ".s"}
    for name, cap in caps.items():
        ok = t.wait_stream(name, has_insert(ends[name], "end"), timeout=60, cap=cap)
        t.check("%s: capture is still running after the namespace changes" % name, cap.alive(),
                cap.tail())
        t.check("%s: the last write reached the stream" % name, ok, cap.tail())
    for name, cap in caps.items():
        rc = cap.term()
        t.check("%s: capture exits 0 on SIGTERM" % name, rc == 0, cap.tail())

    streams = {}
    for name in caps:
        rc, out = t.verify(name)
        t.check("%s: sluice verify passes" % name, rc == 0, out)
        streams[name] = t.txns(name)

    # coll: a collection stream through three invalidations
    got = ops_of(streams["coll"])
    ns = d1 + ".c"
    want = [("drop", ns, None), ("invalidate",), ("insert", ns, "3"),
            ("rename", ns, d1 + ".c_renamed"), ("invalidate",), ("insert", ns, "4"),
            ("invalidate",), ("insert", ns, "6")]
    seq = [(g[0],) if g[0] == "invalidate" else g for g in got]
    t.check("coll: drop, invalidate, the re-created collection's insert, rename (with its target), "
            "invalidate, insert, invalidate (dropDatabase), insert", is_subsequence(want, seq), got)
    t.check("coll: nothing of other collections", all(g[1] in (ns, None) or g[0] == "invalidate"
                                                      for g in got), got)
    ev = mt.scope_events(client, start, collection=ns)
    check_stream(t, "coll", streams["coll"], ev, None)

    got = ops_of(streams["db"])
    want = [("drop", d2 + ".a", None), ("rename", d2 + ".b", d2 + ".b2"), ("insert", d2 + ".b2", "2"),
            ("dropDatabase", d2, None), ("invalidate",), ("insert", d2 + ".x", "9")]
    seq = [(g[0],) if g[0] == "invalidate" else g for g in got]
    t.check("db: drop, rename (with its target), insert, dropDatabase, invalidate, insert",
            is_subsequence(want, seq), got)
    check_stream(t, "db", streams["db"], mt.scope_events(client, start, db=d2), None)

    got = ops_of(streams["cluster"])
    keep = lambda n: (n or "").split(".", 1)[0] in ours  # noqa: E731
    mine = [g for g in got if keep(g[1])]
    want = [("drop", d1 + ".c", None), ("rename", d1 + ".c", d1 + ".c_renamed"),
            ("dropDatabase", d1, None), ("dropDatabase", d2, None), ("dropDatabase", d3, None)]
    if cross:
        want.insert(4, ("rename", d3 + ".r", d3 + "b.r2"))
    t.check("cluster: the drops, renames and dropDatabases, no invalidate",
            is_subsequence(want, mine) and not any(g[0] == "invalidate" for g in got), mine)
    check_stream(t, "cluster", streams["cluster"], mt.source_events(client, start, dbs=ours), keep)

    for name, scope in (("coll", lambda n: n == d1 + ".c"), ("db", lambda n: n.startswith(d2 + ".")),
                        ("cluster", keep)):
        model = sr.Model().replay(streams[name])
        src = sr.source_collections(client, dbs=list(ours))
        src = {n: d for n, d in src.items() if scope(n)}
        diffs = sr.compare(model.nonempty(scope), src)
        t.check("%s: the replay (namespace changes applied) equals the source" % name, not diffs,
                "\n".join(diffs))
    if t.real_uri:
        for d in ours:
            client.drop_database(d)
    return t.finish()


def is_subsequence(want, got):
    it = iter(got)
    return all(any(w == g for g in it) for w in want)


if __name__ == "__main__":
    sys.exit(main())
