"""Shared pieces of the MongoDB capture tests (run with /usr/bin/python3).

  Test(name)            checks counted (check, die), a work directory, the
                        deployment (a fresh sluice-mongo-peer, or
                        SLUICE_TEST_MONGO_URI), keys, captures, writers
  Peer                  a sluice-mongo-peer process
  Capture               one `sluice capture` command run (background or foreground)
  source_events         a change stream of the whole deployment from a cluster
                        time, read through pymongo as raw BSON (the oplog's order)
  group_events          its events as source transactions (lsid + txnNumber)
  compare_groups        the stream's transactions against them
  check_writer_txns     every committed writer transaction exactly once and
                        whole, nothing of an aborted one, each writer in order
"""
import argparse
import atexit
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import bson
import pymongo
from bson.raw_bson import RawBSONDocument

import stream_replay as sr

HERE = os.path.dirname(os.path.abspath(__file__))
PY = "/usr/bin/python3"


def connect(uri, **kw):
    c = pymongo.MongoClient(uri, document_class=RawBSONDocument, serverSelectionTimeoutMS=15000, **kw)
    c.admin.command("ping")
    return c


def cluster_time(client):
    """The deployment's current operation time (a bson Timestamp)."""
    return client.admin.command("ping")["operationTime"]


class Peer:
    """A sluice-mongo-peer on PORT (0: a free one)."""

    def __init__(self, binary, workdir, port=0, state=None, history=None, name="peer"):
        self.binary, self.state, self.history, self.name = binary, state, history, name
        self.log = os.path.join(workdir, name + ".log")
        self.port = port
        self.proc = None
        self.start()

    def start(self):
        args = [self.binary, "--port", str(self.port)]
        if self.state:
            args += ["--state", self.state]
        if self.history:
            args += ["--history", str(self.history)]
        err = open(self.log, "a")
        deadline = time.time() + 10
        while True:
            self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=err, text=True)
            line = self.proc.stdout.readline()
            if line.startswith("listening on 127.0.0.1:"):
                break
            self.proc.wait()
            # a restart on a fixed port may find it in TIME_WAIT for a moment
            if self.port == 0 or time.time() > deadline:
                raise RuntimeError("peer did not start: %r (log %s)" % (line, self.log))
            time.sleep(0.2)
        self.port = int(line.rsplit(":", 1)[1])
        self.uri = "mongodb://127.0.0.1:%d/?replicaSet=rs0" % self.port

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                return self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                return self.proc.wait()
        return None


class Command:
    """A sluice command with fixed options, run again and again (every run logs to
    its own file: DIR/<log_name(run)>): in the background (start, alive, kill9,
    term) or in the foreground (run)."""

    def __init__(self, test, cmd):
        self.t = test
        self.cmd = cmd
        self.proc = None
        self.runs = 0
        self.logpath = None

    def log_name(self, run):
        raise NotImplementedError

    def _new_log(self):
        self.runs += 1
        self.logpath = os.path.join(self.t.dir, self.log_name(self.runs))
        return open(self.logpath, "w")

    def start(self, *more):
        log = self._new_log()
        self.proc = subprocess.Popen(self.cmd + list(more), stdout=log, stderr=subprocess.STDOUT)
        return self.proc

    def run(self, *more, timeout=120):
        """Runs in the foreground; returns the exit status (None on timeout: killed)."""
        log = self._new_log()
        try:
            return subprocess.run(self.cmd + list(more), stdout=log, stderr=subprocess.STDOUT,
                                  timeout=timeout).returncode
        except subprocess.TimeoutExpired:
            return None

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def kill9(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
        if self.proc:
            self.proc.wait()

    def term(self, timeout=30):
        """SIGTERM; the exit status (None if it had to be killed)."""
        if self.proc.poll() is not None:
            return self.proc.returncode
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            return None

    def log_text(self):
        try:
            return open(self.logpath).read()
        except (OSError, TypeError):
            return ""

    def tail(self, n=20):
        return "\n".join(self.log_text().splitlines()[-n:])


class Capture(Command):
    """`sluice capture` with fixed options; every run logs to cap-STREAM-N.log."""

    def __init__(self, test, stream, *options):
        super().__init__(test, [test.sluice, "--log-format", "json", "capture", "--source", test.uri,
                                "--store", test.store, "--stream", stream, "--key", test.key,
                                "--no-progress"] + list(options))
        self.stream = stream

    def log_name(self, run):
        self.t.capture_runs += 1
        return "cap-%s-%d.log" % (self.stream, run)

    def wait_watching(self, timeout=20):
        """Waits until this run logs that its change stream is open; False if it
        exits or does not within TIMEOUT."""
        deadline = time.time() + timeout
        while time.time() < deadline and self.alive():
            if '"msg":"watching' in self.log_text():
                return True
            time.sleep(0.05)
        return False


class Test:
    def __init__(self, name, description=""):
        ap = argparse.ArgumentParser(description=description)
        ap.add_argument("--sluice", required=True)
        ap.add_argument("--peer", required=True, help="sluice-mongo-peer binary")
        ap.add_argument("--writer", help="mongo_writer binary (libmongoc)")
        self.args = ap.parse_args()
        self.name = name
        self.sluice = self.args.sluice
        self.fails = 0
        self.t0 = time.time()
        self.seed = int(os.environ.get("SEED") or random.randrange(1 << 30))
        self.rng = random.Random(self.seed)
        self.long = os.environ.get("SLUICE_TEST_LONG") == "1"
        self.real_uri = os.environ.get("SLUICE_TEST_MONGO_URI")
        self.dir = tempfile.mkdtemp(prefix="sluice-%s-" % name)
        self.store = os.path.join(self.dir, "store")
        self.peers = []
        self.captures = []
        self.writers = []
        self.capture_runs = 0
        self.say("seed %d (rerun with SEED=%d), work directory %s" % (self.seed, self.seed, self.dir))
        if self.real_uri:
            self.uri = self.real_uri
            self.say("against SLUICE_TEST_MONGO_URI=%s: peer-only parts are skipped" % self.uri)
        subprocess.run([self.sluice, "keygen", "--out", os.path.join(self.dir, "k")],
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.key = os.path.join(self.dir, "k.key")
        self.pub = os.path.join(self.dir, "k.pub")
        # unique database names: a real deployment may hold an earlier run's
        self.tag = "" if not self.real_uri else "_%d" % (self.seed % 100000)
        self.cleaned = False
        atexit.register(self._at_exit)

    def _at_exit(self):
        """An exception ended the test: stop what it started, keep its files."""
        if not self.cleaned:
            print("%s: FAILED: ended by an exception" % self.name, flush=True)
            self.cleanup(keep=True)

    # ---- reporting
    def say(self, msg):
        print("%s: %4.1f s: %s" % (self.name, time.time() - self.t0, msg), flush=True)

    def check(self, desc, cond, detail=None):
        if cond:
            print("ok:   " + desc, flush=True)
        else:
            self.fails += 1
            print("FAIL: " + desc, flush=True)
            if detail:
                print("      " + str(detail).replace("\n", "\n      "), flush=True)
        return bool(cond)

    def die(self, msg, capture=None):
        print("%s: FAILED: %s" % (self.name, msg), flush=True)
        if capture is not None:
            print("--- last lines of %s:\n%s" % (capture.logpath, capture.tail()), flush=True)
        self.cleanup(keep=True)
        sys.exit(1)

    def finish(self):
        self.cleanup(keep=self.fails > 0)
        if self.fails:
            print("%s: %d checks FAILED (%.0f s)" % (self.name, self.fails, time.time() - self.t0))
            return 1
        print("%s: passed (%.0f s)" % (self.name, time.time() - self.t0))
        return 0

    def cleanup(self, keep=False):
        self.cleaned = True
        for w in self.writers:
            if w.poll() is None:
                w.kill()
                w.wait()
        for c in self.captures:
            c.kill9()
        for p in self.peers:
            p.stop()
        if keep or os.environ.get("SLUICE_KEEP"):
            print("%s: kept %s" % (self.name, self.dir))
        else:
            shutil.rmtree(self.dir, ignore_errors=True)

    # ---- deployment
    def start_peer(self, **kw):
        """A peer (peer runs only); sets self.uri to it."""
        p = Peer(self.args.peer, self.dir, **kw)
        self.peers.append(p)
        if not self.real_uri:
            self.uri = p.uri
        return p

    def deployment(self):
        """Starts a peer unless SLUICE_TEST_MONGO_URI is set; returns a raw client."""
        if not self.real_uri:
            self.start_peer()
        return connect(self.uri)

    def capture(self, stream, *options):
        c = Capture(self, stream, *options)
        self.captures.append(c)
        return c

    def records(self, stream):
        return sr.inspect_records(self.sluice, self.store, stream, self.pub)

    def txns(self, stream, live=False):
        return sr.transactions(self.records(stream), live)

    def verify(self, stream):
        """(exit status, output) of sluice verify --json."""
        p = subprocess.run([self.sluice, "verify", "--store", self.store, "--stream", stream,
                            "--trust", self.pub, "--json"], stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True)
        return p.returncode, p.stdout

    # ---- writers
    def writer(self, kind, name, db, count, rate=0, extra=()):
        """Starts the C (kind "c") or pymongo ("py") writer; its log is DIR/NAME.jsonl."""
        log = os.path.join(self.dir, name + ".jsonl")
        common = ["--uri", self.uri, "--name", name, "--db", db, "--count", str(count),
                  "--rate", str(rate), "--log", log] + list(extra)
        if kind == "c":
            cmd = [self.args.writer] + common
        else:
            cmd = [PY, os.path.join(HERE, "workload.py")] + common
        out = open(os.path.join(self.dir, name + ".out"), "w")
        # the C writer links libmongoc, whose counters would otherwise stay in /dev/shm when it
        # is killed (see mongo_unpublish_counters in capture/mongo/mongosource.c)
        env = dict(os.environ, MONGOC_DISABLE_SHM="1")
        p = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
        p.wname = name
        p.wlog = log
        self.writers.append(p)
        return p

    def wait_writers(self, procs, timeout=300):
        for p in procs:
            try:
                rc = p.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                p.kill()
                rc = "timeout"
            out = open(os.path.join(self.dir, p.wname + ".out")).read()
            if not self.check("writer %s finished (status %s)" % (p.wname, rc), rc == 0, out[-2000:]):
                continue
            self.say(out.strip().splitlines()[-1] if out.strip() else "writer %s: no output" % p.wname)

    def writer_logs(self, procs):
        out = []
        for p in procs:
            with open(p.wlog) as f:
                for line in f:
                    e = json.loads(line)
                    e["writer"] = p.wname
                    out.append(e)
        return out

    # ---- waiting
    def wait_marker(self, client, cap, db, timeout=45):
        """Inserts db.hello markers until the running capture's stream shows one
        (it watches from then on); deletes the ones it missed. Returns the marker's id."""
        deadline = time.time() + timeout
        # sluice logs "watching ..." once its change stream is open (a hint only:
        # the marker decides)
        cap.wait_watching(timeout - 30)
        k = 0
        missed = []
        while time.time() < deadline:
            if not cap.alive():
                self.die("capture exited before it streamed (status %s)" % cap.proc.returncode, cap)
            k += 1
            mid = "hello-%d" % k
            client[db].hello.insert_one({"_id": mid})
            until = time.time() + 3
            while time.time() < until:
                if self.stream_has(cap.stream, lambda ch: ch.type == "insert"
                                   and ch.ns == db + ".hello"
                                   and ch.id == (0x02, _bson_str(mid))):
                    for m in missed:
                        client[db].hello.delete_one({"_id": m})
                    return mid
                time.sleep(0.2)
            missed.append(mid)
        self.die("capture did not stream within %d s" % timeout, cap)

    def stream_has(self, stream, pred):
        try:
            txns = self.txns(stream, live=True)
        except RuntimeError:
            return False
        return any(pred(ch) for tx in txns for ch in tx.changes)

    def wait_stream(self, stream, pred, timeout=60, cap=None):
        """Waits until a change of the stream satisfies pred."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.stream_has(stream, pred):
                return True
            if cap is not None and not cap.alive():
                return False
            time.sleep(0.3)
        return False


def _bson_str(s):
    b = s.encode("utf-8") + b"\0"
    return len(b).to_bytes(4, "little") + b


def id_string(key):
    """A string _id's text, else None."""
    return sr.string_value(key[1]) if key and key[0] == 0x02 else None


# ---------------------------------------------------------------- the source's order

def source_events(client, start, dbs=None, quiet_polls=2):
    """Raw change events of the whole deployment from cluster time START (a
    bson Timestamp), until QUIET_POLLS empty polls in a row; only databases
    DBS when given."""
    out = []
    empty = 0
    with client.watch(start_at_operation_time=start, max_await_time_ms=500) as s:
        while empty < quiet_polls:
            ev = s.try_next()
            if ev is None:
                empty += 1
                continue
            empty = 0
            raw = bytes(ev.raw)
            if dbs is not None:
                nsd = sr.doc_field(raw, "ns")
                if nsd is None or sr.str_field(nsd, "db") not in dbs:
                    continue
            out.append(raw)
    return out


def event_time(raw):
    """A change event's clusterTime as a bson Timestamp."""
    import struct
    f = sr.field(raw, "clusterTime")
    inc, secs = struct.unpack("<II", f[1])
    return bson.Timestamp(secs, inc)


def event_ns(raw, name="ns"):
    d = sr.doc_field(raw, name)
    if d is None:
        return None
    return sr.ns_join(sr.str_field(d, "db"), sr.str_field(d, "coll"))


def event_key(raw):
    """The comparable form of a change event (see stream_replay.Change.key)."""
    op = sr.str_field(raw, "operationType")
    ns = event_ns(raw)
    if op == "insert":
        return ("insert", ns, sr.doc_field(raw, "fullDocument"))
    if op == "update":
        return ("update", ns, sr.doc_field(raw, "documentKey"), sr.doc_field(raw, "updateDescription"))
    if op == "replace":
        return ("replace", ns, sr.doc_field(raw, "documentKey"), sr.doc_field(raw, "fullDocument"))
    if op == "delete":
        return ("delete", ns, sr.doc_field(raw, "documentKey"))
    if op == "invalidate":
        return ("namespace_change", op)
    return ("namespace_change", op, ns, event_ns(raw, "to"))


def scope_events(client, start, collection=None, db=None, quiet_polls=2):
    """Raw change events of one collection ("db.coll") or database from cluster
    time START, read like a capture of that scope reads them: after an
    invalidate, a new stream starts after it (startAfter its token)."""
    out = []
    kw = {"start_at_operation_time": start}
    while True:
        if collection:
            d, c = collection.split(".", 1)
            target = client[d][c]
        else:
            target = client[db]
        invalidated = None
        empty = 0
        with target.watch(max_await_time_ms=500, **kw) as s:
            while empty < quiet_polls:
                ev = s.try_next()
                if ev is None:
                    if not s.alive:
                        break
                    empty += 1
                    continue
                empty = 0
                raw = bytes(ev.raw)
                out.append(raw)
                if sr.str_field(raw, "operationType") == "invalidate":
                    invalidated = ev["_id"]
                    break
        if invalidated is None:
            return out
        kw = {"start_after": invalidated}


def group_events(events):
    """[[event key]]: adjacent events with one lsid + txnNumber form one transaction."""
    groups = []
    last = None
    for raw in events:
        lsid = sr.field(raw, "lsid")
        txn = sr.field(raw, "txnNumber")
        tkey = (lsid, txn) if lsid is not None and txn is not None else None
        if tkey is not None and tkey == last:
            groups[-1].append(event_key(raw))
        else:
            groups.append([event_key(raw)])
        last = tkey
    return groups


def show_key(k):
    parts = [str(k[0]), str(k[1])]
    for x in k[2:]:
        if isinstance(x, bytes):
            parts.append(sr.show_doc(x, 160))
        elif x is not None:
            parts.append(str(x))
    return " ".join(parts)


def stream_groups(txns, keep_ns=None):
    """[[change key]] of the stream's change transactions (not the snapshot);
    with KEEP_NS, only changes whose namespace it accepts."""
    out = []
    for tx in txns:
        if tx.kind != "tx":
            continue
        keys = [ch.key() for ch in tx.changes if keep_ns is None or keep_ns(ch.ns or "")]
        if keys or not tx.changes:  # an empty transaction matches no source transaction
            out.append((tx.txseq, keys))
    return out


def compare_groups(stream, source, align=True):
    """Differences between the stream's transactions [(txseq, [key])] and the
    source's [[key]]; with ALIGN the source is cut before the first group equal
    to the stream's first. Returns [] when they are equal."""
    if align and stream:
        first = stream[0][1]
        for i, g in enumerate(source):
            if g == first:
                source = source[i:]
                break
        else:
            return ["the stream's first transaction (txseq %d: %s) is not in the source's history"
                    % (stream[0][0], [show_key(k) for k in first])]
    for i in range(max(len(stream), len(source))):
        s = stream[i] if i < len(stream) else None
        o = source[i] if i < len(source) else None
        if s is not None and s[1] == o:
            continue
        msg = ["source transaction %d of %d and stream transaction %d of %d differ" %
               (i + 1, len(source), i + 1, len(stream))]
        if s is None:
            msg.append("  the stream ends; the source has next: %s" % [show_key(k) for k in o])
        elif o is None:
            msg.append("  the source's history ends; the stream has txseq %d: %s"
                       % (s[0], [show_key(k) for k in s[1]]))
        else:
            msg.append("  stream txseq %d: %s" % (s[0], [show_key(k) for k in s[1]]))
            msg.append("  source:       %s" % [show_key(k) for k in o])
            # what comes next on both sides, to tell a duplicate from a loss
            if i + 1 < len(stream):
                msg.append("  next stream txseq %d: %s" % (stream[i + 1][0],
                                                          [show_key(k) for k in stream[i + 1][1]]))
            if i + 1 < len(source):
                msg.append("  next source:  %s" % [show_key(k) for k in source[i + 1]])
        return ["\n".join(msg)]
    return []


# ---------------------------------------------------------------- writer transactions

def change_marker(ch):
    """The writer marker (the "op" field) a change carries, or None."""
    try:
        if ch.type in ("insert", "replace", "snapshot_row") and ch.document is not None:
            return sr.str_field(ch.document, "op")
        if ch.type == "update" and ch.update_description is not None:
            uf = sr.doc_field(ch.update_description, "updatedFields")
            return sr.str_field(uf, "op") if uf is not None else None
    except sr.BSONError:
        return None
    return None


def check_writer_txns(t, txns, logs, label="", keep_ns=None):
    """Every committed writer transaction in exactly one stream transaction that
    holds exactly its changes in its order; no change of an aborted one; each
    writer's transactions in its commit order. Snapshot transactions are skipped.
    KEEP_NS: only the changes of the namespaces it accepts are expected (a
    capture of some databases or collections)."""
    if keep_ns is not None:
        logs = [dict(e, ops=[op for op in e["ops"] if keep_ns(op[1])]) for e in logs]
        logs = [e for e in logs if e["ops"]]
    opmap = {}
    for e in logs:
        for typ, ns, _id in e["ops"]:
            opmap[(typ, ns, _id, None if typ == "delete" else e["m"])] = e["m"]
    aborted = {e["m"] for e in logs if e["status"] == "aborted"}
    seen = {}
    mixed = []
    aborted_seen = []
    for tx in txns:
        if tx.kind != "tx":
            continue
        ms = []
        ops = []
        for ch in tx.changes:
            m = change_marker(ch)
            key = (ch.type, ch.ns, id_string(ch.id), None if ch.type == "delete" else m)
            if m in aborted:
                aborted_seen.append("txseq %d: %r" % (tx.txseq, ch))
            owner = opmap.get(key)
            if owner is not None:
                ms.append(owner)
                ops.append([ch.type, ch.ns, id_string(ch.id)])
        owners = sorted(set(ms))
        if len(owners) > 1:
            mixed.append("txseq %d holds changes of %s" % (tx.txseq, owners))
        if owners:
            seen.setdefault(owners[0], []).append((tx.txseq, ops))
    committed = [e for e in logs if e["status"] == "committed"]
    missing, dup, partial = [], [], []
    for e in committed:
        got = seen.get(e["m"], [])
        if not got:
            missing.append(e["m"])
        elif len(got) > 1:
            dup.append("%s in txseq %s" % (e["m"], [g[0] for g in got]))
        elif got[0][1] != e["ops"]:
            partial.append("%s (txseq %d): stream %s, committed %s" % (e["m"], got[0][0], got[0][1], e["ops"]))
    order = []
    by_writer = {}
    for e in committed:
        if len(seen.get(e["m"], [])) == 1:
            by_writer.setdefault(e["writer"], []).append((seen[e["m"]][0][0], e["m"]))
    for w, lst in by_writer.items():
        for a, b in zip(lst, lst[1:]):
            if a[0] >= b[0]:
                order.append("writer %s: %s (txseq %d) before %s (txseq %d)" % (w, a[1], a[0], b[1], b[0]))
                break
    multi = sum(1 for e in committed if e.get("multi"))
    t.say("%s%d committed writer transactions (%d multi-document), %d aborted"
          % (label, len(committed), multi, len(aborted)))

    def few(lst):
        return "; ".join(lst[:5]) + (" ... (%d in all)" % len(lst) if len(lst) > 5 else "")
    t.check(label + "every committed writer transaction is in the stream", not missing, few(missing))
    t.check(label + "none is in the stream twice", not dup, few(dup))
    t.check(label + "each is whole: exactly its changes in its order, in one txseq", not partial, few(partial))
    t.check(label + "no stream transaction mixes two source transactions", not mixed, few(mixed))
    t.check(label + "nothing of an aborted transaction is in the stream", not aborted_seen, few(aborted_seen))
    t.check(label + "each writer's transactions are in its commit order", not order, few(order))
