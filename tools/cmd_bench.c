/* sluice bench-codec: throughput of the segment codec on synthetic PostgreSQL-like rows. */
#include "cmd_bench.h"

#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/stat.h>
#include <unistd.h>

#include "backend.h"
#include "cli.h"
#include "keys.h"
#include "log.h"
#include "reader.h"
#include "scan.h"
#include "writer.h"

#define BENCH_COLUMNS 8

static void
bench_help(FILE *f)
{
	fprintf(f,
		"Usage: sluice bench-codec [--rows N] [--txn-rows N] [--zstd-level L]\n"
		"                          [--frame-size BYTES] [--dir DIR] [--json]\n"
		"\n"
		"Measure the stream codec on one core with synthetic PostgreSQL-like rows\n"
		"(8 columns: bigint, int, text, text, numeric, bool, timestamptz, text; 70%%\n"
		"inserts, 20%% updates with old key, 10%% deletes):\n"
		"  write: build records, protobuf-encode, zstd-compress, BLAKE2b, Ed25519-sign,\n"
		"         append to segment files in DIR (page cache; one fsync at the end)\n"
		"  read:  authenticate (signature, hash), decompress, decode, check chain\n"
		"MB/s counts encoded record bytes (before compression).\n"
		"\n"
		"Options:\n"
		"      --rows N          row changes to generate (default 1000000)\n"
		"      --txn-rows N      row changes per transaction (default 100)\n"
		"      --zstd-level L    zstd level (default 1)\n"
		"      --frame-size B    frame target size in bytes (default 1048576)\n"
		"      --segment-size B  seal segments past this size (default 67108864)\n"
		"      --dir DIR         keep the stream (DIR/store, stream \"bench\") and its "
		"key\n"
		"                        (DIR/bench.key, DIR/bench.pub) in DIR; default: a new\n"
		"                        directory under $TMPDIR or /tmp, removed afterwards\n"
		"      --json            print the result as one JSON object\n"
		"  -h, --help            show this help\n"
		"\n"
		"Exit status: 0 done, 2 usage error, 3 failure.\n");
}

static double
bench_now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* bench_rand is a small deterministic generator (xorshift64*). */
static uint64_t
bench_rand(uint64_t *s)
{
	*s ^= *s >> 12;
	*s ^= *s << 25;
	*s ^= *s >> 27;
	return *s * 2685821657736338717ULL;
}

static const char *const bench_words[] = {
	"alpha", "bravo",  "charlie", "delta", "echo", "foxtrot",  "golf",  "hotel",
	"india", "juliet", "kilo",    "lima",  "mike", "november", "oscar", "papa",
};

/* Text storage for one row's values; rebuilt per row. */
typedef struct bench_row {
	char text[BENCH_COLUMNS][128];
	Sluice__V1__ValueKind kinds[BENCH_COLUMNS];
	ProtobufCBinaryData values[BENCH_COLUMNS];
	Sluice__V1__Row row;
} bench_row;

static void
bench_fill_row(bench_row *r, uint64_t id, uint64_t *seed)
{
	uint64_t x = bench_rand(seed);
	snprintf(r->text[0], 128, "%" PRIu64, id);
	snprintf(r->text[1], 128, "%" PRIu64, x % 100000);
	snprintf(r->text[2], 128, "%s %s", bench_words[x % 16], bench_words[(x >> 4) % 16]);
	snprintf(r->text[3], 128, "%s.%s%" PRIu64 "@example.com", bench_words[(x >> 8) % 16],
		 bench_words[(x >> 12) % 16], (x >> 16) % 1000);
	snprintf(r->text[4], 128, "%" PRIu64 ".%02" PRIu64, (x >> 20) % 1000000, (x >> 40) % 100);
	snprintf(r->text[5], 128, "%s", (x >> 50) & 1 ? "t" : "f");
	snprintf(r->text[6], 128,
		 "2026-11-%02" PRIu64 " %02" PRIu64 ":%02" PRIu64 ":%02" PRIu64 ".%06" PRIu64 "+00",
		 1 + (x >> 8) % 28, (x >> 13) % 24, (x >> 18) % 60, (x >> 24) % 60,
		 (x >> 30) % 1000000);
	snprintf(r->text[7], 128, "%s %s %s %s %s %s", bench_words[(x >> 3) % 16],
		 bench_words[(x >> 7) % 16], bench_words[(x >> 11) % 16],
		 bench_words[(x >> 15) % 16], bench_words[(x >> 19) % 16],
		 bench_words[(x >> 23) % 16]);
	sluice__v1__row__init(&r->row);
	for (int i = 0; i < BENCH_COLUMNS; i++) {
		r->kinds[i] = SLUICE__V1__VALUE_KIND__VALUE_TEXT;
		r->values[i].data = (uint8_t *)r->text[i];
		r->values[i].len = strlen(r->text[i]);
	}
	/* Every 10th row has a NULL note. */
	if (id % 10 == 0) {
		r->kinds[7] = SLUICE__V1__VALUE_KIND__VALUE_NULL;
		r->values[7].len = 0;
	}
	r->row.n_kinds = BENCH_COLUMNS;
	r->row.kinds = r->kinds;
	r->row.n_values = BENCH_COLUMNS;
	r->row.values = r->values;
}

static bool
bench_relation(sluice_writer *w)
{
	static const char *const names[BENCH_COLUMNS] = {
		"id", "account_id", "name", "email", "balance", "active", "created", "note"};
	static const char *const types[BENCH_COLUMNS] = {"bigint",
							 "integer",
							 "text",
							 "text",
							 "numeric",
							 "boolean",
							 "timestamp with time zone",
							 "text"};
	static const uint32_t oids[BENCH_COLUMNS] = {20, 23, 25, 25, 1700, 16, 1184, 25};
	Sluice__V1__Column cols[BENCH_COLUMNS];
	Sluice__V1__Column *colp[BENCH_COLUMNS];
	for (int i = 0; i < BENCH_COLUMNS; i++) {
		sluice__v1__column__init(&cols[i]);
		cols[i].name = (char *)names[i];
		cols[i].type_name = (char *)types[i];
		cols[i].has_type_oid = true;
		cols[i].type_oid = oids[i];
		cols[i].has_key = i == 0;
		cols[i].key = i == 0;
		colp[i] = &cols[i];
	}
	Sluice__V1__Relation rel = SLUICE__V1__RELATION__INIT;
	rel.id = 16384;
	rel.schema = "public";
	rel.name = "accounts";
	rel.n_columns = BENCH_COLUMNS;
	rel.columns = colp;
	Sluice__V1__Record rec = SLUICE__V1__RECORD__INIT;
	rec.body_case = SLUICE__V1__RECORD__BODY_RELATION;
	rec.relation = &rel;
	return sluice_writer_append(w, &rec);
}

#define BENCH_POOL 16384

/* Rows are generated before timing: capture points at bytes it already received. */
static bench_row *bench_pool;

static void
bench_make_pool(void)
{
	uint64_t seed = 0x9E3779B97F4A7C15ULL;
	bench_pool = calloc(BENCH_POOL, sizeof(*bench_pool));
	if (bench_pool == NULL)
		abort();
	for (uint64_t i = 0; i < BENCH_POOL; i++)
		bench_fill_row(&bench_pool[i], i + 1, &seed);
}

/* bench_pool_row returns a pooled row; the row struct is re-pointed at its own arrays. */
static const Sluice__V1__Row *
bench_pool_row(uint64_t i)
{
	bench_row *r = &bench_pool[i % BENCH_POOL];
	r->row.kinds = r->kinds;
	r->row.values = r->values;
	return &r->row;
}

typedef struct bench_result {
	uint64_t rows, txns, records, raw_bytes, disk_bytes;
	double write_s, read_s;
} bench_result;

/* bench_write generates the workload into stream "bench" of store. */
static bool
bench_write(sluice_store *store, const sluice_key *key, const sluice_writer_options *wo,
	    uint64_t rows, uint64_t txn_rows, bench_result *res)
{
	sluice_writer *w = NULL;
	bool ok = false;
	uint64_t seed = 0x9E3779B97F4A7C15ULL;
	bench_row oldr;
	bench_make_pool();
	double t0 = bench_now();
	if (!sluice_writer_open(store, "bench", key, wo, &w, NULL))
		return false;
	if (!bench_relation(w))
		goto cleanup;
	uint64_t next_id = 1;
	int64_t now_us = (int64_t)time(NULL) * 1000000;
	uint64_t lsn = 0x16B3748;
	for (uint64_t done = 0; done < rows;) {
		Sluice__V1__Begin b = SLUICE__V1__BEGIN__INIT;
		b.commit_time_us = now_us + (int64_t)res->txns;
		b.has_source_lsn = true;
		b.source_lsn = lsn;
		b.has_source_xid = true;
		b.source_xid = 1000 + res->txns;
		b.origin_node = "bench";
		Sluice__V1__Record rec = SLUICE__V1__RECORD__INIT;
		rec.body_case = SLUICE__V1__RECORD__BODY_BEGIN;
		rec.begin = &b;
		if (!sluice_writer_append(w, &rec))
			goto cleanup;
		res->records++;
		uint64_t n = rows - done < txn_rows ? rows - done : txn_rows;
		for (uint64_t i = 0; i < n; i++) {
			uint64_t pick = bench_rand(&seed) % 10;
			Sluice__V1__Record r = SLUICE__V1__RECORD__INIT;
			Sluice__V1__Insert ins = SLUICE__V1__INSERT__INIT;
			Sluice__V1__Update upd = SLUICE__V1__UPDATE__INIT;
			Sluice__V1__Delete del = SLUICE__V1__DELETE__INIT;
			if (pick < 7 || next_id < 100) {
				ins.relation_id = 16384;
				ins.new_row = (Sluice__V1__Row *)bench_pool_row(next_id++);
				r.body_case = SLUICE__V1__RECORD__BODY_INSERT;
				r.insert = &ins;
			} else if (pick < 9) {
				uint64_t id = 1 + bench_rand(&seed) % (next_id - 1);
				upd.relation_id = 16384;
				upd.new_row = (Sluice__V1__Row *)bench_pool_row(id + 7);
				r.body_case = SLUICE__V1__RECORD__BODY_UPDATE;
				r.update = &upd;
			} else {
				uint64_t id = 1 + bench_rand(&seed) % (next_id - 1);
				oldr = bench_pool[id % BENCH_POOL];
				oldr.row.kinds = oldr.kinds;
				oldr.row.values = oldr.values;
				for (int c = 1; c < BENCH_COLUMNS; c++) {
					oldr.kinds[c] = SLUICE__V1__VALUE_KIND__VALUE_NULL;
					oldr.values[c].len = 0;
				}
				del.relation_id = 16384;
				del.has_old_kind = true;
				del.old_kind = SLUICE__V1__OLD_KIND__OLD_KEY;
				del.old_row = &oldr.row;
				r.body_case = SLUICE__V1__RECORD__BODY_DELETE;
				r.delete_ = &del;
			}
			if (!sluice_writer_append(w, &r))
				goto cleanup;
			res->records++;
		}
		done += n;
		res->rows += n;
		lsn += 64 * n + 56;
		Sluice__V1__Commit c = SLUICE__V1__COMMIT__INIT;
		c.has_end_lsn = true;
		c.end_lsn = lsn;
		c.has_change_count = true;
		c.change_count = (uint32_t)n;
		rec.body_case = SLUICE__V1__RECORD__BODY_COMMIT;
		rec.commit = &c;
		if (!sluice_writer_append(w, &rec))
			goto cleanup;
		res->records++;
		res->txns++;
	}
	if (!sluice_writer_flush(w))
		goto cleanup;
	ok = true;

cleanup:
	if (!sluice_writer_close(w))
		ok = false;
	res->write_s = bench_now() - t0;
	free(bench_pool);
	bench_pool = NULL;
	return ok;
}

/* bench_read reads the stream back through the authenticating reader. */
static bool
bench_read(sluice_store *store, const sluice_trust *trust, bench_result *res)
{
	sluice_reader *r = NULL;
	uint64_t records = 0;
	double t0 = bench_now();
	if (!sluice_reader_open(store, "bench", trust, 1, &r))
		return false;
	for (;;) {
		const sluice_record *rec;
		sluice_reader_status st = sluice_reader_next(r, &rec);
		if (st == SLUICE_READER_WAIT)
			break;
		if (st == SLUICE_READER_REWIND)
			continue;
		if (st == SLUICE_READER_ERROR) {
			sluice_reader_close(r);
			return false;
		}
		records++;
	}
	sluice_reader_close(r);
	res->read_s = bench_now() - t0;
	/* +1 for the relation record written once per segment, at least once. */
	if (records < res->records) {
		sluice_log_error("read back %" PRIu64 " records, wrote %" PRIu64, records,
				 res->records);
		return false;
	}
	return true;
}

/* bench_measure_bytes sums raw (uncompressed) and on-disk bytes of the stream. */
static bool
bench_measure_bytes(sluice_store *store, const sluice_trust *trust, bench_result *res)
{
	uint64_t *firsts = NULL;
	size_t n = 0;
	if (!sluice_store_list(store, "bench", &firsts, &n, NULL))
		return false;
	for (size_t i = 0; i < n; i++) {
		sluice_segment *seg = NULL;
		if (!sluice_store_segment_open(store, "bench", firsts[i], false, false, &seg))
			break;
		uint64_t size = 0;
		(void)sluice_segment_size(seg, &size);
		res->disk_bytes += size;
		sluice_scan *scan = sluice_scan_create(seg, firsts[i], trust);
		sluice_scan_frame f;
		while (sluice_scan_next_header(scan, &f) == SLUICE_SCAN_FRAME)
			res->raw_bytes += f.hdr.raw_len;
		sluice_scan_free(scan);
		sluice_segment_close(seg);
	}
	free(firsts);
	return true;
}

int
cmd_bench_codec(int argc, char **argv)
{
	static const struct option opts[] = {
		{"rows", required_argument, NULL, 'r'},
		{"txn-rows", required_argument, NULL, 't'},
		{"zstd-level", required_argument, NULL, 'z'},
		{"frame-size", required_argument, NULL, 'f'},
		{"dir", required_argument, NULL, 'd'},
		{"segment-size", required_argument, NULL, 'S'},
		{"json", no_argument, NULL, 'j'},
		{"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0},
	};
	uint64_t rows = 1000000, txn_rows = 100, frame = 1024 * 1024;
	uint64_t segsize = 64 * 1024 * 1024;
	int level = 1;
	const char *dir = NULL;
	bool json = false;
	int c;
	while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		switch (c) {
		case 'r':
			if (!cli_parse_u64("--rows", optarg, &rows))
				return SLUICE_EXIT_USAGE;
			break;
		case 't':
			if (!cli_parse_u64("--txn-rows", optarg, &txn_rows) || txn_rows == 0)
				return cli_usage_error("bench-codec",
						       "--txn-rows must be at least 1");
			break;
		case 'z': {
			char *end = NULL;
			long v = strtol(optarg, &end, 10);
			if (end == optarg || *end != '\0' || v < -7 || v > 19)
				return cli_usage_error("bench-codec",
						       "--zstd-level must be -7..19");
			level = (int)v;
			break;
		}
		case 'f':
			if (!cli_parse_u64("--frame-size", optarg, &frame) || frame == 0)
				return cli_usage_error("bench-codec",
						       "--frame-size must be positive");
			break;
		case 'd':
			dir = optarg;
			break;
		case 'S':
			if (!cli_parse_u64("--segment-size", optarg, &segsize) || segsize == 0)
				return cli_usage_error("bench-codec",
						       "--segment-size must be positive");
			break;
		case 'j':
			json = true;
			break;
		case 'h':
			bench_help(stdout);
			return SLUICE_EXIT_OK;
		default:
			return cli_usage_error("bench-codec", "invalid option");
		}
	}

	int rc = SLUICE_EXIT_FAILURE;
	char tmpl[4096];
	char keyprefix[4200], pubpath[4300], cmd[8800];
	bool made_dir = false;
	sluice_key *key = NULL;
	sluice_trust *trust = NULL;
	sluice_store *store = NULL;
	if (dir == NULL) {
		const char *tmp = getenv("TMPDIR");
		snprintf(tmpl, sizeof(tmpl), "%s/sluice-bench-XXXXXX", tmp && *tmp ? tmp : "/tmp");
		if (mkdtemp(tmpl) == NULL) {
			sluice_log_error("could not create scratch directory \"%s\": %m", tmpl);
			return SLUICE_EXIT_FAILURE;
		}
		dir = tmpl;
		made_dir = true;
	} else if (mkdir(dir, 0700) != 0 && errno != EEXIST) {
		sluice_log_error("could not create directory \"%s\": %m", dir);
		return SLUICE_EXIT_FAILURE;
	}
	snprintf(keyprefix, sizeof(keyprefix), "%s/bench", dir);
	snprintf(pubpath, sizeof(pubpath), "%s.pub", keyprefix);
	char id[SLUICE_KEY_ID_HEX_SIZE];
	char keypath[4300];
	snprintf(keypath, sizeof(keypath), "%s.key", keyprefix);
	char storepath[4300];
	snprintf(storepath, sizeof(storepath), "%s/store", dir);
	if (!sluice_keys_generate(keyprefix, true, id) || !sluice_key_load(keypath, &key))
		goto cleanup;
	trust = sluice_trust_create();
	sluice_trust_add(trust, sluice_key_public(key));
	if (!sluice_store_open(storepath, &store))
		goto cleanup;

	sluice_writer_options wo = sluice_writer_default_options();
	wo.zstd_level = level;
	wo.frame_target = (size_t)frame;
	wo.segment_target = segsize;
	bench_result res;
	memset(&res, 0, sizeof(res));
	if (!bench_write(store, key, &wo, rows, txn_rows, &res) ||
	    !bench_read(store, trust, &res) || !bench_measure_bytes(store, trust, &res))
		goto cleanup;

	double mb = (double)res.raw_bytes / 1e6;
	if (json) {
		printf("{\"rows\":%" PRIu64 ",\"transactions\":%" PRIu64 ",\"records\":%" PRIu64
		       ",\"raw_bytes\":%" PRIu64 ",\"disk_bytes\":%" PRIu64
		       ",\"compression_ratio\":%.2f,\"zstd_level\":%d"
		       ",\"write_seconds\":%.3f,\"write_mb_per_s\":%.1f,\"write_records_per_s\":%."
		       "0f"
		       ",\"read_seconds\":%.3f,\"read_mb_per_s\":%.1f,\"read_records_per_s\":%.0f}"
		       "\n",
		       res.rows, res.txns, res.records, res.raw_bytes, res.disk_bytes,
		       (double)res.raw_bytes / (double)res.disk_bytes, level, res.write_s,
		       mb / res.write_s, (double)res.records / res.write_s, res.read_s,
		       mb / res.read_s, (double)res.records / res.read_s);
	} else {
		printf("rows %" PRIu64 ", transactions %" PRIu64 ", records %" PRIu64
		       ", record bytes %.1f MB, on disk %.1f MB (%.2fx, zstd level %d)\n",
		       res.rows, res.txns, res.records, mb, (double)res.disk_bytes / 1e6,
		       (double)res.raw_bytes / (double)res.disk_bytes, level);
		printf("encode+compress+sign+write:      %7.3f s  %8.1f MB/s  %10.0f records/s\n",
		       res.write_s, mb / res.write_s, (double)res.records / res.write_s);
		printf("verify+decompress+decode:        %7.3f s  %8.1f MB/s  %10.0f records/s\n",
		       res.read_s, mb / res.read_s, (double)res.records / res.read_s);
	}
	rc = SLUICE_EXIT_OK;

cleanup:
	sluice_store_close(store);
	sluice_trust_free(trust);
	sluice_key_free(key);
	if (made_dir) {
		snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmpl);
		if (system(cmd) != 0)
			sluice_log_warn("could not remove scratch directory \"%s\"", tmpl);
	}
	return rc;
}
