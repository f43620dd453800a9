#!/usr/bin/python3
"""MongoDB apply of large source transactions in parts (--max-txn-writes):
a snapshot of 3000 documents and a multi-document transaction of 400
inserts, applied with --max-txn-writes 100, apply killed with SIGKILL at
random moments (5 times, 15 with SLUICE_TEST_LONG=1) and restarted.

Each part is a MongoDB transaction whose progress document names the source
changes done so far; a restarted apply skips them. Checked: the log says the
transactions are applied in parts; after every restart the progress never
goes back; the target ends equal to the source byte for byte with its
progress at the last txseq; no part was applied twice (a replayed insert
would be an insert_exists conflict row); a capture of the target's
deployment (running all along) holds none of apply's parts (each part starts
with its progress write, so none comes back in two-way replication).
Usage: test_apply_split.py --sluice BIN --peer PEER [--writer W]
"""
import os
import sys
import time

from bson import SON

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import applytest as at  # noqa: E402
import mongotest as mt  # noqa: E402


def main():
    t = mt.Test("mongo_apply_split", __doc__)
    client = t.deployment()
    db = "sluicet_split" + t.tag
    client[db].big.insert_many([SON([("_id", i), ("pad", "p" * 200)]) for i in range(3000)])
    cap = t.capture("sp", "--db", db, "--snapshot")
    t.check("capture --snapshot exits 0", cap.run("--exit-when-caught-up") == 0, cap.tail())
    with client.start_session() as s:
        with s.start_transaction():
            client[db].txn.insert_many([SON([("_id", i), ("v", i)]) for i in range(400)], session=s)
    client[db].big.delete_one({"_id": 7})
    t.check("capture of the transaction exits 0", cap.run("--exit-when-caught-up") == 0, cap.tail())
    last = t.txns("sp")[-1].txseq

    p = at.target_peer(t, "target")
    tgt = mt.connect(p.uri)
    t.uri = p.uri
    echo = t.capture("echo")  # the target's own changes: apply's must not be there
    echo.start()
    if not echo.wait_watching():
        t.die("the capture of the target did not start", echo)
    ap = at.Apply(t, "sp", "sp", p.uri, "--max-txn-writes", "100")
    kills = 15 if t.long else 5
    seen = []
    for k in range(kills):
        ap.start()
        time.sleep(t.rng.uniform(0.1, 0.8))
        ap.kill9()
        txseq, doc = at.progress(tgt, "sp")
        part = (doc or {}).get("part") or {}
        seen.append((txseq or 0, part.get("changes", 0)))
    t.say("progress after each kill (txseq, changes of the next one done): %s" % seen)
    t.check("the progress never went back", seen == sorted(seen))
    t.check("at least one kill left a transaction partly applied",
            any(c > 0 for _, c in seen))
    rc = ap.run("--exit-when-caught-up")
    t.check("the last run exits 0", rc == 0, ap.tail())
    logs = "".join(open(os.path.join(t.dir, "apply-sp-%d.log" % i)).read()
                   for i in range(1, ap.runs + 1))
    t.check("the log says the large transactions are applied in parts",
            "applying it in parts" in logs)
    t.check("the target equals the source, byte for byte",
            at.collections(tgt, [db]) == at.collections(client, [db]))
    t.check("the progress is the last txseq %d" % last, at.progress(tgt, "sp")[0] == last)
    rows = at.conflicts(tgt)
    t.check("no part was applied twice (no conflict rows: %d)" % len(rows), not rows,
            str(rows[:3]))
    time.sleep(1.0)
    t.check("the capture of the target stops with status 0", echo.term() == 0, echo.tail())
    changes = [ch for tx in t.txns("echo") for ch in tx.changes]
    t.check("none of apply's parts came back through a capture of the target (%d changes)"
            % len(changes), not changes)
    return t.finish()


if __name__ == "__main__":
    sys.exit(main())
