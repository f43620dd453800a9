#!/usr/bin/python3
"""MongoDB capture --snapshot while writers write.

The Python writer fills two databases; then both writers run concurrently and,
while they write, `capture --snapshot --exit-when-caught-up` (two --db) takes
its snapshot into a new stream and catches up; after the writers stop the same
command runs again until caught up (no second snapshot). Then:
  - the stream verifies; txseq 1 is the snapshot (snapshot_begin, a relation
    per collection, snapshot_row with the document, snapshot_end with the row
    count), every later transaction a change transaction;
  - the change transactions equal the source's change history from the
    snapshot's cluster time T (capture logs "snapshot of N collections at
    Timestamp(t, i)"), each once, in order, multi-document ones whole;
  - no committed writer transaction is twice among the changes; each writer's
    transactions among the changes are a contiguous suffix of its commits,
    and the multi-document ones before it are in the snapshot (txlog marker);
  - replaying the snapshot and then the changes gives the source's documents
    byte for byte.
Also a quiet source: two documents, then --snapshot --exit-when-caught-up:
the stream holds the snapshot and nothing else (the last write, at the
snapshot's cluster time T, is in the copy; the change stream starts just
after T).
And a throttled copy: --snapshot --max-rate 200 of 1,000 documents takes at
least ~4 s (a burst of one second), logs the time it waited, and holds every
document.
"""
import os
import re
import sys
import time

import bson

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import mongotest as mt  # noqa: E402
import stream_replay as sr  # noqa: E402


def snapshot_time(cap):
    m = re.search(r"snapshot of \d+ collections at Timestamp\((\d+), (\d+)\)", cap.log_text())
    return bson.Timestamp(int(m.group(1)), int(m.group(2))) if m else None


def quiet(t, client):
    db = "sluicet_snq" + t.tag
    client[db].c.insert_one({"_id": 1, "a": "first"})
    client[db].c.insert_one({"_id": 2, "a": "last write before the snapshot"})
    cap = t.capture("snq", "--db", db, "--snapshot")
    rc = cap.run("--exit-when-caught-up", timeout=60)
    t.check("quiet source: --snapshot --exit-when-caught-up exits 0", rc == 0, cap.tail())
    txns = t.txns("snq")
    t.check("quiet source: the snapshot holds both documents",
            txns and txns[0].kind == "snapshot" and len(txns[0].changes) == 2,
            txns[:1])
    # docs/architecture.md: the copy holds every write at or before T and the
    # change stream starts just after T, so nothing follows the snapshot here.
    extra = txns[1:]
    t.check("quiet source: nothing after the snapshot (the write at its time T is only copied)",
            not extra, extra)
    if t.real_uri:
        client.drop_database(db)


def throttled(t, client):
    db = "sluicet_snr" + t.tag
    client[db].c.insert_many([{"_id": k, "pad": "r" * 100} for k in range(1000)])
    cap = t.capture("snr", "--db", db, "--snapshot", "--max-rate", "200")
    t0 = time.time()
    rc = cap.run("--exit-when-caught-up", timeout=120)
    took = time.time() - t0
    t.check("throttled snapshot: exits 0", rc == 0, cap.tail())
    t.check("throttled snapshot: 1000 documents at 200/s take >= 3.5 s", took >= 3.5, took)
    m = re.search(r"--max-rate: waited ([0-9.]+) s in all", cap.log_text())
    t.check("throttled snapshot: the wait is logged", m and float(m.group(1)) >= 3, cap.tail())
    txns = t.txns("snr")
    t.check("throttled snapshot: every document copied",
            txns and txns[0].kind == "snapshot" and len(txns[0].changes) == 1000,
            [len(x.changes) for x in txns[:1]])
    if t.real_uri:
        client.drop_database(db)


def main():
    t = mt.Test("mongo_capture_snapshot", __doc__)
    client = t.deployment()
    quiet(t, client)
    throttled(t, client)
    db = "sluicet_sn" + t.tag
    dbs = [db, db + "_b"]
    keep = lambda ns: (ns or "").split(".", 1)[0] in dbs  # noqa: E731
    fill = t.writer("py", "P0", db, 1500)
    t.wait_writers([fill])
    rate, count = 100, 600
    ws = [t.writer("c", "C1", db, count, rate), t.writer("py", "P1", db, count, rate)]
    time.sleep(1.0)
    cap = t.capture("sn", "--db", dbs[0], "--db", dbs[1], "--snapshot")
    t0 = time.time()
    rc = cap.run("--exit-when-caught-up", timeout=120)
    busy = all(w.poll() is None for w in ws)
    t.check("--snapshot --exit-when-caught-up during the writes exits 0 (%.1f s)" % (time.time() - t0),
            rc == 0, cap.tail())
    T = snapshot_time(cap)
    t.check("capture logged the snapshot's cluster time (%s)" % (T,), T is not None, cap.tail())
    t.say("the writers were %s while it ran" % ("still writing" if busy else "DONE (no overlap)"))
    t.check("the snapshot run overlapped the writes", busy)
    t.wait_writers(ws)
    rc = cap.run("--exit-when-caught-up", timeout=120)
    t.check("the same command after the writes exits 0", rc == 0, cap.tail())
    t.check("and says the snapshot is not taken again",
            "not taken again" in cap.log_text() or "snapshot of" not in cap.log_text(), cap.tail())

    rc, out = t.verify("sn")
    t.check("sluice verify passes", rc == 0, out)
    txns = t.txns("sn")
    t.check("txseqs are dense from 1", [tx.txseq for tx in txns] == list(range(1, len(txns) + 1)))
    snap = txns[0] if txns else None
    t.check("txseq 1 is the snapshot", snap is not None and snap.kind == "snapshot")
    t.check("only txseq 1 is a snapshot", all(tx.kind == "tx" for tx in txns[1:]))
    if snap is None or snap.kind != "snapshot":
        return t.finish()
    ct = snap.opening.get("cluster_time")
    rec_T = bson.Timestamp(ct["t"], ct["i"]) if isinstance(ct, dict) else None
    t.check("snapshot_begin carries the snapshot's cluster time (%s)" % (rec_T,), rec_T == T,
            "logged %s" % (T,))
    rows = [ch for ch in snap.changes if ch.type == "snapshot_row"]
    t.check("the snapshot holds only snapshot rows", len(rows) == len(snap.changes))
    t.check("snapshot_end counts its rows (%s)" % snap.closing.get("rows"),
            snap.closing.get("rows") == len(rows))
    copied = {ch.ns for ch in rows}
    want = {db + ".items", db + ".events", db + ".txlog", dbs[1] + ".c2"}
    t.check("the snapshot copied %s" % sorted(copied), want <= copied, sorted(want - copied))
    t.check("each row has a document with an _id", all(ch.id is not None for ch in rows))
    stray = [ch for tx in txns for ch in tx.changes if not keep(ch.ns)]
    t.check("nothing of another database", not stray, stray[:5])

    if T is not None:
        # from T on (what startAtOperationTime T gives) or after T (without the
        # transaction at T, which the snapshot holds): the quiet check judges that
        events = mt.source_events(client, T, dbs=dbs)
        sg = mt.stream_groups(txns)
        diffs = mt.compare_groups(sg, mt.group_events(events), align=False)
        if diffs:
            after = [e for e in events if mt.event_time(e) > T]
            if not mt.compare_groups(sg, mt.group_events(after), align=False):
                diffs = []
        t.check("the changes are the source's history from the snapshot's time, each once, in order",
                not diffs, "\n".join(diffs))

    logs = t.writer_logs(ws + [fill])
    # a real server reads the copy at T: nothing is then both copied and a change
    strict = bool(t.real_uri) and "read at its cluster time" in open(
        os.path.join(t.dir, "cap-sn-1.log")).read()
    check_snapshot_writers(t, txns, logs, strict)
    model = sr.Model().replay(txns)
    diffs = sr.compare(model.nonempty(keep), sr.source_collections(client, dbs=dbs))
    t.check("the replay (snapshot, then changes) equals the source, byte for byte", not diffs,
            "\n".join(diffs))
    t.say("the replay skipped %d updates of documents it did not have" % model.skipped)
    killed_snapshot(t, client, db, dbs, keep)
    if t.real_uri:
        for d in dbs:
            client.drop_database(d)
    return t.finish()


def killed_snapshot(t, client, db, dbs, keep):
    """kill -9 during the snapshot (writers running), twice, and SIGTERM once
    (exit 0); then the same command until caught up: one snapshot, the history
    after it, the source."""
    # enough documents that the copy takes a while (about 10 MB)
    for k in range(6):
        client[db].big.insert_many([{"_id": k * 1000 + j, "pad": "b" * 1500} for j in range(1000)])
    ws = [t.writer("c", "C2", db, 300, 100), t.writer("py", "P2", db, 300, 100)]
    # The copy takes some tens of milliseconds here: stop it at once when it starts. A stop
    # that still comes after it finds the snapshot done, and later runs take none: then try
    # again on a new stream (the writers may have finished by then: a quiet copy is killed).
    for attempt in range(4):
        name = "snk" if attempt == 0 else "snk%d" % attempt
        cap = t.capture(name, "--db", dbs[0], "--db", dbs[1], "--snapshot")
        during = 0
        for k in range(3):
            cap.start()
            deadline = time.time() + 20
            while cap.alive() and time.time() < deadline and "snapshot of" not in cap.log_text():
                time.sleep(0.001)
            time.sleep(t.rng.uniform(0.0, 0.01))
            if not cap.alive():
                t.check("killed snapshot: run %d is still running when killed" % cap.runs, False, cap.tail())
            if k == 1:
                # a clean stop during the copy: exit 0, the next run copies again
                rc = cap.term()
                t.check("killed snapshot: SIGTERM during the copy: exit 0 (status %s)" % rc, rc == 0,
                        cap.tail(3))
            cap.kill9()
            text = cap.log_text()
            if "snapshot of" in text and "snapshot done" not in text:
                during += 1
            if "snapshot done" in text:
                break  # later runs of this stream take no snapshot
        t.say("killed snapshot: stream %s: %d of %d stops came during the copy" % (name, during, k + 1))
        if during >= 1:
            break
    t.check("killed snapshot: at least one stop came during the copy", during >= 1)
    t.wait_writers(ws)
    rc = cap.run("--exit-when-caught-up", timeout=120)
    t.check("killed snapshot: the same command then exits 0", rc == 0, cap.tail())
    T = None
    for i in range(1, cap.runs + 1):
        text = open(os.path.join(t.dir, "cap-%s-%d.log" % (name, i))).read()
        if "snapshot done" in text:
            m = re.search(r"snapshot of \d+ collections at Timestamp\((\d+), (\d+)\)", text)
            T = bson.Timestamp(int(m.group(1)), int(m.group(2)))
            t.say("killed snapshot: run %d of %d completed the snapshot at %s" % (i, cap.runs, T))
    rc, out = t.verify(name)
    t.check("killed snapshot: sluice verify passes", rc == 0, out)
    txns = t.txns(name)
    t.check("killed snapshot: one snapshot, at txseq 1",
            txns and txns[0].kind == "snapshot" and all(tx.kind == "tx" for tx in txns[1:]))
    t.check("killed snapshot: txseqs are dense from 1",
            [tx.txseq for tx in txns] == list(range(1, len(txns) + 1)))
    if T is not None:
        events = mt.source_events(client, T, dbs=dbs)
        sg = mt.stream_groups(txns)
        diffs = mt.compare_groups(sg, mt.group_events(events), align=False)
        if diffs and not mt.compare_groups(
                sg, mt.group_events([e for e in events if mt.event_time(e) > T]), align=False):
            diffs = []
        t.check("killed snapshot: the changes are the source's history from the snapshot's time",
                not diffs, "\n".join(diffs))
    model = sr.Model().replay(txns)
    diffs = sr.compare(model.nonempty(keep), sr.source_collections(client, dbs=dbs))
    t.check("killed snapshot: the replay equals the source, byte for byte", not diffs, "\n".join(diffs))


def check_snapshot_writers(t, txns, logs, strict):
    """Writer transactions around a snapshot (see the header). STRICT: the copy
    was read at the snapshot's cluster time, so no multi-document writer
    transaction may be both in the copy and among the changes."""
    opmap = {}
    for e in logs:
        for typ, ns, _id in e["ops"]:
            opmap[(typ, ns, _id, None if typ == "delete" else e["m"])] = e["m"]
    found = {}
    for tx in txns[1:]:
        ms = set()
        for ch in tx.changes:
            m = mt.change_marker(ch)
            owner = opmap.get((ch.type, ch.ns, mt.id_string(ch.id), None if ch.type == "delete" else m))
            if owner:
                ms.add(owner)
        for m in ms:
            found.setdefault(m, []).append(tx.txseq)
    committed = [e for e in logs if e["status"] == "committed"]
    twice = ["%s in %s" % (e["m"], found[e["m"]]) for e in committed if len(found.get(e["m"], [])) > 1]
    t.check("no writer transaction is twice among the changes", not twice, twice[:5])
    snap_txlog = {mt.id_string(ch.id) for ch in txns[0].changes if ch.ns.endswith(".txlog")}
    gaps, lost = [], []
    by_writer = {}
    for e in committed:
        by_writer.setdefault(e["writer"], []).append(e)
    for w, lst in by_writer.items():
        inch = [e["m"] in found for e in lst]
        first = inch.index(True) if True in inch else len(lst)
        if not all(inch[first:]):
            gaps.append("%s: %s after %s" % (w, lst[first + inch[first:].index(False)]["m"], lst[first]["m"]))
        for e in lst[:first]:
            if e.get("multi") and e["m"] not in snap_txlog:
                lost.append(e["m"])
        t.say("writer %s: %d transactions before the changes start, %d among the changes"
              % (w, first, len(lst) - first))
    t.check("each writer's transactions among the changes are a contiguous suffix of its commits",
            not gaps, gaps[:5])
    t.check("its multi-document transactions before that are in the snapshot (txlog marker)",
            not lost, lost[:5])
    both = sorted(m for m in snap_txlog if m in found)
    if strict:
        t.check("no multi-document transaction is both in the snapshot and among the changes",
                not both, both[:5])
    else:
        t.say("%d multi-document transactions are both in the snapshot and among the changes "
              "(the peer does not read the copy at the snapshot's cluster time)" % len(both))


if __name__ == "__main__":
    sys.exit(main())
