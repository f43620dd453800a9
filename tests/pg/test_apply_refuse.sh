#!/usr/bin/env bash
# Apply refuses damaged, cut and untrusted streams without partial apply.
# A captured stream of three segments (two sealed: capture runs with
# --segment-size 4 MiB, and transactions of 1.1 MiB of random bytes, each
# larger than a frame, fill them) with many small transactions in frames of
# their own in each segment. Every transaction increments cnt.n, so on a target
# cnt.n = origin progress - 1. Each case runs against a fresh database and is
# compared with a reference server that applied the intact stream up to the
# expected txseq (--until-txseq), table by table:
#   - one byte flipped in the payload of a small frame in the middle segment,
#     and in the newest (unsealed) segment with frames after it: exit 1, the
#     log names the segment, the frame offset and the cause; exactly the
#     transactions before the damaged frame are applied; a follower (no
#     --exit-when-caught-up) exits 1 too instead of waiting;
#   - one byte flipped in a frame's signature: the same;
#   - a stream checked against another key (--trust other.pub): exit 1,
#     nothing applied, no progress;
#   - the newest segment cut inside its last frame (torn tail): exit 0,
#     everything before the torn frame applied; a follower waits at the torn
#     frame and applies the rest once the frame is completed;
#   - the middle segment deleted: exit 1 with a txseq gap message, nothing
#     after the first segment applied;
#   - the first segment deleted (retention) and a fresh target: exit 1,
#     nothing applied (not the later segments with txseq 1.. skipped);
#   - the middle segment cut inside a frame: exit 1 (not sealed, yet a later
#     segment exists), exactly the transactions before that frame applied;
#   - --dry-run on a fresh target: exit 0, nothing committed (tables empty, no
#     origin), and the counts printed equal the transactions of the stream and
#     the rows inserted, updated and deleted on the source (pg_stat_user_tables).
# Usage: test_apply_refuse.sh SLUICE
set -uo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
. "$HERE/harness.sh"
pg_test_init "$1"
export PATH=$PGBIN:$PATH
STREAM=rf

pg_step_checks refuse

pg_start src || die "could not start the source"
pg_start dst || die "could not start the target"
pg_start ref || die "could not start the reference target"
"$SLUICE" keygen --out "$W/k" >/dev/null 2>&1 || die "keygen"
"$SLUICE" keygen --out "$W/other" >/dev/null 2>&1 || die "keygen other"
SRC=$(pg_conninfo src)
CMP=(python3 "$HERE/compare_dbs.py")

SCHEMA=$(
	cat <<'SQL'
CREATE TABLE cnt (id int PRIMARY KEY, n bigint NOT NULL);
-- seq = txseq - 1 of the transaction that inserted the row
CREATE TABLE r (id int PRIMARY KEY, seq bigint NOT NULL, v text, n int NOT NULL DEFAULT 0);
CREATE TABLE blob (id int PRIMARY KEY, b bytea);
ALTER TABLE blob ALTER COLUMN b SET STORAGE EXTERNAL;
CREATE TABLE tr (id int PRIMARY KEY, v text);
SQL
)
pg_psql src postgres -c "CREATE EXTENSION pgcrypto" -c "$SCHEMA" || die "source schema"
pg_psql ref postgres -c "$SCHEMA" || die "reference schema"

# Segments of 4 MiB instead of the default 64 MiB: the same seals by size, with
# a twelfth of the bytes to capture, copy, apply and compare in every case.
CAP=("$SLUICE" capture --source "$SRC" --store "$W/store" --stream "$STREAM" --key "$W/k.key" --no-progress
	--segment-size 4194304)
CAPS=0
capture() {
	CAPS=$((CAPS + 1))
	"${CAP[@]}" --exit-when-caught-up "$@" 2>"$W/cap$CAPS.log" || {
		cat "$W/cap$CAPS.log" >&2
		die "capture run $CAPS"
	}
}
capture --create
pg_psql src postgres -c "BEGIN" -c "INSERT INTO cnt VALUES (1, 0)" -c "INSERT INTO tr SELECT g, 'tr' || g FROM generate_series(1, 20) g" -c "COMMIT" ||
	die "seed"

# small_group G: five small transactions (insert, update, delete), then a capture
# run, so they end up in a frame (or two) of their own.
ID=0
small_group() {
	local sql="" i
	for i in 1 2 3 4 5; do
		ID=$((ID + 1))
		sql+="BEGIN; UPDATE cnt SET n = n + 1 RETURNING n AS seq \\gset
INSERT INTO r (id, seq, v) VALUES ($ID, :seq, 'row $ID');
UPDATE r SET n = n + 1, v = v || '+' WHERE id = $((ID - 2));
DELETE FROM r WHERE id = $((ID - 7));
COMMIT;
"
	done
	pg_psql src postgres >/dev/null <<<"$sql" || die "small transactions"
	capture
}
# blobs N: N transactions of one row of 1.1 MiB of random bytes each (over the
# 1 MiB frame target: each is cut into frames of its own, never small).
BLOB=0
blobs() {
	local i
	for i in $(seq 1 "$1"); do
		BLOB=$((BLOB + 1))
		pg_psql src postgres -c "BEGIN" -c "UPDATE cnt SET n = n + 1" \
			-c "INSERT INTO blob SELECT $BLOB, string_agg(gen_random_bytes(1024), '') FROM generate_series(1, 1100)" \
			-c "COMMIT" || die "blob transaction"
	done
	capture
}
for round in 1 2 3; do
	for g in 1 2 3 4 5 6; do small_group; done
	if [ "$round" -eq 3 ]; then
		pg_psql src postgres -c "BEGIN" -c "UPDATE cnt SET n = n + 1" -c "TRUNCATE tr" -c "INSERT INTO tr VALUES (1, 'after truncate')" -c "COMMIT" ||
			die "truncate"
		capture
		for g in 1 2 3; do small_group; done
	else
		blobs 5
	fi
done
LAST=$(("$(pg_psql src postgres -c 'SELECT n FROM cnt')" + 1))
say "stream captured: $CAPS capture runs, txseq 1..$LAST"

"$SLUICE" inspect --store "$W/store" --stream "$STREAM" --trust "$W/k.pub" --json >"$W/frames.json" || die "inspect"
# Frame layout: per segment, the small frames (whole transactions, no blob).
LAYOUT=$(python3 - "$W/frames.json" "$LAST" <<'PY'
import json, sys
frames = [json.loads(l) for l in open(sys.argv[1])]
frames = [f for f in frames if f.get("type") == "frame"]
segs = sorted({f["segment"] for f in frames})
assert len(segs) == 3, "want 3 segments, got %s" % segs
def flags(f):
    return set(x for x in f["flags"].split(",") if x)
small = {s: [f for f in frames if f["segment"] == s and f["records"] > 0 and f["raw_bytes"] < 200000
             and not flags(f) & {"open", "cont", "seal"}] for s in segs}
for s in segs:
    assert len(small[s]) >= 3, "segment %s: only %d small frames" % (s, len(small[s]))
def mid(s):
    fs = small[s]
    return fs[len(fs) // 2]
payload = mid(segs[1])                # middle segment, payload byte
newest = small[segs[2]][len(small[segs[2]]) // 3]  # newest segment, frames follow
sig = mid(segs[0])                    # first segment, signature byte
last = max((f for f in frames if f["segment"] == segs[2]), key=lambda f: f["offset"])
# (the last frame may continue a transaction that an earlier frame began: either
# way the transactions complete before it are 1..txseq_start-1)
assert "open" not in flags(last), last
assert last["txseq_end"] == int(sys.argv[2]) + 1, (last, sys.argv[2])
# name offset payload_bytes txseq_start per case; segment names
for name, f in (("payload", payload), ("newest", newest), ("sig", sig), ("torn", last)):
    print(name, f["segment"], f["offset"], f["payload_bytes"], f["txseq_start"])
print("segs", *segs)
print("frames", len(frames), *(len(small[s]) for s in segs))
PY
) || die "unexpected frame layout"
while read -r what a b c d; do
	case $what in
	payload) P_SEG=$a P_OFF=$b P_LEN=$c P_TX=$d ;;
	newest) N_SEG=$a N_OFF=$b N_LEN=$c N_TX=$d ;;
	sig) S_SEG=$a S_OFF=$b S_TX=$d ;;
	torn) L_SEG=$a L_OFF=$b L_LEN=$c L_TX=$d ;;
	segs) SEG1=$a SEG2=$b SEG3=$c ;;
	frames) say "$a frames; small frames per segment: $b $c $d" ;;
	esac
done <<<"$LAYOUT"
GAP_TX=$((16#${SEG2%.seg}))
say "segments $SEG1 $SEG2 $SEG3; payload case: $P_SEG at $P_OFF (txseq $P_TX); newest case: $N_SEG at $N_OFF (txseq $N_TX); signature case: $S_SEG at $S_OFF (txseq $S_TX); torn case: $L_SEG at $L_OFF (txseq $L_TX)"

# ---- helpers ----------------------------------------------------------------------
# copy_store NAME: a writable copy of the intact store in $W/NAME (the copy of
# the previous case is removed: each holds the whole stream).
COPY=""
copy_store() {
	[ -n "$COPY" ] && rm -rf "${W:?}/$COPY"
	COPY=$1
	cp -a "$W/store" "$W/$1" || die "copy of the store"
	chmod -R u+w "$W/$1"
}
# flip STORE SEGMENT OFFSET: xor one byte of a segment with 0x01.
flip() {
	python3 - "$1/$STREAM/$2" "$3" <<'PY'
import sys
path, off = sys.argv[1], int(sys.argv[2])
with open(path, "r+b") as f:
    f.seek(off)
    b = f.read(1)
    f.seek(off)
    f.write(bytes([b[0] ^ 1]))
PY
}
# fresh DB: an empty database with the schema on dst; the replication origin
# is dropped too (origins belong to the whole server, not to one database).
fresh() {
	pg_psql dst postgres -c "SET client_min_messages = warning" -c "DROP DATABASE IF EXISTS $1" -c "CREATE DATABASE $1" \
		-c "SELECT pg_replication_origin_drop(roname) FROM pg_replication_origin WHERE roname = 'sluice_$STREAM@$1'" \
		>/dev/null || die "fresh database $1"
	pg_psql dst "$1" -c "$SCHEMA" || die "schema of $1"
}
progress() { # progress SERVER DB
	pg_psql "$1" "$2" -c "SELECT coalesce((SELECT pg_replication_origin_progress(roname, true) FROM pg_replication_origin WHERE roname = 'sluice_$STREAM@$2'), '0/0')" |
		python3 -c 'import sys; h, l = sys.stdin.read().strip().split("/"); print((int(h, 16) << 32) | int(l, 16))'
}
# apply_into STORE DB LOG [ARGS...]: apply the stream of STORE into DB on dst.
apply_into() {
	local store=$1 db=$2 log=$3
	shift 3
	"$SLUICE" apply --store "$store" --stream "$STREAM" --trust "$W/k.pub" --target "$(pg_conninfo dst "$db")" \
		"$@" 2>"$W/$log.log"
}
# reference UNTIL: the reference server applied the intact stream up to txseq UNTIL.
reference() {
	"$SLUICE" apply --store "$W/store" --stream "$STREAM" --trust "$W/k.pub" --target "$(pg_conninfo ref)" \
		--until-txseq "$1" 2>>"$W/ref.log" || die "reference apply up to txseq $1"
	[ "$(progress ref postgres)" = "$1" ] || die "reference progress is not $1"
}
# applied_exactly DB UNTIL WHAT: DB holds exactly txseq 1..UNTIL of the stream.
applied_exactly() {
	local db=$1 until=$2 what=$3 got
	got=$(progress dst "$db")
	[ "$got" = "$until" ]
	check "$what: origin progress = $until (got $got)"
	got=$(pg_psql dst "$db" -c 'SELECT n FROM cnt')
	[ "$got" = $((until - 1)) ]
	check "$what: cnt.n = $((until - 1)) (got $got; no transaction from txseq $((until + 1)) on)"
	reference "$until"
	"${CMP[@]}" compare "$(pg_conninfo ref)" "$(pg_conninfo dst "$db")" --quiet
	check "$what: every table equals the intact stream applied up to txseq $until"
}
# refused RC LOG PATTERN WHAT: exit status RC is 1 and an error line of LOG matches PATTERN.
refused() {
	local rc=$1 log=$2 pattern=$3 what=$4
	[ "$rc" -eq 1 ]
	check "$what: apply exits 1 (status $rc)"
	grep -E '"level":"error"' "$W/$log.log" | grep -qE -- "$pattern"
	check "$what: the log names it: $pattern"
	if [ "$rc" -ne 1 ] || ! grep -qE -- "$pattern" "$W/$log.log"; then
		tail -n 5 "$W/$log.log" >&2
	fi
}
# refused_case NAME PATTERN WHAT UNTIL: the damaged copy $W/NAME, applied into
# a fresh database, is refused naming PATTERN with exactly txseq 1..UNTIL applied.
refused_case() {
	fresh "t_$1"
	apply_into "$W/$1" "t_$1" "$1" --exit-when-caught-up
	refused $? "$1" "$2" "$3"
	applied_exactly "t_$1" "$4" "$3"
}

# ---- cases, by increasing expected progress (the reference only moves forward) -----
# A byte of a signature in the first segment.
copy_store sig
flip "$W/sig" "$S_SEG" $((S_OFF + 150))
refused_case sig "segment $S_SEG.*offset $S_OFF.*signature|offset $S_OFF.*segment $S_SEG.*signature" "flipped signature byte" $((S_TX - 1))
say "signature case done"

# Another key.
fresh t_key
"$SLUICE" apply --store "$W/store" --stream "$STREAM" --trust "$W/other.pub" --target "$(pg_conninfo dst t_key)" \
	--exit-when-caught-up 2>"$W/key.log"
refused $? key "segment $SEG1.*signed by key [0-9a-f]*, which is not trusted" "stream signed by another key"
[ "$(progress dst t_key)" = 0 ] &&
	[ "$(pg_psql dst t_key -c 'SELECT (SELECT count(*) FROM cnt) + (SELECT count(*) FROM r) + (SELECT count(*) FROM blob) + (SELECT count(*) FROM tr)')" = 0 ]
check "stream signed by another key: nothing applied, no progress"

# The first segment deleted (say, by a retention job): a fresh target needs
# txseq 1, the stream now starts at txseq $GAP_TX. Nothing may be applied.
copy_store nofirst
rm -f "$W/nofirst/$STREAM/$SEG1"
fresh t_nofirst
apply_into "$W/nofirst" t_nofirst nofirst --exit-when-caught-up
refused $? nofirst "txseq|genesis|missing" "first segment deleted"
[ "$(progress dst t_nofirst)" = 0 ] &&
	[ "$(pg_psql dst t_nofirst -c 'SELECT (SELECT count(*) FROM cnt) + (SELECT count(*) FROM r) + (SELECT count(*) FROM blob) + (SELECT count(*) FROM tr)')" = 0 ]
check "first segment deleted: nothing applied, no progress (not txseq $GAP_TX.. with 1..$((GAP_TX - 1)) skipped)"
say "first-segment case done"

# The middle segment deleted.
copy_store gap
rm -f "$W/gap/$STREAM/$SEG2"
refused_case gap "txseq gap.*$SEG1.*$SEG3" "middle segment deleted" $((GAP_TX - 1))
say "gap case done"

# A payload byte of a small frame in the middle segment.
copy_store payload
flip "$W/payload" "$P_SEG" $((P_OFF + 208 + P_LEN / 2))
refused_case payload "offset $P_OFF of segment $P_SEG: .*(hash|payload)" "flipped payload byte (middle segment)" $((P_TX - 1))
# A follower stops at the damage too, and applies nothing more.
timeout 60 "$SLUICE" apply --store "$W/payload" --stream "$STREAM" --trust "$W/k.pub" \
	--target "$(pg_conninfo dst t_payload)" 2>"$W/payload-follow.log"
refused $? payload-follow "offset $P_OFF of segment $P_SEG" "flipped payload byte, following"
[ "$(progress dst t_payload)" = $((P_TX - 1)) ]
check "flipped payload byte, following: progress still $((P_TX - 1))"
say "payload case done"

# The middle segment cut inside the same frame: a torn frame in a segment
# that is not the newest is damage, not a tail to wait for.
copy_store cut
truncate -s $((P_OFF + 208 + P_LEN / 2)) "$W/cut/$STREAM/$P_SEG"
refused_case cut "segment $P_SEG is not sealed.*offset $P_OFF" "middle segment cut inside a frame" $((P_TX - 1))
say "cut case done"

# A payload byte of a small frame in the newest segment, with frames after it:
# damage, not a torn tail.
copy_store newest
flip "$W/newest" "$N_SEG" $((N_OFF + 208 + N_LEN / 2))
refused_case newest "offset $N_OFF of segment $N_SEG: .*(hash|payload)" "flipped payload byte (newest segment)" $((N_TX - 1))
say "newest-segment case done"

# Torn tail: the newest segment ends inside its last frame.
copy_store torn
CUT=$((L_OFF + 208 + L_LEN / 2))
truncate -s "$CUT" "$W/torn/$STREAM/$L_SEG"
fresh t_torn
apply_into "$W/torn" t_torn torn --exit-when-caught-up
rc=$?
[ "$rc" -eq 0 ]
check "torn tail: apply exits 0 (status $rc)"
! grep -q '"level":"error"' "$W/torn.log"
check "torn tail: no error logged"
applied_exactly t_torn $((L_TX - 1)) "torn tail"
# A follower waits at the torn frame, and goes on once the writer completes it.
"$SLUICE" apply --store "$W/torn" --stream "$STREAM" --trust "$W/k.pub" --target "$(pg_conninfo dst t_torn)" \
	2>"$W/torn-follow.log" &
FOLLOW=$!
sleep 2
kill -0 "$FOLLOW" 2>/dev/null
check "torn tail, following: apply waits at the torn frame"
tail -c +$((CUT + 1)) "$W/store/$STREAM/$L_SEG" >>"$W/torn/$STREAM/$L_SEG"
cmp -s "$W/store/$STREAM/$L_SEG" "$W/torn/$STREAM/$L_SEG" || die "could not complete the torn segment"
for _ in $(seq 1 300); do
	[ "$(progress dst t_torn)" = "$LAST" ] && break
	sleep 0.1
done
kill -TERM "$FOLLOW"
wait "$FOLLOW"
check "torn tail, following: stops on SIGTERM with status 0 (status $?)"
[ "$(progress dst t_torn)" = "$LAST" ]
check "torn tail, following: the completed frame is applied (progress $LAST)"
"${CMP[@]}" compare "$SRC" "$(pg_conninfo dst t_torn)" --quiet
check "torn tail, following: every table equals the source"
say "torn case done"

# Dry run of the intact stream on a fresh target.
fresh t_dry
apply_into "$W/store" t_dry dry --dry-run >"$W/dry.out"
rc=$?
[ "$rc" -eq 0 ]
check "dry run exits 0 (status $rc)"
[ "$(pg_psql dst t_dry -c 'SELECT (SELECT count(*) FROM cnt) + (SELECT count(*) FROM r) + (SELECT count(*) FROM blob) + (SELECT count(*) FROM tr)')" = 0 ]
check "dry run: the target tables are still empty"
[ "$(pg_psql dst t_dry -c "SELECT count(*) FROM pg_replication_origin_status s JOIN pg_replication_origin o ON o.roident = s.local_id WHERE o.roname = 'sluice_$STREAM@t_dry' AND s.remote_lsn <> '0/0'")" = 0 ] &&
	[ "$(progress dst t_dry)" = 0 ]
check "dry run: no origin progress"
# What the stream holds, by the source's own statistics (every table is
# published; no transaction was rolled back; the only truncate is not a delete).
STATS=$(pg_psql src postgres -c "SELECT sum(n_tup_ins), sum(n_tup_upd), sum(n_tup_del) FROM pg_stat_user_tables")
IFS='|' read -r INS UPD DEL <<<"$STATS"
WANT="dry run: $LAST transactions, $INS inserts, $UPD updates, $DEL deletes, 1 truncates, 0 skipped"
grep -qxF "$WANT" "$W/dry.out"
check "dry run prints the stream's counts: $WANT"
grep -q "^dry run" "$W/dry.out" || cat "$W/dry.out" >&2

say "done"
if [ "$FAILS" -ne 0 ]; then
	echo "test_apply_refuse: $FAILS checks FAILED" >&2
	exit 1
fi
echo "test_apply_refuse: passed ($((SECONDS - T0)) s)"
