#!/usr/bin/python3
"""MongoDB apply: the conflict cases a MongoDB target can meet (apply/conflict.c),
the standalone refusal, and two applies of one stream at once.

The source holds upd-missing, repl-missing, del-missing, upd-present and
del-present before two captures start (stream "lk" with --full-document
updateLookup, stream "nolk" without); then, one source transaction each:
insert ins-exists, insert ins-new, $set upd-missing, replace repl-missing,
delete del-missing, $set upd-present, delete del-present. Each target peer
holds local ins-exists, upd-present and del-present (written with pymongo)
before apply. For replace and append, with and without the looked-up document:

  change                replace                         append
  insert ins-exists     overwritten: insert_exists/     kept: insert_exists/
                        remote                          kept_local
  $set upd-missing      lk: inserted, update_missing/inserted;
                        nolk: update_missing/skipped (both strategies)
  replace repl-missing  inserted, update_missing/inserted (both)
  delete del-missing    delete_missing/skipped (both)
  $set upd-present      applied to the local document   kept (skipped)
  delete del-present    deleted                         kept (skipped)

Checked: the exit summary's counters, the rows of sluice.conflicts (kind,
resolution, relation, key, txseq, remote_node) and the target's documents.
Then: a standalone target (peer --standalone, ?directConnection=true) is
refused (exit 3, naming standalone and --at-least-once) and applied with
--at-least-once; two applies of one stream into one target at once.
Usage: test_apply_conflicts.py --sluice BIN --peer PEER [--writer W]
"""
import os
import sys
import time

import bson
from bson import SON

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import applytest as at  # noqa: E402
import mongotest as mt  # noqa: E402
import stream_replay as sr  # noqa: E402


def raw(d):
    return bson.encode(d)


def key(_id):
    return sr.id_key(raw({"_id": _id}))


LOCAL = {
    "ins-exists": SON([("_id", "ins-exists"), ("v", "local"), ("l", True)]),
    "upd-present": SON([("_id", "upd-present"), ("v", "local"), ("l", True)]),
    "del-present": SON([("_id", "del-present"), ("v", "local"), ("l", True)]),
}


def expected(strategy, lookup, src_docs):
    """{id: raw or None (absent)}, {kind: count}, [(kind, resolution, id)], skipped (besides
    excluded relations)."""
    docs, conf, rows = {}, {}, []

    def c(kind, res, _id):
        conf[kind] = conf.get(kind, 0) + 1
        rows.append((kind, res, _id))
    replace = strategy == "replace"
    docs["ins-exists"] = src_docs["ins-exists"] if replace else raw(LOCAL["ins-exists"])
    c("insert_exists", "remote" if replace else "kept_local", "ins-exists")
    docs["ins-new"] = src_docs["ins-new"]
    if lookup:
        docs["upd-missing"] = src_docs["upd-missing"]
        c("update_missing", "inserted", "upd-missing")
    else:
        docs["upd-missing"] = None
        c("update_missing", "skipped", "upd-missing")
    docs["repl-missing"] = src_docs["repl-missing"]
    c("update_missing", "inserted", "repl-missing")
    docs["del-missing"] = None
    c("delete_missing", "skipped", "del-missing")
    if replace:
        docs["upd-present"] = raw(SON([("_id", "upd-present"), ("v", 1), ("l", True)]))
        docs["del-present"] = None
        skipped = 0
    else:
        docs["upd-present"] = raw(LOCAL["upd-present"])
        docs["del-present"] = raw(LOCAL["del-present"])
        skipped = 2
    return docs, conf, rows, skipped


def main():
    t = mt.Test("mongo_apply_conflicts", __doc__)
    src = t.deployment()
    db = "sluicet_cf" + t.tag
    ns = db + ".a"
    c = src[db].a
    for _id in ("upd-missing", "repl-missing", "del-missing"):
        c.insert_one({"_id": _id, "v": 0, "s": "source"})
    for _id in ("upd-present", "del-present"):
        c.insert_one({"_id": _id, "v": 0, "s": "source"})
    caps = {"lk": t.capture("lk", "--db", db, "--full-document", "updateLookup"),
            "nolk": t.capture("nolk", "--db", db)}
    for cap in caps.values():
        cap.start()
    for k, cap in caps.items():
        at.wait_marker(t, src, cap, db, k)
    c.insert_one({"_id": "ins-exists", "v": "remote"})
    c.insert_one({"_id": "ins-new", "v": 2})
    c.update_one({"_id": "upd-missing"}, {"$set": {"v": 1}})
    c.replace_one({"_id": "repl-missing"}, {"w": 1})
    c.delete_one({"_id": "del-missing"})
    c.update_one({"_id": "upd-present"}, {"$set": {"v": 1}})
    c.delete_one({"_id": "del-present"})
    for k, cap in caps.items():
        at.stop_capture(t, src, cap, db, 1 if k == "lk" else 2)
    src_docs = {}
    for d in c.find({}):
        src_docs[bson.decode(d.raw)["_id"]] = bytes(d.raw)

    for stream in ("lk", "nolk"):
        txns = t.txns(stream)
        txseq_of = {}
        for tx in txns:
            for ch in tx.changes:
                if ch.ns == ns:
                    txseq_of[ch.id] = tx.txseq
        hello = sum(1 for tx in txns for ch in tx.changes if ch.ns == db + ".hello")
        t.check("stream %s: each change of %s is a transaction of its own (%d)" % (stream, ns, len(txseq_of)),
                len(txseq_of) == 7 and len(set(txseq_of.values())) == 7, txseq_of)
        for strategy in ("replace", "append"):
            label = "%s, %s: " % (strategy, stream)
            p = at.target_peer(t, "t-%s-%s" % (strategy, stream))
            tgt = mt.connect(p.uri)
            for d in LOCAL.values():
                tgt[db].a.insert_one(bson.raw_bson.RawBSONDocument(raw(d)))
            ap = at.Apply(t, "%s-%s" % (strategy, stream), stream, p.uri, "--strategy", strategy,
                          "--exclude", db + ".hello", "--exit-when-caught-up")
            rc = ap.run()
            t.check(label + "apply exits 0", rc == 0, ap.tail())
            docs, conf, rows, skipped = expected(strategy, stream == "lk", src_docs)
            s = ap.summary() or {}
            t.check(label + "summary conflicts %s" % conf, s.get("conflicts") == conf, s)
            t.check(label + "summary skipped %d (%d of %s.hello excluded)" % (skipped + hello, hello, db),
                    s.get("skipped") == skipped + hello, s)
            t.check(label + "summary counts all %d transactions" % len(txns),
                    s.get("transactions") == len(txns), s)
            got_rows = at.conflicts(tgt)
            want = sorted((k, r, _id, txseq_of[key(_id)]) for k, r, _id in rows)
            have = sorted((r.get("kind"), r.get("resolution"), r.get("key", {}).get("_id"), r.get("txseq"))
                          for r in got_rows)
            t.check(label + "sluice.conflicts rows (kind, resolution, key, txseq)", have == want,
                    "have %s\nwant %s" % (have, want))
            bad = [r for r in got_rows if r.get("stream") != stream or r.get("relation") != ns
                   or list(r.get("key", {}).keys()) != ["_id"] or not r.get("remote_node")
                   or "remote_time" not in r]
            t.check(label + "each row names the stream, relation, key {_id}, remote time and node",
                    not bad, bad[:3])
            have_docs = {}
            for d in tgt[db].a.find({}):
                have_docs[bson.decode(d.raw)["_id"]] = bytes(d.raw)
            wrong = []
            for _id, want_raw in docs.items():
                if have_docs.get(_id) != want_raw:
                    wrong.append("%s: have %s, want %s" % (
                        _id, have_docs.get(_id) and sr.show_doc(have_docs[_id]),
                        want_raw and sr.show_doc(want_raw)))
            extra = set(have_docs) - set(docs)
            t.check(label + "the target's documents, byte for byte", not wrong and not extra,
                    "\n".join(wrong) + ("\nextra: %s" % extra if extra else ""))

    # ---- a standalone target
    sp = at.target_peer(t, "standalone", standalone=True)
    st = mt.connect(sp.uri)
    ap = at.Apply(t, "standalone", "nolk", sp.uri, "--exit-when-caught-up")
    rc = ap.run()
    msgs = " ".join(at.log_messages(ap.log_text()))
    t.check("a standalone target: apply exits 3", rc == 3, "status %s\n%s" % (rc, ap.tail()))
    t.check("and says it is a standalone server and names --at-least-once",
            "standalone" in msgs and "--at-least-once" in msgs, ap.tail())
    left = [d for d in st.list_database_names() if d not in ("admin", "config", "local")]
    t.check("nothing was written there", not left, left)
    rc = ap.run("--at-least-once")
    t.check("with --at-least-once it applies (exit 0)", rc == 0, ap.tail())
    txns = t.txns("nolk")
    model = at.ApplyModel().replay(txns)
    diffs = sr.compare(at.collections(st), model.nonempty())
    t.check("the standalone target is the stream's replay, byte for byte", not diffs, "\n".join(diffs))
    t.check("its progress is the stream's last", at.progress(st, "nolk")[0] == txns[-1].txseq)

    concurrent(t, src, db)
    if t.real_uri:
        src.drop_database(db)
    return t.finish()


def concurrent(t, src, db):
    """Two applies of one stream into one target at the same moment.

    The progress write is conditional on the progress the apply read
    (mongotarget.c mt_write_progress): the two transactions conflict
    (WriteConflict, retried from the progress: on the peer at the write or at
    commit, README) or the second one's upsert collides on _id, so no
    transaction is applied twice. Demanded: the target equals the replay, the
    progress is exact, no conflict was logged (a transaction applied twice
    would log insert_exists for its inserts), and the transactions both runs
    report applied sum to the stream's (a double apply shows as a sum over it).
    """
    c = src[db].cc
    cap = t.capture("cc", "--db", db)
    cap.start()
    at.wait_marker(t, src, cap, db, "cc")
    for i in range(300):
        if i % 3 == 2:
            c.update_one({"_id": i - 1}, {"$set": {"u": i}})
        else:
            c.insert_one({"_id": i, "v": "x" * (i % 50)})
    at.stop_capture(t, src, cap, db, 3)
    txns = t.txns("cc")
    p = at.target_peer(t, "t-concurrent")
    tgt = mt.connect(p.uri)
    a1 = at.Apply(t, "cc1", "cc", p.uri, "--exit-when-caught-up")
    a2 = at.Apply(t, "cc2", "cc", p.uri, "--exit-when-caught-up")
    a1.start()
    a2.start()
    rc1, rc2 = a1.proc.wait(timeout=120), a2.proc.wait(timeout=120)
    s1, s2 = a1.summary() or {}, a2.summary() or {}
    n1, n2 = s1.get("transactions", 0), s2.get("transactions", 0)
    t.say("two applies at once: exit %s and %s, %d and %d transactions, conflicts %s %s"
          % (rc1, rc2, n1, n2, s1.get("conflicts"), s2.get("conflicts")))
    t.check("at least one of them exits 0", 0 in (rc1, rc2), a1.tail() + "\n--\n" + a2.tail())
    model = at.ApplyModel().replay(txns)
    diffs = sr.compare(at.collections(tgt), model.nonempty())
    t.check("two applies at once: the target is the stream's replay", not diffs, "\n".join(diffs))
    t.check("the progress is the stream's last", at.progress(tgt, "cc")[0] == txns[-1].txseq)
    exact = n1 + n2 == len(txns) and not at.conflicts(tgt)
    t.check("no transaction applied twice (%d + %d = %d, no conflicts logged)" % (n1, n2, len(txns)),
            exact, at.conflicts(tgt)[:3])
    # the progress must not move backwards either
    t.check("a later run applies nothing", a1.run("--exit-when-caught-up") == 0
            and (a1.summary() or {}).get("transactions") == 0, a1.tail())
    stale_progress(t, txns)


def stale_progress(t, txns):
    """An apply that read "no progress" must not overwrite a progress another
    apply wrote since (deterministic, unlike the race above): A follows a
    stream that does not exist yet in its store, so it has read progress 0 and
    waits; B applies the whole stream into the same target; then the stream
    appears in A's store. A's first transaction must fail (the progress moved:
    exit 3) instead of applying txseq 1 again and setting the progress back."""
    import shutil
    p = at.target_peer(t, "t-stale")
    tgt = mt.connect(p.uri)
    late = os.path.join(t.dir, "store-late")
    os.makedirs(late)
    a = at.Apply(t, "stale-a", "cc", p.uri, "--follow", store=late)
    a.start()
    deadline = time.time() + 20
    while time.time() < deadline and not at.resumed_from(a.log_text()):
        time.sleep(0.05)
    t.check("A started from txseq 1 (it read no progress)", at.resumed_from(a.log_text()) == [1], a.tail())
    b = at.Apply(t, "stale-b", "cc", p.uri, "--exit-when-caught-up")
    t.check("B applies the stream", b.run() == 0, b.tail())
    last = txns[-1].txseq
    before = at.collections(tgt)
    shutil.copytree(os.path.join(t.store, "cc"), os.path.join(late, "cc"))
    try:
        rc = a.proc.wait(timeout=20)
    except Exception:  # noqa: BLE001 - still running: it applied or waits
        rc = a.term()
    msgs = " ".join(at.log_messages(a.log_text()))
    t.check("A fails instead of applying again (exit 3: the progress moved)", rc == 3 and "moved past" in msgs,
            "status %s\n%s" % (rc, a.tail()))
    t.check("the progress stays at txseq %d" % last, at.progress(tgt, "cc")[0] == last, at.progress(tgt, "cc"))
    t.check("no conflict was logged (nothing applied twice)", not at.conflicts(tgt), at.conflicts(tgt)[:3])
    t.check("the target did not change", not sr.compare(at.collections(tgt), before))


if __name__ == "__main__":
    sys.exit(main())
