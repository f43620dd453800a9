#!/usr/bin/env bash
# End-to-end checks of the sluice command: keys, exit codes, verify on damaged
# streams, inspect output. Usage: test_cli.sh PATH/TO/sluice
set -uo pipefail
SLUICE=$1
T=$(mktemp -d)
trap 'chmod -R u+w "$T" 2>/dev/null; rm -rf "$T"' EXIT
pass=0
fail=0

check() { # check NAME EXPECTED_EXIT ACTUAL_EXIT
	if [ "$2" = "$3" ]; then
		pass=$((pass + 1))
	else
		echo "FAIL: $1: expected exit $2, got $3" >&2
		fail=$((fail + 1))
	fi
}
assert() { # assert NAME COMMAND...
	local name=$1
	shift
	if "$@"; then pass=$((pass + 1)); else
		echo "FAIL: $name" >&2
		fail=$((fail + 1))
	fi
}

# --help everywhere, exit 0; bad usage exit 2
for c in keygen rotate-key verify inspect bench-codec; do
	"$SLUICE" "$c" --help >"$T/help.txt"
	check "$c --help" 0 $?
	assert "$c --help mentions usage" grep -q "Usage: sluice $c" "$T/help.txt"
done
"$SLUICE" --help >/dev/null; check "sluice --help" 0 $?
"$SLUICE" frobnicate 2>/dev/null; check "unknown command" 2 $?
"$SLUICE" verify --store "$T/s" 2>/dev/null; check "verify without stream" 2 $?

# sluice status: usage, a configuration with errors; --max-rate syntax
"$SLUICE" status --help >"$T/help.txt"; check "status --help" 0 $?
assert "status --help names its exit statuses" grep -q "4 sluice run did not answer" "$T/help.txt"
"$SLUICE" status 2>/dev/null; check "status without --config" 2 $?
printf 'pipelines:\n  x:\n    apply: {store: nowhere}\n' >"$T/bad.yaml"
"$SLUICE" status --config "$T/bad.yaml" 2>"$T/err.txt"; check "status of a bad configuration" 2 $?
assert "status names the line of a problem" grep -q "bad.yaml:3:" "$T/err.txt"
for r in x 0 0,0 -5 5,-1 5, ,5; do
	"$SLUICE" capture --max-rate "$r" --source x --store "$T/s" --stream s --key k 2>/dev/null
	check "capture --max-rate $r" 2 $?
	"$SLUICE" apply --max-rate "$r" --target x --store "$T/s" --stream s --trust k 2>/dev/null
	check "apply --max-rate $r" 2 $?
done

# keygen: secret key 0600, public key, id printed, no silent overwrite
id=$("$SLUICE" keygen --out "$T/a" 2>/dev/null)
check "keygen" 0 $?
assert "key id is 16 hex digits" test "$(printf %s "$id" | grep -cE '^[0-9a-f]{16}$')" = 1
assert "secret key mode 0600" test "$(stat -c %a "$T/a.key")" = 600
assert "public key exists" grep -q "$id" "$T/a.pub"
assert "secret key not in public file" test "$(cut -d' ' -f3 "$T/a.key")" != "$(cut -d' ' -f3 "$T/a.pub")"
"$SLUICE" keygen --out "$T/a" 2>"$T/err.txt"; check "keygen refuses overwrite" 3 $?
assert "overwrite error names the file" grep -q "a.key" "$T/err.txt"
"$SLUICE" keygen --out "$T/b" >/dev/null 2>&1
chmod 644 "$T/a.key"
"$SLUICE" bench-codec --rows 10 --dir "$T/x" >/dev/null 2>&1 # unrelated: key path is its own
chmod 600 "$T/a.key"

# A stream of several sealed segments, written by bench-codec with its own key.
"$SLUICE" bench-codec --rows 60000 --txn-rows 50 --frame-size 65536 --segment-size 400000 \
	--dir "$T/w" >/dev/null 2>&1
check "bench-codec writes a stream" 0 $?
S="$T/w/store"
P="$T/w/bench.pub"
nseg=$(ls "$S/bench" | wc -l)
assert "several segments ($nseg)" test "$nseg" -ge 3
"$SLUICE" verify --store "$S" --stream bench --trust "$P" >"$T/v.txt"
check "verify whole stream" 0 $?
assert "verify summary says OK" grep -q ": OK" "$T/v.txt"

# Untrusted key: refused, and the line names the key
"$SLUICE" verify --store "$S" --stream bench --trust "$T/b.pub" >"$T/v.txt"
check "verify with untrusted key" 1 $?
assert "untrusted key named" grep -q "not trusted" "$T/v.txt"
"$SLUICE" verify --store "$S" --stream bench --trust "$T/b.pub" --trust "$P" >/dev/null
check "verify with two keys, one right" 0 $?

# inspect: listing, records as JSON lines with type and txseq
"$SLUICE" inspect --store "$S" --stream bench --trust "$P" --json >"$T/list.json"
check "inspect list" 0 $?
"$SLUICE" inspect --store "$S" --stream bench --trust "$P" --records --json --from 5 --limit 3 >"$T/rec.json"
check "inspect records" 0 $?
python3 - "$T/rec.json" "$T/list.json" <<'PY' || fail=$((fail + 1))
import json, sys
recs = [json.loads(l) for l in open(sys.argv[1])]
types = [r["type"] for r in recs]
assert types[0] in ("relation", "begin"), types[:3]
begins = [r for r in recs if r["type"] == "begin"]
assert [b["txseq"] for b in begins] == [5, 6, 7], begins
assert types.count("commit") == 3
ins = [r for r in recs if r["type"] == "insert"]
assert ins and ins[0]["relation"] == "public.accounts" and "id" in ins[0]["new"], ins[:1]
lst = [json.loads(l) for l in open(sys.argv[2])]
segs = [x for x in lst if x["type"] == "segment"]
assert len(segs) >= 3 and all(s["state"] == "sealed" for s in segs[:-1]), segs
frames = [x for x in lst if x["type"] == "frame"]
assert all(f["verified"] for f in frames)
PY
"$SLUICE" inspect --store "$S" --stream bench --records 2>/dev/null
check "inspect --records without --trust" 2 $?
# --full-values: values under 1 MiB print the same; it needs --records
"$SLUICE" inspect --store "$S" --stream bench --trust "$P" --records --json --full-values \
	--from 5 --limit 3 >"$T/rec_full.json"
check "inspect records --full-values" 0 $?
assert "--full-values changes nothing under 1 MiB" \
	cmp -s <(grep -v '"type":"stream"' "$T/rec.json") <(grep -v '"type":"stream"' "$T/rec_full.json")
"$SLUICE" inspect --store "$S" --stream bench --trust "$P" --full-values 2>/dev/null
check "inspect --full-values without --records" 2 $?

# Tamper: one flipped byte in a sealed segment is reported with segment and offset
first=$(ls "$S/bench" | head -1)
cp -a "$S" "$T/tampered"
chmod u+w "$T/tampered/bench/$first"
python3 - "$T/tampered/bench/$first" <<'PY'
import sys
p = sys.argv[1]
b = bytearray(open(p, "rb").read())
b[300] ^= 0x01  # inside the payload of frame 0
open(p, "wb").write(b)
PY
"$SLUICE" verify --store "$T/tampered" --stream bench --trust "$P" >"$T/v.txt"
check "verify tampered payload" 1 $?
assert "tamper names segment and offset 0" grep -q "error: $first: offset 0: " "$T/v.txt"

# Deleting a middle segment: a gap
cp -a "$S" "$T/gap"
chmod -R u+w "$T/gap"
rm "$T/gap/bench/$(ls "$S/bench" | sed -n 2p)"
"$SLUICE" verify --store "$T/gap" --stream bench --trust "$P" >"$T/v.txt"
check "verify with a deleted segment" 1 $?
assert "gap reported" grep -q "txseq gap" "$T/v.txt"

# inspect --trust marks a frame verified only if it links: not behind a gap, not another stream's
"$SLUICE" inspect --store "$T/gap" --stream bench --trust "$P" --json >"$T/list.json" 2>"$T/err.txt"
check "inspect --trust behind a gap" 1 $?
assert "inspect names the broken link" grep -q "txseq gap" "$T/err.txt"
python3 - "$T/list.json" "$(ls "$S/bench" | sed -n 3p)" <<'PY' || fail=$((fail + 1))
import json, sys
lst = [json.loads(l) for l in open(sys.argv[1])]
assert not [x for x in lst if x["type"] == "frame" and x["segment"] >= sys.argv[2]], lst[-3:]
PY
mkdir "$T/renamed"
cp -a "$S/bench" "$T/renamed/other"
"$SLUICE" inspect --store "$T/renamed" --stream other --trust "$P" >/dev/null 2>"$T/err.txt"
check "inspect --trust of another stream's frames" 1 $?
assert "inspect names the other stream" grep -q "another stream" "$T/err.txt"

# Torn tail on the newest segment: warning, exit 0; --strict: exit 1
cp -a "$S" "$T/torn"
chmod -R u+w "$T/torn"
last=$(ls "$T/torn/bench" | tail -1)
size=$(stat -c %s "$T/torn/bench/$last")
truncate -s $((size - 17)) "$T/torn/bench/$last"
"$SLUICE" verify --store "$T/torn" --stream bench --trust "$P" >"$T/v.txt"
check "verify torn tail" 0 $?
assert "torn tail reported" grep -q "torn tail" "$T/v.txt"
"$SLUICE" verify --store "$T/torn" --stream bench --trust "$P" --strict >/dev/null
check "verify torn tail --strict" 1 $?

# Freshness: the summary names the newest commit and heartbeat; --max-age fails a stream without one
"$SLUICE" verify --store "$S" --stream bench --trust "$P" --json >"$T/v.json"
check "verify --json" 0 $?
assert "verify JSON has freshness" grep -q '"newest_heartbeat_us":0,"heartbeat_age_s":null' "$T/v.json"
"$SLUICE" verify --store "$S" --stream bench --trust "$P" >"$T/v.txt"
assert "verify text has freshness" grep -q "newest commit 20.*newest heartbeat none" "$T/v.txt"
"$SLUICE" verify --store "$S" --stream bench --trust "$P" --max-age 1h >"$T/v.txt"
check "verify --max-age without a heartbeat" 1 $?
assert "max-age problem named" grep -q "no signed heartbeat" "$T/v.txt"
"$SLUICE" verify --store "$S" --stream bench --trust "$P" --max-age soon >/dev/null 2>&1
check "verify --max-age bad duration" 2 $?
"$SLUICE" inspect --store "$S" --stream bench --trust "$P" >"$T/i.txt"
assert "inspect has freshness" grep -q "^stream bench: newest commit" "$T/i.txt"

# Key rotation: the key in force hands the stream over; readers follow from the root
cp -r "$S" "$T/rot"
bid=$(cut -d' ' -f2 "$T/b.pub")
aid=$(cut -d' ' -f2 "$P")
out=$("$SLUICE" rotate-key --store "$T/rot" --stream bench --key "$T/w/bench.key" --next "$T/b.pub" \
	--reason "test" 2>"$T/err.txt")
check "rotate-key" 0 $?
assert "rotate-key prints the successor id" test "$out" = "$bid"
"$SLUICE" rotate-key --store "$T/rot" --stream bench --key "$T/w/bench.key" --next "$T/a.pub" \
	2>"$T/err.txt"
check "rotate-key by a key no longer in force" 3 $?
assert "rotate-key refusal names the key in force" grep -q "key in force at its end is $bid" "$T/err.txt"
"$SLUICE" verify --store "$T/rot" --stream bench --trust "$P" --strict >"$T/v.txt"
check "verify after rotation, root only" 0 $?
"$SLUICE" verify --store "$T/rot" --stream bench --trust "$P" --trust "$T/b.pub" --strict >/dev/null
check "verify after rotation, root and successor" 0 $?
"$SLUICE" verify --store "$T/rot" --stream bench --trust "$T/b.pub" >"$T/v.txt"
check "verify after rotation, successor only" 1 $?
assert "first frame's key named" grep -q "signed by key $aid, which is not trusted" "$T/v.txt"
"$SLUICE" inspect --store "$T/rot" --stream bench --trust "$P" >/dev/null
check "inspect after rotation" 0 $?
"$SLUICE" inspect --store "$T/rot" --stream bench --trust "$P" --records --json >"$T/r.json"
check "inspect --records after rotation" 0 $?
assert "handover record shown" grep -q "\"key_handover\".*\"next_key\":\"$bid\"" "$T/r.json"
"$SLUICE" rotate-key --store "$T/rot" --stream bench --key "$T/a.key" --next "$T/b.pub" \
	2>/dev/null
check "rotate-key by an unrelated key" 3 $?
"$SLUICE" rotate-key --store "$T/rot" --stream bench --key "$T/a.key" 2>/dev/null
check "rotate-key without --next" 2 $?

# Missing stream, unreadable key
"$SLUICE" verify --store "$S" --stream nosuch --trust "$P" >/dev/null
check "verify missing stream" 1 $?
"$SLUICE" verify --store "$S" --stream bench --trust "$T/nonexistent.pub" 2>"$T/err.txt"
check "verify with missing key file" 3 $?
assert "missing key file named" grep -q "nonexistent.pub" "$T/err.txt"

echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
