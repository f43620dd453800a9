#!/usr/bin/python3
"""MongoDB capture keeps going through change stream errors and a restarted
server, and stops plainly when the history it needs is gone.

Part 1: one capture runs (a database watch with --full-document updateLookup)
while both writers write in phases; during each phase a failCommand fail point
is on for a while:
  A  getMore fails with a resumable error (errorLabels ResumableChangeStreamError)
  B  getMore fails with a non-resumable error (11601 Interrupted, no labels)
  C  getMore's connection is closed
  D  getMore fails resumably and aggregate's connection is closed, so the
     driver's own resume fails and capture has to reconnect
  E  (peer only) the peer is stopped and restarted with its state file on the
     same port between two phases
Capture must never exit by itself; once a last marker is in the stream it must
exit 0 on SIGTERM. Then: the stream verifies, equals the source's change
history of the database (each transaction once, in order, whole), holds every
committed writer change of the database once, and replays to the source.
Update records carry the looked-up document (same _id) or none.

Part 3: --until-time a few seconds ahead: capture stops by itself (exit 0)
before the first transaction committed after it, and a rerun adds nothing.

Part 2 (peer only): a peer keeping 40 history entries; capture is stopped,
100 writes happen, and the same command must exit 3 naming the cause (history
lost, 286) and the recovery (a new snapshot into a new stream); the stream is
left intact; the recovery (--snapshot into a new stream) replays to the source.
"""
import os
import re
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import mongotest as mt  # noqa: E402
import stream_replay as sr  # noqa: E402


def failpoint(client, mode, **data):
    client.admin.command("configureFailPoint", "failCommand", mode=mode, data=data)


def sync(t, client, cap, db, n, timeout=90):
    """Inserts db.sync "sync-N" and waits until the stream holds it."""
    sid = "sync-%d" % n
    client[db].sync.insert_one({"_id": sid})
    ok = t.wait_stream(cap.stream, lambda ch: ch.type == "insert" and ch.ns == db + ".sync"
                       and ch.id == (0x02, mt._bson_str(sid)), timeout=timeout, cap=cap)
    if not cap.alive():
        t.die("capture exited by itself (status %s)" % cap.proc.returncode, cap)
    if not ok:
        t.die("%s did not reach the stream within %d s" % (sid, timeout), cap)


def part1(t):
    peer_only = not t.real_uri
    state = os.path.join(t.dir, "peer.state")
    if peer_only:
        peer = t.start_peer(state=state)
    client = mt.connect(t.uri)
    db = "sluicet_rs" + t.tag
    start = mt.cluster_time(client)
    cap = t.capture("rs", "--db", db, "--full-document", "updateLookup")
    cap.start()
    t.wait_marker(client, cap, db)
    ws = []
    rate, count = 80, 160  # 2 s of writing per phase

    def phase(name, setup, hold=2.0):
        t.say("phase %s" % name)
        w = [t.writer("c", "C" + name, db, count, rate), t.writer("py", "P" + name, db, count, rate)]
        ws.extend(w)
        time.sleep(0.3)
        setup()
        time.sleep(hold)
        failpoint(client, "off")
        t.wait_writers(w)
        sync(t, client, cap, db, len(ws))

    phase("A", lambda: failpoint(client, "alwaysOn", failCommands=["getMore"], errorCode=6,
                                 errorLabels=["ResumableChangeStreamError"]))
    phase("B", lambda: failpoint(client, "alwaysOn", failCommands=["getMore"], errorCode=11601,
                                 errorLabels=[]))
    t.check("capture reported the non-resumable error (code 11601) in its log",
            "11601" in cap.log_text(), cap.tail())
    phase("C", lambda: failpoint(client, "alwaysOn", failCommands=["getMore"], closeConnection=True),
          hold=1.5)
    phase("D", lambda: failpoint(client, "alwaysOn", failCommands=["getMore", "aggregate"],
                                 errorCode=6, errorLabels=["ResumableChangeStreamError"]))
    # aggregate closed alone: the resume of a resumable getMore error fails on it
    t.say("phase D2")
    failpoint(client, {"times": 1}, failCommands=["getMore"], errorCode=6,
              errorLabels=["ResumableChangeStreamError"])
    time.sleep(0.2)
    failpoint(client, {"times": 3}, failCommands=["aggregate"], closeConnection=True)
    time.sleep(3)
    failpoint(client, "off")
    sync(t, client, cap, db, 100)
    if peer_only:
        t.say("phase E: the peer stops for 2 s and restarts with its state file")
        rc = peer.stop()
        t.check("the peer stopped (status %s)" % rc, rc == 0)
        time.sleep(2)
        t.check("capture keeps running while the server is down", cap.alive(), cap.tail())
        peer.start()
        client = mt.connect(t.uri)
        w = [t.writer("c", "CE", db, count, rate), t.writer("py", "PE", db, count, rate)]
        ws.extend(w)
        t.wait_writers(w)
        sync(t, client, cap, db, 101)
    else:
        t.say("phase E (server restart) skipped: peer only")
    reconnects = len(re.findall(r"reconnecting to the source", cap.log_text()))
    t.say("capture logged %d reconnects" % reconnects)
    t.check("capture reconnected by itself (at least once)", reconnects >= 1)
    rc = cap.term()
    t.check("capture (one run throughout) exits 0 on SIGTERM", rc == 0, cap.tail())
    t.check("capture ran once", cap.runs == 1)

    rc, out = t.verify("rs")
    t.check("sluice verify passes", rc == 0, out)
    txns = t.txns("rs")
    t.check("txseqs are dense from 1", [tx.txseq for tx in txns] == list(range(1, len(txns) + 1)))
    in_db = lambda ns: (ns or "").split(".", 1)[0] == db  # noqa: E731
    stray = [ch for tx in txns for ch in tx.changes if not in_db(ch.ns)]
    t.check("only the watched database", not stray, stray[:5])
    groups = mt.group_events(mt.source_events(client, start, dbs=[db]))
    diffs = mt.compare_groups(mt.stream_groups(txns), groups)
    t.check("the stream's transactions are the source's, each once, in the source's order",
            not diffs, "\n".join(diffs))
    mt.check_writer_txns(t, txns, t.writer_logs(ws), keep_ns=in_db)
    model = sr.Model().replay(txns)
    diffs = sr.compare(model.nonempty(in_db), sr.source_collections(client, dbs=[db]))
    t.check("the replay equals the source, byte for byte", not diffs, "\n".join(diffs))
    ups = [ch for tx in txns for ch in tx.changes if ch.type == "update"]
    looked = [ch for ch in ups if ch.document is not None]
    wrong = [ch for ch in looked if sr.id_key(ch.document) != ch.id]
    t.check("updateLookup: %d of %d updates carry the looked-up document" % (len(looked), len(ups)),
            ups and looked)
    t.check("updateLookup: each looked-up document has the update's _id", not wrong, wrong[:3])
    if t.real_uri:
        client.drop_database(db)
        client.drop_database(db + "_b")


def part2(t):
    if t.real_uri:
        t.say("history lost: skipped (peer only: a small --history)")
        return
    peer = t.start_peer(history=40, name="peer-small")
    client = mt.connect(peer.uri)
    db = "sluicet_hl"
    cap = t.capture("hl", "--db", db)
    cap.start()
    t.wait_marker(client, cap, db)
    client[db].c.insert_many([{"_id": i} for i in range(5)])
    sync(t, client, cap, db, 1)
    rc = cap.term()
    t.check("history lost: the first run exits 0 on SIGTERM", rc == 0, cap.tail())
    for i in range(5, 105):
        client[db].c.insert_one({"_id": i, "v": "x" * (i % 7)})
    rc = cap.run(timeout=60)
    log = cap.log_text()
    t.check("history lost: the same command exits 3 (status %s)" % rc, rc == 3, cap.tail())
    low = log.lower()
    t.check("history lost: its message names the cause (history lost, 286)",
            ("history lost" in low or "historylost" in low) and "286" in log, cap.tail(5))
    t.check("history lost: and the recovery (a new snapshot into a new stream)",
            "snapshot" in low and "new stream" in low, cap.tail(5))
    rc, out = t.verify("hl")
    t.check("history lost: the stream is left intact (verify passes)", rc == 0, out)
    rec = t.capture("hl2", "--db", db, "--snapshot")
    rc = rec.run("--exit-when-caught-up", timeout=60)
    t.check("history lost: the recovery (--snapshot into a new stream) exits 0", rc == 0, rec.tail())
    txns = t.txns("hl2")
    t.check("history lost: the new stream starts with a snapshot", txns and txns[0].kind == "snapshot")
    model = sr.Model().replay(txns)
    diffs = sr.compare(model.nonempty(), sr.source_collections(client, dbs=[db]))
    t.check("history lost: the new stream replays to the source", not diffs, "\n".join(diffs))


def part3(t):
    """--until-time: capture stops by itself (exit 0) before the first
    transaction committed after TIME; the same command again adds nothing."""
    client = mt.connect(t.uri)
    db = "sluicet_until" + t.tag
    import datetime
    until = datetime.datetime.utcnow() + datetime.timedelta(seconds=6)
    cap = t.capture("until", "--db", db, "--until-time", until.strftime("%Y-%m-%dT%H:%M:%S.%fZ"))
    cap.start()
    t.wait_marker(client, cap, db)
    for i in range(5):
        client[db].c.insert_one({"_id": i})
    if datetime.datetime.utcnow() > until - datetime.timedelta(seconds=0.5):
        t.say("--until-time: skipped (the capture took too long to start on this machine)")
        cap.kill9()
        return
    # the bound is fixed at start: wait until it has passed, then write more
    while datetime.datetime.utcnow() < until + datetime.timedelta(seconds=0.5):
        if not cap.alive():
            break
        time.sleep(0.1)
    for i in range(5, 10):
        client[db].c.insert_one({"_id": i})
    try:
        rc = cap.proc.wait(timeout=30)
    except Exception:  # noqa: BLE001
        rc = None
    t.check("--until-time: capture stops by itself with status 0 after TIME (status %s)" % rc, rc == 0,
            cap.tail())
    ids = [sr.show_id(ch.id) for tx in t.txns("until") for ch in tx.changes if ch.ns == db + ".c"]
    t.check("--until-time: the stream holds what was committed before TIME, nothing after",
            ids == [str(i) for i in range(5)], ids)
    rc = cap.run(timeout=30)
    t.check("--until-time: the same command again exits 0", rc == 0, cap.tail())
    ids2 = [sr.show_id(ch.id) for tx in t.txns("until") for ch in tx.changes if ch.ns == db + ".c"]
    t.check("--until-time: and adds nothing", ids2 == ids, ids2)
    if t.real_uri:
        client.drop_database(db)


def main():
    t = mt.Test("mongo_capture_resume", __doc__)
    part1(t)
    part2(t)
    part3(t)
    return t.finish()


if __name__ == "__main__":
    sys.exit(main())
