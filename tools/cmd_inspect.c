/* sluice inspect: list segments and frames of a stream, or print its records. */
#include "cmd_inspect.h"

#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "buf.h"
#include "chain.h"
#include "cursor.h"
#include "cli.h"
#include "json.h"
#include "log.h"
#include "print.h"
#include "reader.h"
#include "scan.h"

static void
inspect_help(FILE *f)
{
	fprintf(f, "Usage: sluice inspect --store S --stream NAME [--trust PUB ...] [--json]\n"
		   "                      [--from TXSEQ] [--limit N] [--records [--full-values]]\n"
		   "\n"
		   "Without --records: list segments and their frames (txseq and commit time\n"
		   "ranges, record counts, sizes, compression ratio). With --trust every frame\n"
		   "is authenticated first and must link to the chain before it; the listing\n"
		   "stops at the first that does not. Without --trust the headers are shown\n"
		   "as unverified. With --trust, a last line gives the newest commit time and\n"
		   "the newest signed heartbeat time and age (as verify does).\n"
		   "\n"
		   "With --records (needs --trust): print every transaction and change, as\n"
		   "readable text or, with --json, one JSON object per record with at least\n"
		   "\"type\" and \"txseq\" (row changes also \"relation\" and their values).\n"
		   "Records are only decoded after their frame is authenticated. A value longer\n"
		   "than 1 MiB (without --full-values) is printed as its first 1 MiB: in JSON\n"
		   "as {\"truncated\":true,\"bytes\":N,\"prefix\":...} in place of the value,\n"
		   "the prefix written as the value would be (a string, base64, Extended JSON\n"
		   "text), in text followed by ...<N bytes>.\n"
		   "MongoDB documents (raw BSON) are printed as canonical Extended JSON with\n"
		   "--json, next to their bytes in base64 (NAME_bson_base64), and as relaxed\n"
		   "Extended JSON in text; bytes that are not a valid document only in base64,\n"
		   "with NAME_invalid (docs/format.md 13.1).\n"
		   "\n"
		   "Options:\n"
		   "  -s, --store S       store: a directory PATH or file://PATH, or\n"
		   "                      s3://BUCKET/PREFIX[?endpoint=URL&region=R&path_style=1]\n"
		   "  -n, --stream NAME   stream name\n"
		   "  -t, --trust PUB     root public key file (repeatable); from txseq 1 the\n"
		   "                      root suffices, from a later --from the key in force\n"
		   "                      there is needed (after sluice rotate-key)\n"
		   "      --json          JSON lines instead of text\n"
		   "      --from TXSEQ    start at this transaction\n"
		   "      --limit N       at most N frames (listing) or transactions (--records)\n"
		   "  -r, --records       print records\n"
		   "      --full-values   with --records: print every value whole, however long\n"
		   "                      (MongoDB documents up to 16 MiB, PostgreSQL values up\n"
		   "                      to 1 GiB: what a frame can hold), e.g. to replay them\n"
		   "  -h, --help          show this help\n"
		   "\n"
		   "Exit status: 0 done, 1 a frame failed authentication or the stream is\n"
		   "damaged, 2 usage error, 3 the store or a key could not be read.\n");
}

typedef struct inspect_opts {
	bool json;
	size_t max_value; /* longest value printed whole (--records) */
	uint64_t from;
	uint64_t limit; /* 0 = no limit */
} inspect_opts;

/* Newest commit and heartbeat times seen in authenticated records. */
typedef struct inspect_fresh {
	int64_t commit_us, heartbeat_us;
} inspect_fresh;

static void
inspect_note_times(inspect_fresh *fr, const sluice_record *rec)
{
	if (rec->body_case == SLUICE__V1__RECORD__BODY_COMMIT &&
	    rec->commit->commit_time_us > fr->commit_us)
		fr->commit_us = rec->commit->commit_time_us;
	else if (rec->body_case == SLUICE__V1__RECORD__BODY_HEARTBEAT &&
		 rec->heartbeat->time_us > fr->heartbeat_us)
		fr->heartbeat_us = rec->heartbeat->time_us;
}

/* inspect_print_fresh prints the stream's freshness line (verify prints the same). */
static void
inspect_print_fresh(const inspect_opts *o, const char *stream, const inspect_fresh *fr)
{
	sluice_buf b = {0};
	if (o->json) {
		sluice_buf_append_str(&b, "{\"type\":\"stream\",\"stream\":");
		sluice_json_append_string(&b, stream, strlen(stream));
	} else
		sluice_buf_printf(&b, "stream %s: ", stream);
	cli_append_freshness(&b, o->json, fr->commit_us, fr->heartbeat_us, cli_now_us());
	sluice_buf_append_str(&b, o->json ? "}\n" : "\n");
	fwrite(b.data, 1, b.len, stdout);
	sluice_buf_free(&b);
}

/* inspect_records prints records through an authenticating reader. */
static int
inspect_records(sluice_store *store, const char *stream, const sluice_trust *trust,
		const inspect_opts *o)
{
	sluice_reader *r = NULL;
	sluice_buf line = {0};
	int rc = SLUICE_EXIT_FAILURE;
	uint64_t done = 0;
	inspect_fresh fr = {0, 0};
	if (!sluice_reader_open(store, stream, trust, o->from, &r))
		goto cleanup;
	for (;;) {
		const sluice_record *rec;
		sluice_reader_status st = sluice_reader_next(r, &rec);
		if (st == SLUICE_READER_WAIT)
			break;
		if (st == SLUICE_READER_REWIND)
			continue; /* a writer restarted meanwhile; it is logged */
		if (st == SLUICE_READER_ERROR) {
			rc = SLUICE_EXIT_PROBLEM;
			goto cleanup;
		}
		inspect_note_times(&fr, rec);
		sluice_buf_reset(&line);
		print_record(&line, o->json, rec, sluice_reader_position_get(r)->txseq, r,
			     o->max_value);
		fwrite(line.data, 1, line.len, stdout);
		if (rec->body_case == SLUICE__V1__RECORD__BODY_COMMIT ||
		    rec->body_case == SLUICE__V1__RECORD__BODY_SNAPSHOT_END) {
			done++;
			if (o->limit && done >= o->limit)
				break;
		}
	}
	inspect_print_fresh(o, stream, &fr);
	rc = SLUICE_EXIT_OK;

cleanup:
	sluice_buf_free(&line);
	sluice_reader_close(r);
	return rc;
}

/* Totals of one segment for its summary line. */
typedef struct inspect_seg {
	uint64_t frames, records, raw, payload;
	uint64_t txseq_first, txseq_next;
	int64_t tmin, tmax;
	bool have_time, sealed, open_end, torn, bad;
} inspect_seg;

static void
inspect_print_frame(const inspect_opts *o, const char *name, const sluice_scan_frame *f,
		    bool verified)
{
	const sluice_frame_header *h = &f->hdr;
	char key[SLUICE_KEY_ID_HEX_SIZE];
	sluice_keys_id_hex(h->key_id, key);
	char flags[64];
	snprintf(flags, sizeof(flags), "%s%s%s%s", (h->flags & SLUICE_FRAME_FIRST) ? ",first" : "",
		 (h->flags & SLUICE_FRAME_CONT) ? ",cont" : "",
		 (h->flags & SLUICE_FRAME_OPEN) ? ",open" : "",
		 (h->flags & SLUICE_FRAME_SEAL) ? ",seal" : "");
	const char *fl = flags[0] ? flags + 1 : flags;
	double ratio = h->payload_len ? (double)h->raw_len / h->payload_len : 0;
	if (o->json) {
		printf("{\"type\":\"frame\",\"segment\":\"%s\",\"offset\":%" PRIu64
		       ",\"frame_seq\":%" PRIu64 ",\"txseq_start\":%" PRIu64
		       ",\"txseq_end\":%" PRIu64 ",\"records\":%" PRIu32 ",\"raw_bytes\":%" PRIu32
		       ",\"payload_bytes\":%" PRIu32
		       ",\"compression_ratio\":%.2f,\"time_min_us\":%" PRId64
		       ",\"time_max_us\":%" PRId64
		       ",\"key_id\":\"%s\",\"flags\":\"%s\",\"verified\":%s}\n",
		       name, f->offset, h->frame_seq, h->txseq_start, h->txseq_end, h->record_count,
		       h->raw_len, h->payload_len, ratio, h->time_min, h->time_max, key, fl,
		       verified ? "true" : "false");
	} else {
		printf("  frame %" PRIu64 " @%" PRIu64 ": txseq %" PRIu64 "..%" PRIu64 ", %" PRIu32
		       " records, %" PRIu32 " -> %" PRIu32 " bytes (%.2fx), key %s%s%s%s\n",
		       h->frame_seq, f->offset, h->txseq_start, h->txseq_end, h->record_count,
		       h->raw_len, h->payload_len, ratio, key, fl[0] ? ", " : "", fl,
		       verified ? "" : " [unverified]");
	}
}

static void
inspect_print_segment(const inspect_opts *o, const char *name, uint64_t size, const inspect_seg *s,
		      bool verified)
{
	char tmin[64] = "-", tmax[64] = "-", sz[32], raw[32];
	if (s->have_time) {
		cli_format_time(s->tmin, tmin, sizeof(tmin));
		cli_format_time(s->tmax, tmax, sizeof(tmax));
	}
	cli_format_bytes(size, sz, sizeof(sz));
	cli_format_bytes(s->raw, raw, sizeof(raw));
	double ratio = s->payload ? (double)s->raw / s->payload : 0;
	uint64_t last = s->txseq_next > 0 ? s->txseq_next - 1 : 0;
	const char *state = s->bad      ? "damaged"
			    : s->torn   ? "torn tail"
			    : s->sealed ? "sealed"
					: "open";
	if (o->json) {
		printf("{\"type\":\"segment\",\"name\":\"%s\",\"size\":%" PRIu64
		       ",\"frames\":%" PRIu64 ",\"records\":%" PRIu64 ",\"txseq_first\":%" PRIu64
		       ",\"txseq_last\":%" PRIu64
		       ",\"time_min\":\"%s\",\"time_max\":\"%s\",\"raw_bytes\":%" PRIu64
		       ",\"compression_ratio\":%.2f,\"state\":\"%s\",\"verified\":%s}\n",
		       name, size, s->frames, s->records, s->txseq_first, last, tmin, tmax, s->raw,
		       ratio, state, verified ? "true" : "false");
	} else {
		printf("segment %s: %s, %" PRIu64 " frames, %" PRIu64 " records, txseq %" PRIu64
		       "..%" PRIu64 ", time %s .. %s, %s raw (%.2fx), %s%s\n",
		       name, sz, s->frames, s->records, s->txseq_first, last, tmin, tmax, raw,
		       ratio, state, verified ? "" : ", unverified");
	}
}

/*
 * inspect_frame_times decodes the records of an authenticated, linked frame
 * for the newest commit and heartbeat times.
 * @return NULL, or why the records are not whole.
 */
static const char *
inspect_frame_times(sluice_cursor *cursor, sluice_chain *chain, const sluice_scan_frame *f,
		    inspect_fresh *fr)
{
	if (sluice_cursor_load(cursor, f) != SLUICE_CURSOR_END)
		return sluice_cursor_cause(cursor);
	const sluice_record *rec;
	sluice_cursor_status st;
	while ((st = sluice_cursor_next(cursor, chain, &rec)) == SLUICE_CURSOR_RECORD)
		inspect_note_times(fr, rec);
	return st == SLUICE_CURSOR_END ? NULL : sluice_cursor_cause(cursor);
}

/* inspect_list lists segments and frames; authenticates when trust is given. */
static int
inspect_list(sluice_store *store, const char *stream, const sluice_trust *trust,
	     const inspect_opts *o)
{
	uint64_t *firsts = NULL;
	size_t n = 0;
	int rc = SLUICE_EXIT_OK;
	uint64_t listed = 0;
	if (o->from > 1) /* segments wholly before --from are skipped: need not be replayed */
		sluice_store_read_from(store, stream, o->from);
	if (!sluice_store_list(store, stream, &firsts, &n, NULL))
		return SLUICE_EXIT_FAILURE;
	if (n == 0) {
		sluice_log_error("stream \"%s\" has no segments in store \"%s\"", stream,
				 sluice_store_location(store));
		free(firsts);
		return SLUICE_EXIT_FAILURE;
	}
	/* With --trust a frame is verified only when it also links to the chain before it. */
	sluice_chain chain;
	sluice_chain_init_unanchored(&chain, stream);
	bool stop = false;
	inspect_fresh fr = {0, 0};
	sluice_cursor *cursor = trust ? sluice_cursor_create() : NULL;
	for (size_t i = 0; i < n && !stop; i++) {
		/* Skip segments wholly before --from. */
		if (o->from && i + 1 < n && firsts[i + 1] <= o->from)
			continue;
		char name[SLUICE_SEGMENT_NAME_SIZE];
		sluice_store_segment_name(firsts[i], name);
		if (i == 0 && firsts[0] == 1)
			sluice_chain_init(&chain, stream);
		sluice_chain_segment_start(&chain);
		sluice_segment *seg = NULL;
		if (!sluice_store_segment_open(store, stream, firsts[i], false, false, &seg)) {
			rc = SLUICE_EXIT_FAILURE;
			break;
		}
		uint64_t size = 0;
		(void)sluice_segment_size(seg, &size);
		sluice_scan *scan = sluice_scan_create(seg, firsts[i], trust);
		inspect_seg s;
		memset(&s, 0, sizeof(s));
		for (;;) {
			sluice_scan_frame f;
			sluice_scan_status st = trust ? sluice_scan_next(scan, &chain, &f)
						      : sluice_scan_next_header(scan, &f);
			if (st == SLUICE_SCAN_END)
				break;
			if (st == SLUICE_SCAN_TORN && (!trust || i + 1 == n)) {
				s.torn = true;
				break;
			}
			sluice_chain_status cs = SLUICE_CHAIN_OK;
			const char *record_problem = NULL;
			if (st == SLUICE_SCAN_FRAME && trust)
				cs = sluice_chain_frame(&chain, &f.hdr, f.hash, f.offset == 0,
							firsts[i]);
			if (st == SLUICE_SCAN_FRAME && trust && cs == SLUICE_CHAIN_OK)
				record_problem = inspect_frame_times(cursor, &chain, &f, &fr);
			if (st != SLUICE_SCAN_FRAME || cs != SLUICE_CHAIN_OK ||
			    record_problem != NULL) {
				char key[256];
				sluice_scan_key_problem(&f, key, sizeof(key));
				const char *why = record_problem != NULL ? record_problem
						  : cs != SLUICE_CHAIN_OK
							  ? sluice_chain_strerror(cs)
						  : st == SLUICE_SCAN_UNTRUSTED ? key
						  : st == SLUICE_SCAN_TORN
							  ? "incomplete frame in a segment that is "
							    "not the newest"
							  : sluice_scan_cause(&f);
				sluice_log_error("segment %s: frame at offset %" PRIu64 ": %s",
						 name, f.offset, why);
				s.bad = true;
				rc = SLUICE_EXIT_PROBLEM;
				stop = true; /* nothing after it can be shown as verified */
				break;
			}
			const sluice_frame_header *h = &f.hdr;
			if (s.frames == 0)
				s.txseq_first = h->txseq_start;
			s.frames++;
			s.records += h->record_count;
			s.raw += h->raw_len;
			s.payload += h->payload_len;
			s.txseq_next = h->txseq_end;
			s.open_end = (h->flags & SLUICE_FRAME_OPEN) != 0;
			if (h->flags & SLUICE_FRAME_SEAL)
				s.sealed = true;
			if (h->time_min || h->time_max) {
				if (!s.have_time || h->time_min < s.tmin)
					s.tmin = h->time_min;
				if (!s.have_time || h->time_max > s.tmax)
					s.tmax = h->time_max;
				s.have_time = true;
			}
			if (!o->limit || listed < o->limit) {
				if (!o->json && s.frames == 1)
					printf("%s\n", name);
				inspect_print_frame(o, name, &f, trust != NULL);
				listed++;
			}
		}
		inspect_print_segment(o, name, size, &s, trust != NULL);
		sluice_scan_free(scan);
		sluice_segment_close(seg);
	}
	if (trust != NULL && rc == SLUICE_EXIT_OK)
		inspect_print_fresh(o, stream, &fr);
	sluice_cursor_free(cursor);
	free(firsts);
	return rc;
}

int
cmd_inspect(int argc, char **argv)
{
	static const struct option opts[] = {
		{"store", required_argument, NULL, 's'}, {"stream", required_argument, NULL, 'n'},
		{"trust", required_argument, NULL, 't'}, {"json", no_argument, NULL, 'j'},
		{"from", required_argument, NULL, 'F'},  {"limit", required_argument, NULL, 'L'},
		{"records", no_argument, NULL, 'r'},     {"full-values", no_argument, NULL, 'V'},
		{"help", no_argument, NULL, 'h'},        {NULL, 0, NULL, 0},
	};
	const char *store_spec = NULL, *stream = NULL;
	char **trust_paths = calloc((size_t)argc + 1, sizeof(char *));
	size_t ntrust = 0;
	bool records = false;
	inspect_opts o = {.max_value = PRINT_MAX_VALUE};
	int rc = SLUICE_EXIT_FAILURE;
	sluice_store *store = NULL;
	sluice_trust *trust = NULL;
	int c;
	if (trust_paths == NULL)
		abort();
	while ((c = getopt_long(argc, argv, "s:n:t:rh", opts, NULL)) != -1) {
		switch (c) {
		case 's':
			store_spec = optarg;
			break;
		case 'n':
			stream = optarg;
			break;
		case 't':
			trust_paths[ntrust++] = optarg;
			break;
		case 'j':
			o.json = true;
			break;
		case 'F':
			if (!cli_parse_u64("--from", optarg, &o.from)) {
				rc = SLUICE_EXIT_USAGE;
				goto cleanup;
			}
			break;
		case 'L':
			if (!cli_parse_u64("--limit", optarg, &o.limit)) {
				rc = SLUICE_EXIT_USAGE;
				goto cleanup;
			}
			break;
		case 'r':
			records = true;
			break;
		case 'V':
			o.max_value = SIZE_MAX;
			break;
		case 'h':
			inspect_help(stdout);
			rc = SLUICE_EXIT_OK;
			goto cleanup;
		default:
			rc = cli_usage_error("inspect", "invalid option");
			goto cleanup;
		}
	}
	if (optind < argc) {
		rc = cli_usage_error("inspect", "unexpected argument \"%s\"", argv[optind]);
		goto cleanup;
	}
	if (store_spec == NULL || stream == NULL) {
		rc = cli_usage_error("inspect", "--store and --stream are required");
		goto cleanup;
	}
	if (!sluice_store_valid_stream_name(stream)) {
		rc = cli_usage_error("inspect", "invalid stream name \"%s\"", stream);
		goto cleanup;
	}
	if (o.max_value == SIZE_MAX && !records) {
		rc = cli_usage_error("inspect", "--full-values applies to --records only");
		goto cleanup;
	}
	if (records && ntrust == 0) {
		rc = cli_usage_error("inspect", "--records needs --trust: records are decoded only "
						"after their frame is authenticated");
		goto cleanup;
	}
	if (ntrust > 0 && (trust = cli_load_trust(trust_paths, ntrust)) == NULL)
		goto cleanup;
	if (!sluice_store_open(store_spec, &store))
		goto cleanup;
	rc = records ? inspect_records(store, stream, trust, &o)
		     : inspect_list(store, stream, trust, &o);

cleanup:
	sluice_store_close(store);
	sluice_trust_free(trust);
	free(trust_paths);
	return rc;
}
