/* sluice copy: copy the sealed segments of a stream between two stores, verifying every frame. */
#include "cmd_copy.h"

#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "buf.h"
#include "chain.h"
#include "cli.h"
#include "clock.h"
#include "log.h"
#include "scan.h"

static void
copy_help(FILE *f)
{
	fprintf(f,
		"Usage: sluice copy --from STORE --to STORE --stream NAME --trust PUB\n"
		"                   [--trust PUB2 ...] [--from-txseq N] [--until-txseq N]\n"
		"                   [--follow]\n"
		"\n"
		"Copy the sealed segments of a stream from one store to another, byte for byte\n"
		"(a directory, file://PATH or s3://BUCKET/PREFIX on either side). Every frame is\n"
		"authenticated and chain-checked on the way; a segment that does not verify is\n"
		"not copied. Segments the destination already holds are skipped, so a copy can\n"
		"be repeated or resumed; a destination segment is never replaced (one with other\n"
		"contents is an error; one that holds only the segment's start, a partial\n"
		"upload a server kept, is completed). The open (unsealed) segment of a live\n"
		"stream is copied once it is sealed.\n"
		"\n"
		"Options:\n"
		"      --from STORE     store to read\n"
		"      --to STORE       store to write\n"
		"  -n, --stream NAME    stream name (the same in both stores)\n"
		"  -t, --trust PUB      root public key file the stream may start with\n"
		"                       (repeatable)\n"
		"      --from-txseq N   start with the segment holding transaction N\n"
		"      --until-txseq N  stop after the segment holding transaction N\n"
		"      --follow         keep copying segments as they are sealed, until\n"
		"                       SIGINT/SIGTERM\n"
		"  -h, --help           show this help\n"
		"\n"
		"Exit status: 0 copied (or nothing to copy), 1 a segment did not verify or the\n"
		"destination holds a different segment, 2 usage error, 3 a store could not be\n"
		"read or written.\n");
}

/* copy_contains tells whether sorted list holds v. */
static bool
copy_contains(const uint64_t *list, size_t n, uint64_t v)
{
	size_t lo = 0, hi = n;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		if (list[mid] == v)
			return true;
		if (list[mid] < v)
			lo = mid + 1;
		else
			hi = mid;
	}
	return false;
}

/* copy_dest_size reads the size of segment first in the destination. */
static bool
copy_dest_size(sluice_store *to, const char *stream, uint64_t first, uint64_t *size)
{
	sluice_segment *seg = NULL;
	bool ok = sluice_store_segment_open(to, stream, first, false, false, &seg) &&
		  sluice_segment_size(seg, size);
	sluice_segment_close(seg);
	return ok;
}

typedef enum copy_status {
	COPY_DONE,     /* verified (and stored, unless skipped) */
	COPY_UNSEALED, /* not sealed yet: the live end */
	COPY_PROBLEM,  /* did not verify */
	COPY_IO,
} copy_status;

/*
 * copy_segment verifies segment first of the source along chain and, unless
 * skip, puts its bytes into the destination.
 */
static copy_status
copy_segment(sluice_store *from, sluice_store *to, const char *stream, uint64_t first,
	     const sluice_trust *trust, sluice_chain *chain, bool skip)
{
	copy_status result = COPY_IO;
	sluice_segment *seg = NULL;
	sluice_scan *scan = NULL;
	sluice_buf bytes = {0};
	char name[SLUICE_SEGMENT_NAME_SIZE];
	sluice_store_segment_name(first, name);
	sluice_chain before = *chain;
	if (!sluice_store_segment_open(from, stream, first, false, false, &seg))
		goto cleanup;
	scan = sluice_scan_create(seg, first, trust);
	sluice_chain_segment_start(chain);
	bool sealed = false;
	for (;;) {
		sluice_scan_frame f;
		sluice_scan_status st = sluice_scan_next(scan, chain, &f);
		if (st == SLUICE_SCAN_END || st == SLUICE_SCAN_TORN) {
			if (!sealed) {
				*chain = before;
				result = COPY_UNSEALED;
				goto cleanup;
			}
			if (st == SLUICE_SCAN_TORN) {
				sluice_log_error(
					"segment %s: bytes follow the seal at offset %" PRIu64,
					name, f.offset);
				result = COPY_PROBLEM;
				goto cleanup;
			}
			break;
		}
		if (st == SLUICE_SCAN_IO)
			goto cleanup;
		if (st == SLUICE_SCAN_UNTRUSTED) {
			char why[256];
			sluice_scan_key_problem(&f, why, sizeof(why));
			sluice_log_error("could not verify frame %" PRIu64
					 " of segment %s at offset "
					 "%" PRIu64 ": %s",
					 f.hdr.frame_seq, name, f.offset, why);
			result = COPY_PROBLEM;
			goto cleanup;
		}
		if (st == SLUICE_SCAN_BAD) {
			sluice_log_error("could not verify frame at offset %" PRIu64
					 " of segment %s: %s",
					 f.offset, name, sluice_scan_cause(&f));
			result = COPY_PROBLEM;
			goto cleanup;
		}
		if (sealed) {
			sluice_log_error("segment %s: a frame follows the seal at offset %" PRIu64,
					 name, f.offset);
			result = COPY_PROBLEM;
			goto cleanup;
		}
		sluice_chain_status cs =
			sluice_chain_frame(chain, &f.hdr, f.hash, f.offset == 0, first);
		if (cs != SLUICE_CHAIN_OK) {
			sluice_log_error(
				"could not verify frame %" PRIu64 " of segment %s at offset "
				"%" PRIu64 ": %s",
				f.hdr.frame_seq, name, f.offset, sluice_chain_strerror(cs));
			result = COPY_PROBLEM;
			goto cleanup;
		}
		if (f.hdr.flags & SLUICE_FRAME_SEAL)
			sealed = true;
	}
	/* The verified length: a sealed segment ends at its seal. */
	uint64_t size = sluice_scan_offset(scan);
	if (skip) {
		/*
		 * A segment of the same size is this one (the put below compares
		 * bytes); another size is a partial upload a server kept, or
		 * another writer's: the put completes the one and refuses the other.
		 */
		uint64_t have = 0;
		if (!copy_dest_size(to, stream, first, &have))
			goto cleanup;
		if (have == size) {
			result = COPY_DONE;
			goto cleanup;
		}
	}
	sluice_buf_reserve(&bytes, (size_t)size);
	size_t got = 0;
	if (!sluice_segment_read(seg, 0, bytes.data, (size_t)size, &got))
		goto cleanup;
	if (got != size) {
		sluice_log_error("segment %s changed while it was copied", name);
		goto cleanup;
	}
	bytes.len = got;
	if (!sluice_store_segment_put(to, stream, first, bytes.data, bytes.len)) {
		/* Refused (another segment is there), or the store failed. */
		bool there = false;
		if (sluice_store_segment_probe(to, stream, first, &there) && there)
			result = COPY_PROBLEM;
		goto cleanup;
	}
	sluice_log_info("copied segment %s (%" PRIu64 " bytes, txseq %" PRIu64 "..%" PRIu64 ")",
			name, size, first, chain->txseq_end - 1);
	result = COPY_DONE;

cleanup:
	sluice_buf_free(&bytes);
	sluice_scan_free(scan);
	sluice_segment_close(seg);
	return result;
}

int
cmd_copy(int argc, char **argv)
{
	static const struct option opts[] = {
		{"from", required_argument, NULL, 'F'},
		{"to", required_argument, NULL, 'T'},
		{"stream", required_argument, NULL, 'n'},
		{"trust", required_argument, NULL, 't'},
		{"from-txseq", required_argument, NULL, 'a'},
		{"until-txseq", required_argument, NULL, 'u'},
		{"follow", no_argument, NULL, 'f'},
		{"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0},
	};
	const char *from_spec = NULL, *to_spec = NULL, *stream = NULL;
	char **trust_paths = calloc((size_t)argc + 1, sizeof(char *));
	size_t ntrust = 0;
	uint64_t from_txseq = 1, until_txseq = UINT64_MAX;
	bool follow = false;
	int rc = SLUICE_EXIT_FAILURE;
	sluice_store *from = NULL, *to = NULL;
	sluice_trust *trust = NULL;
	uint64_t *src = NULL, *dst = NULL;
	size_t nsrc = 0, ndst = 0;
	int c;
	if (trust_paths == NULL)
		abort();
	while ((c = getopt_long(argc, argv, "n:t:h", opts, NULL)) != -1) {
		switch (c) {
		case 'F':
			from_spec = optarg;
			break;
		case 'T':
			to_spec = optarg;
			break;
		case 'n':
			stream = optarg;
			break;
		case 't':
			trust_paths[ntrust++] = optarg;
			break;
		case 'a':
		case 'u':
			if (!cli_parse_u64(c == 'a' ? "--from-txseq" : "--until-txseq", optarg,
					   c == 'a' ? &from_txseq : &until_txseq)) {
				rc = SLUICE_EXIT_USAGE;
				goto cleanup;
			}
			break;
		case 'f':
			follow = true;
			break;
		case 'h':
			copy_help(stdout);
			rc = SLUICE_EXIT_OK;
			goto cleanup;
		default:
			rc = cli_usage_error("copy", "invalid option");
			goto cleanup;
		}
	}
	if (optind < argc) {
		rc = cli_usage_error("copy", "unexpected argument \"%s\"", argv[optind]);
		goto cleanup;
	}
	if (from_spec == NULL || to_spec == NULL || stream == NULL || ntrust == 0) {
		rc = cli_usage_error("copy", "--from, --to, --stream and at least one --trust are "
					     "required");
		goto cleanup;
	}
	if (!sluice_store_valid_stream_name(stream)) {
		rc = cli_usage_error("copy", "invalid stream name \"%s\"", stream);
		goto cleanup;
	}
	if (from_txseq == 0)
		from_txseq = 1;
	volatile sig_atomic_t *stop = cli_stop_on_signals();
	trust = cli_load_trust(trust_paths, ntrust);
	if (trust == NULL)
		goto cleanup;
	if (!sluice_store_open(from_spec, &from) || !sluice_store_open(to_spec, &to))
		goto cleanup;
	size_t strays = 0;
	if (!sluice_store_list(from, stream, &src, &nsrc, &strays) ||
	    !sluice_store_list(to, stream, &dst, &ndst, &strays))
		goto cleanup;
	if (nsrc == 0 && !follow) {
		sluice_log_info("stream \"%s\" has no segments in %s: nothing to copy", stream,
				sluice_store_location(from));
		rc = SLUICE_EXIT_OK;
		goto cleanup;
	}

	/* Start at the last segment at or before from_txseq. */
	size_t i = 0;
	for (size_t k = 0; k < nsrc; k++)
		if (src[k] <= from_txseq)
			i = k;
	sluice_chain chain;
	uint64_t next = nsrc > 0 ? src[i] : 1;
	if (next == 1)
		sluice_chain_init(&chain, stream);
	else
		sluice_chain_init_unanchored(&chain, stream);
	uint64_t copied = 0, skipped = 0;
	int idle = 0;
	rc = SLUICE_EXIT_OK;
	while (!*stop && next <= until_txseq) {
		bool exists = i < nsrc && src[i] == next;
		if (!exists && !sluice_store_segment_probe(from, stream, next, &exists)) {
			rc = SLUICE_EXIT_FAILURE;
			break;
		}
		copy_status cs = COPY_UNSEALED;
		if (exists) {
			bool have = copy_contains(dst, ndst, next);
			cs = copy_segment(from, to, stream, next, trust, &chain, have);
			if (cs == COPY_DONE) {
				if (have)
					skipped++;
				else
					copied++;
				next = chain.txseq_end;
				while (i < nsrc && src[i] < next)
					i++;
				idle = 0;
				continue;
			}
			if (cs == COPY_PROBLEM) {
				rc = SLUICE_EXIT_PROBLEM;
				break;
			}
			if (cs == COPY_IO) {
				rc = SLUICE_EXIT_FAILURE;
				break;
			}
		}
		/* Nothing more is sealed yet. A later segment after a missing one is a gap. */
		if (!exists && i < nsrc && src[i] > next) {
			char name[SLUICE_SEGMENT_NAME_SIZE];
			sluice_store_segment_name(src[i], name);
			sluice_log_error("txseq gap: the stream goes on at txseq %" PRIu64
					 " but the next segment is %s",
					 next, name);
			rc = SLUICE_EXIT_PROBLEM;
			break;
		}
		if (!follow)
			break;
		sluice_sleep_ms(idle < 5 ? 200 << idle : 5000, stop);
		if (idle < 10)
			idle++;
	}
	sluice_log_info("stream \"%s\": %" PRIu64 " segments copied, %" PRIu64
			" already in %s; next txseq %" PRIu64,
			stream, copied, skipped, sluice_store_location(to), next);

cleanup:
	free(src);
	free(dst);
	sluice_store_close(from);
	sluice_store_close(to);
	sluice_trust_free(trust);
	free(trust_paths);
	return rc;
}
