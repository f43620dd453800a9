#!/usr/bin/python3
"""Exactly-once MongoDB apply under kill -9.

A stream with a snapshot, the C and pymongo writers' transactions and large
multi-document transactions (about 1.5 MB, 1500 documents: test_capture_kill9's
BigWriter). `sluice apply --follow` into a target peer is killed with SIGKILL
at random moments (5 kills, 3 under sanitizers; 20 with SLUICE_TEST_LONG=1), first while it
catches up with the stream written so far, then while it follows with the
writers and the capture running, and restarted with the same command each
time. At the end: the target equals the source byte for byte, the progress is
the stream's last txseq, SIGTERM stops apply with 0.

Nothing applied twice, nothing lost. Lost changes show in the byte-for-byte
comparison. A transaction applied twice mostly does not (replace writes are
idempotent: upserts, and updates whose updatedFields hold the new values), so:
  - every restart must log that it starts at the progress it finds
    (progress + 1, read from sluice.progress just before the restart), and
    the progress never goes backwards;
  - a transaction applied again after its progress was committed meets its
    own inserts (insert_exists) and deletes (delete_missing): every one is a
    row in sluice.conflicts, committed with it. The stream itself may hold
    such conflicts (against the peer a snapshot copy and the changes overlap,
    README), so the rows must be exactly those of a control apply of the same
    stream into a fresh target in one uninterrupted run: same (txseq, kind,
    key) rows, no more. A transaction of only updates applied twice would go
    unseen by this check; nearly every workload transaction inserts or
    deletes.
Usage: test_apply_kill9.py --sluice BIN --peer PEER --writer MONGO_WRITER
"""
import os
import sys
import time

import bson

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import applytest as at  # noqa: E402
import mongotest as mt  # noqa: E402
import stream_replay as sr  # noqa: E402
from test_capture_kill9 import BigWriter  # noqa: E402


def conflict_rows(client):
    return sorted((r["txseq"], r["kind"], r["relation"], bson.encode(r["key"]).hex())
                  for r in at.conflicts(client))


def main():
    t = mt.Test("mongo_apply_kill9", __doc__)
    kills = 20 if t.long else 3 if os.environ.get("SLUICE_SANITIZED") else 5
    duration = 24 if t.long else 8
    rate = 60 if not os.environ.get("SLUICE_SANITIZED") else 25
    src = t.deployment()
    db = "sluicet_ak9" + t.tag
    dbs = [db, db + "_b"]
    for i in range(300):
        src[db].pre.insert_one({"_id": i, "s": "p" * (i % 100)})
    cap = t.capture("k9", "--db", dbs[0], "--db", dbs[1], "--snapshot")
    cap.start()
    at.wait_marker(t, src, cap, db, "m")
    n = duration * rate

    # phase 1: a stream written before apply starts (caught up under kills)
    half = n // 2
    ws = [t.writer("c", "C1", db, half, rate * 2), t.writer("py", "P1", db, half, rate * 2)]
    big = BigWriter(t, db, 3, 0.5)
    big.start()
    t.writers.append(big)
    t.wait_writers(ws)
    big.join()
    t.check("the large transactions were written", big.error is None, big.error)
    t.say("stream so far: %d transactions" % t.txns("k9", live=True)[-1].txseq)

    p = at.target_peer(t, "target")
    tgt = mt.connect(p.uri)
    ap = at.Apply(t, "k9", "k9", p.uri, "--follow")
    resumes = []  # (progress before the run, txseq the run says it starts at)
    last_progress = [0]
    backwards = []

    def start():
        pr = at.progress(tgt, "k9")[0] or 0
        if pr < last_progress[0]:
            backwards.append((last_progress[0], pr))
        last_progress[0] = pr
        ap.start()
        resumes.append((pr, ap.runs))

    idle = [0]  # kills that came when the run had nothing left to apply

    def kill_at(delay):
        # once this run has committed something (a kill while it applies, not
        # only while it connects), after a random delay
        deadline = time.time() + 20
        while time.time() < deadline and (at.progress(tgt, "k9")[0] or 0) <= last_progress[0]:
            time.sleep(0.02)
        if (at.progress(tgt, "k9")[0] or 0) <= last_progress[0]:
            idle[0] += 1  # caught up with the stream written so far (many kills, --long)
        time.sleep(delay)
        if not ap.alive():
            t.die("apply run %d exited by itself (status %s)" % (ap.runs, ap.proc.returncode), ap)
        ap.kill9()

    k1 = max(2, kills // 2)
    start()
    for k in range(k1):  # while catching up
        kill_at(t.rng.uniform(0, 0.5))
        start()
    t.say("%d kills while catching up (progress %s)" % (k1, at.progress(tgt, "k9")[0]))

    # phase 2: writers and capture running, apply following
    ws = [t.writer("c", "C2", db, n - half, rate), t.writer("py", "P2", db, n - half, rate)]
    big = BigWriter(t, db + "_b", 2, 1.5)  # its _ids again, in the other database
    big.wname, big.wlog = "B2", os.path.join(t.dir, "B2.jsonl")
    big.start()
    t.writers.append(big)
    w0 = time.time()
    for k in range(kills - k1):
        kill_at(t.rng.uniform(0, 0.8))
        start()
    t.say("%d kills while following, %.1f s" % (kills - k1, time.time() - w0))
    t.wait_writers(ws)
    big.join()
    t.check("the large transactions were written", big.error is None, big.error)
    at.stop_capture(t, src, cap, db, 1)
    txns = t.txns("k9")
    last = txns[-1].txseq
    ok = at.wait_progress(tgt, "k9", last, timeout=120, apply=ap)
    t.check("apply catches up to txseq %d" % last, ok, ap.tail())
    rc = ap.term()
    t.check("SIGTERM stops the last apply run with 0", rc == 0, ap.tail())

    diffs = sr.compare(at.collections(tgt, dbs=dbs), sr.source_collections(src, dbs=dbs))
    t.check("the target equals the source, byte for byte", not diffs, "\n".join(diffs))
    t.check("the progress is the stream's last txseq (%d)" % last, at.progress(tgt, "k9")[0] == last)
    bad = []
    for pr, run in resumes:
        text = open(os.path.join(t.dir, "apply-k9-%d.log" % run)).read()
        got = at.resumed_from(text)
        if not got or got[0] != pr + 1:
            bad.append("run %d: progress %d, started at %s" % (run, pr, got))
    t.check("each of the %d runs started at the progress it found + 1" % len(resumes), not bad, bad)
    t.check("the progress never went backwards", not backwards, backwards)
    moved = sum(1 for a, b in zip(resumes, resumes[1:]) if b[0] > a[0])
    t.say("the progress moved between %d of %d restarts (%d runs had caught up)"
          % (moved, len(resumes) - 1, idle[0]))
    t.check("the kills fell while apply was applying (progress moved between restarts "
            "that had something to apply)", moved >= kills - 1 - idle[0] and moved >= kills // 2,
            moved)

    ctl = at.target_peer(t, "control")
    tc = mt.connect(ctl.uri)
    ca = at.Apply(t, "control", "k9", ctl.uri, "--exit-when-caught-up")
    t.check("a control apply in one run exits 0", ca.run() == 0, ca.tail())
    diffs = sr.compare(at.collections(tc, dbs=dbs), sr.source_collections(src, dbs=dbs))
    t.check("the control target equals the source too", not diffs, "\n".join(diffs))
    mine, theirs = conflict_rows(tgt), conflict_rows(tc)
    extra = sorted(set(mine) - set(theirs))
    t.say("conflict rows: %d after the kills, %d in the control run" % (len(mine), len(theirs)))
    t.check("no transaction applied twice: the conflict rows are the control run's",
            mine == theirs, "extra: %s\nmissing: %s" % (extra[:5], sorted(set(theirs) - set(mine))[:5]))
    if t.real_uri:
        for d in dbs:
            src.drop_database(d)
    return t.finish()


if __name__ == "__main__":
    sys.exit(main())
