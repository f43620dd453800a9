#!/usr/bin/python3
"""MongoDB to MongoDB: capture, then apply into another deployment.

Source documents in two databases (DB and DB_b) before `capture --snapshot`,
the C and the pymongo writers during it. Then, each into a fresh target peer:
  - apply --exit-when-caught-up: the target's collections equal the source's
    as raw BSON, byte for byte; the progress document's txseq is the stream's
    last; a second run applies 0 transactions and changes nothing;
  - apply --follow in the background while the capture runs again with more
    writes: the target catches up (progress = last txseq), equals the source
    again, SIGTERM ends apply with 0;
  - --include 'DB.*': only DB's collections, equal to the source's, nothing of DB_b;
  - --until-txseq N: exactly the replay of txseq 1..N (progress N);
  - --dry-run: exit 0, the counts printed (as many transactions as the stream
    holds), the target empty (not even sluice.progress);
  - a copy of the store with one byte flipped in the middle of a segment: exit 1,
    and the target holds exactly the replay of a prefix of whole transactions
    that ends before the damaged frame (progress P < the last txseq).
Usage: test_apply_oneway.py --sluice BIN --peer PEER --writer MONGO_WRITER
"""
import json
import os
import shutil
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import applytest as at  # noqa: E402
import mongotest as mt  # noqa: E402
import stream_replay as sr  # noqa: E402


def compare_target(t, what, src, tgt, dbs):
    diffs = sr.compare(at.collections(tgt, dbs=dbs), sr.source_collections(src, dbs=dbs))
    return t.check(what, not diffs, "\n".join(diffs))


def main():
    t = mt.Test("mongo_apply_oneway", __doc__)
    if t.real_uri:
        t.say("the targets are peers: SLUICE_TEST_MONGO_URI is used as the source only")
    duration = 6 if not t.long else 20
    rate = 60 if not os.environ.get("SLUICE_SANITIZED") else 25
    src = t.deployment()
    src_uri = t.uri
    db = "sluicet_ao" + t.tag
    dbs = [db, db + "_b"]
    for i in range(50):
        src[db].pre.insert_one({"_id": "pre-%d" % i, "n": i, "s": "x" * (i * 10)})
        src[db + "_b"].pre.insert_one({"_id": i, "f": i / 3.0})
    cap = t.capture("ao", "--db", dbs[0], "--db", dbs[1], "--snapshot")
    cap.start()
    t.wait_marker(src, cap, db)
    n = duration * rate
    ws = [t.writer("c", "C1", db, n, rate), t.writer("py", "P1", db, n, rate)]
    t.wait_writers(ws)
    at.stop_capture(t, src, cap, db, 1)
    txns = t.txns("ao")
    last = txns[-1].txseq
    t.say("stream: %d transactions (txseq 1..%d), the first %s" % (len(txns), last, txns[0].kind))
    t.check("the stream starts with the snapshot", txns[0].kind == "snapshot")

    # ---- apply until caught up
    p1 = at.target_peer(t, "target1")
    tgt = mt.connect(p1.uri)
    ap = at.Apply(t, "t1", "ao", p1.uri)
    t0 = time.time()
    rc = ap.run("--exit-when-caught-up")
    t.check("apply --exit-when-caught-up exits 0 (%.1f s)" % (time.time() - t0), rc == 0, ap.tail())
    s = ap.summary()
    t.check("its summary counts every transaction (%s)" % (s and s["transactions"]),
            s is not None and s["transactions"] == len(txns) and s["last"] == last, ap.tail())
    compare_target(t, "the target equals the source, byte for byte", src, tgt, dbs)
    pt, pdoc = at.progress(tgt, "ao")
    t.check("the progress document's txseq is the stream's last (%s)" % pt, pt == last, pdoc)
    t.check("the progress document names the commit time and node",
            pdoc is not None and "commit_time" in pdoc and "node" in pdoc, pdoc)
    before = at.collections(tgt)
    rc = ap.run("--exit-when-caught-up")
    s = ap.summary()
    t.check("a second run exits 0 and applies 0 transactions", rc == 0 and s is not None
            and s["transactions"] == 0, ap.tail())
    t.check("it says it starts after the progress", at.resumed_from(ap.log_text()) == [last + 1],
            at.resumed_from(ap.log_text()))
    t.check("and changes nothing", not sr.compare(at.collections(tgt), before))

    # ---- follow while the capture runs again
    fol = at.Apply(t, "follow", "ao", p1.uri, "--follow")
    fol.start()
    cap.start()  # resumes after its last change: nothing written meanwhile is missed
    t.check("capture run 2 watches", cap.wait_watching(), cap.tail())
    ws = [t.writer("c", "C2", db, n, rate), t.writer("py", "P2", db, n, rate)]
    t.wait_writers(ws)
    at.stop_capture(t, src, cap, db, 2)
    txns = t.txns("ao")
    last2 = txns[-1].txseq
    t0 = time.time()
    ok = at.wait_progress(tgt, "ao", last2, timeout=90, apply=fol)
    t.check("apply --follow catches up to txseq %d (%.1f s after the capture stopped)"
            % (last2, time.time() - t0), ok, fol.tail())
    compare_target(t, "the target equals the source again, byte for byte", src, tgt, dbs)
    rc = fol.term()
    t.check("SIGTERM stops apply --follow with 0", rc == 0, fol.tail())
    s = fol.summary()
    t.check("it applied txseq %d..%d" % (last + 1, last2),
            s is not None and s["first"] == last + 1 and s["last"] == last2, fol.tail())
    t.check("the progress is the stream's last", at.progress(tgt, "ao")[0] == last2)

    # ---- --include one database
    p2 = at.target_peer(t, "target2")
    t2 = mt.connect(p2.uri)
    ap = at.Apply(t, "inc", "ao", p2.uri, "--include", db + ".*", "--exit-when-caught-up")
    rc = ap.run()
    t.check("apply --include '%s.*' exits 0" % db, rc == 0, ap.tail())
    got = at.collections(t2)
    t.check("the target holds only %s" % db, set(ns.split(".", 1)[0] for ns in got) == {db},
            sorted(got))
    compare_target(t, "%s equals the source's, byte for byte" % db, src, t2, [db])
    s = ap.summary()
    t.check("the changes of %s_b are counted as skipped (%s)" % (db, s and s["skipped"]),
            s is not None and s["skipped"] > 0)
    t.check("its progress is the stream's last", at.progress(t2, "ao")[0] == last2)

    # ---- --until-txseq N
    N = t.rng.randrange(2, last2)
    p3 = at.target_peer(t, "target3")
    t3 = mt.connect(p3.uri)
    ap = at.Apply(t, "until", "ao", p3.uri, "--until-txseq", str(N))
    rc = ap.run()
    t.check("apply --until-txseq %d exits 0" % N, rc == 0, ap.tail())
    model = at.ApplyModel().replay([tx for tx in txns if tx.txseq <= N])
    diffs = sr.compare(at.collections(t3), model.nonempty())
    t.check("the target is the replay of txseq 1..%d, byte for byte" % N, not diffs, "\n".join(diffs))
    t.check("its progress is %d" % N, at.progress(t3, "ao")[0] == N)

    # ---- --dry-run
    p4 = at.target_peer(t, "target4")
    t4 = mt.connect(p4.uri)
    ap = at.Apply(t, "dry", "ao", p4.uri, "--dry-run")
    rc = ap.run()
    t.check("apply --dry-run exits 0", rc == 0, ap.tail())
    t.check("it prints its counts: %d transactions" % len(txns),
            ap.stdout.startswith("dry run: %d transactions, " % len(txns))
            and "conflict insert_exists: " in ap.stdout, ap.stdout)
    left = [d for d in t4.list_database_names() if d not in ("admin", "config", "local")]
    t.check("the target stays empty (no database, no progress)", not left, left)

    # ---- a damaged copy of the store
    bad = os.path.join(t.dir, "store-bad")
    shutil.copytree(t.store, bad)
    sdir = os.path.join(bad, "ao")
    segs = sorted((os.path.getsize(os.path.join(sdir, f)), f) for f in os.listdir(sdir) if f.endswith(".seg"))
    size, seg = segs[-1]
    pos = size // 2
    with open(os.path.join(sdir, seg), "r+b") as f:
        f.seek(pos)
        b = f.read(1)
        f.seek(pos)
        f.write(bytes([b[0] ^ 0x40]))
    t.say("flipped byte %d of %s (%d bytes)" % (pos, seg, size))
    p5 = at.target_peer(t, "target5")
    t5 = mt.connect(p5.uri)
    ap = at.Apply(t, "bad", "ao", p5.uri, "--exit-when-caught-up", store=bad)
    rc = ap.run()
    t.check("apply of the damaged stream exits 1", rc == 1, "status %s\n%s" % (rc, ap.tail()))
    t.check("it says why", any("refusing stream" in m for m in at.log_messages(ap.log_text())), ap.tail())
    P = at.progress(t5, "ao")[0] or 0
    frames = subprocess.run([t.sluice, "inspect", "--store", t.store, "--stream", "ao", "--trust", t.pub,
                             "--json"], stdout=subprocess.PIPE, text=True).stdout
    frames = [json.loads(x) for x in frames.splitlines() if x.strip()]
    frames = [f for f in frames if f.get("type") == "frame" and f["segment"] == seg and f["offset"] <= pos]
    hit = max(frames, key=lambda f: f["offset"]) if frames else None
    t.say("the damaged frame: %s" % hit)
    t.check("everything before the damaged frame was applied, nothing of it (progress %d = txseq %s - 1)"
            % (P, hit and hit["txseq_start"]), hit is not None and P == hit["txseq_start"] - 1)
    model = at.ApplyModel().replay([tx for tx in txns if tx.txseq <= P])
    diffs = sr.compare(at.collections(t5), model.nonempty())
    t.check("the target is exactly the replay of txseq 1..%d (whole transactions)" % P, not diffs,
            "\n".join(diffs))
    rc, out = mt.Test.verify(_Store(t, bad), "ao")
    t.check("sluice verify fails on the damaged copy too", rc != 0, out[-2000:])
    if t.real_uri:
        for d in dbs:
            src.drop_database(d)
    _ = src_uri
    return t.finish()


class _Store:
    """What Test.verify needs, on another store."""

    def __init__(self, t, store):
        self.sluice, self.pub, self.store = t.sluice, t.pub, store


if __name__ == "__main__":
    sys.exit(main())
