"""Shared pieces of the MongoDB apply tests (`sluice apply --target mongodb://...`),
on top of mongotest.py (run with /usr/bin/python3).

  target_peer(t, name)   a fresh sluice-mongo-peer for a target (stopped at cleanup)
  Apply                  one `sluice apply` command (background or foreground, logs kept)
  summary(text)          the counters of apply's last summary line
  collections(client)    {ns: {id: raw}} of every database but sluice/admin/config/local
  progress(client, s)    the progress document sluice.progress {_id: stream}
  conflicts(client)      the rows of sluice.conflicts
  ApplyModel             stream_replay.Model as the replace strategy applies a stream
                         to an empty target: a replacement of a missing document
                         inserts it (update_missing/inserted); an update without
                         a document of a missing one is skipped
"""
import json
import os
import re
import subprocess
import time

import mongotest as mt
import stream_replay as sr

SUMMARY = re.compile(r"(apply|dry run \(nothing committed\)): (\d+) transactions \(txseq (\d+)\.\.(\d+)\), "
                     r"(\d+) inserts, (\d+) updates, (\d+) deletes, (\d+) truncates, (\d+) skipped; "
                     r"retries: ([^;]*); conflicts: (.*)$")
SKIP_DBS = ("admin", "config", "local", "sluice")


class StandalonePeer(mt.Peer):
    """A sluice-mongo-peer --standalone (hello without setName: a standalone mongod)."""

    def start(self):
        err = open(self.log, "a")
        self.proc = subprocess.Popen([self.binary, "--port", "0", "--standalone"],
                                     stdout=subprocess.PIPE, stderr=err, text=True)
        line = self.proc.stdout.readline()
        if not line.startswith("listening on 127.0.0.1:"):
            raise RuntimeError("standalone peer did not start: %r (log %s)" % (line, self.log))
        self.port = int(line.rsplit(":", 1)[1])
        self.uri = "mongodb://127.0.0.1:%d/?directConnection=true" % self.port


def target_peer(t, name, standalone=False):
    """A fresh peer for a target, stopped at cleanup (t.uri stays the source's)."""
    p = (StandalonePeer if standalone else mt.Peer)(t.args.peer, t.dir, name=name)
    t.peers.append(p)
    return p


def log_messages(text):
    """The msg of every JSON log line (other lines as they are)."""
    out = []
    for line in text.splitlines():
        try:
            out.append(json.loads(line).get("msg", line))
        except ValueError:
            out.append(line)
    return out


def summary(text):
    """{transactions, first, last, inserts, updates, deletes, truncates, skipped,
    retries, conflicts: {kind: n}} of the last summary line in TEXT, or None."""
    got = None
    for msg in log_messages(text):
        m = SUMMARY.search(msg)
        if m:
            conf = {}
            if m.group(11) != "none":
                for kv in m.group(11).split():
                    k, v = kv.split("=")
                    conf[k] = int(v)
            got = {"transactions": int(m.group(2)), "first": int(m.group(3)), "last": int(m.group(4)),
                   "inserts": int(m.group(5)), "updates": int(m.group(6)), "deletes": int(m.group(7)),
                   "truncates": int(m.group(8)), "skipped": int(m.group(9)), "retries": m.group(10),
                   "conflicts": conf}
    return got


def resumed_from(text):
    """The txseqs every "applying stream ... from txseq N" line of TEXT names."""
    return [int(m.group(1)) for msg in log_messages(text)
            for m in [re.search(r'applying stream "[^"]*" from txseq (\d+)', msg)] if m]


class Apply(mt.Command):
    """`sluice apply` of STREAM into URI with fixed options; every run logs to apply-NAME-N.log."""

    def __init__(self, t, name, stream, uri, *options, store=None):
        super().__init__(t, [t.sluice, "--log-format", "json", "apply", "--store", store or t.store,
                             "--stream", stream, "--trust", t.pub, "--target", uri] + list(options))
        self.name = name
        self.stdout = ""
        t.captures.append(self)  # killed at cleanup (Command's kill9)

    def log_name(self, run):
        return "apply-%s-%d.log" % (self.name, run)

    def run(self, *more, timeout=120):
        """Runs in the foreground; the exit status (None on timeout). stdout apart
        (the dry run's counts), stderr (the log) in the log file."""
        with self._new_log() as log:
            try:
                p = subprocess.run(self.cmd + list(more), stdout=subprocess.PIPE, stderr=log,
                                   text=True, timeout=timeout)
            except subprocess.TimeoutExpired:
                return None
        self.stdout = p.stdout
        return p.returncode

    def summary(self):
        return summary(self.log_text())


def collections(client, dbs=None):
    """{ns: {id: raw}} of the target's databases (DBS, or every one but sluice's own)."""
    if dbs is None:
        dbs = [d for d in client.list_database_names() if d not in SKIP_DBS]
    return sr.source_collections(client, dbs=dbs)


def progress(client, stream):
    """(txseq, raw document) of the stream's progress document, (None, None) without one."""
    import bson
    for d in client.sluice.progress.find({"_id": stream}):
        doc = bson.decode(bytes(d.raw))
        return doc.get("txseq"), doc
    return None, None


def conflicts(client):
    import bson
    return [bson.decode(bytes(d.raw)) for d in client.sluice.conflicts.find({})]


def wait_progress(client, stream, txseq, timeout=60, apply=None):
    """Waits until the progress reaches TXSEQ; True when it did."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        p, _ = progress(client, stream)
        if p is not None and p >= txseq:
            return True
        if apply is not None and not apply.alive():
            return False
        time.sleep(0.2)
    return False


class ApplyModel(sr.Model):
    """The replay as the replace strategy applies it to an empty target."""

    def __init__(self):
        super().__init__()
        self.upserted = 0

    def apply(self, ch):
        if ch.type == "replace" and ch.id not in self.colls.get(ch.ns, {}):
            self.upserted += 1
            self.coll(ch.ns)[ch.id] = ch.document
            return
        super().apply(ch)


def stop_capture(t, client, cap, db, k):
    """Inserts db.hello {_id: "end-K"}, waits until the capture streams it, stops it (SIGTERM, exit 0)."""
    mid = "end-%d" % k
    client[db].hello.insert_one({"_id": mid})
    ok = t.wait_stream(cap.stream, lambda ch: ch.type == "insert" and ch.ns == db + ".hello"
                       and ch.id == (0x02, mt._bson_str(mid)), timeout=60, cap=cap)
    if not ok:
        t.die("capture did not stream marker %s" % mid, cap)
    rc = cap.term()
    t.check("capture run %d exits 0 on SIGTERM" % cap.runs, rc == 0, cap.tail())


def wait_marker(t, client, cap, db, prefix, timeout=45):
    """Like Test.wait_marker with ids PREFIX-k (several captures of one database
    each get their own); missed markers stay (they are part of the source)."""
    cap.wait_watching(timeout - 30)
    deadline = time.time() + timeout
    k = 0
    while time.time() < deadline:
        if not cap.alive():
            t.die("capture exited before it streamed (status %s)" % cap.proc.returncode, cap)
        k += 1
        mid = "%s-%d" % (prefix, k)
        client[db].hello.insert_one({"_id": mid})
        if t.wait_stream(cap.stream, lambda ch: ch.type == "insert" and ch.ns == db + ".hello"
                         and ch.id == (0x02, mt._bson_str(mid)), timeout=3, cap=cap):
            return mid
    t.die("capture did not stream within %d s" % timeout, cap)
