#!/usr/bin/python3
"""Drives sluice-mongo-peer (or SLUICE_TEST_MONGO_URI) from pymongo 3.11 and checks MongoDB's documented results."""
import os
import signal
import subprocess
import sys
import tempfile
import time

import bson
import pymongo
import pymongo.monitoring
from pymongo.errors import DuplicateKeyError, OperationFailure

FAILS = 0


def check(desc, cond):
    global FAILS
    if cond:
        print("ok   " + desc)
    else:
        FAILS += 1
        print("FAIL " + desc)


class Peer:
    """A sluice-mongo-peer process on a port it picks itself."""

    def __init__(self, binary, state=None, history=None):
        args = [binary, "--port", "0"]
        if state:
            args += ["--state", state]
        if history:
            args += ["--history", str(history)]
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline()
        if not line.startswith("listening on 127.0.0.1:"):
            raise RuntimeError("peer did not start: %r" % line)
        self.port = int(line.rsplit(":", 1)[1])
        self.uri = "mongodb://127.0.0.1:%d/?replicaSet=rs0" % self.port

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        rc = self.proc.wait(timeout=10)
        check("peer on port %d stops cleanly on SIGTERM" % self.port, rc == 0)


class Recorder(pymongo.monitoring.CommandListener):
    def __init__(self):
        self.names = []
        self.commands = []

    def started(self, event):
        self.names.append(event.command_name)
        self.commands.append(event.command)

    def succeeded(self, event):
        pass

    def failed(self, event):
        pass


RECORDER = Recorder()


def connect(uri):
    client = pymongo.MongoClient(uri, serverSelectionTimeoutMS=10000,
                                 event_listeners=[RECORDER])
    client.admin.command("ping")
    return client


def read_events(stream, n, timeout=10.0):
    """Reads n events from a change stream, or fewer if they do not come in time."""
    out = []
    deadline = time.time() + timeout
    while len(out) < n and time.time() < deadline:
        ev = stream.try_next()
        if ev is not None:
            out.append(ev)
    return out


def test_crud(db):
    db.drop_collection("crud")
    c = db.crud
    check("insert_one returns the _id", c.insert_one({"_id": 1, "a": 1}).inserted_id == 1)
    r = c.insert_many([{"_id": 2, "a": 2}, {"_id": 3, "a": 3}, {"a": 4}])
    check("insert_many returns three ids", len(r.inserted_ids) == 3)
    check("a generated _id is an ObjectId", isinstance(r.inserted_ids[2], bson.ObjectId))
    try:
        c.insert_one({"_id": 1, "a": 9})
        check("duplicate _id raises DuplicateKeyError", False)
    except DuplicateKeyError as e:
        check("duplicate _id raises DuplicateKeyError with code 11000", e.code == 11000)
    check("the duplicate did not overwrite", c.find_one({"_id": 1})["a"] == 1)
    r = c.update_one({"_id": 1}, {"$set": {"b": "x"}, "$inc": {"a": 5}})
    check("update_one $set/$inc matches and modifies one",
          r.matched_count == 1 and r.modified_count == 1)
    check("$set and $inc applied", c.find_one({"_id": 1}) == {"_id": 1, "a": 6, "b": "x"})
    r = c.update_one({"_id": 1}, {"$unset": {"b": ""}})
    check("$unset removes the field", c.find_one({"_id": 1}) == {"_id": 1, "a": 6})
    r = c.update_one({"_id": 1}, {"$set": {"a": 6}})
    check("a no-op $set matches but modifies nothing",
          r.matched_count == 1 and r.modified_count == 0)
    r = c.replace_one({"_id": 2}, {"z": True})
    check("replace_one replaces the document",
          r.modified_count == 1 and c.find_one({"_id": 2}) == {"_id": 2, "z": True})
    r = c.update_one({"_id": 10}, {"$set": {"u": 1}}, upsert=True)
    check("upsert inserts with the filter's _id",
          r.upserted_id == 10 and c.find_one({"_id": 10}) == {"_id": 10, "u": 1})
    r = c.replace_one({"_id": 11}, {"v": 2}, upsert=True)
    check("replace upsert inserts", r.upserted_id == 11 and c.find_one({"_id": 11})["v"] == 2)
    r = c.update_many({"a": {"$in": [3, 6]}}, {"$inc": {"n": 1}})
    check("update_many updates every match", r.matched_count == 2 and r.modified_count == 2)
    check("find with an equality filter",
          sorted(d["_id"] for d in c.find({"n": 1})) == [1, 3])
    check("delete_one deletes one", c.delete_one({"_id": 10}).deleted_count == 1)
    check("delete_many deletes the matches", c.delete_many({"n": 1}).deleted_count == 2)
    ids = [d["_id"] for d in c.find({})]
    check("find returns what is left",
          len(ids) == 3 and {i for i in ids if not isinstance(i, bson.ObjectId)} == {2, 11})
    many = [{"_id": 100 + i} for i in range(250)]
    c.insert_many(many)
    check("find iterates past the first batch (getMore)",
          len(list(c.find({}, batch_size=50))) == len(ids) + 250)
    check("find_one finds a later document", c.find_one({"_id": 349}) == {"_id": 349})


def test_transactions(client, db):
    db.drop_collection("txn")
    c = db.txn
    c.insert_one({"_id": "before"})
    stream = c.watch(max_await_time_ms=200)
    with client.start_session() as s:
        with s.start_transaction():
            c.insert_one({"_id": "t1"}, session=s)
            c.insert_one({"_id": "t2"}, session=s)
            c.update_one({"_id": "before"}, {"$set": {"in_txn": True}}, session=s)
            check("a transaction reads its own writes",
                  c.find_one({"_id": "t1"}, session=s) is not None)
            check("uncommitted writes are invisible to others",
                  c.find_one({"_id": "t1"}) is None)
    check("committed writes are visible",
          c.find_one({"_id": "t2"}) is not None
          and c.find_one({"_id": "before"}).get("in_txn") is True)
    with client.start_session() as s:
        s.start_transaction()
        c.insert_one({"_id": "aborted"}, session=s)
        s.abort_transaction()
    check("an aborted transaction leaves nothing", c.find_one({"_id": "aborted"}) is None)
    c.insert_one({"_id": "after"})
    evs = read_events(stream, 4)
    kinds = [(e["operationType"], e["documentKey"]["_id"]) for e in evs]
    check("the stream shows the committed transaction then the next write, nothing aborted",
          kinds == [("insert", "t1"), ("insert", "t2"), ("update", "before"),
                    ("insert", "after")])
    if len(evs) == 4:
        t = evs[:3]
        check("a transaction's events share one clusterTime",
              len({e["clusterTime"] for e in t}) == 1
              and evs[3]["clusterTime"] > t[0]["clusterTime"])
        check("transaction events carry lsid and txnNumber",
              all("lsid" in e and isinstance(e["txnNumber"], int) for e in t)
              and "lsid" not in evs[3])
        check("update event has an updateDescription",
              t[2]["updateDescription"] == {"updatedFields": {"in_txn": True},
                                            "removedFields": [], "truncatedArrays": []})
    check("nothing more in the stream", stream.try_next() is None)
    stream.close()


def expect_error(desc, fn, codes=(112,), label="TransientTransactionError"):
    """Runs fn, which must fail with one of codes (and the label, if given)."""
    try:
        fn()
    except OperationFailure as e:
        check("%s: code %s%s (got %s %s)" % (desc, "/".join(map(str, codes)),
                                             " labelled " + label if label else "",
                                             e.code, e.details.get("errorLabels") if e.details else None),
              e.code in codes and (label is None or e.has_error_label(label)))
        return
    check(desc + ": fails", False)


def test_write_conflicts(client, db, peer_only):
    """A transaction that writes a document another write changed after the
    transaction's snapshot fails with 112 WriteConflict, labelled
    TransientTransactionError, and is aborted (later commands: 251)."""
    db.drop_collection("wc")
    c = db.wc
    c.insert_many([{"_id": i, "v": 0} for i in range(1, 9)])

    # updated outside after the transaction read it
    with client.start_session() as s:
        s.start_transaction()
        check("the transaction reads X", c.find_one({"_id": 1}, session=s)["v"] == 0)
        c.update_one({"_id": 1}, {"$set": {"v": "outside"}})
        expect_error("update in a transaction of X updated outside since its snapshot",
                     lambda: c.update_one({"_id": 1}, {"$set": {"v": "txn"}}, session=s))
        expect_error("the aborted transaction's next command",
                     lambda: c.find_one({"_id": 2}, session=s), codes=(251,))
        expect_error("the aborted transaction's commit",
                     lambda: s.commit_transaction(), codes=(251,))
    check("the outside update survives", c.find_one({"_id": 1})["v"] == "outside")

    # deleted outside: the transaction updates it, or deletes it
    for n, (what, op) in enumerate([
            ("update", lambda s: c.update_one({"_id": 2}, {"$set": {"v": "txn"}}, session=s)),
            ("replacement", lambda s: c.replace_one({"_id": 3}, {"v": "txn"}, session=s)),
            ("delete", lambda s: c.delete_one({"_id": 4}, session=s))]):
        with client.start_session() as s:
            s.start_transaction()
            check("the transaction reads X (%s)" % what,
                  c.find_one({"_id": 2 + n}, session=s) is not None)
            c.delete_one({"_id": 2 + n})
            expect_error("%s in a transaction of X deleted outside since its snapshot" % what,
                         lambda: op(s))
            s.abort_transaction()
        check("the outside delete stays (%s)" % what, c.find_one({"_id": 2 + n}) is None)

    # inserted outside with an _id the transaction inserts (a real server may say 11000)
    with client.start_session() as s:
        s.start_transaction()
        c.find_one({"_id": 5}, session=s)
        c.insert_one({"_id": 100, "v": "outside"})
        expect_error("insert in a transaction of an _id inserted outside since its snapshot",
                     lambda: c.insert_one({"_id": 100, "v": "txn"}, session=s),
                     codes=(112,) if peer_only else (112, 11000), label=None if not peer_only
                     else "TransientTransactionError")
        s.abort_transaction()
    check("the outside insert survives", c.find_one({"_id": 100})["v"] == "outside")

    # a different document: no conflict
    with client.start_session() as s:
        s.start_transaction()
        c.find_one({"_id": 5}, session=s)
        c.update_one({"_id": 6}, {"$set": {"v": "outside"}})
        c.insert_one({"_id": 101, "v": "outside"})
        c.update_one({"_id": 5}, {"$set": {"v": "txn"}}, session=s)
        c.insert_one({"_id": 102, "v": "txn"}, session=s)
        c.delete_one({"_id": 7}, session=s)
        s.commit_transaction()
        check("a transaction writing other documents commits",
              c.find_one({"_id": 5})["v"] == "txn" and c.find_one({"_id": 6})["v"] == "outside"
              and c.find_one({"_id": 102}) is not None and c.find_one({"_id": 7}) is None)
        before = RECORDER.names.count("commitTransaction")
        try:
            s.commit_transaction()
            check("a commit retried after success answers ok",
                  RECORDER.names.count("commitTransaction") == before + 1)
        except OperationFailure as e:
            check("a commit retried after success answers ok (got %s)" % e.code, False)

    # pymongo's with_transaction retries the whole transaction
    calls = []

    def callback(s):
        calls.append(1)
        doc = c.find_one({"_id": 8}, session=s)
        if len(calls) == 1:
            c.update_one({"_id": 8}, {"$inc": {"v": 10}})  # a concurrent writer
        c.update_one({"_id": 8}, {"$set": {"v": doc["v"] + 1}}, session=s)

    with client.start_session() as s:
        s.with_transaction(callback)
    check("with_transaction retries after a WriteConflict and commits (%d calls)" % len(calls),
          len(calls) == 2 and c.find_one({"_id": 8})["v"] == 11)

    if not peer_only:
        return
    # Peer only: a real server makes these outside writes wait for the
    # transaction; the peer applies them at once and fails the transaction
    # at commit (the outside write serialized first).
    c.insert_one({"_id": 200, "v": 0})
    with client.start_session() as s:
        s.start_transaction()
        c.update_one({"_id": 200}, {"$set": {"v": "txn"}}, session=s)
        c.update_one({"_id": 200}, {"$set": {"v": "outside"}})
        expect_error("commit of a transaction whose write was overwritten outside before the "
                     "commit", lambda: s.commit_transaction())
        expect_error("that commit again", lambda: s.commit_transaction(), codes=(251,))
    check("the outside update survives the commit", c.find_one({"_id": 200})["v"] == "outside")
    with client.start_session() as s:
        s.start_transaction()
        c.delete_one({"_id": 200}, session=s)
        c.delete_one({"_id": 200})
        expect_error("commit of a transaction deleting a document deleted outside since",
                     lambda: s.commit_transaction())
    with client.start_session() as s:
        s.start_transaction()
        c.insert_one({"_id": 201}, session=s)
        c.insert_one({"_id": 201, "v": "outside"})
        expect_error("commit of a transaction inserting an _id inserted outside since",
                     lambda: s.commit_transaction())
    check("the outside insert survives the commit", c.find_one({"_id": 201})["v"] == "outside")
    # two open transactions writing one document (a real server fails the second writer at
    # once): the first to commit wins, the other fails at its commit
    with client.start_session() as s1, client.start_session() as s2:
        s1.start_transaction()
        s2.start_transaction()
        c.update_one({"_id": 201}, {"$set": {"v": "t1"}}, session=s1)
        c.update_one({"_id": 201}, {"$set": {"v": "t2"}}, session=s2)
        s2.commit_transaction()
        expect_error("commit of the second of two transactions writing one document",
                     lambda: s1.commit_transaction())
    check("the first commit stays", c.find_one({"_id": 201})["v"] == "t2")
    db.wc2.insert_one({"_id": 1})
    with client.start_session() as s:
        s.start_transaction()
        db.wc2.find_one({"_id": 1}, session=s)
        db.drop_collection("wc2")
        db.wc2.insert_one({"_id": 2})
        expect_error("a write to a collection dropped and recreated since the snapshot",
                     lambda: db.wc2.insert_one({"_id": 3}, session=s))
        s.abort_transaction()
    # many deletions since the snapshot: beyond the kept records, absence is a conflict
    c.insert_many([{"_id": 1000 + i, "bulk": True} for i in range(10001)] + [{"_id": 999}])
    with client.start_session() as s:
        s.start_transaction()
        c.find_one({"_id": 999}, session=s)
        c.delete_many({"bulk": True})
        expect_error("a write after more deletions than are remembered (conservative)",
                     lambda: c.insert_one({"_id": 998}, session=s))
        s.abort_transaction()
    with client.start_session() as s:
        s.start_transaction()
        c.insert_one({"_id": 998}, session=s)
        s.commit_transaction()
    check("a transaction after those deletions commits", c.find_one({"_id": 998}) is not None)


def test_change_stream(db):
    db.drop_collection("cs")
    c = db.cs
    c.insert_one({"_id": 0})
    stream = c.watch(max_await_time_ms=200)
    check("a new stream starts empty", stream.try_next() is None)
    for i in (1, 2, 3):
        c.insert_one({"_id": i, "v": i})
    evs = read_events(stream, 3)
    check("three insert events in order",
          [e["documentKey"]["_id"] for e in evs] == [1, 2, 3]
          and all(e["operationType"] == "insert" for e in evs))
    check("event fields: _id document, ns, fullDocument, wallTime",
          len(evs) == 3 and isinstance(evs[0]["_id"], dict) and "_data" in evs[0]["_id"]
          and evs[0]["ns"] == {"db": db.name, "coll": "cs"}
          and evs[0]["fullDocument"] == {"_id": 1, "v": 1} and "wallTime" in evs[0])
    tokens = [e["_id"]["_data"] for e in evs]
    check("resume tokens sort by cluster time", tokens == sorted(tokens))
    stream.close()
    if len(evs) != 3:
        return
    with c.watch(resume_after=evs[0]["_id"], max_await_time_ms=200) as s2:
        got = read_events(s2, 3, timeout=2)
        check("resume_after yields exactly the later events",
              [e["documentKey"]["_id"] for e in got] == [2, 3])
    with c.watch(start_at_operation_time=evs[1]["clusterTime"], max_await_time_ms=200) as s3:
        got = read_events(s3, 3, timeout=2)
        check("start_at_operation_time yields events from that time",
              [e["documentKey"]["_id"] for e in got] == [2, 3])
    with c.watch(full_document="updateLookup", max_await_time_ms=200) as s4:
        c.update_one({"_id": 2}, {"$set": {"w": 1}})
        c.update_one({"_id": 2}, {"$inc": {"v": 10}})
        got = read_events(s4, 2)
        check("updateLookup gives the current document",
              len(got) == 2 and got[0]["fullDocument"] == {"_id": 2, "v": 12, "w": 1})
        check("updatedFields of $inc", len(got) == 2
              and got[1]["updateDescription"]["updatedFields"] == {"v": 12})
    with db.watch(max_await_time_ms=200) as dbs:
        c.replace_one({"_id": 3}, {"r": 1})
        c.delete_one({"_id": 1})
        db.other.insert_one({"_id": "o"})
        got = read_events(dbs, 3)
        check("a database stream sees replace, delete and another collection",
              [(e["operationType"], e["ns"]["coll"]) for e in got]
              == [("replace", "cs"), ("delete", "cs"), ("insert", "other")])
    with c.watch(max_await_time_ms=200) as s5:
        db.drop_collection("cs")
        got = read_events(s5, 2)
        check("dropping the collection gives drop then invalidate",
              [e["operationType"] for e in got] == ["drop", "invalidate"])
        check("the stream is closed after invalidate", not s5.alive)


def raw_stream(db, coll, opts, n, after=None):
    """A change stream by hand (pymongo 3.11 has no fullDocumentBeforeChange):
    up to n events after the token `after`, or the OperationFailure that ends it."""
    cs = dict(opts)
    if after is not None:
        cs["resumeAfter"] = after
    try:
        r = db.command("aggregate", coll, pipeline=[{"$changeStream": cs}],
                       cursor={})
        out = list(r["cursor"]["firstBatch"])
        cid = r["cursor"]["id"]
        deadline = time.time() + 10
        while len(out) < n and cid and time.time() < deadline:
            r = db.command("getMore", cid, collection=coll, maxTimeMS=200)
            out += r["cursor"]["nextBatch"]
            cid = r["cursor"]["id"]
        if cid:
            db.command("killCursors", coll, cursors=[cid])
        return out, None
    except OperationFailure as e:
        return None, e


def test_images(db):
    """changeStreamPreAndPostImages, fullDocumentBeforeChange, fullDocument whenAvailable/required."""
    db.drop_collection("img")
    db.drop_collection("noimg")
    db.create_collection("img")
    db.create_collection("noimg", changeStreamPreAndPostImages={"enabled": False})
    r = db.command("collMod", "img", changeStreamPreAndPostImages={"enabled": True})
    check("collMod changeStreamPreAndPostImages answers ok", r["ok"] == 1)
    opts = {c["name"]: c.get("options", {}) for c in db.command(
        "listCollections")["cursor"]["firstBatch"]}
    check("listCollections shows the enabled option",
          opts["img"].get("changeStreamPreAndPostImages") == {"enabled": True})
    try:
        db.command("collMod", "img", changeStreamPreAndPostImages={"enabled": 1})
        check("a non-bool enabled is refused", False)
    except OperationFailure as e:
        check("a non-bool enabled is refused (TypeMismatch)", e.code == 14)
    try:
        db.command("collMod", "nosuch", changeStreamPreAndPostImages={"enabled": True})
        check("collMod of a missing collection fails", False)
    except OperationFailure as e:
        check("collMod of a missing collection fails (NamespaceNotFound)", e.code == 26)
    bad = raw_stream(db, "img", {"fullDocumentBeforeChange": "sometimes"}, 0)[1]
    check("fullDocumentBeforeChange 'sometimes' is refused (BadValue)",
          bad is not None and bad.code == 2)

    # A database stream's high-water mark: no collection in it, so both may resume there.
    start = db.watch(max_await_time_ms=100)
    start.try_next()
    token = start.resume_token
    start.close()
    for c in (db.img, db.noimg):
        c.insert_one({"_id": 1, "a": 1})
        c.update_one({"_id": 1}, {"$set": {"a": 2}})
        c.replace_one({"_id": 1}, {"b": 3})
        c.delete_one({"_id": 1})
    befores = [{"_id": 1, "a": 1}, {"_id": 1, "a": 2}, {"_id": 1, "b": 3}]

    evs, err = raw_stream(db, "img", {"fullDocumentBeforeChange": "whenAvailable"}, 4,
                          after=token)
    check("whenAvailable on an enabled collection: four events",
          err is None and len(evs) == 4)
    if evs and len(evs) == 4:
        check("the insert has no fullDocumentBeforeChange",
              "fullDocumentBeforeChange" not in evs[0])
        check("update, replace and delete carry the document before the change",
              [e.get("fullDocumentBeforeChange") for e in evs[1:]] == befores)
        check("an update without fullDocument options still has no fullDocument",
              "fullDocument" not in evs[1])
    evs, err = raw_stream(db, "img", {"fullDocumentBeforeChange": "required",
                                      "fullDocument": "required"}, 4, after=token)
    check("required on an enabled collection works", err is None and evs and len(evs) == 4)
    if evs and len(evs) == 4:
        check("fullDocument required gives the update's post-image",
              evs[1].get("fullDocument") == {"_id": 1, "a": 2})
    evs, err = raw_stream(db, "img", {"fullDocumentBeforeChange": "off"}, 4, after=token)
    check("off gives no fullDocumentBeforeChange",
          err is None and evs and all("fullDocumentBeforeChange" not in e for e in evs))

    evs, err = raw_stream(db, "noimg", {"fullDocumentBeforeChange": "whenAvailable",
                                        "fullDocument": "whenAvailable"}, 4, after=token)
    check("whenAvailable without enabled images gives null pre-images",
          err is None and evs and len(evs) == 4
          and all("fullDocumentBeforeChange" in e and e["fullDocumentBeforeChange"] is None
                  for e in evs[1:]))
    if evs and len(evs) == 4:
        check("and fullDocument whenAvailable gives null for the update",
              "fullDocument" in evs[1] and evs[1]["fullDocument"] is None)
    evs, err = raw_stream(db, "noimg", {"fullDocumentBeforeChange": "required"}, 4,
                          after=token)
    check("required without images fails with 47 NoMatchingDocument",
          err is not None and err.code == 47
          and "require a pre-image" in str(err))
    evs, err = raw_stream(db, "noimg", {"fullDocument": "required"}, 4, after=token)
    check("fullDocument required without images fails with 47",
          err is not None and err.code == 47 and "post-image" in str(err))
    db.drop_collection("img")
    db.drop_collection("noimg")


def test_failpoints(client, db):
    c = db.fp
    c.insert_one({"_id": "seed"})
    for desc, data in (("a resumable error (label)",
                        {"errorCode": 6, "errorLabels": ["ResumableChangeStreamError"]}),
                       ("a closed connection", {"closeConnection": True})):
        with c.watch(max_await_time_ms=200) as s:
            check("stream idle before " + desc, s.try_next() is None)
            data = dict(data, failCommands=["getMore"])
            client.admin.command("configureFailPoint", "failCommand",
                                 mode={"times": 1}, data=data)
            mark = len(RECORDER.names)
            c.insert_one({"_id": desc})
            got = read_events(s, 1)
            resumes = [cmd for n, cmd in zip(RECORDER.names[mark:], RECORDER.commands[mark:])
                       if n == "aggregate"]
            check("the driver resumed after " + desc + " (one new aggregate with resumeAfter)",
                  len(resumes) == 1
                  and "resumeAfter" in resumes[0]["pipeline"][0]["$changeStream"])
            check("the stream resumes through " + desc,
                  [e["documentKey"]["_id"] for e in got] == [desc])
            check("and shows nothing twice", s.try_next() is None)
    client.admin.command("configureFailPoint", "failCommand", mode={"times": 1},
                         data={"failCommands": ["getMore"], "errorCode": 280,
                               "errorLabels": []})
    with c.watch(max_await_time_ms=200) as s:
        try:
            s.try_next()
            check("a non-resumable error surfaces", False)
        except OperationFailure as e:
            check("a non-resumable error surfaces with its code", e.code == 280)
    client.admin.command("configureFailPoint", "failCommand", mode="off")


def test_history_lost(binary):
    peer = Peer(binary, history=3)
    try:
        client = connect(peer.uri)
        c = client.hist.c
        s = c.watch(max_await_time_ms=200)
        c.insert_one({"_id": 0})
        first = read_events(s, 1)
        s.close()
        for i in range(1, 8):
            c.insert_one({"_id": i})
        try:
            with c.watch(resume_after=first[0]["_id"]) as s2:
                s2.try_next()
            check("resuming from a token that fell off raises", False)
        except OperationFailure as e:
            check("resuming from a token that fell off raises code 286", e.code == 286)
        try:
            with c.watch(resume_after={"_data": "not-a-token"}) as s3:
                s3.try_next()
            check("a malformed token raises", False)
        except OperationFailure as e:
            check("a malformed token raises code 260", e.code == 260)
        client.close()
    finally:
        peer.stop()


def test_restart(binary):
    tmp = tempfile.TemporaryDirectory(prefix="sluice-peer-")
    state = os.path.join(tmp.name, "state.bson")
    peer = Peer(binary, state=state)
    client = connect(peer.uri)
    c = client.keep.c
    s = c.watch(max_await_time_ms=200)
    c.insert_many([{"_id": i, "x": "y" * i} for i in range(5)])
    evs = read_events(s, 5)
    s.close()
    client.keep.create_collection("img", changeStreamPreAndPostImages={"enabled": True})
    client.keep.img.insert_one({"_id": 1, "v": 1})
    client.keep.img.update_one({"_id": 1}, {"$set": {"v": 2}})
    client.close()
    peer.stop()
    peer = Peer(binary, state=state)
    try:
        client = connect(peer.uri)
        c = client.keep.c
        check("a restart with --state keeps the documents",
              [d["_id"] for d in c.find({})] == [0, 1, 2, 3, 4]
              and c.find_one({"_id": 3}) == {"_id": 3, "x": "yyy"})
        with c.watch(resume_after=evs[2]["_id"], max_await_time_ms=200) as s2:
            got = read_events(s2, 2, timeout=2)
            check("and a resume token from before the restart still resumes",
                  [e["documentKey"]["_id"] for e in got] == [3, 4])
        c.insert_one({"_id": 5})
        check("writes after the restart work", c.find_one({"_id": 5}) == {"_id": 5})
        got, err = raw_stream(client.keep, "img", {"fullDocumentBeforeChange": "required"},
                              2, after=evs[4]["_id"])
        check("pre-images and the collection's option survive the restart",
              err is None and got and got[-1].get("fullDocumentBeforeChange") == {"_id": 1, "v": 1})
        client.keep.img.update_one({"_id": 1}, {"$set": {"v": 3}})
        got, err = raw_stream(client.keep, "img", {"fullDocumentBeforeChange": "required"},
                              3, after=evs[4]["_id"])
        check("and writes after it still keep pre-images",
              err is None and got and got[-1].get("fullDocumentBeforeChange") == {"_id": 1, "v": 2})
        client.close()
    finally:
        peer.stop()
        tmp.cleanup()


def main():
    binary = None
    if len(sys.argv) >= 3 and sys.argv[1] == "--peer":
        binary = sys.argv[2]
    print("pymongo %s" % pymongo.version)
    uri = os.environ.get("SLUICE_TEST_MONGO_URI")
    peer = None
    if uri:
        print("against SLUICE_TEST_MONGO_URI=%s (peer-only checks skipped)" % uri)
    elif binary:
        peer = Peer(binary)
        uri = peer.uri
    else:
        print("usage: test_peer_pymongo.py --peer PATH (or set SLUICE_TEST_MONGO_URI)")
        return 2
    try:
        client = connect(uri)
        check("connects to the replica set rs0", client.admin.command("ping")["ok"] == 1)
        check("the primary is writable", client.is_primary)
        db = client.sluice_peer_test
        test_crud(db)
        test_transactions(client, db)
        test_write_conflicts(client, db, peer is not None)
        test_change_stream(db)
        test_failpoints(client, db)
        test_images(db)
        client.drop_database(db.name)
        client.close()
    finally:
        if peer:
            peer.stop()
    if binary and not os.environ.get("SLUICE_TEST_MONGO_URI"):
        test_history_lost(binary)
        test_restart(binary)
    print("%d failed" % FAILS)
    return 1 if FAILS else 0


if __name__ == "__main__":
    sys.exit(main())
