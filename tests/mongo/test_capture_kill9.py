#!/usr/bin/python3
"""Exactly-once MongoDB capture under kill -9.

While the C writer (libmongoc) and the Python writer (pymongo) run their
numbered workloads concurrently (single writes, multi-document transactions
across collections and databases, aborted transactions), capture is killed
with SIGKILL at random moments (some right after a restart) and restarted with
the same command, N times (5, 3 under sanitizers; 20 with SLUICE_TEST_LONG=1), and stopped once
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
import json
import os
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import mongotest as mt  # noqa: E402
import stream_replay as sr  # noqa: E402


class BigWriter(threading.Thread):
    """Large multi-document transactions (about 1.5 MB: more than a frame)
    between the writers' small ones, logged like the writers' (name "B")."""

    def __init__(self, t, db, count, gap):
        super().__init__(daemon=True)
        self.client = mt.connect(t.uri)
        self.db, self.count, self.gap = db, count, gap
        self.wname = "B"
        self.wlog = os.path.join(t.dir, "B.jsonl")
        self.error = None

    def run(self):
        try:
            with open(self.wlog, "w") as log:
                for i in range(1, self.count + 1):
                    time.sleep(self.gap)
                    m = "B:%d" % i
                    docs = [{"_id": "B-%d-%d" % (i, j), "op": m, "pad": os.urandom(500).hex()}
                            for j in range(1500)]
                    with self.client.start_session() as s:
                        with s.start_transaction():
                            self.client[self.db].big.insert_many(docs, session=s)
                            self.client[self.db].txlog.insert_one({"_id": m, "op": m, "kind": "big"},
                                                                  session=s)
                    ops = [["insert", self.db + ".big", d["_id"]] for d in docs]
                    ops.append(["insert", self.db + ".txlog", m])
                    log.write(json.dumps({"m": m, "status": "committed", "multi": True, "ops": ops}) + "\n")
                    log.flush()
        except Exception as e:  # noqa: BLE001 - reported by the test
            self.error = e

    # what Test.wait_writers/writer_logs use
    def poll(self):
        return None if self.is_alive() else 0

    def wait(self, timeout=None):
        self.join(timeout)
        return 1 if self.error else 0


def store_bytes(t, stream):
    n = 0
    d = os.path.join(t.store, stream)
    for f in os.listdir(d) if os.path.isdir(d) else []:
        try:
            n += os.stat(os.path.join(d, f)).st_size
        except FileNotFoundError:
            pass
    return n


def kill_in_large_txn(t, cap):
    """Kills capture once the stream grows by more than 150 kB between two looks
    10 ms apart (only a large transaction's frames do), or after 2 s."""
    last = store_bytes(t, cap.stream)
    for _ in range(200):
        time.sleep(0.01)
        now = store_bytes(t, cap.stream)
        if now - last > 150000:
            cap.kill9()
            return True
        last = now
    cap.kill9()
    return False


def main():
    t = mt.Test("mongo_capture_kill9", __doc__)
    kills = 20 if t.long else 3 if os.environ.get("SLUICE_SANITIZED") else 5
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
    big = BigWriter(t, db, max(3, duration // 2), 1.5)
    big.start()
    t.writers.append(big)
    big_kills = 0

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
        elif k % 3 == 2 and big.is_alive():
            big_kills += kill_in_large_txn(t, cap)
        cap.kill9()
        # the other database: never in the stream
        client[db + "_x"].other.insert_one({"k": k})
        cap.start()
    t.say("%d kills done, %d of them while capture wrote a large transaction" % (kills, big_kills))
    t.wait_writers(ws)
    big.join()
    t.check("the large transactions were written", big.error is None, big.error)
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
    logs = t.writer_logs(ws + [big])
    mt.check_writer_txns(t, txns, logs)
    model = sr.Model().replay(txns)
    diffs = sr.compare(model.nonempty(lambda ns: ns.split(".", 1)[0] in dbs),
                       sr.source_collections(client, dbs=dbs))
    t.check("the replay equals the source, byte for byte", not diffs, "\n".join(diffs))
    t.check("the replay updated no missing document", model.skipped == 0, model.skipped)
    frames = subprocess.run([t.sluice, "inspect", "--store", t.store, "--stream", "k9", "--trust",
                             t.pub, "--json"], stdout=subprocess.PIPE, text=True).stdout
    frames = [json.loads(x) for x in frames.splitlines() if x.strip()]
    spanning = [f for f in frames if f.get("type") == "frame" and "open" in f.get("flags", "").split(",")]
    t.check("large transactions span frames (%d frames left open)" % len(spanning), spanning)
    t.say("%d capture runs" % t.capture_runs)
    if t.real_uri:
        for d in dbs + [db + "_x"]:
            client.drop_database(d)
    return t.finish()


if __name__ == "__main__":
    sys.exit(main())
