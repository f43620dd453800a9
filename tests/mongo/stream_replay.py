#!/usr/bin/python3
"""Reads a MongoDB stream through `sluice inspect --records --json
--full-values`, lists its transactions and replays it into a
dict-of-collections model. --full-values makes inspect print every document
whole (up to MongoDB's 16 MiB), where it would otherwise cut one over 1 MiB.

Documents are handled as raw BSON bytes throughout: the model holds, per
namespace "db.coll", the raw bytes of every document keyed by its `_id`
element (type byte and value bytes), so a document that came straight from the
source compares byte for byte, key order and numeric types included. Partial
updates (update_description) are applied on a parsed element tree that keeps
every value's bytes and re-encodes untouched values unchanged.

Replay rules (the snapshot, then the changes in txseq order):
  snapshot_row, insert      upsert by _id
  update with update_description
                            updatedFields set (dotted paths into documents and
                            arrays, missing parents created), removedFields
                            unset, truncatedArrays cut; nothing when the
                            document is missing
  update without it         replace (the record's document); nothing when missing
  delete                    delete by _id
  namespace_change          drop: the collection goes; rename: it moves;
                            dropDatabase: every collection of the database goes;
                            invalidate: nothing

Usage:
  stream_replay.py txns   (--json FILE | --sluice BIN --store S --stream N --trust PUB)
      FILE: the output of inspect --records --json --full-values
  stream_replay.py replay (--json FILE | ...) [--uri URI [--db DB ...]]
      prints the model (or compares it with the source's collections: exit 1 on a difference)
"""
import argparse
import base64
import json
import struct
import subprocess
import sys

# ---------------------------------------------------------------- raw BSON

FIXED = {0x01: 8, 0x06: 0, 0x07: 12, 0x08: 1, 0x09: 8, 0x0A: 0, 0x10: 4, 0x11: 8,
         0x12: 8, 0x13: 16, 0x7F: 0, 0xFF: 0}
TYPE_NAMES = {0x01: "double", 0x02: "string", 0x03: "document", 0x04: "array",
              0x05: "binary", 0x06: "undefined", 0x07: "objectId", 0x08: "bool",
              0x09: "date", 0x0A: "null", 0x0B: "regex", 0x0C: "dbPointer",
              0x0D: "code", 0x0E: "symbol", 0x0F: "codeWithScope", 0x10: "int32",
              0x11: "timestamp", 0x12: "int64", 0x13: "decimal128", 0x7F: "maxKey",
              0xFF: "minKey"}


class BSONError(ValueError):
    pass


def _value_size(raw, pos, t):
    if t in FIXED:
        return FIXED[t]
    if t in (0x02, 0x0D, 0x0E):
        return 4 + struct.unpack_from("<i", raw, pos)[0]
    if t in (0x03, 0x04, 0x0F):
        return struct.unpack_from("<i", raw, pos)[0]
    if t == 0x05:
        return 5 + struct.unpack_from("<i", raw, pos)[0]
    if t == 0x0B:
        e1 = raw.index(b"\0", pos)
        e2 = raw.index(b"\0", e1 + 1)
        return e2 + 1 - pos
    if t == 0x0C:
        return 4 + struct.unpack_from("<i", raw, pos)[0] + 12
    raise BSONError("unknown BSON type 0x%02x" % t)


def elements(raw):
    """[(name, type, value bytes)] of a raw BSON document, in order."""
    raw = bytes(raw)
    if len(raw) < 5:
        raise BSONError("document of %d bytes" % len(raw))
    n = struct.unpack_from("<i", raw, 0)[0]
    if n != len(raw) or raw[-1] != 0:
        raise BSONError("document length %d, have %d bytes" % (n, len(raw)))
    out = []
    pos = 4
    while raw[pos] != 0:
        t = raw[pos]
        end = raw.index(b"\0", pos + 1)
        name = raw[pos + 1:end].decode("utf-8")
        pos = end + 1
        size = _value_size(raw, pos, t)
        if size < 0 or pos + size > n - 1:
            raise BSONError("element %r runs past the document" % name)
        out.append((name, t, raw[pos:pos + size]))
        pos += size
    if pos != n - 1:
        raise BSONError("bytes after the terminator")
    return out


def build(elems):
    """Raw BSON document from [(name, type, value bytes)]."""
    body = b"".join(bytes([t]) + name.encode("utf-8") + b"\0" + v for name, t, v in elems)
    return struct.pack("<i", len(body) + 5) + body + b"\0"


def field(raw, name):
    """(type, value bytes) of a top-level field, or None."""
    for n, t, v in elements(raw):
        if n == name:
            return (t, v)
    return None


def string_value(v):
    return v[4:-1].decode("utf-8")


def str_field(raw, name):
    f = field(raw, name)
    return string_value(f[1]) if f and f[0] == 0x02 else None


def doc_field(raw, name):
    f = field(raw, name)
    return f[1] if f and f[0] in (0x03, 0x04) else None


def id_key(raw):
    """The _id element (type, value bytes) of a document or document key."""
    f = field(raw, "_id")
    if f is None:
        raise BSONError("no _id")
    return f


def show_id(key):
    try:
        import bson
        return repr(bson.decode(build([("_id", key[0], key[1])]))["_id"])
    except Exception:  # noqa: BLE001 - only for messages
        return "%s:%s" % (TYPE_NAMES.get(key[0], hex(key[0])), key[1].hex())


def show_doc(raw, limit=400):
    try:
        import bson
        from bson.codec_options import CodecOptions
        s = repr(bson.decode(raw, CodecOptions(uuid_representation=0)))
    except Exception:  # noqa: BLE001
        s = raw.hex()
    return s if len(s) <= limit else s[:limit] + "..."


# A mutable tree of a document: [[name, type, value]], value a nested tree for
# documents and arrays, else the value's bytes.
def tree(raw):
    return [[n, t, tree(v) if t in (0x03, 0x04) else v] for n, t, v in elements(raw)]


def untree(tr):
    return build([(n, t, untree(v) if t in (0x03, 0x04) else v) for n, t, v in tr])


def _find(node, name):
    for el in node:
        if el[0] == name:
            return el
    return None


def _pad_array(node, index):
    while len(node) < index:
        node.append([str(len(node)), 0x0A, b""])


def _set(node, is_array, parts, t, v):
    name = parts[0]
    if is_array and not name.isdigit():
        raise BSONError("path part %r into an array" % name)  # only at the top: see below
    el = _find(node, name)
    if len(parts) == 1:
        val = tree(v) if t in (0x03, 0x04) else v
        if el is not None:
            el[1], el[2] = t, val
        else:
            if is_array:
                _pad_array(node, int(name))
            node.append([name, t, val])
        return
    if el is None:
        if is_array:
            _pad_array(node, int(name))
        el = [name, 0x03, []]
        node.append(el)
    elif el[1] not in (0x03, 0x04) or (el[1] == 0x04 and not parts[1].isdigit()):
        # Only when a change is replayed over a later state (a copy newer than
        # its snapshot time): a later change in the stream sets it right, and
        # the final comparison shows it if not.
        el[1], el[2] = 0x03, []
    _set(el[2], el[1] == 0x04, parts[1:], t, v)


def _walk(node, parts):
    """The element at a path, or None."""
    el = None
    for p in parts:
        if node is None:
            return None
        el = _find(node, p)
        if el is None:
            return None
        node = el[2] if el[1] in (0x03, 0x04) else None
    return el


def _unset(node, parts):
    if len(parts) > 1:
        parent = _walk(node, parts[:-1])
        if parent is None or parent[1] not in (0x03, 0x04):
            return
        if parent[1] == 0x04:  # $unset of an array element leaves null
            el = _find(parent[2], parts[-1])
            if el is not None:
                el[1], el[2] = 0x0A, b""
            return
        node = parent[2]
    for i, el in enumerate(node):
        if el[0] == parts[-1]:
            del node[i]
            return


def apply_update(doc_raw, ud_raw):
    """The document after a change event's updateDescription."""
    doc = tree(doc_raw)
    ud = {n: (t, v) for n, t, v in elements(ud_raw)}
    paths = {}
    if "disambiguatedPaths" in ud and ud["disambiguatedPaths"][0] == 0x03:
        for n, t, v in elements(ud["disambiguatedPaths"][1]):
            paths[n] = [string_value(vv) if tt == 0x02 else str(struct.unpack("<i", vv)[0])
                        for _, tt, vv in elements(v)]

    def parts(path):
        return paths.get(path) or path.split(".")

    if "truncatedArrays" in ud and ud["truncatedArrays"][0] == 0x04:
        for _, _, ta in elements(ud["truncatedArrays"][1]):
            f = str_field(ta, "field")
            ns = field(ta, "newSize")
            size = struct.unpack("<i", ns[1])[0] if ns[0] == 0x10 else struct.unpack("<q", ns[1])[0]
            el = _walk(doc, parts(f))
            if el is not None and el[1] == 0x04:
                del el[2][size:]
    if "updatedFields" in ud:
        for n, t, v in elements(ud["updatedFields"][1]):
            _set(doc, False, parts(n), t, v)
    if "removedFields" in ud:
        for _, t, v in elements(ud["removedFields"][1]):
            _unset(doc, parts(string_value(v)))
    return untree(doc)


# ---------------------------------------------------------------- records

def load_record(line):
    """One JSON line of inspect: the record, refused if the record repeats a
    key (each cut value carries its own marker; a document may repeat one)."""
    keys = []

    def pairs(kv):
        keys.append([k for k, _ in kv])
        return dict(kv)
    rec = json.loads(line, object_pairs_hook=pairs)
    own = keys[-1]  # the record's object is the last one closed
    if len(own) != len(set(own)):
        raise ValueError("a key twice in an inspect line: %s" % line[:300])
    return rec


def parse_records(lines):
    """Records from inspect --records --json --full-values lines; every
    X_bson_base64 field is decoded into rec["bson"]["X"] (bytes)."""
    out = []
    for line in lines:
        line = line.strip()
        if not line:
            continue
        rec = load_record(line)
        raw = {}
        for k, v in rec.items():
            if not k.endswith("_bson_base64"):
                continue
            if isinstance(v, dict) and v.get("truncated"):
                raise ValueError("inspect cut %s of txseq %s (%s bytes): run it with --full-values"
                                 % (k, rec.get("txseq"), v.get("bytes")))
            raw[k[:-len("_bson_base64")]] = base64.b64decode(v)
        rec["bson"] = raw
        out.append(rec)
    return out


def inspect_records(sluice, store, stream, trust, extra=()):
    """Runs sluice inspect --records --json --full-values; [] when the stream has nothing yet."""
    p = subprocess.run([sluice, "inspect", "--store", store, "--stream", stream, "--trust", trust,
                        "--records", "--json", "--full-values"] + list(extra),
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if p.returncode != 0:
        raise RuntimeError("sluice inspect failed (%d): %s" % (p.returncode, p.stderr.strip()))
    return parse_records(p.stdout.splitlines())


CHANGE_TYPES = ("insert", "update", "delete", "snapshot_row", "namespace_change")


class Change:
    """One change of a transaction: type is insert, update, replace (an update
    without update_description), delete, snapshot_row or namespace_change."""

    def __init__(self, rec):
        self.rec = rec
        b = rec["bson"]
        self.type = rec["type"]
        self.ns = rec.get("relation")
        self.document = b.get("document")
        self.document_key = b.get("document_key")
        self.update_description = b.get("update_description")
        self.document_before = b.get("document_before")
        self.event = b.get("event")
        if self.type == "update" and self.update_description is None:
            self.type = "replace"
        self.id = None
        src = self.document_key if self.document_key is not None else self.document
        if src is not None:
            self.id = id_key(src)
        if self.type == "namespace_change":
            self.op = rec.get("operation")
            self.ns = ns_join(rec.get("database"), rec.get("collection"))
            self.to = ns_join(rec.get("to_database"), rec.get("to_collection"))

    def key(self):
        """What identifies the change against a change event (see event_key)."""
        if self.type == "insert":
            return ("insert", self.ns, self.document)
        if self.type == "update":
            return ("update", self.ns, self.document_key, self.update_description)
        if self.type == "replace":
            return ("replace", self.ns, self.document_key, self.document)
        if self.type == "delete":
            return ("delete", self.ns, self.document_key)
        if self.type == "namespace_change":
            if self.op == "invalidate":  # its event names no namespace
                return ("namespace_change", self.op)
            return ("namespace_change", self.op, self.ns, self.to)
        return (self.type, self.ns, self.document)

    def __repr__(self):
        s = "%s %s" % (self.type, self.ns)
        if self.type == "namespace_change":
            s = "%s %s %s%s" % (self.type, self.op, self.ns, " -> " + self.to if self.to else "")
        elif self.id is not None:
            s += " _id=" + show_id(self.id)
        return s


def ns_join(db, coll):
    if not db:
        return None
    return db + "." + coll if coll else db


class Txn:
    def __init__(self, txseq, kind, opening):
        self.txseq = txseq
        self.kind = kind  # "tx" or "snapshot"
        self.opening = opening
        self.changes = []
        self.closing = None

    def __repr__(self):
        return "txseq %d (%s): %s" % (self.txseq, self.kind, self.changes)


def transactions(records, live=False):
    """[Txn] in stream order; raises ValueError on a record outside a transaction
    or a change whose txseq is not the open transaction's. LIVE: a stream being
    written; its unfinished last transaction is left out."""
    out = []
    cur = None
    for rec in records:
        t = rec["type"]
        if t in ("begin", "snapshot_begin"):
            if cur is not None:
                raise ValueError("%s of %s inside transaction %d" % (t, rec.get("txseq"), cur.txseq))
            cur = Txn(rec["txseq"], "tx" if t == "begin" else "snapshot", rec)
            out.append(cur)
        elif t in ("commit", "snapshot_end"):
            if cur is None or rec.get("txseq") != cur.txseq:
                raise ValueError("%s of %s without its opening" % (t, rec.get("txseq")))
            cur.closing = rec
            cur = None
        elif t in CHANGE_TYPES:
            if cur is None:
                raise ValueError("%s outside a transaction" % t)
            if rec.get("txseq") not in (None, cur.txseq):
                raise ValueError("%s of txseq %s inside %d" % (t, rec.get("txseq"), cur.txseq))
            cur.changes.append(Change(rec))
    if cur is not None and cur.closing is None:
        if live:
            out.pop()
            return out
        raise ValueError("transaction %d not closed" % cur.txseq)
    return out


# ---------------------------------------------------------------- replay

class Model:
    """{ns: {id key: raw document}}, with counts of what replay skipped."""

    def __init__(self):
        self.colls = {}
        self.skipped = 0  # updates/replaces of documents not in the model
        self.log = []

    def coll(self, ns):
        return self.colls.setdefault(ns, {})

    def apply(self, ch):
        t = ch.type
        if t in ("snapshot_row", "insert"):
            self.coll(ch.ns)[ch.id] = ch.document
        elif t == "update":
            c = self.colls.get(ch.ns, {})
            if ch.id not in c:
                self.skipped += 1
                return
            c[ch.id] = apply_update(c[ch.id], ch.update_description)
        elif t == "replace":
            c = self.colls.get(ch.ns, {})
            if ch.id not in c:
                self.skipped += 1
                return
            if ch.document is None:
                raise ValueError("replace without a document: %r" % ch)
            c[ch.id] = ch.document
        elif t == "delete":
            self.colls.get(ch.ns, {}).pop(ch.id, None)
        elif t == "namespace_change":
            if ch.op == "drop":
                self.colls.pop(ch.ns, None)
            elif ch.op == "rename":
                self.colls[ch.to] = self.colls.pop(ch.ns, {})
            elif ch.op == "dropDatabase":
                for ns in [n for n in self.colls if n.split(".", 1)[0] == ch.ns]:
                    del self.colls[ns]

    def replay(self, txns):
        for tx in txns:
            for ch in tx.changes:
                self.apply(ch)
        return self

    def nonempty(self, keep=None):
        return {ns: docs for ns, docs in self.colls.items()
                if docs and (keep is None or keep(ns))}


def compare(model_colls, source_colls, limit=10):
    """Differences between two {ns: {id: raw}} maps (empty collections count as absent)."""
    diffs = []
    a = {ns: d for ns, d in model_colls.items() if d}
    b = {ns: d for ns, d in source_colls.items() if d}
    for ns in sorted(set(a) | set(b)):
        ma, mb = a.get(ns, {}), b.get(ns, {})
        if ns not in a:
            diffs.append("%s: %d documents in the source, collection missing from the replay"
                         % (ns, len(mb)))
            continue
        if ns not in b:
            diffs.append("%s: %d documents in the replay, collection missing from the source"
                         % (ns, len(ma)))
            continue
        for k in ma.keys() - mb.keys():
            diffs.append("%s: _id %s only in the replay: %s" % (ns, show_id(k), show_doc(ma[k])))
        for k in mb.keys() - ma.keys():
            diffs.append("%s: _id %s only in the source: %s" % (ns, show_id(k), show_doc(mb[k])))
        for k in ma.keys() & mb.keys():
            if ma[k] != mb[k]:
                diffs.append("%s: _id %s differs:\n  replay %s\n         %s\n  source %s\n         %s"
                             % (ns, show_id(k), show_doc(ma[k]), ma[k].hex(),
                                show_doc(mb[k]), mb[k].hex()))
    if len(diffs) > limit:
        diffs = diffs[:limit] + ["... and %d more differences" % (len(diffs) - limit)]
    return diffs


def source_collections(client, dbs=None, namespaces=None):
    """{ns: {id: raw}} of a source read through pymongo (client with
    document_class=RawBSONDocument), every database but admin/config/local, or
    only DBS / NAMESPACES."""
    out = {}
    names = dbs if dbs is not None else [d for d in client.list_database_names()
                                         if d not in ("admin", "config", "local")]
    if namespaces is not None:
        names = sorted({ns.split(".", 1)[0] for ns in namespaces})
    for dbname in names:
        db = client[dbname]
        for cname in db.list_collection_names():
            ns = dbname + "." + cname
            if cname.startswith("system.") or (namespaces is not None and ns not in namespaces):
                continue
            docs = {}
            for d in db[cname].find({}):
                raw = bytes(d.raw)
                docs[id_key(raw)] = raw
            out[ns] = docs
    return out


# ---------------------------------------------------------------- CLI

def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", choices=["txns", "replay"])
    ap.add_argument("--json", help="inspect --records --json --full-values output (- for stdin)")
    ap.add_argument("--sluice")
    ap.add_argument("--store")
    ap.add_argument("--stream")
    ap.add_argument("--trust")
    ap.add_argument("--uri", help="compare the replay with this source")
    ap.add_argument("--db", action="append", help="only these databases")
    a = ap.parse_args()
    if a.json:
        f = sys.stdin if a.json == "-" else open(a.json)
        records = parse_records(f)
    else:
        records = inspect_records(a.sluice, a.store, a.stream, a.trust)
    txns = transactions(records)
    if a.what == "txns":
        for tx in txns:
            print("%d %s" % (tx.txseq, tx.kind))
            for ch in tx.changes:
                print("    %r" % ch)
        return 0
    keep = (lambda ns: ns.split(".", 1)[0] in a.db) if a.db else None
    model = Model().replay(txns)
    if not a.uri:
        for ns, docs in sorted(model.nonempty(keep).items()):
            print(ns)
            for raw in docs.values():
                print("    " + show_doc(raw))
        return 0
    import pymongo
    from bson.raw_bson import RawBSONDocument
    client = pymongo.MongoClient(a.uri, document_class=RawBSONDocument)
    diffs = compare(model.nonempty(keep), source_collections(client, dbs=a.db))
    for d in diffs:
        print(d)
    print("replay %s the source (%d updates of missing documents skipped)"
          % ("differs from" if diffs else "equals", model.skipped))
    return 1 if diffs else 0


if __name__ == "__main__":
    sys.exit(main())
