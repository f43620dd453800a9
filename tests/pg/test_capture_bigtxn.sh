#!/usr/bin/env bash
# Capture of one very large transaction (~300 MB of row data, 1.5 million rows,
# spilled to disk by the server: logical_decoding_work_mem = 64kB) with bounded
# memory: capture's resident set stays below RSS_BOUND_MB however large the
# transaction, because the writer cuts frames at frame_target (1 MiB of
# uncompressed records) inside transactions too (OPEN/CONT frames) and nothing
# else holds a transaction's records. The stream verifies, the transaction is
# one txseq spread over hundreds of OPEN/CONT frames, holds every row exactly
# once with its exact value, and transactions after it are captured as well.
# Under sanitizers (SLUICE_SANITIZED=1) the RSS bound is not checked, and the
# transaction is a third as large (500k rows, ~110 MB in over a hundred
# OPEN/CONT frames); the unsanitized run keeps the full size, whose sending
# outlasts wal_sender_timeout.
# Usage: test_capture_bigtxn.sh SLUICE
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
. "$HERE/harness.sh"
pg_test_init "$1"

ROWS=${BIGTXN_ROWS:-1500000} # x ~200 bytes of text = ~300 MB of row data
[ "${SLUICE_SANITIZED:-0}" = 1 ] && ROWS=${BIGTXN_ROWS:-500000}
# The bound: a pending frame (1 MiB of records) plus its compressed copy, the
# zstd context, libpq's input buffer (one pgoutput message = one row) and the
# binary itself are a few MB; 64 MB leaves a wide margin, yet is far below the
# ~300 MB a design that buffers the transaction would need.
RSS_BOUND_MB=${RSS_BOUND_MB:-64}

# A tiny logical_decoding_work_mem makes the server spill the transaction to
# disk and stream it to the client only at commit: the whole transaction then
# arrives as fast as the capture can read it. A short wal_sender_timeout (the
# transaction takes longer to send) checks that capture keeps answering the
# server's keepalives in the middle of a transaction instead of being dropped.
pg_start src "logical_decoding_work_mem = 64kB" "wal_sender_timeout = 10s"
"$SLUICE" keygen --out "$W/k" >/dev/null 2>&1
CAP=(capture --source "$(pg_conninfo src)" --store "$W/store" --stream big --key "$W/k.key"
	--create --exit-when-caught-up --no-progress)

pg_psql src postgres <<'SQL'
CREATE TABLE big (id bigint PRIMARY KEY, payload text NOT NULL);
CREATE TABLE small (id integer PRIMARY KEY, note text);
SQL
# Publication and slot first, so that the large transaction is decoded from the slot.
"$SLUICE" "${CAP[@]}" 2>"$W/capture0.log"

t0=$(date +%s)
pg_psql src postgres -c "INSERT INTO big SELECT i, repeat(md5(i::text), 6) || lpad(i::text, 8, '0')
	FROM generate_series(1, $ROWS) AS i"
pg_psql src postgres -c "INSERT INTO small VALUES (1, 'after the big one')"
t1=$(date +%s)
echo "bigtxn: inserted $ROWS rows in one transaction in $((t1 - t0)) s" \
	"($(pg_psql src postgres -c "SELECT pg_size_pretty(pg_relation_size('big'))") heap)"

# Capture in the background; sample its memory every 100 ms until it exits.
"$SLUICE" "${CAP[@]}" 2>"$W/capture1.log" &
pid=$!
max_rss=0
hwm=0
samples=0
while kill -0 "$pid" 2>/dev/null; do
	if status=$(cat "/proc/$pid/status" 2>/dev/null); then
		rss=$(awk '/^VmRSS:/ {print $2}' <<<"$status")
		h=$(awk '/^VmHWM:/ {print $2}' <<<"$status")
		# A zombie has no Vm lines: keep the last figures.
		if [ -n "$rss" ]; then
			[ "$rss" -gt "$max_rss" ] && max_rss=$rss
			samples=$((samples + 1))
		fi
		[ -n "$h" ] && [ "$h" -gt "$hwm" ] && hwm=$h
	fi
	sleep 0.1
done
rc=0
wait "$pid" || rc=$?
t2=$(date +%s)
if [ "$rc" -ne 0 ]; then
	cat "$W/capture1.log" >&2
	echo "bigtxn: capture exited with status $rc" >&2
	exit 1
fi
if ! grep -q ', 0 reconnects' "$W/capture1.log"; then
	cat "$W/capture1.log" >&2
	echo "bigtxn: capture lost or gave up the connection during the large transaction" >&2
	exit 1
fi
echo "bigtxn: captured in $((t2 - t1)) s; capture RSS: max sampled VmRSS $((max_rss / 1024)) MB" \
	"($max_rss kB over $samples samples), max VmHWM $((hwm / 1024)) MB ($hwm kB)," \
	"bound $RSS_BOUND_MB MB"
echo "bigtxn: server decoding: $(pg_psql src postgres -c "SELECT format('%s transaction(s) spilled, %s',
	spill_txns, pg_size_pretty(spill_bytes)) FROM pg_stat_replication_slots WHERE slot_name = 'sluice_big'")"
if [ "$samples" -lt 5 ]; then
	echo "bigtxn: capture ran too briefly to sample its memory ($samples samples)" >&2
	exit 1
fi
if [ "${SLUICE_SANITIZED:-0}" = 1 ]; then
	echo "bigtxn: sanitized build: RSS bound not checked"
else
	peak=$max_rss
	[ "$hwm" -gt "$peak" ] && peak=$hwm
	if [ "$peak" -ge $((RSS_BOUND_MB * 1024)) ]; then
		echo "bigtxn: FAIL: capture's resident memory reached $((peak / 1024)) MB ($peak kB)" \
			"while capturing one transaction of $ROWS rows; bound $RSS_BOUND_MB MB" >&2
		exit 1
	fi
fi

"$SLUICE" verify --store "$W/store" --stream big --trust "$W/k.pub"

# A later transaction goes into the same stream after the large one.
pg_psql src postgres -c "INSERT INTO small VALUES (2, 'later'); UPDATE small SET note = 'changed' WHERE id = 1"
"$SLUICE" "${CAP[@]}" 2>"$W/capture2.log"
"$SLUICE" verify --store "$W/store" --stream big --trust "$W/k.pub"

# Frame listing: the large transaction spans many frames, OPEN ... CONT,OPEN ... CONT.
"$SLUICE" inspect --store "$W/store" --stream big --trust "$W/k.pub" --json >"$W/frames.json"
python3 - "$W/frames.json" "$ROWS" <<'PY'
import json, sys
rows = int(sys.argv[2])
frames = [json.loads(l) for l in open(sys.argv[1])]
frames = [f for f in frames if f["type"] == "frame"]
fl = lambda f: set(x for x in f["flags"].split(",") if x)
span = [f for f in frames if f["txseq_start"] == 1 and ("open" in fl(f) or "cont" in fl(f))]
assert span, "no frame of txseq 1 has open/cont flags: %s" % frames[:3]
opening = [f for f in span if "open" in fl(f) and "cont" not in fl(f)]
middle = [f for f in span if {"open", "cont"} <= fl(f)]
closing = [f for f in span if "cont" in fl(f) and "open" not in fl(f)]
assert len(opening) == 1 and len(closing) == 1, (len(opening), len(closing))
assert all(f["txseq_end"] == 1 for f in opening + middle), "an OPEN frame ends outside txseq 1"
assert closing[0]["txseq_end"] >= 2, closing[0]
# >= 200 bytes of records per row, at most ~1 MiB per frame
assert len(span) >= rows * 200 // (1 << 20), "txseq 1 spans only %d frames" % len(span)
seqs = [f["frame_seq"] for f in span]
assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), "the frames of txseq 1 are not consecutive"
# frames are cut at 1 MiB of records, checked after every record (rows are ~230 bytes)
biggest = max(f["raw_bytes"] for f in frames)
assert biggest <= (1 << 20) + 64 * 1024, "a frame of %d raw bytes" % biggest
raw = sum(f["raw_bytes"] for f in span)
print("bigtxn: txseq 1 spans %d frames (%d open, %d cont+open, %d cont), %.1f MB raw, "
      "largest frame %d raw bytes" % (len(span), len(opening), len(middle), len(closing),
                                      raw / 1e6, biggest))
PY

# Records, streamed (never all in memory): every row of the large transaction
# exactly once with its exact value, its Commit counts them, and the small
# transactions after it are there too; then compared with the database.
cat >"$W/check.py" <<'PY'
import hashlib, json, sys
rows = int(sys.argv[1])
seen = bytearray(rows + 1)
dups = bad = other = 0
txs = {}      # txseq -> [begin seen, changes, commit change_count]
small = {}    # id -> note, replayed
for line in sys.stdin:
    r = json.loads(line)
    t, tx = r["type"], r.get("txseq")
    if t == "begin":
        assert tx not in txs, "txseq %d begins twice" % tx
        txs[tx] = [True, 0, None]
    elif t == "commit":
        txs[tx][2] = r.get("changes")
    elif t in ("insert", "update", "delete", "truncate"):
        txs[tx][1] += 1
        rel = r.get("relation")
        if rel == "public.big" and t == "insert" and tx == 1:
            i = int(r["new"]["id"])
            if not 1 <= i <= rows:
                bad += 1
                continue
            if seen[i]:
                dups += 1
            seen[i] = 1
            want = hashlib.md5(str(i).encode()).hexdigest() * 6 + "%08d" % i
            if r["new"]["payload"] != want:
                bad += 1
        elif rel == "public.small" and t in ("insert", "update"):
            small[r["new"]["id"]] = r["new"]["note"]
        else:
            other += 1
missing = rows - sum(seen[1:])
print("bigtxn: stream: %d transactions; txseq 1: %d changes (%d rows missing, %d duplicated, "
      "%d wrong values); %d unexpected changes" % (len(txs), txs.get(1, [0, 0])[1], missing, dups,
                                                     bad, other))
assert sorted(txs) == [1, 2, 3], "txseqs %s, want 1..3" % sorted(txs)[:10]
assert txs[1][1] == rows and txs[1][2] == rows, "txseq 1: %s changes, commit says %s" % tuple(txs[1][1:])
assert missing == 0 and dups == 0 and bad == 0 and other == 0
assert txs[2][1] == 1 and txs[3][1] == 2, txs
print(json.dumps(sorted(small.items())))
PY
"$SLUICE" inspect --store "$W/store" --stream big --trust "$W/k.pub" --records --json |
	python3 "$W/check.py" "$ROWS" >"$W/check.out"
head -n -1 "$W/check.out"
stream_small=$(tail -n 1 "$W/check.out")
db_small=$(pg_psql src postgres -c "SELECT coalesce(json_agg(json_build_array(id::text, note) ORDER BY id), '[]') FROM small")
db_big=$(pg_psql src postgres -c "SELECT count(*) FROM big")
python3 - "$stream_small" "$db_small" "$db_big" "$ROWS" <<'PY'
import json, sys
s, d = json.loads(sys.argv[1]), json.loads(sys.argv[2])
assert s == d, "table small: stream %s, database %s" % (s, d)
assert int(sys.argv[3]) == int(sys.argv[4]), "database holds %s rows of big" % sys.argv[3]
print("bigtxn: table small equal (%d rows); big: %s rows in the database and the stream" % (len(d), sys.argv[3]))
PY
echo "test_capture_bigtxn: passed"
