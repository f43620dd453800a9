#!/usr/bin/python3
"""Differential test of apply/mongo/mongoupdate.c against its oracle,
apply_update in stream_replay.py: random documents and change events'
updateDescriptions (a fixed seed), applied by both, must give the same bytes.

The C side runs through the helper mongo_update_hex (one "DOC UD" hex line in,
one "OK RESULT" or "ERR message" line out). The cases stay within what the
oracle assumes: valid BSON, paths of ASCII parts, array indexes below a million,
disambiguatedPaths parts that are strings or int32, newSize int32 or int64 >= 0,
no key twice in an update description. Values are written as raw bytes, so
they include what a BSON library would rewrite (regex options out of order,
NUL bytes in code, NaN payloads, the old binary subtype, DBPointer).

Usage: test_update_oracle.py --helper PATH [--seed N] [--count N]
"""
import argparse
import os
import random
import struct
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import stream_replay as sr  # noqa: E402

NAMES = ["a", "b", "c", "d", "x", "_id", "0", "1", "2", "10", "$x", "$", "", "é", "x y", "a.b",
         "1.2", "-1"]
PARTS = ["a", "b", "c", "d", "x", "y", "0", "1", "2", "3", "5", "10", "$x", "", "é", "a.b", "-1",
         "01"]


def cstring(s):
    return s.encode("utf-8") + b"\0" if isinstance(s, str) else s + b"\0"


def string(b):
    b = b if isinstance(b, bytes) else b.encode("utf-8")
    return struct.pack("<i", len(b) + 1) + b + b"\0"


class Gen:
    def __init__(self, rnd):
        self.r = rnd

    def text(self):
        r = self.r
        return r.choice([b"", b"x", b"a\0b", "é€𝄞".encode(), b"\0", bytes(r.randrange(32, 127)
                         for _ in range(r.randrange(0, 12)))])

    def scalar(self):
        """(type, value bytes) of a random non-container value."""
        r = self.r
        t = r.choice([0x01, 0x01, 0x02, 0x02, 0x05, 0x06, 0x07, 0x08, 0x09, 0x0A, 0x0B, 0x0C,
                      0x0D, 0x0E, 0x0F, 0x10, 0x10, 0x11, 0x12, 0x13, 0x7F, 0xFF])
        if t == 0x01:
            bits = r.choice([0x7ff0000000000001, 0xfff8000000abcdef, 0x7ff8000000000000,
                             0x8000000000000000, 0x7ff0000000000000, r.getrandbits(64)])
            return t, struct.pack("<Q", bits)
        if t in (0x02, 0x0D, 0x0E):
            return t, string(self.text())
        if t == 0x05:
            sub = r.choice([0, 2, 3, 4, 5, 0x80])
            data = bytes(r.getrandbits(8) for _ in range(r.choice([0, 1, 5, 16])))
            if sub == 2:
                data = struct.pack("<i", len(data)) + data
            return t, struct.pack("<i", len(data)) + bytes([sub]) + data
        if t in (0x06, 0x0A, 0x7F, 0xFF):
            return t, b""
        if t == 0x07:
            return t, bytes(r.getrandbits(8) for _ in range(12))
        if t == 0x08:
            return t, bytes([r.randrange(2)])
        if t in (0x09, 0x11, 0x12):
            return t, struct.pack("<Q", r.getrandbits(64))
        if t == 0x0B:
            pattern = bytes(r.randrange(32, 127) for _ in range(r.randrange(0, 6)))
            opts = "".join(r.choice("ilmsuxq") for _ in range(r.randrange(0, 5)))
            return t, cstring(pattern) + cstring(opts)
        if t == 0x0C:
            return t, string(r.choice([b"db.c", b"d\0c", b""])) + bytes(range(12))
        if t == 0x0F:
            code = string(self.text())
            scope = self.document(1)
            return t, struct.pack("<i", 4 + len(code) + len(scope)) + code + scope
        if t == 0x10:
            return t, struct.pack("<i", r.randrange(-2**31, 2**31))
        if t == 0x13:
            return t, bytes(r.getrandbits(8) for _ in range(16))
        raise AssertionError(t)

    def value(self, depth):
        r = self.r
        k = r.random()
        if depth > 0 and k < 0.2:
            return 0x03, self.document(depth - 1)
        if depth > 0 and k < 0.4:
            return 0x04, self.array(depth - 1)
        return self.scalar()

    def document(self, depth):
        r = self.r
        elems = []
        for _ in range(r.randrange(0, 6)):
            name = r.choice(NAMES)
            if r.random() < 0.9 and any(e[0] == name for e in elems):
                continue  # mostly unique names; now and then one twice
            t, v = self.value(depth)
            elems.append((name, t, v))
        return sr.build(elems)

    def array(self, depth):
        r = self.r
        n = r.randrange(0, 6)
        names = [str(i) for i in range(n)]
        if n and r.random() < 0.1:  # keys that are not 0, 1, 2... (still digits)
            names = r.choice([[str(i) for i in sorted(r.sample(range(10), n))],
                              [str(r.randrange(3)) for _ in range(n)],
                              ["0" + str(i) for i in range(n)],
                              [str(i) for i in range(n)][::-1]])
        return sr.build([(name,) + self.value(depth) for name in names])


def paths_in(tr, prefix=()):
    """Every path of a tree (stream_replay.tree), with whether it is an array."""
    for name, t, v in tr:
        p = prefix + (name,)
        yield p, t == 0x04, (len(v) if t == 0x04 else 0)
        if t in (0x03, 0x04):
            yield from paths_in(v, p)


def make_case(g):
    """A random (document, update description), raw BSON."""
    r = g.r
    doc = g.document(3)
    tr = sr.tree(doc)
    existing = list(paths_in(tr))
    arrays = [(p, n) for p, is_arr, n in existing if is_arr]
    dis = {}   # key -> parts
    used = set()

    def new_path():
        if existing and r.random() < 0.7:
            p = list(r.choice(existing)[0])
            if r.random() < 0.3:
                p = p[:r.randrange(1, len(p) + 1)]
        else:
            p = [r.choice(PARTS)]
        for _ in range(r.choice([0, 0, 0, 1, 1, 2])):
            p.append(r.choice(PARTS))
        return p

    def key_of(parts):
        """The path's string in the event, with a disambiguatedPaths entry when needed
        (or now and then when not); None if it would clash with another path's."""
        key = ".".join(parts)
        want_dis = any("." in p for p in parts) or r.random() < 0.1
        if key in dis:
            return key if dis[key] == parts else None
        if not want_dis:
            return key if key not in used or key.split(".") == parts else None
        if key in used and key.split(".") != parts:
            return None
        dis[key] = parts
        used.add(key)
        return key

    elems = []
    # truncatedArrays
    if arrays and r.random() < 0.5:
        tas = []
        for p, n in r.sample(arrays, r.randrange(1, min(3, len(arrays)) + 1)):
            key = key_of(list(p))
            if key is None:
                continue
            size = r.randrange(0, n + 2)
            ns = (0x10, struct.pack("<i", size)) if r.random() < 0.8 else \
                (0x12, struct.pack("<q", size))
            tas.append(sr.build([("field", 0x02, string(key)), ("newSize",) + ns]))
        elems.append(("truncatedArrays", 0x04,
                      sr.build([(str(i), 0x03, d) for i, d in enumerate(tas)])))
    # updatedFields
    uf, seen = [], set()
    for _ in range(r.randrange(0, 5)):
        parts = new_path()
        key = key_of(parts)
        if key is None or key in seen:
            continue
        seen.add(key)
        used.add(key)
        uf.append((key,) + g.value(2))
    if uf or r.random() < 0.8:
        elems.append(("updatedFields", 0x03, sr.build(uf)))
    # removedFields
    rf = []
    for _ in range(r.choice([0, 0, 1, 1, 2, 3])):
        key = key_of(new_path())
        if key is None:
            continue
        used.add(key)
        rf.append(key)
    if rf or r.random() < 0.8:
        elems.append(("removedFields", 0x04,
                      sr.build([(str(i), 0x02, string(k)) for i, k in enumerate(rf)])))
    if dis:
        entries = []
        for key, parts in dis.items():
            ps = []
            for i, p in enumerate(parts):
                if p.isdigit() and str(int(p)) == p and r.random() < 0.7:
                    ps.append((str(i), 0x10, struct.pack("<i", int(p))))
                elif p.startswith("-") and p[1:].isdigit() and str(int(p)) == p \
                        and r.random() < 0.5:
                    ps.append((str(i), 0x10, struct.pack("<i", int(p))))
                else:
                    ps.append((str(i), 0x02, string(p)))
            entries.append((key, 0x04, sr.build(ps)))
        elems.append(("disambiguatedPaths", 0x03, sr.build(entries)))
    r.shuffle(elems)
    return doc, sr.build(elems)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--helper", required=True)
    ap.add_argument("--seed", type=int, default=20240611)
    ap.add_argument("--count", type=int, default=600)
    a = ap.parse_args()

    g = Gen(random.Random(a.seed))
    cases = []
    for i in range(a.count):
        doc, ud = make_case(g)
        try:
            want = sr.apply_update(doc, ud)
        except Exception as e:  # noqa: BLE001 - the generator left the oracle's assumptions
            print("FAIL: case %d: the oracle raised %r (a generator bug)\n  doc %s\n  ud  %s"
                  % (i, e, doc.hex(), ud.hex()))
            return 1
        cases.append((doc, ud, want))

    inp = "".join("%s %s\n" % (d.hex(), u.hex()) for d, u, _ in cases)
    p = subprocess.run([a.helper], input=inp, capture_output=True, text=True, timeout=300)
    if p.returncode != 0:
        print("FAIL: %s exited %d: %s" % (a.helper, p.returncode, p.stderr[-3000:]))
        return 1
    lines = p.stdout.splitlines()
    if len(lines) != len(cases):
        print("FAIL: %d results for %d cases" % (len(lines), len(cases)))
        return 1
    bad = 0
    for i, ((doc, ud, want), line) in enumerate(zip(cases, lines)):
        if line.startswith("OK ") and bytes.fromhex(line[3:]) == want:
            continue
        bad += 1
        if bad <= 5:
            got = line if not line.startswith("OK ") else sr.show_doc(bytes.fromhex(line[3:]))
            print("FAIL: case %d differs\n  doc  %s\n  ud   %s\n  want %s\n  got  %s\n"
                  "  doc hex  %s\n  ud hex   %s\n  want hex %s\n  got hex  %s"
                  % (i, sr.show_doc(doc), sr.show_doc(ud), sr.show_doc(want), got, doc.hex(),
                     ud.hex(), want.hex(), line))
    if bad:
        print("FAIL: %d of %d cases differ from the oracle (seed %d)" % (bad, len(cases), a.seed))
        return 1
    print("ok: %d random updates give the oracle's bytes (seed %d)" % (len(cases), a.seed))
    return 0


if __name__ == "__main__":
    sys.exit(main())
