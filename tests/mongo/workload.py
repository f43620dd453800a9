#!/usr/bin/python3
"""A numbered MongoDB write workload (pymongo); mongo_writer.c does the same with libmongoc.

  workload.py --uri URI --name W --db DB --count N [--rate R] [--log FILE]

Step i (1..N) is one source transaction with the marker "W:i": every document
it writes carries op = marker (inserts, replacements, and $set of op in
updates), so each change in a stream names its transaction. Collections:
DB.items, DB.events, DB.txlog and DB_b.c2. The kind of step i is i % 20:

   0 1 2 10 11 12   insert one item
   3 13             update: $set op, $inc cnt
   4 14             update: $set op, $unset pad
   5 15             replace an item (same _id)
   6 16             delete an item
   7 17             transaction, committed: insert 2 items, update 1, delete 1,
                    insert into events, insert the marker into txlog
   8                insert into DB_b.c2
   18               transaction, committed, across DB and DB_b: insert into c2,
                    update an item, insert the marker into txlog
   9                transaction, aborted: insert an item, update an item,
                    insert the marker into txlog, abort
   19               update a DB_b.c2 document ($set op)

An item to change is live[(i * 7919) % len(live)] (the writer's own items, so
writers never touch each other's documents); when there is none, the step
inserts instead. _ids are "W-i" or "W-i-j" (never reused). After each
transaction is acknowledged, one JSON line goes to the log:
  {"m": marker, "status": "committed"|"aborted", "multi": bool,
   "ops": [[type, ns, _id], ...]}     type: insert, update, replace, delete
Any error ends the writer with status 1. --rate R: R transactions per second
(0: as fast as it can).
"""
import argparse
import json
import sys
import time

import pymongo
from bson.int64 import Int64


def item(name, i, j, marker):
    return {"_id": "%s-%d-%d" % (name, i, j), "w": name, "n": i, "op": marker, "cnt": 0,
            "pad": "p" * (i % 37), "f": i / 4.0, "big": Int64(i * 1000003)}


def modified(r, what):
    if r.modified_count != 1:
        raise SystemExit("workload: %s modified %d documents" % (what, r.modified_count))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--uri", required=True)
    ap.add_argument("--name", required=True)
    ap.add_argument("--db", required=True)
    ap.add_argument("--count", type=int, required=True)
    ap.add_argument("--rate", type=float, default=0)
    ap.add_argument("--log", required=True)
    a = ap.parse_args()
    client = pymongo.MongoClient(a.uri, serverSelectionTimeoutMS=15000)
    db = client[a.db]
    db2 = client[a.db + "_b"]
    items, events, txlog, c2 = db["items"], db["events"], db["txlog"], db2["c2"]
    ns_items, ns_events, ns_txlog, ns_c2 = (a.db + ".items", a.db + ".events", a.db + ".txlog",
                                            a.db + "_b.c2")
    live = []
    live_c2 = []
    log = open(a.log, "a")
    committed = aborted = 0
    t0 = time.time()
    for i in range(1, a.count + 1):
        if a.rate > 0:
            delay = t0 + (i - 1) / a.rate - time.time()
            if delay > 0:
                time.sleep(delay)
        marker = "%s:%d" % (a.name, i)
        k = i % 20
        ops = []
        status = "committed"
        multi = k in (7, 17, 18, 9)

        def target():
            return live[(i * 7919) % len(live)]
        if k in (3, 13, 4, 14, 5, 15, 6, 16, 7, 17, 18, 9) and not live:
            k = 0
            multi = False
        if k in (0, 1, 2, 10, 11, 12):
            d = item(a.name, i, 0, marker)
            items.insert_one(d)
            live.append(d["_id"])
            ops.append(["insert", ns_items, d["_id"]])
        elif k in (3, 13):
            tid = target()
            modified(items.update_one({"_id": tid}, {"$set": {"op": marker}, "$inc": {"cnt": 1}}),
                     "update of " + tid)
            ops.append(["update", ns_items, tid])
        elif k in (4, 14):
            tid = target()
            modified(items.update_one({"_id": tid}, {"$set": {"op": marker}, "$unset": {"pad": ""}}),
                     "update of " + tid)
            ops.append(["update", ns_items, tid])
        elif k in (5, 15):
            tid = target()
            modified(items.replace_one({"_id": tid}, {"w": a.name, "n": i, "op": marker, "r": True,
                                                      "cnt": 0}), "replace of " + tid)
            ops.append(["replace", ns_items, tid])
        elif k in (6, 16):
            tid = target()
            items.delete_one({"_id": tid})
            live.remove(tid)
            ops.append(["delete", ns_items, tid])
        elif k in (7, 17):
            with client.start_session() as s:
                with s.start_transaction():
                    new = []
                    for j in (1, 2):
                        d = item(a.name, i, j, marker)
                        items.insert_one(d, session=s)
                        new.append(d["_id"])
                        ops.append(["insert", ns_items, d["_id"]])
                    tid = target()
                    items.update_one({"_id": tid}, {"$set": {"op": marker}, "$inc": {"cnt": 1}},
                                     session=s)
                    ops.append(["update", ns_items, tid])
                    gone = live[(i * 31) % len(live)]
                    items.delete_one({"_id": gone}, session=s)
                    ops.append(["delete", ns_items, gone])
                    eid = "%s-%d-e" % (a.name, i)
                    events.insert_one({"_id": eid, "op": marker, "kind": "event"}, session=s)
                    ops.append(["insert", ns_events, eid])
                    txlog.insert_one({"_id": marker, "op": marker, "kind": "multi"}, session=s)
                    ops.append(["insert", ns_txlog, marker])
            live.remove(gone)
            live.extend(new)
        elif k == 8:
            cid = "%s-%d" % (a.name, i)
            c2.insert_one({"_id": cid, "op": marker, "v": i})
            live_c2.append(cid)
            ops.append(["insert", ns_c2, cid])
        elif k == 18:
            with client.start_session() as s:
                with s.start_transaction():
                    cid = "%s-%d" % (a.name, i)
                    c2.insert_one({"_id": cid, "op": marker, "v": i}, session=s)
                    ops.append(["insert", ns_c2, cid])
                    tid = target()
                    items.update_one({"_id": tid}, {"$set": {"op": marker}}, session=s)
                    ops.append(["update", ns_items, tid])
                    txlog.insert_one({"_id": marker, "op": marker, "kind": "cross"}, session=s)
                    ops.append(["insert", ns_txlog, marker])
            live_c2.append(cid)
        elif k == 9:
            with client.start_session() as s:
                s.start_transaction()
                aid = "%s-%d-a" % (a.name, i)
                items.insert_one(item(a.name, i, 9, marker) | {"_id": aid}, session=s)
                ops.append(["insert", ns_items, aid])
                tid = target()
                items.update_one({"_id": tid}, {"$set": {"op": marker}}, session=s)
                ops.append(["update", ns_items, tid])
                txlog.insert_one({"_id": marker, "op": marker, "kind": "aborted"}, session=s)
                ops.append(["insert", ns_txlog, marker])
                s.abort_transaction()
            status = "aborted"
        elif k == 19:
            if live_c2:
                cid = live_c2[(i * 7919) % len(live_c2)]
                modified(c2.update_one({"_id": cid}, {"$set": {"op": marker}}),
                         "update of " + cid)
                ops.append(["update", ns_c2, cid])
            else:
                cid = "%s-%d" % (a.name, i)
                c2.insert_one({"_id": cid, "op": marker, "v": i})
                live_c2.append(cid)
                ops.append(["insert", ns_c2, cid])
        if status == "committed":
            committed += 1
        else:
            aborted += 1
        log.write(json.dumps({"m": marker, "status": status, "multi": multi, "ops": ops}) + "\n")
        log.flush()
    print("writer %s (pymongo): %d transactions committed, %d aborted in %.1f s"
          % (a.name, committed, aborted, time.time() - t0))
    return 0


if __name__ == "__main__":
    sys.exit(main())
