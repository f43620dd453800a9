#!/usr/bin/python3
"""MongoDB two-way replication with conflicting writes: last writer wins
converges, with no echo.

A and B are prepared (`sluice prepare --node a` / `--node b`), each runs a
capture of its own deployment (streams a and b: node names a and b) and an
apply of the other's stream with --strategy timestamp, while two writers, one
on each side, write the SAME documents at once: inserts, $set updates,
replacements, deletes and two-document transactions over a small key space,
every write stamped with its writer (by: "a" / "b") and its own counter
(w_a / w_b). Apply
versions the local writes from each target's change stream (sluice.versions)
and decides every remote change against them.

Checked, once both sides are quiet: A and B hold the same documents, byte
for byte, and the same versions (sluice.versions: time, node, hash,
tombstone of every document); every write event in stream a was written by
A's writer (by: "a": nothing applied from B came back) and its deletes are
exactly the deletes A's writer made, and the same for b; both applies
logged conflicts (the writes did collide). Each apply is killed (kill -9)
and restarted a few times while the writers write (4 kills, 12 with --long). The peer detects write conflicts
between a transaction and other writes only if it implements them (see
tests/mongo/README.md); a real server does.
Usage: test_apply_converge.py --sluice BIN --peer PEER [--writer W]
"""
import os
import random
import subprocess
import sys
import threading
import time

import bson
from bson import SON
from pymongo.errors import DuplicateKeyError, OperationFailure

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import applytest as at  # noqa: E402
import mongotest as mt  # noqa: E402


class Writer(threading.Thread):
    """N writes by NAME on DB.items (and DB.pairs in transactions) over KEYS ids."""

    def __init__(self, client, db, name, n, keys, seed):
        super().__init__(daemon=True)
        self.client, self.db, self.name, self.n, self.keys = client, db, name, n, keys
        self.rng = random.Random(seed)
        self.deletes = 0
        self.error = None

    def doc(self, _id, k):
        return SON([("_id", _id), ("by", self.name), ("k", k), ("w_" + self.name, k),
                    ("pad", "x" * self.rng.randrange(20))])

    def run(self):
        items = self.client[self.db].items
        try:
            for k in range(self.n):
                _id = "d%d" % self.rng.randrange(self.keys)
                r = self.rng.random()
                try:
                    if r < 0.25:
                        items.insert_one(self.doc(_id, k))
                    elif r < 0.55:
                        items.update_one({"_id": _id}, {"$set": {"by": self.name, "k": k, "w_" + self.name: k}})
                    elif r < 0.7:
                        items.replace_one({"_id": _id}, self.doc(_id, k))
                    elif r < 0.85:
                        self.deletes += items.delete_one({"_id": _id}).deleted_count
                    else:
                        other = "d%d" % self.rng.randrange(self.keys)
                        with self.client.start_session() as s:
                            with s.start_transaction():
                                items.update_one({"_id": _id}, {"$set": {"by": self.name, "k": k, "w_" + self.name: k}},
                                                 session=s)
                                self.client[self.db].pairs.replace_one(
                                    {"_id": other}, self.doc(other, k), upsert=True, session=s)
                except DuplicateKeyError:
                    pass
                except OperationFailure as e:
                    if not e.has_error_label("TransientTransactionError"):
                        raise
                time.sleep(self.rng.random() * 0.012)
        except Exception as e:  # noqa: BLE001 - reported by the test
            self.error = repr(e)


def prepare(t, uri, node):
    p = subprocess.run([t.sluice, "prepare", "--target", uri, "--node", node],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=60)
    t.check("prepare --node %s exits 0" % node, p.returncode == 0, p.stdout)


def versions(client):
    """{(ns, id): (t, node, h, dt, dnode)} of sluice.versions but db.sync's."""
    out = {}
    for raw in client.sluice.versions.find({}):
        d = bson.decode(bytes(raw.raw))
        if d["_id"]["ns"].endswith(".sync"):
            continue
        out[(d["_id"]["ns"], repr(d["_id"]["id"]))] = tuple(
            d.get(f) for f in ("t", "node", "h", "dt", "dnode"))
    return out


def fields(raw):
    if raw is None:
        return {}
    return bson.decode(bytes(raw)) if isinstance(raw, (bytes, bytearray)) else raw


def main():
    t = mt.Test("mongo_apply_converge", __doc__)
    if t.real_uri:
        t.say("two deployments are needed: run against the peer only")
        return t.finish()
    db = "sluicet_cv"
    pa = t.start_peer()
    pb = at.target_peer(t, "b")
    a, b = mt.connect(pa.uri), mt.connect(pb.uri)
    prepare(t, pa.uri, "a")
    prepare(t, pb.uri, "b")
    t.uri = pa.uri
    # whole documents with updates: a delta applied where another write won
    # would give another document (apply warns)
    cap_a = t.capture("a", "--full-document", "updateLookup")
    t.uri = pb.uri
    cap_b = t.capture("b", "--full-document", "updateLookup")
    t.uri = pa.uri
    cap_a.start()
    cap_b.start()
    if not (cap_a.wait_watching() and cap_b.wait_watching()):
        t.die("a capture did not start watching", cap_a if not cap_a.alive() else cap_b)
    app_b = at.Apply(t, "into-b", "a", pb.uri, "--strategy", "timestamp")
    app_a = at.Apply(t, "into-a", "b", pa.uri, "--strategy", "timestamp")
    app_b.start()
    app_a.start()

    n = 1500 if t.long else 400
    wa = Writer(a, db, "a", n, 40, t.seed)
    wb = Writer(b, db, "b", n, 40, t.seed + 1)
    wa.start()
    wb.start()
    # kill -9 the applies now and then while the writers write: a restarted
    # apply resumes its version watcher from its progress document
    kills = 0
    rng = random.Random(t.seed + 2)
    while wa.is_alive() or wb.is_alive():
        time.sleep(0.3 + rng.random() * 0.7)
        if kills < (12 if t.long else 4) and (wa.is_alive() or wb.is_alive()):
            app = rng.choice((app_a, app_b))
            app.kill9()
            app.start()
            kills += 1
    wa.join(300)
    wb.join(300)
    t.say("%d kill -9 of an apply while the writers wrote" % kills)
    t.check("the writers finished (%s, %s)" % (wa.error, wb.error),
            not wa.is_alive() and not wb.is_alive() and wa.error is None and wb.error is None)

    def wait(cond, what):
        deadline = time.time() + 90
        while time.time() < deadline and not cond():
            time.sleep(0.5)
            for p in (cap_a, cap_b, app_a, app_b):
                if not p.alive():
                    t.die("a capture or apply exited while waiting for %s" % what, p)

    # Versions of local writes are recorded when apply next catches its watcher
    # up (before each transaction it applies): one more write on each side makes
    # the other side's apply do so after all of the writers' writes.
    wait(lambda: at.collections(a, [db]) == at.collections(b, [db]), "the documents")
    a[db].sync.insert_one({"_id": "a"})
    b[db].sync.insert_one({"_id": "b"})
    wait(lambda: len(list(a[db].sync.find({}))) == 2 and len(list(b[db].sync.find({}))) == 2,
         "the sync documents")
    ca, cb = at.collections(a, [db]), at.collections(b, [db])
    diff = [(ns, i) for ns in set(ca) | set(cb)
            for i in set(ca.get(ns, {})) | set(cb.get(ns, {}))
            if ca.get(ns, {}).get(i) != cb.get(ns, {}).get(i)]
    t.check("A and B hold the same documents, byte for byte (%d documents)"
            % sum(len(v) for v in ca.values()), ca == cb, diff[:5])
    va, vb = versions(a), versions(b)
    t.check("A and B hold the same versions (%d entries)" % len(va), va == vb,
            [(k, va.get(k), vb.get(k)) for k in set(va) | set(vb) if va.get(k) != vb.get(k)][:5])
    time.sleep(1.0)
    for p in (cap_a, cap_b):
        t.check("capture %s stops on SIGTERM with status 0" % p.stream, p.term() == 0, p.tail())
    for p in (app_a, app_b):
        t.check("apply %s stops on SIGTERM with status 0" % p.name, p.term() == 0, p.tail())
    for p in (app_a, app_b):
        t.say("apply %s, last run: %s" % (p.name, p.summary()))
    total = len(at.conflicts(a)) + len(at.conflicts(b))
    t.check("the writes collided (%d conflicts logged)" % total, total > 0)

    for stream, w in (("a", wa), ("b", wb)):
        txns = t.txns(stream)
        foreign, deletes = [], 0
        for tx in txns:
            for ch in tx.changes:
                if ch.ns not in (db + ".items", db + ".pairs"):
                    continue
                if ch.type == "delete":
                    deletes += 1
                    continue
                # a whole document names its writer; an update's changed fields
                # always hold the writer's own counter (w_a or w_b)
                if ch.document is not None:
                    f = fields(ch.document)
                    mine = f.get("by") == stream
                else:
                    f = fields(fields(ch.update_description).get("updatedFields"))
                    mine = "w_" + stream in f and "w_" + ("b" if stream == "a" else "a") not in f
                if not mine:
                    foreign.append((ch.type, f))
        t.check("stream %s holds only its own writer's writes (no echo; %d transactions)"
                % (stream, len(txns)), not foreign, foreign[:3])
        t.check("stream %s holds exactly its writer's %d deletes (%d)" % (stream, w.deletes, deletes),
                deletes == w.deletes)
    return t.finish()


if __name__ == "__main__":
    sys.exit(main())
