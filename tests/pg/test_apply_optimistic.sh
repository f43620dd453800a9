#!/usr/bin/env bash
# Replace applies batches of inserted rows with a plain INSERT (no ON CONFLICT)
# and, when a row exists on the target after all, rolls that transaction back
# (with every transaction queued after it) and applies it again with conflict
# handling. Here 300 source transactions of 40 inserted rows each (plus an
# update and a delete in some) run through one apply, while the target already
# holds some of the rows of transactions 1, 37, 38, 150 and 299 (older local
# values): many transactions are in flight when each failure happens, and the
# first one also records the stream's node name (sluice.origin_node), which
# must survive its retry.
# Checked: the target ends equal to the source; the final counters are exact
# (300 transactions, every row inserted once or counted as an existing row,
# insert_exists = the pre-existing rows); the conflict log holds exactly those
# keys and transactions; origin progress is 300; apply says it applied a
# transaction again.
# Usage: test_apply_optimistic.sh SLUICE
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
. "$HERE/harness.sh"
pg_test_init "$1"
fail() {
	echo "optimistic: FAILED: $*" >&2
	exit 1
}

"$SLUICE" keygen --out "$W/k" >/dev/null 2>&1
pg_start src
pg_start tgt
SRC=$(pg_conninfo src)
TGT=$(pg_conninfo tgt)
TABLE="CREATE TABLE t (id bigint PRIMARY KEY, v text NOT NULL, n int);"
pg_psql src postgres -c "$TABLE"
pg_psql tgt postgres -c "$TABLE"
"$SLUICE" prepare --target "$TGT" --node tgt 2>"$W/prep.log" || { cat "$W/prep.log"; fail "prepare"; }
"$SLUICE" capture --source "$SRC" --store "$W/store" --stream o --key "$W/k.key" --create \
	--exit-when-caught-up --no-progress 2>"$W/cap0.log"

# Transaction i (1..300) inserts ids i*100+1 .. i*100+40; every 7th also
# updates a row of the previous transaction and deletes another.
python3 - >"$W/load.sql" <<'PY'
for i in range(1, 301):
    print("BEGIN;")
    print("INSERT INTO t SELECT g, 'src' || g, %d FROM generate_series(%d, %d) g;" % (i, i * 100 + 1, i * 100 + 40))
    if i % 7 == 0 and i > 1:
        print("UPDATE t SET v = 'upd', n = -1 WHERE id = %d;" % ((i - 1) * 100 + 5))
        print("DELETE FROM t WHERE id = %d;" % ((i - 1) * 100 + 6))
    print("COMMIT;")
PY
pg_psql src postgres -q -f "$W/load.sql"
# Rows that exist on the target before apply (older, different values).
PRE="(101, 3701, 3702, 3740, 3810, 15020, 29933)"
pg_psql tgt postgres -c "INSERT INTO t SELECT g, 'local', 0 FROM unnest(ARRAY$(tr '()' '[]' <<<"$PRE")) g"
"$SLUICE" capture --source "$SRC" --store "$W/store" --stream o --key "$W/k.key" \
	--exit-when-caught-up --no-progress 2>"$W/cap1.log"

"$SLUICE" --log-format text apply --store "$W/store" --stream o --trust "$W/k.pub" \
	--target "$TGT" --exit-when-caught-up 2>"$W/apply.log" || { cat "$W/apply.log"; fail "apply"; }
cat "$W/apply.log"

python3 "$HERE/compare_dbs.py" compare "$SRC" "$TGT" --tables public.t || fail "target differs from the source"
last=$(grep 'conflicts:' "$W/apply.log" | tail -1)
rows=$((300 * 40))
# Every pre-existing row is one of the 40 inserts of its transaction: counted
# as an update (insert_exists, remote wins), the rest as inserts.
want_ins=$((rows - 7))
[[ "$last" == *"apply: 300 transactions (txseq 1..300), $want_ins inserts, $((7 + 42)) updates, 42 deletes"* ]] ||
	fail "counters: $last (want 300 transactions, $want_ins inserts, 49 updates, 42 deletes)"
[[ "$last" == *"insert_exists=7"* ]] || fail "conflict counters: $last (want insert_exists=7)"
n=$(grep -c "exists on the target; applying it again" "$W/apply.log" || true)
[ "$n" -ge 1 ] || fail "apply did not say that it applied a transaction again"
echo "optimistic: $n transaction(s) applied again with conflict handling"
keys=$(pg_psql tgt postgres -c "SELECT string_agg((key->>0), ',' ORDER BY (key->>0)::bigint) FROM sluice.conflicts WHERE kind = 'insert_exists' AND resolution = 'remote'")
[ "$keys" = "101,3701,3702,3740,3810,15020,29933" ] || fail "conflict log keys: $keys"
total=$(pg_psql tgt postgres -c "SELECT count(*) FROM sluice.conflicts")
[ "$total" = 7 ] || fail "conflict log: $total rows, want 7"
txseqs=$(pg_psql tgt postgres -c "SELECT string_agg(x::text, ',' ORDER BY x) FROM (SELECT DISTINCT txseq AS x FROM sluice.conflicts) d")
[ "$txseqs" = "1,37,38,150,299" ] || fail "conflict log txseqs: $txseqs"
progress=$(pg_psql tgt postgres -c "SELECT remote_lsn FROM pg_replication_origin_status s JOIN pg_replication_origin o ON o.roident = s.local_id WHERE o.roname = 'sluice_o@postgres'")
[ "$progress" = "0/12C" ] || fail "origin progress $progress, want 0/12C (txseq 300)"
node=$(pg_psql tgt postgres -c "SELECT node FROM sluice.origin_node WHERE roname = 'sluice_o@postgres'")
[ "$node" = o ] || fail "sluice.origin_node for sluice_o: '$node', want 'o'"
echo "test_apply_optimistic: passed"
