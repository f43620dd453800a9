#!/usr/bin/python3
"""Exactly-once MongoDB capture under kill -9.

While the C writer (libmongoc) and the Python writer (pymongo) run their
numbered workloads concurrently (single writes, multi-document transactions
across collections and databases, aborted transactions), capture is killed
with SIGKILL at random moments (some right after a restart) and restarted with
the same command, N times (5; 20 with SLUICE_TEST_LONG=1), and stopped once
with SIGTERM (must exit 0). Then the same command with --exit-when-caught-up
must exit 0, and:
  - the stream verifies, txseqs dense from 1, no snapshot;
  - its transactions equal the deployment's change history (read through
    pymongo from before capture started, only the watched databases): every
    source transaction once, in the source's order, multi-document ones whole;
  - every committed writer transaction once and whole, nothing of an aborted
    one, each writer in order;
  - nothing of an unwatched database;
  - replaying it gives exactly the source's documents (byte for byte).
Usage: test_capture_kill9.py --sluice BIN --peer PEER --writer MONGO_WRITER
(SEED=N repeats a kill schedule; SLUICE_TEST_MONGO_URI runs against a replica set.)
"""
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import mongotest as mt  # noqa: E402
import stream_replay as sr  # noqa: E402


def main():
    t = mt.Test("mongo_capture_kill9", __doc__)
    kills = 20 if t.long else 5
    duration = 30 if t.long else 10  # seconds of writing
    rate = 120 if not os.environ.get("SLUICE_SANITIZED") else 50
    client = t.deployment()
    db = "sluicet_k9" + t.tag
    dbs = [db, db + "_b"]
    start = mt.cluster_time(client)
    cap = t.capture("k9", "--db", dbs[0], "--db", dbs[1])
    cap.start()
    t.wait_marker(client, cap, db)
    t.say("capture streams; writers start (%d s at %d transactions/s each), %d kills"
          % (duration, rate, kills))
    n = duration * rate
    ws = [t.writer("c", "C1", db, n, rate), t.writer("py", "P1", db, n, rate)]

    def check_alive():
        if not cap.alive():
            t.die("capture run %d exited by itself with status %s" % (cap.runs, cap.proc.returncode),
                  cap)

    # kill moments spread over the writing; about a third right after a restart
    # (while capture connects or recovers the stream's tail)
    sigterm_at = t.rng.randrange(1, kills)
    moments = sorted(t.rng.uniform(0.2, duration) for _ in range(kills))
    w0 = time.time()
    for k in range(kills):
        if t.rng.random() < 0.3:
            time.sleep(t.rng.uniform(0, 0.15))
        else:
            time.sleep(max(0.0, w0 + moments[k] - time.time()))
        check_alive()
        if k == sigterm_at:
            cap.wait_watching()  # a signal before its handlers are set is no clean stop
            rc = cap.term()
            t.check("capture run %d exits 0 on SIGTERM" % cap.runs, rc == 0, cap.tail())
        cap.kill9()
        # the other database: never in the stream
        client[db + "_x"].other.insert_one({"k": k})
        cap.start()
    t.say("%d kills done" % kills)
    t.wait_writers(ws)
    time.sleep(t.rng.uniform(0.1, 1.0))
    check_alive()
    cap.kill9()
    t.say("writers done; capture run %d killed" % cap.runs)
    t0 = time.time()
    rc = cap.run("--exit-when-caught-up", timeout=120)
    if not t.check("the same command with --exit-when-caught-up exits 0 (%.1f s)" % (time.time() - t0),
                   rc == 0, "status %s\n%s" % (rc, cap.tail())):
        return t.finish()

    rc, out = t.verify("k9")
    t.check("sluice verify passes", rc == 0, out)
    txns = t.txns("k9")
    t.check("txseqs are dense from 1", [tx.txseq for tx in txns] == list(range(1, len(txns) + 1)))
    t.check("no snapshot", all(tx.kind == "tx" for tx in txns))
    stray = [ch for tx in txns for ch in tx.changes if (ch.ns or "").split(".", 1)[0] not in dbs]
    t.check("nothing of an unwatched database", not stray, stray[:5])
    events = mt.source_events(client, start, dbs=dbs)
    groups = mt.group_events(events)
    sg = mt.stream_groups(txns)
    t.say("stream: %d transactions; source history: %d transactions (%d events)"
          % (len(txns), len(groups), len(events)))
    diffs = mt.compare_groups(sg, groups)
    t.check("the stream's transactions are the source's, each once, in the source's order",
            not diffs, "\n".join(diffs))
    logs = t.writer_logs(ws)
    mt.check_writer_txns(t, txns, logs)
    model = sr.Model().replay(txns)
    diffs = sr.compare(model.nonempty(lambda ns: ns.split(".", 1)[0] in dbs),
                       sr.source_collections(client, dbs=dbs))
    t.check("the replay equals the source, byte for byte", not diffs, "\n".join(diffs))
    t.check("the replay updated no missing document", model.skipped == 0, model.skipped)
    t.say("%d capture runs" % t.capture_runs)
    if t.real_uri:
        for d in dbs + [db + "_x"]:
            client.drop_database(d)
    return t.finish()


if __name__ == "__main__":
    sys.exit(main())
