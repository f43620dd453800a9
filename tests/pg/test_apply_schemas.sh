#!/usr/bin/env bash
# Real schemas, copied exactly (issue 9): snapshot plus changes, table by table.
# Each class of schema gets its own database on the source (src), on a
# replace target (dst) and on a timestamp target (tsd, `sluice prepare`d), and
# its own stream, so one class failing does not hide another:
#   inherit   inheritance: a parent with two children and a grandchild, a child
#             of two parents, twin rows in parent and children, UPDATE/DELETE
#             ONLY parent, keyless (FULL) inheritance, TRUNCATE ONLY parent
#   parts     declarative partitions (range, list, hash, default partitions, a
#             sub-partitioned partition, a leaf with another column order and
#             a dropped column), rows moved by updates of the partition key;
#             sluice's own publication (FOR ALL TABLES: leaf partitions)
#   partroot  the same through a publication WITH (publish_via_partition_root)
#   ident     GENERATED ALWAYS / BY DEFAULT identity columns (keys and not),
#             stored generated columns, a table whose columns were all dropped,
#             dropped columns in the middle (dropped differently on the target)
#   composite composite, nested composite and domain columns (domain over int
#             with a CHECK, over a composite, over an array), arrays of
#             composites and domains, enums, custom ranges and multiranges,
#             composite/domain/enum/range keys, a FULL-identity table of them
#   types     every built-in base type (tests/pg/schemas_types.txt) with odd
#             values, arrays (NULL elements, several dimensions, lower bounds),
#             out-of-line TOAST left unchanged by updates; keyed (t_all) and
#             REPLICA IDENTITY FULL (t_full, the types with a proper "="),
#             and keys of many types
#   keyless   REPLICA IDENTITY FULL tables (duplicate rows, NULLs), REPLICA
#             IDENTITY USING INDEX, a keyed table with FULL identity, and
#             full_twins: rows "=" to each other but not identical (1.0/1.00,
#             '1 day'/'24 hours', 0/-0): a change must hit the same row
#   noeq      a REPLICA IDENTITY FULL table of every built-in type without a
#             proper "=" (json, jsonpath, xml, point, line, lseg, box, path,
#             polygon, circle, txid_snapshot, pg_snapshot, refcursor, arrays
#             and a composite of them), with rows that the types' "=" (area,
#             point count) cannot tell apart; also compared by pg_dump
# Flow per class: same DDL on every server (the target variant may differ in
# dropped columns), fill the source, `capture --create --snapshot
# --exit-when-caught-up`, run the changes, capture again, apply the stream with
# --exit-when-caught-up (replace into dst, timestamp into tsd), then compare
# every table (partitions and inheritance children included) with ONLY
# semantics: the multiset of whole-row texts (md5 of `r::text` FROM ONLY, under
# fixed output settings, so a parent's copy of a child row, or a changed twin,
# shows), plus count(*) FROM ONLY and with descendants for every table and
# partitioned root. (compare_dbs.py reads a parent with its children, hence
# the own comparison.) The noeq table is also compared as sorted
# `pg_dump --data-only` rows. When an apply fails, a per-table pass (apply
# --include TABLE and its partitions into a scratch database, own origin)
# tells which tables apply cannot write, and compares those it can.
# Every class runs to the end; the failures are listed at the end (exit 1).
# Usage: test_apply_schemas.sh SLUICE [CLASS ...]
set -uo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
. "$HERE/harness.sh"
pg_test_init "$1"
shift
T0=$SECONDS
ALL_CLASSES="inherit parts partroot ident composite types keyless noeq"
CLASSES=${*:-$ALL_CLASSES}
export PATH=$PGBIN:$PATH
# fixed output settings for every comparison (text forms of dates, floats, bytea)
export PGOPTIONS="-c TimeZone=UTC -c DateStyle=ISO,YMD -c IntervalStyle=postgres -c bytea_output=hex -c extra_float_digits=1"

# Classes run in parallel (each in its own databases and stream): their
# output goes to $W/out.CLASS, shown in order when all are done; failures and
# passed checks are counted in $W/failures and $W/passes.
ok() {
	echo "ok: $*"
	echo "$*" >>"$W/passes"
}
bad() {
	echo "FAIL: $*"
	echo "$*" >>"$W/failures"
}
say() { echo "schemas: $((SECONDS - T0)) s: $*"; }
die() {
	echo "schemas: FAILED: $*" >&2
	exit 1
}
# error_of LOG: the last error sluice logged (its message), else the last line
error_of() {
	local e
	e=$(grep '"level":"error"' "$1" 2>/dev/null | tail -n 1 | jq -r '.msg + (if .error then ": " + (.error | tostring) else "" end)' 2>/dev/null)
	[ -n "$e" ] || e=$(grep -v '^\s*$' "$1" 2>/dev/null | tail -n 1)
	echo "$e" | tr '\n' ' ' | cut -c 1-400
}
show_log() { # show_log LOG
	echo "--- last lines of $(basename "$1"):"
	tail -n 6 "$1" | cut -c 1-600 | sed 's/^/    /'
}

# Three servers, started in parallel. The per-table pass needs one replication
# origin per table: room for them on the targets.
for s in src dst tsd; do
	pg_start "$s" "max_replication_slots = 200" >"$W/start.$s.log" 2>&1 &
done
wait
for s in src dst tsd; do
	[ -f "$PG_HARNESS_DIR/$s/port" ] || {
		cat "$W/start.$s.log" >&2
		die "could not start server $s"
	}
	PG_HARNESS_SERVERS+=("$s")
done
"$SLUICE" keygen --out "$W/k" >/dev/null 2>&1 || die "keygen"
say "servers started"

# ---------------------------------------------------------------------------
# Schemas. sql_CLASS_ddl runs on every server (psql variable is_target),
# sql_CLASS_fill on the source before the snapshot, sql_CLASS_change after it.

sql_inherit_ddl() {
	cat <<'SQL'
CREATE TABLE parent (id int PRIMARY KEY, v text, n numeric);
CREATE TABLE child1 (extra text) INHERITS (parent);
ALTER TABLE child1 ADD PRIMARY KEY (id);
CREATE TABLE child2 (PRIMARY KEY (id)) INHERITS (parent);
CREATE TABLE grandchild (g int) INHERITS (child1);
ALTER TABLE grandchild ADD PRIMARY KEY (id);
CREATE TABLE other (o text);
CREATE TABLE twoparents (PRIMARY KEY (id)) INHERITS (parent, other);
-- keyless hierarchy: the ctid path
CREATE TABLE kparent (a int, b text);
CREATE TABLE kchild (c int) INHERITS (kparent);
CREATE TABLE kchild2 () INHERITS (kparent);
ALTER TABLE kparent REPLICA IDENTITY FULL;
ALTER TABLE kchild REPLICA IDENTITY FULL;
ALTER TABLE kchild2 REPLICA IDENTITY FULL;
ALTER TABLE other REPLICA IDENTITY FULL;
-- TRUNCATE ONLY
CREATE TABLE tparent (id int PRIMARY KEY, v text);
CREATE TABLE tchild (PRIMARY KEY (id)) INHERITS (tparent);
SQL
}
sql_inherit_fill() {
	cat <<'SQL'
-- every row of the parent has an identical twin in each child
INSERT INTO parent SELECT g, 'row ' || g, g FROM generate_series(1, 20) g;
INSERT INTO child1 SELECT g, 'row ' || g, g, 'x' FROM generate_series(1, 20) g;
INSERT INTO child2 SELECT g, 'row ' || g, g FROM generate_series(1, 20) g;
INSERT INTO grandchild SELECT g, 'row ' || g, g, 'x', g FROM generate_series(1, 20) g;
INSERT INTO twoparents SELECT g, 'row ' || g, g, 'o' FROM generate_series(1, 20) g;
INSERT INTO other VALUES ('o');
INSERT INTO kparent SELECT g, 'k' || g FROM generate_series(1, 10) g;
INSERT INTO kchild SELECT g, 'k' || g, g FROM generate_series(1, 10) g;
INSERT INTO kchild2 SELECT g, 'k' || g FROM generate_series(1, 10) g;
INSERT INTO tparent SELECT g, 't' || g FROM generate_series(1, 5) g;
INSERT INTO tchild SELECT g, 't' || g FROM generate_series(1, 5) g;
SQL
}
sql_inherit_change() {
	cat <<'SQL'
UPDATE ONLY parent SET v = 'parent only' WHERE id = 3;
DELETE FROM ONLY parent WHERE id = 4;
UPDATE ONLY parent SET id = 100 WHERE id = 5;
UPDATE parent SET n = n + 1 WHERE id = 6;
DELETE FROM parent WHERE id = 7;
UPDATE ONLY child1 SET v = 'child1 only' WHERE id = 8;
DELETE FROM ONLY child1 WHERE id = 9;
UPDATE ONLY child2 SET v = 'child2 only' WHERE id = 10;
UPDATE ONLY twoparents SET v = 'two', o = 'p' WHERE id = 11;
INSERT INTO parent VALUES (50, 'new', 1);
INSERT INTO child1 VALUES (50, 'new', 1, 'x');
INSERT INTO grandchild VALUES (50, 'new', 1, 'x', 1);
UPDATE ONLY kparent SET b = 'kparent only' WHERE a = 3;
DELETE FROM ONLY kparent WHERE a = 4;
DELETE FROM ONLY kchild WHERE a = 5;
UPDATE kparent SET b = b || '!' WHERE a = 6;
INSERT INTO kparent VALUES (1, 'k1');
DELETE FROM ONLY kparent WHERE a = 1;
TRUNCATE ONLY tparent;
INSERT INTO tparent VALUES (1, 'after truncate');
SQL
}

sql_parts_ddl() {
	cat <<'SQL'
CREATE TABLE pr (id int, k int, v text, PRIMARY KEY (id, k)) PARTITION BY RANGE (k);
CREATE TABLE pr_1 PARTITION OF pr FOR VALUES FROM (0) TO (100);
CREATE TABLE pr_2 PARTITION OF pr FOR VALUES FROM (100) TO (200);
-- a leaf with its own column order and a dropped column, attached
CREATE TABLE pr_3 (v text, junk int, k int NOT NULL, id int NOT NULL);
ALTER TABLE pr_3 DROP COLUMN junk;
ALTER TABLE pr ATTACH PARTITION pr_3 FOR VALUES FROM (200) TO (300);
-- sub-partitioned
CREATE TABLE pr_sub PARTITION OF pr FOR VALUES FROM (1000) TO (2000) PARTITION BY RANGE (id);
CREATE TABLE pr_sub_a PARTITION OF pr_sub FOR VALUES FROM (MINVALUE) TO (500);
CREATE TABLE pr_sub_b PARTITION OF pr_sub FOR VALUES FROM (500) TO (MAXVALUE);
CREATE TABLE pr_def PARTITION OF pr DEFAULT;
CREATE TABLE pl (id int, region text, v text, PRIMARY KEY (id, region)) PARTITION BY LIST (region);
CREATE TABLE pl_eu PARTITION OF pl FOR VALUES IN ('de', 'fr');
CREATE TABLE pl_us PARTITION OF pl FOR VALUES IN ('us');
CREATE TABLE pl_def PARTITION OF pl DEFAULT;
CREATE TABLE ph (id int PRIMARY KEY, v text) PARTITION BY HASH (id);
CREATE TABLE ph_0 PARTITION OF ph FOR VALUES WITH (MODULUS 3, REMAINDER 0);
CREATE TABLE ph_1 PARTITION OF ph FOR VALUES WITH (MODULUS 3, REMAINDER 1);
CREATE TABLE ph_2 PARTITION OF ph FOR VALUES WITH (MODULUS 3, REMAINDER 2);
-- keyless partitions, FULL identity
CREATE TABLE pn (k int, v text) PARTITION BY RANGE (k);
CREATE TABLE pn_1 PARTITION OF pn FOR VALUES FROM (MINVALUE) TO (100);
CREATE TABLE pn_2 PARTITION OF pn FOR VALUES FROM (100) TO (MAXVALUE);
ALTER TABLE pn REPLICA IDENTITY FULL;
ALTER TABLE pn_1 REPLICA IDENTITY FULL;
ALTER TABLE pn_2 REPLICA IDENTITY FULL;
SQL
}
sql_parts_fill() {
	cat <<'SQL'
INSERT INTO pr SELECT g, g, 'r' || g FROM generate_series(0, 299) g;
INSERT INTO pr SELECT g, 1000 + g, 's' || g FROM generate_series(1, 999, 7) g;
INSERT INTO pr VALUES (1, -5, 'default low'), (2, 5000, 'default high'), (3, 1003, 'sub');
INSERT INTO pl SELECT g, (ARRAY['de', 'fr', 'us', 'xx'])[g % 4 + 1], 'l' || g FROM generate_series(1, 40) g;
INSERT INTO ph SELECT g, 'h' || g FROM generate_series(1, 60) g;
INSERT INTO pn SELECT g % 150, 'n' || g FROM generate_series(1, 60) g;
SQL
}
sql_parts_change() {
	cat <<'SQL'
UPDATE pr SET k = k + 100 WHERE k BETWEEN 10 AND 14;
UPDATE pr SET k = 250 WHERE k = 150;
UPDATE pr SET k = 150 WHERE k = 251;
UPDATE pr SET k = 1500 WHERE k = 20;
UPDATE pr SET id = 600 WHERE id = 3 AND k = 1003;
UPDATE pr SET k = 7000 WHERE k = 30;
UPDATE pr SET k = 40 WHERE k = -5;
UPDATE pr SET v = 'in place' WHERE k IN (50, 220, 1008);
DELETE FROM pr WHERE k IN (60, 230, 1015, 5000);
INSERT INTO pr VALUES (9001, 9001, 'new default'), (9002, 1999, 'new sub'), (9003, 299, 'new pr_3');
UPDATE pl SET region = 'us' WHERE id = 1;
UPDATE pl SET region = 'zz' WHERE id = 2;
UPDATE pl SET region = 'de', v = 'moved' WHERE id = 3;
DELETE FROM pl WHERE id = 4;
UPDATE ph SET id = id + 1000 WHERE id < 10;
UPDATE ph SET v = 'changed' WHERE id BETWEEN 20 AND 25;
DELETE FROM ph WHERE id = 30;
UPDATE pn SET k = k + 100 WHERE k < 5;
UPDATE pn SET v = v || '!' WHERE k = 10;
DELETE FROM pn WHERE k = 20;
BEGIN;
TRUNCATE pl;
INSERT INTO pl VALUES (1, 'de', 'after truncate'), (2, 'us', 'after truncate'), (3, 'qq', 'after truncate');
COMMIT;
SQL
}

sql_ident_ddl() {
	cat <<'SQL'
CREATE TABLE ia (id int GENERATED ALWAYS AS IDENTITY PRIMARY KEY, v text);
CREATE TABLE ib (id bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY, v text);
CREATE TABLE inonkey (k text PRIMARY KEY, a int GENERATED ALWAYS AS IDENTITY,
  b int GENERATED BY DEFAULT AS IDENTITY (START WITH 100), v text);
CREATE TABLE ia_full (a int GENERATED ALWAYS AS IDENTITY, v text);
ALTER TABLE ia_full REPLICA IDENTITY FULL;
CREATE TABLE gen (id int PRIMARY KEY, a int, b int GENERATED ALWAYS AS (a * 2) STORED,
  c text GENERATED ALWAYS AS (upper(v) || '!') STORED, v text);
CREATE TABLE gen_full (a int, v text, g text GENERATED ALWAYS AS (v || a) STORED);
ALTER TABLE gen_full REPLICA IDENTITY FULL;
CREATE TABLE gen_id (id int GENERATED ALWAYS AS IDENTITY PRIMARY KEY, a numeric,
  twice numeric GENERATED ALWAYS AS (a * 2) STORED);
-- every column dropped
CREATE TABLE z (a int);
ALTER TABLE z DROP COLUMN a;
ALTER TABLE z REPLICA IDENTITY FULL;
-- dropped columns in the middle; the target drops others (same live columns, same order)
\if :is_target
CREATE TABLE dropmid (id int PRIMARY KEY, a text, c text, junk1 int, e text);
ALTER TABLE dropmid DROP COLUMN junk1;
CREATE TABLE dropfull (a int, c text);
\else
CREATE TABLE dropmid (id int PRIMARY KEY, a text, b int, c text, d int, e text);
ALTER TABLE dropmid DROP COLUMN b;
ALTER TABLE dropmid DROP COLUMN d;
CREATE TABLE dropfull (x int, a int, b int, c text);
ALTER TABLE dropfull DROP COLUMN x;
ALTER TABLE dropfull DROP COLUMN b;
\endif
ALTER TABLE dropfull REPLICA IDENTITY FULL;
SQL
}
sql_ident_fill() {
	cat <<'SQL'
INSERT INTO ia (v) SELECT 'a' || g FROM generate_series(1, 10) g;
INSERT INTO ia OVERRIDING SYSTEM VALUE VALUES (1000, 'overriding');
INSERT INTO ib (v) SELECT 'b' || g FROM generate_series(1, 10) g;
INSERT INTO ib VALUES (500, 'explicit');
INSERT INTO inonkey (k, v) SELECT 'k' || g, 'v' || g FROM generate_series(1, 10) g;
INSERT INTO ia_full (v) SELECT 'f' || g FROM generate_series(1, 5) g;
INSERT INTO gen (id, a, v) SELECT g, g, 'g' || g FROM generate_series(1, 10) g;
INSERT INTO gen_full (a, v) SELECT g, 'g' || g FROM generate_series(1, 5) g;
INSERT INTO gen_id (a) SELECT g / 3.0 FROM generate_series(1, 5) g;
INSERT INTO z DEFAULT VALUES;
INSERT INTO z DEFAULT VALUES;
INSERT INTO z DEFAULT VALUES;
INSERT INTO dropmid (id, a, c, e) SELECT g, 'a' || g, 'c' || g, 'e' || g FROM generate_series(1, 10) g;
INSERT INTO dropfull (a, c) SELECT g, 'c' || g FROM generate_series(1, 5) g;
SQL
}
sql_ident_change() {
	cat <<'SQL'
INSERT INTO ia (v) VALUES ('new a');
INSERT INTO ia OVERRIDING SYSTEM VALUE VALUES (2000, 'new overriding');
UPDATE ia SET v = 'changed' WHERE id = 2;
UPDATE ia SET id = DEFAULT WHERE id = 3;
DELETE FROM ia WHERE id = 4;
INSERT INTO ib (v) VALUES ('new b');
INSERT INTO ib VALUES (600, 'explicit');
UPDATE ib SET id = 700 WHERE id = 2;
UPDATE ib SET v = 'changed' WHERE id = 3;
DELETE FROM ib WHERE id = 4;
INSERT INTO inonkey (k, v) VALUES ('new', 'x');
INSERT INTO inonkey (k, a, v) OVERRIDING SYSTEM VALUE VALUES ('over', 9999, 'x');
UPDATE inonkey SET v = 'changed', b = 5 WHERE k = 'k2';
UPDATE inonkey SET k = 'k3 moved' WHERE k = 'k3';
UPDATE inonkey SET a = DEFAULT WHERE k = 'k5';
DELETE FROM inonkey WHERE k = 'k4';
INSERT INTO ia_full (v) VALUES ('new f');
UPDATE ia_full SET v = 'changed' WHERE a = 2;
DELETE FROM ia_full WHERE a = 3;
INSERT INTO gen (id, a, v) VALUES (11, 11, 'new');
UPDATE gen SET a = 100, v = 'changed' WHERE id = 2;
UPDATE gen SET id = 30 WHERE id = 3;
DELETE FROM gen WHERE id = 4;
INSERT INTO gen_full (a, v) VALUES (6, 'new');
UPDATE gen_full SET v = 'changed' WHERE a = 2;
DELETE FROM gen_full WHERE a = 3;
INSERT INTO gen_id (a) VALUES (7);
UPDATE gen_id SET a = a + 1 WHERE id = 2;
DELETE FROM gen_id WHERE id = 3;
INSERT INTO z DEFAULT VALUES;
INSERT INTO z DEFAULT VALUES;
DELETE FROM z WHERE ctid = (SELECT min(ctid) FROM z);
INSERT INTO dropmid (id, a, c, e) VALUES (11, 'new', NULL, 'e');
UPDATE dropmid SET c = 'changed' WHERE id = 2;
UPDATE dropmid SET id = 20 WHERE id = 3;
DELETE FROM dropmid WHERE id = 4;
INSERT INTO dropfull (a, c) VALUES (6, 'new');
UPDATE dropfull SET c = 'changed' WHERE a = 2;
DELETE FROM dropfull WHERE a = 3;
SQL
}

sql_composite_ddl() {
	cat <<'SQL'
CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy', 'quote''s', 'with space', 'ünï');
CREATE TYPE pair AS (a int, b text);
CREATE TYPE nest AS (p pair, tags text[], r int4range, m mood);
CREATE DOMAIN posint AS int CHECK (VALUE > 0);
CREATE DOMAIN pairdom AS pair CHECK (VALUE IS NULL OR (VALUE).a IS NOT NULL);
CREATE DOMAIN shorttext AS varchar(10) CHECK (VALUE <> '');
CREATE DOMAIN intarr AS int[] CHECK (cardinality(VALUE) < 10);
CREATE TYPE floatrange AS RANGE (subtype = float8);
CREATE TABLE comp (id int PRIMARY KEY, c pair, n nest, d posint, pd pairdom, st shorttext,
  ca pair[], na nest[], pda pairdom[], e mood, ea mood[], fr floatrange, fmr floatmultirange,
  ia intarr, big pair);
ALTER TABLE comp ALTER COLUMN big SET STORAGE EXTERNAL;
CREATE TABLE comp_pk (c pair PRIMARY KEY, v text);
CREATE TABLE dom_pk (d posint PRIMARY KEY, pd pairdom, v text);
CREATE TABLE pairdom_pk (pd pairdom PRIMARY KEY, v text);
CREATE TABLE enum_pk (e mood PRIMARY KEY, v text);
CREATE TABLE range_pk (r floatrange PRIMARY KEY, v text);
CREATE TABLE comp_full (c pair, d posint, pd pairdom, e mood, fr floatrange, n nest, ca pair[]);
ALTER TABLE comp_full REPLICA IDENTITY FULL;
SQL
}
sql_composite_fill() {
	cat <<'SQL'
INSERT INTO comp VALUES
 (1, '(1,"a,b ""q"" \\ x")', '("(2,)","{x,NULL,""y z""}","[1,5)",happy)', 7, '(3,pd)', 'short',
  '{"(1,a)","(,)",NULL}', ARRAY['("(1,a)",{},empty,sad)'::nest, NULL], '{"(1,x)"}', 'quote''s', '{sad,"with space",NULL}',
  '[1.5,2.5)', '{[1,2),[3,4]}', '{1,2,3}', NULL),
 (2, '(,)', '(,,,)', 1, '(0,"")', 'x', '{}', '{}', '{}', 'ünï', '{}', 'empty', '{}', '{}',
  ROW(1, (SELECT string_agg(md5(i::text), '') FROM generate_series(1, 500) i))::pair),
 (3, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL),
 (4, '(4,"new\nline	tab")', '("(4,four)",{},"(,)",ok)', 4, '(4,four)', 'four', '{"(4,4)"}', '{}', '{}', 'ok',
  '{ok}', '(,)', '{(,)}', '{}', ROW(2, (SELECT string_agg(md5((-i)::text), '') FROM generate_series(1, 500) i))::pair);
INSERT INTO comp_pk SELECT ROW(g, 'p' || g)::pair, 'v' || g FROM generate_series(1, 10) g;
INSERT INTO comp_pk VALUES ('(,)', 'all null'), ('(1,)', 'half null');
INSERT INTO dom_pk SELECT g, ROW(g, 'd')::pair, 'v' || g FROM generate_series(1, 10) g;
INSERT INTO pairdom_pk SELECT ROW(g, 'p' || g)::pair, 'v' || g FROM generate_series(1, 10) g;
INSERT INTO enum_pk VALUES ('sad', 's'), ('ok', 'o'), ('happy', 'h'), ('quote''s', 'q'), ('with space', 'w');
INSERT INTO range_pk VALUES ('[1,2)', 'a'), ('empty', 'e'), ('(,)', 'all'), ('[1.5,Infinity)', 'inf');
INSERT INTO comp_full SELECT ROW(g, 'c' || g)::pair, g, ROW(g, 'pd')::pair, 'ok', floatrange(g, g + 1),
  ROW(ROW(g, 'n')::pair, ARRAY['t' || g], int4range(g, g + 2), 'sad')::nest, ARRAY[ROW(g, 'a')::pair, NULL] FROM generate_series(1, 8) g;
INSERT INTO comp_full VALUES (NULL, NULL, NULL, NULL, NULL, NULL, NULL), ('(,)', 1, '(1,)', 'sad', 'empty', '(,,,)', '{}');
SQL
}
sql_composite_change() {
	cat <<'SQL'
UPDATE comp SET c = '(10,"changed")', d = 8 WHERE id = 1;
UPDATE comp SET n.m = 'sad', ca = ca || '(9,nine)'::pair WHERE id = 1;
UPDATE comp SET d = 2 WHERE id = 2;
UPDATE comp SET c = '(3,three)', pd = '(3,pd)', e = 'with space', fmr = '{[5,6)}' WHERE id = 3;
UPDATE comp SET id = 40 WHERE id = 4;
INSERT INTO comp (id, c, d, pd, e) VALUES (5, '(5,"")', 5, '(5,)', 'happy');
DELETE FROM comp WHERE id = 2;
UPDATE comp_pk SET v = 'changed' WHERE c = '(2,p2)'::pair;
UPDATE comp_pk SET c = '(20,p20)' WHERE c = '(3,p3)'::pair;
UPDATE comp_pk SET v = 'changed' WHERE c = '(,)'::pair;
DELETE FROM comp_pk WHERE c = '(4,p4)'::pair;
DELETE FROM comp_pk WHERE c = '(1,)'::pair;
UPDATE dom_pk SET v = 'changed', pd = '(0,zero)' WHERE d = 2;
UPDATE dom_pk SET d = 20 WHERE d = 3;
DELETE FROM dom_pk WHERE d = 4;
UPDATE pairdom_pk SET v = 'changed' WHERE pd = '(2,p2)'::pairdom;
UPDATE pairdom_pk SET pd = '(30,p30)' WHERE pd = '(3,p3)'::pairdom;
DELETE FROM pairdom_pk WHERE pd = '(4,p4)'::pairdom;
UPDATE enum_pk SET v = 'changed' WHERE e = 'ok';
UPDATE enum_pk SET e = 'ünï' WHERE e = 'quote''s';
DELETE FROM enum_pk WHERE e = 'sad';
UPDATE range_pk SET v = 'changed' WHERE r = 'empty';
UPDATE range_pk SET r = '[7,8]' WHERE r = '[1,2)';
DELETE FROM range_pk WHERE r = '(,)';
UPDATE comp_full SET e = 'happy' WHERE d = 2;
UPDATE comp_full SET c = '(30,c30)' WHERE d = 3;
DELETE FROM comp_full WHERE d = 4;
UPDATE comp_full SET e = 'ok' WHERE c IS NULL;
DELETE FROM comp_full WHERE c = '(,)'::pair;
SQL
}

sql_types_ddl() {
	python3 "$W/gen_types.py" ddl "$HERE/schemas_types.txt"
	cat <<'SQL'
-- keys of many types
CREATE TABLE k_text (k text PRIMARY KEY, v int);
CREATE TABLE k_bytea (k bytea PRIMARY KEY, v int);
CREATE TABLE k_multi (d timestamptz, n numeric, i inet, u uuid, c char(4), v int, PRIMARY KEY (d, n, i, u, c));
CREATE TABLE k_float (f float8 PRIMARY KEY, v int);
CREATE TABLE k_interval (iv interval PRIMARY KEY, v int);
CREATE TABLE k_arr (a int[] PRIMARY KEY, v int);
CREATE TABLE k_jsonb (j jsonb PRIMARY KEY, v int);
SQL
}
sql_types_fill() {
	python3 "$W/gen_types.py" fill "$HERE/schemas_types.txt"
	cat <<'SQL'
INSERT INTO k_text VALUES ('', 1), (E'tab\there', 2), ('quote''s "dq" \ back', 3), (E'new\nline', 4), ('ü🎉', 5), (repeat('long', 500), 6);
INSERT INTO k_bytea VALUES ('\x', 1), ('\x00', 2), ('\x5c00ff', 3), ('\x0a0d', 4);
INSERT INTO k_multi VALUES ('infinity', 'NaN', '::1', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', 'ab', 1),
  ('2020-01-01 00:00+05', 1.50, '10.0.0.1/8', '00000000-0000-0000-0000-000000000000', '', 2),
  ('-infinity', '-Infinity', '0.0.0.0/0', 'ffffffff-ffff-ffff-ffff-ffffffffffff', 'ü', 3);
INSERT INTO k_float VALUES ('NaN', 1), ('Infinity', 2), ('-Infinity', 3), (5e-324, 4), (0.1, 5), (-0.5, 6);
INSERT INTO k_interval VALUES ('1 day', 1), ('-1 mons 3 days', 2), ('00:00:00.000001', 3);
INSERT INTO k_arr VALUES ('{}', 1), ('{1,NULL}', 2), ('{{1,2},{3,4}}', 3), ('[0:1]={5,6}', 4);
INSERT INTO k_jsonb VALUES ('{}', 1), ('{"a": [1, "x\"y"]}', 2), ('null', 3), ('"ü"', 4);
SQL
}
sql_types_change() {
	python3 "$W/gen_types.py" change "$HERE/schemas_types.txt"
	cat <<'SQL'
UPDATE k_text SET v = v + 10;
UPDATE k_text SET k = k || ' moved' WHERE v IN (12, 13, 14);
DELETE FROM k_text WHERE v = 15;
INSERT INTO k_text VALUES (E'\\N', 7), ('NULL', 8);
UPDATE k_bytea SET v = v + 10;
UPDATE k_bytea SET k = k || '\x5c'::bytea WHERE v = 13;
DELETE FROM k_bytea WHERE k = '\x00';
UPDATE k_multi SET v = v + 10;
UPDATE k_multi SET n = 'Infinity', c = 'x' WHERE v = 11;
DELETE FROM k_multi WHERE v = 12;
UPDATE k_float SET v = v + 10;
UPDATE k_float SET f = '-0' WHERE v = 14;
DELETE FROM k_float WHERE f = 'NaN';
UPDATE k_interval SET v = v + 10;
UPDATE k_interval SET iv = '-178000000 years' WHERE v = 12;
UPDATE k_arr SET v = v + 10;
UPDATE k_arr SET a = '{{9,NULL}}' WHERE v = 13;
DELETE FROM k_arr WHERE a = '{1,NULL}';
UPDATE k_jsonb SET v = v + 10;
UPDATE k_jsonb SET j = '{"moved": true}' WHERE v = 12;
DELETE FROM k_jsonb WHERE j = 'null';
SQL
}

sql_keyless_ddl() {
	cat <<'SQL'
CREATE TABLE kl (k int, v text, n numeric, at timestamptz);
ALTER TABLE kl REPLICA IDENTITY FULL;
CREATE TABLE kl_dups (k int, v text);
ALTER TABLE kl_dups REPLICA IDENTITY FULL;
CREATE TABLE kl_toast (k int, body text);
ALTER TABLE kl_toast ALTER COLUMN body SET STORAGE EXTERNAL;
ALTER TABLE kl_toast REPLICA IDENTITY FULL;
-- REPLICA IDENTITY USING INDEX: the index columns identify a row
CREATE TABLE ri_idx (id int NOT NULL, code text NOT NULL, v text, other int);
CREATE UNIQUE INDEX ri_idx_u ON ri_idx (code, id);
ALTER TABLE ri_idx REPLICA IDENTITY USING INDEX ri_idx_u;
-- identity index other than the primary key
CREATE TABLE ri_idx2 (a int PRIMARY KEY, b text NOT NULL, v text);
CREATE UNIQUE INDEX ri_idx2_b ON ri_idx2 (b);
ALTER TABLE ri_idx2 REPLICA IDENTITY USING INDEX ri_idx2_b;
-- a key and FULL identity
CREATE TABLE pk_full (id int PRIMARY KEY, v text, n int);
ALTER TABLE pk_full REPLICA IDENTITY FULL;
-- rows "=" to each other that are not the same
CREATE TABLE full_twins (n numeric, iv interval, f float8, tag text);
ALTER TABLE full_twins REPLICA IDENTITY FULL;
SQL
}
sql_keyless_fill() {
	cat <<'SQL'
INSERT INTO kl SELECT g, 'v' || g, g * 1.1, '2024-06-01 12:00+02'::timestamptz + g * interval '1 day' FROM generate_series(1, 30) g;
INSERT INTO kl VALUES (NULL, NULL, NULL, NULL), (NULL, NULL, NULL, NULL), (0, '', 'NaN', 'infinity');
INSERT INTO kl_dups SELECT g % 5, 'same' FROM generate_series(1, 30) g;
INSERT INTO kl_toast SELECT g, (SELECT string_agg(md5((g * 1000 + i)::text), ' ') FROM generate_series(1, 300) i) FROM generate_series(1, 5) g;
INSERT INTO ri_idx SELECT g, 'c' || (g % 3), 'v' || g, g FROM generate_series(1, 20) g;
INSERT INTO ri_idx2 SELECT g, 'b' || g, 'v' || g FROM generate_series(1, 10) g;
INSERT INTO pk_full SELECT g, 'v' || g, g FROM generate_series(1, 10) g;
INSERT INTO full_twins VALUES (1.0, '1 day', 0, 't'), (1.00, '24 hours', '-0', 't'),
  (2.0, '1 mon', 1, 'u'), (2.000, '30 days', 1, 'u');
SQL
}
sql_keyless_change() {
	cat <<'SQL'
UPDATE kl SET v = v || '!' WHERE k % 4 = 0;
DELETE FROM kl WHERE k % 9 = 0;
UPDATE kl SET n = 1.5 WHERE ctid = (SELECT min(ctid) FROM kl WHERE k IS NULL);
DELETE FROM kl WHERE k = 0;
INSERT INTO kl VALUES (100, E'new\nline', -0.0, '-infinity');
DELETE FROM kl_dups WHERE ctid IN (SELECT min(ctid) FROM kl_dups GROUP BY k);
UPDATE kl_dups SET v = 'changed' WHERE ctid IN (SELECT max(ctid) FROM kl_dups WHERE k < 3 GROUP BY k);
UPDATE kl_toast SET k = k + 10 WHERE k < 3;
DELETE FROM kl_toast WHERE k = 4;
UPDATE ri_idx SET v = 'changed', other = -1 WHERE id = 2;
UPDATE ri_idx SET code = 'moved' WHERE id = 3;
UPDATE ri_idx SET id = 300 WHERE id = 4;
DELETE FROM ri_idx WHERE id = 5;
UPDATE ri_idx2 SET v = 'changed' WHERE a = 2;
UPDATE ri_idx2 SET a = 300 WHERE a = 3;
UPDATE ri_idx2 SET b = 'b moved' WHERE a = 4;
DELETE FROM ri_idx2 WHERE a = 5;
UPDATE pk_full SET v = 'changed' WHERE id = 2;
UPDATE pk_full SET id = 300 WHERE id = 3;
DELETE FROM pk_full WHERE id = 4;
-- the second row of each pair: "=" to the first, not identical
UPDATE full_twins SET tag = 'second' WHERE n::text = '1.00';
DELETE FROM full_twins WHERE n::text = '2.000';
SQL
}

sql_noeq_ddl() {
	cat <<'SQL'
CREATE TYPE noeqc AS (j json, p point, x xml, b box, pg polygon);
CREATE TABLE noeq (n int, j json, jp jsonpath, x xml, p point, l line, ls lseg, b box, pa path, pg polygon,
  c circle, ts txid_snapshot, ps pg_snapshot, rc refcursor, ja json[], pta point[], xa xml[], ba box[],
  pga polygon[], comp noeqc, compa noeqc[], big json);
ALTER TABLE noeq ALTER COLUMN big SET STORAGE EXTERNAL;
ALTER TABLE noeq REPLICA IDENTITY FULL;
SQL
}
sql_noeq_fill() {
	cat <<'SQL'
INSERT INTO noeq SELECT g, json_build_object('g', g), ('$.a[' || g || ']')::jsonpath, ('<r g="' || g || '"/>')::xml, point(g, -g),
  line(point(0, 0), point(1, g)), lseg(point(0, 0), point(g, g)), box(point(0, 0), point(g, g)),
  ('[(0,0),(' || g || ',1)]')::path, ('((0,0),(' || g || ',1),(1,0))')::polygon, circle(point(g, g), g),
  ('10:' || (20 + g) || ':10,14')::txid_snapshot, ('10:' || (20 + g) || ':10,14')::pg_snapshot,
  ('cursor ' || g)::refcursor, ARRAY[json_build_array(g), NULL], ARRAY[point(g, g)], ARRAY[('<x>' || g || '</x>')::xml],
  ARRAY[box(point(0, 0), point(g, 1))], ARRAY[('((0,0),(' || g || ',1),(1,0))')::polygon],
  ROW(json_build_object('c', g), point(g, 0), '<c/>', box(point(0, 0), point(1, g)), '((0,0),(1,1),(1,0))')::noeqc,
  ARRAY[ROW('[1]', point(0, g), '<d/>', NULL, NULL)::noeqc], NULL
  FROM generate_series(1, 8) g;
-- rows the types' own "=" cannot tell apart: same area, same point count, whitespace in json
INSERT INTO noeq (n, j, b, c, pa, l) VALUES
  (100, '{"a":1}', '(2,2),(0,0)', '<(0,0),1>', '[(0,0),(1,1)]', '{1,1,1}'),
  (100, '{"a": 1}', '(4,1),(0,0)', '<(5,5),1>', '[(7,7),(9,9)]', '{2,2,2}'),
  (101, '[1, 2]', NULL, NULL, NULL, NULL),
  (101, '[1,2]', NULL, NULL, NULL, NULL),
  (102, NULL, NULL, NULL, NULL, NULL),
  (103, '"ü \" \\"', '(0,0),(0,0)', '<(0,0),0>', '((0,0))', '{0,1,0}');
INSERT INTO noeq (n, j, big) VALUES (200, '{}', (SELECT json_agg(md5(i::text)) FROM generate_series(1, 3000) i));
SQL
}
sql_noeq_change() {
	cat <<'SQL'
UPDATE noeq SET n = n + 10 WHERE n IN (1, 2);
UPDATE noeq SET j = '{"changed": true}', p = '(0,0)' WHERE n = 3;
UPDATE noeq SET comp.p = '(9,9)', x = '<changed/>' WHERE n = 4;
DELETE FROM noeq WHERE n IN (5, 6);
UPDATE noeq SET n = 110 WHERE n = 100 AND b::text = '(4,1),(0,0)';
DELETE FROM noeq WHERE n = 101 AND j::text = '[1,2]';
UPDATE noeq SET rc = 'found' WHERE n = 102;
DELETE FROM noeq WHERE n = 103;
UPDATE noeq SET n = 201 WHERE n = 200;
INSERT INTO noeq (n, j, x, p) VALUES (300, '{"new": 1}', '<n/>', '(3,3)');
SQL
}

# the partroot class is the parts schema through a publish_via_partition_root publication
sql_partroot_ddl() { sql_parts_ddl; }
sql_partroot_fill() { sql_parts_fill; }
sql_partroot_change() { sql_parts_change; }

# gen_types.py MODE SPEC: DDL, rows before the snapshot, changes after it for
# t_all (keyed) and t_full (FULL identity, the columns not flagged noeq).
cat >"$W/gen_types.py" <<'PY'
import sys
mode, path = sys.argv[1], sys.argv[2]
GROUP = 20  # columns per table: a failure points at a few types
cols = []
for line in open(path, encoding="utf-8"):
    line = line.rstrip("\n")
    if not line or line.startswith("#"):
        continue
    f = line.split(" | ")
    assert len(f) == 6, line
    cols.append((f[0], f[1], f[2], f[3:]))
q = lambda n: '"%s"' % n
out = []
tables = []
for i in range(0, len(cols), GROUP):
    g = cols[i:i + GROUP]
    n = i // GROUP + 1
    tables.append(("t_all_%d" % n, "id", g))
    eq = [c for c in g if c[2] != "noeq"]
    if eq:
        tables.append(("t_full_%d" % n, "n", eq))
# every table also has upd (updated alone: the TOASTed values stay unchanged) and tb (TOASTed text)
TB = ["(SELECT string_agg(md5(i::text), ' ') FROM generate_series(1, 400) i)",
      "(SELECT string_agg(md5((-i)::text), '') FROM generate_series(1, 300) i)", "NULL"]
for t, key, cs in tables:
    cs = cs + [("tb", "text", "big", TB)]
    names = ", ".join(q(c[0]) for c in cs)
    w = lambda k: "WHERE %s = %d" % (key, k)
    if mode == "list":
        out.append("%s: %s" % (t, " ".join("%s(%s)" % (c[0], c[1]) for c in cs[:-1])))
    elif mode == "ddl":
        keydef = "id int PRIMARY KEY" if key == "id" else "n int"
        out.append("CREATE TABLE %s (%s, upd int, %s);" % (t, keydef, ", ".join("%s %s" % (q(c[0]), c[1]) for c in cs)))
        out += ["ALTER TABLE %s ALTER COLUMN %s SET STORAGE EXTERNAL;" % (t, q(c[0])) for c in cs if c[2] == "big"]
        if key == "n":
            out.append("ALTER TABLE %s REPLICA IDENTITY FULL;" % t)
    elif mode == "fill":
        for r in range(3):
            out.append("INSERT INTO %s (%s, upd, %s) VALUES (%d, 0, %s);" % (t, key, names, r + 1, ", ".join(c[3][r] for c in cs)))
        out.append("INSERT INTO %s (%s) VALUES (4);" % (t, key))
    else:
        # an update of upd alone: the TOASTed values are sent as unchanged
        out.append("UPDATE %s SET upd = 42 %s;" % (t, w(1)))
        out.append("UPDATE %s SET %s %s;" % (t, ", ".join("%s = %s" % (q(c[0]), c[3][0]) for c in cs), w(4)))
        out.append("UPDATE %s SET %s %s;" % (t, ", ".join("%s = NULL" % q(c[0]) for c in cs), w(2)))
        out.append("UPDATE %s SET %s %s;" % (t, ", ".join("%s = %s" % (q(c[0]), c[3][1]) for c in cs if c[2] != "big"), w(3)))
        out.append("UPDATE %s SET %s = 100 %s;" % (t, key, w(1)))
        for r in range(3):
            out.append("INSERT INTO %s (%s, %s) VALUES (%d, %s);" % (t, key, names, r + 5, ", ".join(c[3][r] for c in cs)))
        out.append("UPDATE %s SET tb = tb || 'more', upd = 1 %s;" % (t, w(5)))
        out.append("DELETE FROM %s %s;" % (t, w(6)))
        out.append("DELETE FROM %s %s;" % (t, w(7)))
        out.append("INSERT INTO %s (%s) VALUES (8);" % (t, key))
if mode == "ddl":
    # wide tables: more than 100 columns
    out.append("CREATE TABLE wide (id int PRIMARY KEY, %s);" % ", ".join("c%d int" % i for i in range(120)))
    out.append("CREATE TABLE wide_full (%s);" % ", ".join("c%d int" % i for i in range(120)))
    out.append("ALTER TABLE wide_full REPLICA IDENTITY FULL;")
elif mode == "fill":
    for t in ("wide", "wide_full"):
        for r in range(1, 4):
            out.append("INSERT INTO %s VALUES (%s);" % (t, ", ".join(str(r * 1000 + i) for i in range(120 + (t == "wide")))))
elif mode == "change":
    for t, k in (("wide", "id"), ("wide_full", "c0")):
        out.append("UPDATE %s SET c5 = -1 WHERE %s = 1000;" % (t, k))
        out.append("DELETE FROM %s WHERE %s = 2000;" % (t, k))
        out.append("INSERT INTO %s VALUES (%s);" % (t, ", ".join(str(9000 + i) for i in range(120 + (t == "wide")))))
print("\n".join(out))
PY

# cmp_rows.py A B LABEL: A and B are "table<TAB>md5<TAB>preview" dumps of the
# two sides (every row of every table, FROM ONLY); prints ok/FAIL per table,
# the failing tables on fd 3.
cat >"$W/cmp_rows.py" <<'PY'
import sys
def load(p):
    d = {}
    for line in open(p, encoding="utf-8", errors="replace"):
        line = line.rstrip("\n")
        if not line:
            continue
        t, h, prev = (line.split("\t", 2) + ["", ""])[:3]
        if h == "":
            d.setdefault(t, [])
            continue
        d.setdefault(t, []).append((h, prev))
    return d
a, b, label = load(sys.argv[1]), load(sys.argv[2]), sys.argv[3]
brief = len(sys.argv) > 4  # after a failed apply: one line
good, failed = [], []
for t in sorted(a):
    ra, rb = sorted(a[t]), sorted(b.get(t, []))
    if [h for h, _ in ra] == [h for h, _ in rb]:
        good.append("%s(%d)" % (t, len(ra)))
        continue
    ca, cb = {}, {}
    for h, p in ra: ca.setdefault(h, []).append(p)
    for h, p in rb: cb.setdefault(h, []).append(p)
    only_a = [p for h, ps in ca.items() for p in ps[len(cb.get(h, [])):]]
    only_b = [p for h, ps in cb.items() for p in ps[len(ca.get(h, [])):]]
    failed.append("%s(%d/%d)" % (t, len(ra), len(rb)) if brief else t)
    if brief:
        continue
    print("FAIL: %s: table %s: source %d rows, target %d rows (FROM ONLY); %d rows only in the source, %d only in the target"
          % (label, t, len(ra), len(rb), len(only_a), len(only_b)))
    for p in sorted(only_a)[:3]: print("    only in source: %s" % p)
    for p in sorted(only_b)[:3]: print("    only in target: %s" % p)
if brief and failed:
    print("FAIL: %s: after the failed apply %d tables differ (rows source/target): %s" % (label, len(failed), " ".join(failed)))
    failed = ["(after the failed apply) " + " ".join(failed)]
if good:
    print("ok: %s: %d tables equal (rows): %s" % (label, len(good), " ".join(good)))
with open(3, "w") as f:
    f.write("".join(t + "\n" for t in failed))
PY

# tables_of SERVER DB [KINDS]: the user tables (partitions and children too), schema-qualified
tables_of() {
	pg_psql "$1" "$2" -c "SELECT format('%I.%I', n.nspname, c.relname) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
		WHERE c.relkind IN (${3:-"'r'"}) AND n.nspname NOT IN ('pg_catalog', 'information_schema', 'sluice') AND n.nspname NOT LIKE 'pg\_%' ORDER BY 1"
}
# dump_rows SERVER DB FILE TABLE...: every row of each table, FROM ONLY: table,
# md5 of the whole row's text, a preview; an empty table as one line without a hash
dump_rows() {
	local s=$1 db=$2 out=$3 t sql=""
	shift 3
	for t in "$@"; do
		[ -n "$sql" ] && sql+=" UNION ALL "
		sql+="SELECT '$t', NULL, NULL WHERE NOT EXISTS (SELECT FROM ONLY $t) UNION ALL "
		sql+="SELECT '$t', md5(r::text), translate(left(r::text, 110), E'\\n\\t\\r', '   ') FROM ONLY $t AS r"
	done
	psql -X -At -q -v ON_ERROR_STOP=1 -F $'\t' "$(pg_conninfo "$s" "$db")" -c "$sql" >"$out" 2>"$out.err"
}
# compare_db CLASS TARGET LABEL [DB [BRIEF [TABLE...]]]: every table of the class
# database (partitions, parents and children each FROM ONLY), source vs
# TARGET's DB (default: CLASS), row by row; BRIEF (after a failed apply): one
# line; TABLEs: only these
compare_db() {
	local c=$1 tgt=$2 label=$3 db=${4:-$1} brief=${5:-} tables t
	shift 5 2>/dev/null || shift $#
	if [ $# -gt 0 ]; then tables=("$@"); else mapfile -t tables < <(tables_of src "$c"); fi
	dump_rows src "$c" "$W/$db.src.rows" "${tables[@]}" || {
		bad "$label: could not read the source tables: $(head -c 300 "$W/$db.src.rows.err")"
		return
	}
	dump_rows "$tgt" "$db" "$W/$db.$tgt.rows" "${tables[@]}" || {
		bad "$label: could not read the target tables: $(head -c 300 "$W/$db.$tgt.rows.err")"
		return
	}
	python3 "$W/cmp_rows.py" "$W/$db.src.rows" "$W/$db.$tgt.rows" "$label" $brief 3>"$W/$db.$tgt.failed"
	while read -r t; do
		[ -z "$t" ] || echo "$label: table $t differs" >>"$W/failures"
	done <"$W/$db.$tgt.failed"
	[ -s "$W/$db.$tgt.failed" ] || echo "$label: rows" >>"$W/passes"
}
# counts_db CLASS TARGET LABEL: count(*) FROM ONLY and with descendants, table by table
counts_db() {
	local c=$1 tgt=$2 label=$3 t sql="" a b
	for t in $(tables_of src "$c" "'r','p'"); do
		[ -n "$sql" ] && sql+=" UNION ALL "
		sql+="SELECT '$t', (SELECT count(*) FROM ONLY $t), (SELECT count(*) FROM $t)"
	done
	a=$(pg_psql src "$c" -c "$sql ORDER BY 1" 2>&1)
	b=$(pg_psql "$tgt" "$c" -c "$sql ORDER BY 1" 2>&1)
	if [ "$a" == "$b" ]; then
		ok "$label: count(*) FROM ONLY and with descendants equal for every table"
	else
		bad "$label: row counts differ (table|ONLY|with descendants; < source, > target): $(diff <(echo "$a") <(echo "$b") | grep '^[<>]' | tr '\n' ' ' | cut -c 1-400)"
	fi
}
# pgdump_compare CLASS TARGET LABEL TABLE: pg_dump --data-only rows, sorted, source vs target
pgdump_compare() {
	local c=$1 tgt=$2 label=$3 t=$4 s
	for s in src "$tgt"; do
		pg_dump --data-only -t "$t" -d "$(pg_conninfo "$s" "$c")" 2>"$W/dump.$c.err" |
			awk '/^COPY /{on=1; next} /^\\\.$/{on=0} on' | sort >"$W/$c.$s.$tgt.dump"
	done
	if [ -s "$W/$c.src.$tgt.dump" ] && cmp -s "$W/$c.src.$tgt.dump" "$W/$c.$tgt.$tgt.dump"; then
		ok "$label: pg_dump --data-only -t $t equal ($(wc -l <"$W/$c.src.$tgt.dump") rows)"
	else
		bad "$label: pg_dump --data-only -t $t differs: $(diff "$W/$c.src.$tgt.dump" "$W/$c.$tgt.$tgt.dump" | grep '^[<>]' | cut -c 1-120 | head -n 4 | tr '\n' ' ')"
	fi
}

# setup_target SERVER DB CLASS STRATEGY: the class's DDL (target variant); for
# timestamp also `sluice prepare`. When prepare fails, that is reported, and the
# database is made again and prepared without the partitioned tables (their
# partitions keep delete tracking), so the timestamp apply can still be tested.
setup_target() {
	local s=$1 db=$2 c=$3 st=$4 ex=() p
	pg_psql "$s" postgres -c "CREATE DATABASE $db" || return 1
	"sql_${c}_ddl" | pg_psql "$s" "$db" -v is_target=true >"$W/ddl.$s.$db.log" 2>&1 || {
		cat "$W/ddl.$s.$db.log"
		return 1
	}
	[ "$st" = timestamp ] || return 0
	"$SLUICE" prepare --target "$(pg_conninfo "$s" "$db")" --node "target_$db" 2>"$W/prepare.$s.$db.log" && return 0
	bad "$c/timestamp: sluice prepare on the target fails: $(error_of "$W/prepare.$s.$db.log")"
	for p in $(tables_of "$s" "$db" "'p'"); do ex+=(--exclude "$p"); done
	[ "${#ex[@]}" -gt 0 ] || return 1
	pg_psql "$s" postgres -c "DROP DATABASE $db" -c "CREATE DATABASE $db" || return 1
	"sql_${c}_ddl" | pg_psql "$s" "$db" -v is_target=true >/dev/null 2>&1 || return 1
	"$SLUICE" prepare --target "$(pg_conninfo "$s" "$db")" --node "target_$db" "${ex[@]}" 2>"$W/prepare2.$s.$db.log" || {
		bad "$c/timestamp: sluice prepare without the partitioned tables fails too: $(error_of "$W/prepare2.$s.$db.log")"
		return 1
	}
	echo "    $c/timestamp: prepared without the partitioned tables (${ex[*]}) to go on"
}

apply_stream() { # apply_stream CLASS SERVER DB STRATEGY LOG [ARGS]: apply the class's stream
	local c=$1 s=$2 db=$3 st=$4 log=$5
	shift 5
	"$SLUICE" apply --store "$W/store.$c" --stream "$c" --trust "$W/k.pub" --target "$(pg_conninfo "$s" "$db")" \
		--strategy "$st" --exit-when-caught-up "$@" 2>"$log"
}

# diagnose CLASS SERVER STRATEGY: after a failed apply, apply the stream one
# top-level table (with its partitions) at a time into a scratch database, each
# with its own origin (dropped after), to tell which tables apply cannot write;
# the tables that apply alone are compared with the source.
diagnose() {
	local c=$1 s=$2 st=$3 db=${1}_diag t n=0 p k inc rc okt=() cmpt=()
	setup_target "$s" "$db" "$c" "$st" >/dev/null || {
		bad "$c/$st: per-table pass: could not set up $db"
		return
	}
	local units
	mapfile -t units < <(pg_psql src "$c" -c "SELECT format('%I.%I', n.nspname, c.relname) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
		WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition AND n.nspname = 'public' ORDER BY 1")
	for t in "${units[@]}"; do
		n=$((n + 1))
		# the table and its partitions (pg_partition_tree has no rows for a plain table)
		pg_psql src "$c" -c "SELECT format('%I.%I', n.nspname, c.relname), c.relkind FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
			WHERE c.oid = '$t'::regclass OR c.oid IN (SELECT relid FROM pg_partition_tree('$t')) ORDER BY 1" >"$W/diag.$c.$st.$n.tables"
		inc=()
		while IFS='|' read -r p k; do inc+=(--include "$p"); done <"$W/diag.$c.$st.$n.tables"
		[ "${#inc[@]}" -gt 0 ] || die "no tables for $t (a test bug)"
		# five at a time
		while [ "$(jobs -rp | wc -l)" -ge 5 ]; do wait -n; done
		(
			apply_stream "$c" "$s" "$db" "$st" "$W/diag.$c.$st.$n.log" --origin "sluice_d_${c}_$n" "${inc[@]}"
			echo $? >"$W/diag.$c.$st.$n.rc"
		) &
	done
	wait
	n=0
	for t in "${units[@]}"; do
		n=$((n + 1))
		rc=$(cat "$W/diag.$c.$st.$n.rc")
		if [ "$rc" -ne 0 ]; then
			bad "$c/$st: table $t alone: apply fails (status $rc): $(error_of "$W/diag.$c.$st.$n.log")"
		else
			okt+=("$t")
			while IFS='|' read -r p k; do [ "$k" = p ] || cmpt+=("$p"); done <"$W/diag.$c.$st.$n.tables"
		fi
	done
	pg_psql "$s" "$db" -c "SELECT pg_replication_origin_drop(roname) FROM pg_replication_origin WHERE roname LIKE 'sluice\_d\_${c}\_%'" >/dev/null
	if [ "${#okt[@]}" -gt 0 ]; then
		echo "    per-table pass ($c/$st): these apply alone without an error: ${okt[*]}"
		compare_db "$c" "$s" "$c/$st, table applied alone" "$db" "" "${cmpt[@]}"
	fi
}

run_class() { # run_class CLASS
	local c=$1 pub=() rc st s ts_ok
	say "class $c"
	pg_psql src postgres -c "CREATE DATABASE $c" || {
		bad "$c: create database"
		return
	}
	"sql_${c}_ddl" | pg_psql src "$c" -v is_target=false >"$W/ddl.src.$c.log" 2>&1 || {
		bad "$c: source DDL failed (a test bug): $(tail -n 3 "$W/ddl.src.$c.log" | tr '\n' ' ')"
		return
	}
	"sql_${c}_fill" | pg_psql src "$c" >"$W/fill.$c.log" 2>&1 || {
		bad "$c: source fill failed (a test bug): $(tail -n 3 "$W/fill.$c.log" | tr '\n' ' ')"
		return
	}
	[ "$c" != types ] || python3 "$W/gen_types.py" list "$HERE/schemas_types.txt" | sed 's/^/    types: /'
	setup_target dst "$c" "$c" replace || {
		bad "$c/replace: could not set up the target database"
		return
	}
	setup_target tsd "$c" "$c" timestamp
	ts_ok=$?
	if [ "$c" = partroot ]; then
		pg_psql src "$c" -c "CREATE PUBLICATION viaroot FOR ALL TABLES WITH (publish_via_partition_root = true)" || {
			bad "$c: create publication"
			return
		}
		pub=(--publication viaroot)
	fi
	local CAP=("$SLUICE" capture --source "$(pg_conninfo src "$c")" --store "$W/store.$c" --stream "$c" --key "$W/k.key"
		--node "src_$c" --no-progress "${pub[@]}")
	"${CAP[@]}" --create --snapshot --exit-when-caught-up 2>"$W/cap0.$c.log"
	rc=$?
	if [ "$rc" -ne 0 ]; then
		bad "$c: capture --create --snapshot exited with status $rc: $(error_of "$W/cap0.$c.log")"
		show_log "$W/cap0.$c.log"
		return
	fi
	"sql_${c}_change" | pg_psql src "$c" >"$W/change.$c.log" 2>&1 || {
		bad "$c: source changes failed (a test bug): $(tail -n 3 "$W/change.$c.log" | tr '\n' ' ')"
		return
	}
	"${CAP[@]}" --exit-when-caught-up 2>"$W/cap1.$c.log"
	rc=$?
	if [ "$rc" -ne 0 ]; then
		bad "$c: capture --exit-when-caught-up exited with status $rc: $(error_of "$W/cap1.$c.log")"
		show_log "$W/cap1.$c.log"
		return
	fi
	ok "$c: captured snapshot and changes ($(grep -o '"msg":"snapshot done[^"]*' "$W/cap0.$c.log" | cut -c 8- | head -n 1))"
	for st in replace timestamp; do
		s=dst
		if [ "$st" = timestamp ]; then
			s=tsd
			[ "$ts_ok" -eq 0 ] || continue
		fi
		apply_stream "$c" "$s" "$c" "$st" "$W/apply.$c.$st.log"
		rc=$?
		if [ "$rc" -eq 0 ]; then
			ok "$c/$st: apply --exit-when-caught-up exits 0"
		else
			bad "$c/$st: apply exited with status $rc: $(error_of "$W/apply.$c.$st.log")"
			show_log "$W/apply.$c.$st.log"
		fi
		if grep '"level":"warn' "$W/apply.$c.$st.log" | grep -vq 'has no delete tracking'; then
			echo "    apply warnings ($c/$st): $(grep '"level":"warn' "$W/apply.$c.$st.log" | jq -r .msg 2>/dev/null | grep -v 'has no delete tracking' | sort | uniq -c | head -n 5 | tr '\n' ';')"
		fi
		if [ "$rc" -eq 0 ]; then compare_db "$c" "$s" "$c/$st"; else compare_db "$c" "$s" "$c/$st" "$c" brief; fi
		[ "$rc" -ne 0 ] || counts_db "$c" "$s" "$c/$st"
		[ "$c" != noeq ] || pgdump_compare "$c" "$s" "$c/$st" public.noeq
		[ "$rc" -eq 0 ] || diagnose "$c" "$s" "$st"
	done
	say "class $c done"
}

touch "$W/failures" "$W/passes"
pids=()
for c in $CLASSES; do
	case " $ALL_CLASSES " in *" $c "*) ;; *) die "unknown class $c (classes: $ALL_CLASSES)" ;; esac
	run_class "$c" >"$W/out.$c" 2>&1 &
	pids+=($!)
done
wait "${pids[@]}"
for c in $CLASSES; do
	cat "$W/out.$c"
done

say "done"
NFAIL=$(wc -l <"$W/failures")
NOK=$(wc -l <"$W/passes")
if [ "$NFAIL" -ne 0 ]; then
	echo "test_apply_schemas: $NFAIL checks FAILED ($NOK passed):" >&2
	sed 's/^/  /' "$W/failures" >&2
	exit 1
fi
echo "test_apply_schemas: passed ($NOK checks, $((SECONDS - T0)) s)"
