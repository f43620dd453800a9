#!/usr/bin/env bash
# Capture of every kind of column value: each value read back from the stream
# equals PostgreSQL's own text form; NULL and unchanged TOAST stay distinct;
# old keys (DEFAULT identity) and old rows (FULL identity) are captured.
# Values over 1 MiB: inspect cuts each in its own marker, and prints them
# whole with --full-values (which stream_state.py uses).
# Usage: test_capture_types.sh SLUICE
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
. "$HERE/harness.sh"
pg_test_init "$1"
pg_start src
"$SLUICE" keygen --out "$W/k" >/dev/null 2>&1

pg_psql src postgres <<'SQL'
CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
CREATE DOMAIN posint AS integer CHECK (VALUE > 0);
CREATE TYPE pair AS (a integer, b text);
CREATE TABLE zoo (
  id bigint PRIMARY KEY,
  i2 smallint, i4 integer, i8 bigint,
  num numeric, num_s numeric(12,3),
  f4 real, f8 double precision,
  t text, vc varchar(20), ch char(5),
  by bytea, bo boolean,
  d date, tm time, ts timestamp, tstz timestamptz, iv interval,
  u uuid, j json, jb jsonb,
  ai integer[], at text[],
  e mood, dom posint, comp pair, rng int4range, tsr tstzrange,
  inet_ inet, mac macaddr, bits bit varying(16), money_ money, xml_ xml,
  big text
);
ALTER TABLE zoo ALTER COLUMN big SET STORAGE EXTERNAL;
CREATE TABLE full_ident (k integer, v text);
ALTER TABLE full_ident REPLICA IDENTITY FULL;
SQL
"$SLUICE" capture --source "$(pg_conninfo src)" --store "$W/store" --stream zoo \
	--key "$W/k.key" --create --exit-when-caught-up --no-progress 2>"$W/capture0.log"

pg_psql src postgres <<'SQL'
INSERT INTO zoo VALUES
 (1, -32768, -2147483648, -9223372036854775808, 'NaN', 123456789.123,
  'Infinity', '-Infinity', 'grüße, 日本語, emoji 🎉', 'vc', 'ab',
  '\x00010203ff00', true, 'infinity', '23:59:59.999999', '-infinity', 'infinity',
  '1 year 2 mons 3 days 04:05:06.789', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11',
  '{"a": [1, 2, {"b": null}]}', '{"z": 1, "a": "x\"y"}',
  '{1,NULL,3}', '{"a b","c,d","","NULL"}', 'happy', 7, '(1,"x y")', '[1,10)',
  '["2020-01-01 00:00+00","2021-01-01 00:00+00")',
  '192.168.0.1/24', '08:00:2b:01:02:03', B'1011', 12.34, '<a>x</a>', repeat('big', 5000)),
 (2, 0, 0, 0, '-0.000001', 0, 'NaN', 1e-300, E'tab\there\nnewline \\ backslash', '', '',
  '\x', false, '2000-01-01', '00:00', '1999-12-31 23:59:59.5', '2000-01-01 00:00+14',
  '-1 days', '00000000-0000-0000-0000-000000000000', 'null', '[]', '{}', '{}',
  'sad', 1, '(,)', 'empty', 'empty', '::1', 'ff:ff:ff:ff:ff:ff', B'', -1, '<b/>', ''),
 (3, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
  NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
  NULL, NULL, NULL, NULL);
-- Two values over inspect's 1 MiB cut in one row (bytea as its 3 MB hex text).
INSERT INTO zoo (id, by, big) VALUES (4, decode(repeat('ab', 1500000), 'hex'),
  repeat('0123456789', 200000));
-- An update that leaves the TOASTed value alone: pgoutput sends it as unchanged.
UPDATE zoo SET i4 = 42 WHERE id = 1;
-- An update of the key: the old key is sent.
UPDATE zoo SET id = 30 WHERE id = 3;
DELETE FROM zoo WHERE id = 2;
INSERT INTO full_ident VALUES (1, 'one'), (2, 'two');
UPDATE full_ident SET v = 'uno' WHERE k = 1;
DELETE FROM full_ident WHERE k = 2;
SQL
"$SLUICE" capture --source "$(pg_conninfo src)" --store "$W/store" --stream zoo \
	--key "$W/k.key" --exit-when-caught-up --no-progress 2>"$W/capture1.log"

"$SLUICE" verify --store "$W/store" --stream zoo --trust "$W/k.pub"
"$SLUICE" inspect --store "$W/store" --stream zoo --trust "$W/k.pub" --records --json >"$W/records.json"
python3 "$HERE/stream_state.py" compare --sluice "$SLUICE" --store "$W/store" --stream zoo \
	--trust "$W/k.pub" --conninfo "$(pg_conninfo src)" --tables public.zoo,public.full_ident

python3 - "$W/records.json" <<'PY'
import json, sys


def record(line):  # a record object that repeats a key is refused
    keys = []

    def pairs(kv):
        keys.append([k for k, _ in kv])
        return dict(kv)
    rec = json.loads(line, object_pairs_hook=pairs)
    assert len(keys[-1]) == len(set(keys[-1])), keys[-1]
    return rec


recs = [record(l) for l in open(sys.argv[1])]
ups = [r for r in recs if r["type"] == "update" and r["relation"] == "public.zoo"]
# the i4 update: big is unchanged TOAST, distinct from NULL
toast = [u for u in ups if u["new"]["id"] == "1"][0]
assert toast["new"]["big"] == {"unchanged_toast": True}, toast["new"]["big"]
assert toast["new"]["i4"] == "42"
# the key update carries the old key
keyup = [u for u in ups if u["new"]["id"] == "30"][0]
assert keyup["old_kind"] == "key" and keyup["old"]["id"] == "3", keyup
assert keyup["new"]["big"] is None  # a real NULL, not "unchanged"
full = [r for r in recs if r["relation"] == "public.full_ident" and r["type"] in ("update", "delete")] if False else \
       [r for r in recs if r.get("relation") == "public.full_ident" and r["type"] in ("update", "delete")]
assert all(r["old_kind"] == "full" for r in full), full
assert [r["old"]["v"] for r in full] == ["one", "two"], full
zoo1 = [r for r in recs if r["type"] == "insert" and r["relation"] == "public.zoo" and r["new"]["id"] == "1"][0]["new"]
assert zoo1["by"] == "\\x00010203ff00" and zoo1["num"] == "NaN" and zoo1["f4"] == "Infinity"
assert zoo1["t"] == "grüße, 日本語, emoji 🎉"
rel = [r for r in recs if r["type"] == "relation" and r["relation"] == "public.zoo"][-1]
types = {c["name"]: c["type"] for c in rel["columns"]}
assert types["num_s"] == "numeric(12,3)" and types["e"] == "mood" and types["ai"] == "integer[]", types
assert types["dom"] == "posint" and types["vc"] == "character varying(20)", types
# values over 1 MiB: each cut in its own marker, in place of the value
big4 = [r for r in recs if r["type"] == "insert" and r.get("relation") == "public.zoo"
        and r["new"]["id"] == "4"][0]["new"]
assert big4["big"] == {"truncated": True, "bytes": 2000000,
                       "prefix": ("0123456789" * 104858)[:1 << 20]}, str(big4["big"])[:200]
assert big4["by"]["truncated"] is True and big4["by"]["bytes"] == 3000002, str(big4["by"])[:200]
assert big4["by"]["prefix"] == "\\x" + "ab" * ((1 << 19) - 1), str(big4["by"])[:200]
print("type zoo: unchanged TOAST, NULL, old keys, old rows, type names and cut values as expected")
PY
"$SLUICE" inspect --store "$W/store" --stream zoo --trust "$W/k.pub" --records --json \
	--full-values >"$W/records-full.json"
python3 - "$W/records-full.json" <<'PY'
import json, sys
recs = [json.loads(l) for l in open(sys.argv[1])]
big4 = [r for r in recs if r["type"] == "insert" and r.get("relation") == "public.zoo"
        and r["new"]["id"] == "4"][0]["new"]
assert big4["big"] == "0123456789" * 200000 and big4["by"] == "\\x" + "ab" * 1500000
assert not any("truncated" in l for l in open(sys.argv[1]))
print("type zoo: --full-values prints the values over 1 MiB whole")
PY
echo "test_capture_types: passed"
