/* sluice verify: check every frame, the chain and txseq density of a stream. */
#include "cmd_verify.h"

#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "buf.h"
#include "cli.h"
#include "json.h"
#include "log.h"
#include "verify.h"

static void
verify_help(FILE *f)
{
	fprintf(f,
		"Usage: sluice verify --store S --stream NAME --trust PUB [--trust PUB2 ...]\n"
		"                     [--strict] [--json] [--max-age DURATION]\n"
		"\n"
		"Authenticate every frame of a stream (Ed25519 signature by the key in force,\n"
		"then BLAKE2b payload hash) and check the hash chain across all segments, txseq\n"
		"density, segment names, seals, and the order of records inside frames.\n"
		"Prints one line per problem naming segment, frame offset and cause, then a\n"
		"summary with the newest commit time and the newest signed heartbeat time\n"
		"and age. A cut or rolled-back stream looks whole; only its age shows it.\n"
		"Keys are bound to the stream: its first frame must be signed by a --trust\n"
		"root, every later frame by the key in force, which only a handover signed\n"
		"by it changes (sluice rotate-key). Trusting the root suffices.\n"
		"\n"
		"Options:\n"
		"  -s, --store S       store: a directory PATH or file://PATH, or\n"
		"                      s3://BUCKET/PREFIX[?endpoint=URL&region=R&path_style=1]\n"
		"  -n, --stream NAME   stream name\n"
		"  -t, --trust PUB     root public key file the stream may start with\n"
		"                      (repeatable)\n"
		"      --strict        treat warnings (torn tail, unfinished last transaction,\n"
		"                      stray files) as problems\n"
		"      --json          findings and summary as JSON lines\n"
		"      --max-age D     a problem if the newest signed heartbeat is older than D\n"
		"                      (or there is none): seconds, or with s, m, h or d (\"5m\")\n"
		"  -h, --help          show this help\n"
		"\n"
		"Exit status: 0 the stream is whole (a torn tail of the newest segment is a\n"
		"warning), 1 problems found, 2 usage error, 3 the store could not be read.\n");
}

typedef struct verify_out {
	bool json;
	bool strict;
} verify_out;

static void
verify_print_finding(void *ctx, bool is_error, const char *segment, int64_t frame_offset,
		     const char *cause)
{
	verify_out *o = ctx;
	bool as_error = is_error || o->strict;
	if (o->json) {
		sluice_buf b = {0};
		sluice_buf_printf(&b,
				  "{\"type\":\"%s\",\"segment\":", as_error ? "error" : "warning");
		if (segment)
			sluice_json_append_string(&b, segment, strlen(segment));
		else
			sluice_buf_append_str(&b, "null");
		if (frame_offset >= 0)
			sluice_buf_printf(&b, ",\"offset\":%" PRId64, frame_offset);
		sluice_buf_append_str(&b, ",\"cause\":");
		sluice_json_append_string(&b, cause, strlen(cause));
		sluice_buf_append_str(&b, "}\n");
		fwrite(b.data, 1, b.len, stdout);
		sluice_buf_free(&b);
		return;
	}
	const char *kind = as_error ? "error" : "warning";
	if (segment && frame_offset >= 0)
		printf("%s: %s: offset %" PRId64 ": %s\n", kind, segment, frame_offset, cause);
	else if (segment)
		printf("%s: %s: %s\n", kind, segment, cause);
	else
		printf("%s: %s\n", kind, cause);
}

int
cmd_verify(int argc, char **argv)
{
	static const struct option opts[] = {
		{"store", required_argument, NULL, 's'}, {"stream", required_argument, NULL, 'n'},
		{"trust", required_argument, NULL, 't'}, {"strict", no_argument, NULL, 'S'},
		{"json", no_argument, NULL, 'j'},        {"max-age", required_argument, NULL, 'A'},
		{"help", no_argument, NULL, 'h'},        {NULL, 0, NULL, 0},
	};
	const char *store_spec = NULL, *stream = NULL;
	char **trust_paths = calloc((size_t)argc + 1, sizeof(char *));
	size_t ntrust = 0;
	verify_out out = {0};
	int64_t max_age_us = 0;
	int rc = SLUICE_EXIT_FAILURE;
	sluice_store *store = NULL;
	sluice_trust *trust = NULL;
	int c;
	if (trust_paths == NULL)
		abort();
	while ((c = getopt_long(argc, argv, "s:n:t:h", opts, NULL)) != -1) {
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
		case 'S':
			out.strict = true;
			break;
		case 'j':
			out.json = true;
			break;
		case 'A':
			if (!cli_parse_duration("--max-age", optarg, &max_age_us)) {
				rc = SLUICE_EXIT_USAGE;
				goto cleanup;
			}
			break;
		case 'h':
			verify_help(stdout);
			rc = SLUICE_EXIT_OK;
			goto cleanup;
		default:
			rc = cli_usage_error("verify", "invalid option");
			goto cleanup;
		}
	}
	if (optind < argc) {
		rc = cli_usage_error("verify", "unexpected argument \"%s\"", argv[optind]);
		goto cleanup;
	}
	if (store_spec == NULL || stream == NULL || ntrust == 0) {
		rc = cli_usage_error("verify", "--store, --stream and at least one --trust are "
					       "required");
		goto cleanup;
	}
	if (!sluice_store_valid_stream_name(stream)) {
		rc = cli_usage_error("verify", "invalid stream name \"%s\"", stream);
		goto cleanup;
	}
	trust = cli_load_trust(trust_paths, ntrust);
	if (trust == NULL)
		goto cleanup;
	if (!sluice_store_open(store_spec, &store))
		goto cleanup;

	sluice_verify_report rep;
	if (!sluice_verify_stream(store, stream, trust, verify_print_finding, &out, &rep))
		goto cleanup;

	int64_t now = cli_now_us();
	if (max_age_us > 0 &&
	    (rep.newest_heartbeat_us == 0 || now - rep.newest_heartbeat_us > max_age_us)) {
		char cause[256];
		if (rep.newest_heartbeat_us == 0)
			snprintf(cause, sizeof(cause),
				 "the stream holds no signed heartbeat (--max-age %" PRId64 " s)",
				 max_age_us / 1000000);
		else
			snprintf(cause, sizeof(cause),
				 "newest signed heartbeat is %" PRId64
				 " s old, older than --max-age %" PRId64
				 " s: the source stopped writing, or the stream was cut or rolled "
				 "back",
				 (now - rep.newest_heartbeat_us) / 1000000, max_age_us / 1000000);
		rep.problems++;
		verify_print_finding(&out, true, NULL, -1, cause);
	}
	uint64_t problems = rep.problems + (out.strict ? rep.warnings : 0);
	sluice_buf fresh = {0};
	cli_append_freshness(&fresh, out.json, rep.newest_commit_us, rep.newest_heartbeat_us, now);
	sluice_buf_append_byte(&fresh, 0);
	char size[32];
	cli_format_bytes(rep.bytes, size, sizeof(size));
	if (out.json) {
		printf("{\"type\":\"summary\",\"stream\":\"%s\",\"segments\":%" PRIu64
		       ",\"frames\":%" PRIu64 ",\"transactions\":%" PRIu64 ",\"records\":%" PRIu64
		       ",\"bytes\":%" PRIu64 ",\"first_txseq\":%" PRIu64 ",\"last_txseq\":%" PRIu64
		       ",\"problems\":%" PRIu64 ",\"warnings\":%" PRIu64
		       "%s,\"torn\":%s,\"ok\":%s}\n",
		       stream, rep.segments, rep.frames, rep.transactions, rep.records, rep.bytes,
		       rep.first_txseq, rep.last_txseq, rep.problems, rep.warnings,
		       (const char *)fresh.data, rep.torn ? "true" : "false",
		       problems == 0 ? "true" : "false");
	} else {
		printf("stream %s: %" PRIu64 " segments, %" PRIu64 " frames, %" PRIu64
		       " transactions (txseq %" PRIu64 "..%" PRIu64 "), %" PRIu64 " records, %s: ",
		       stream, rep.segments, rep.frames, rep.transactions, rep.first_txseq,
		       rep.last_txseq, rep.records, size);
		if (problems == 0)
			printf("OK%s\n", rep.warnings ? " (with warnings)" : "");
		else
			printf("%" PRIu64 " problem%s\n", problems, problems == 1 ? "" : "s");
		printf("stream %s: %s\n", stream, (const char *)fresh.data);
	}
	sluice_buf_free(&fresh);
	rc = problems == 0 ? SLUICE_EXIT_OK : SLUICE_EXIT_PROBLEM;

cleanup:
	sluice_store_close(store);
	sluice_trust_free(trust);
	free(trust_paths);
	return rc;
}
