/* sluice rotate-key: hand a stream over from its signing key to a successor. */
#include "cmd_rotate.h"

#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>

#include "backend.h"
#include "cli.h"
#include "keys.h"
#include "log.h"
#include "writer.h"

static void
rotate_help(FILE *f)
{
	fprintf(f,
		"Usage: sluice rotate-key --store S --stream NAME --key OLD.key --next NEW.pub\n"
		"                         [--trust EARLIER.pub ...] [--reason TEXT] [--spool DIR]\n"
		"\n"
		"Hand the stream over from its key in force (OLD.key) to a successor: append\n"
		"one frame, signed by OLD.key, holding only a key handover that names NEW.pub,\n"
		"and make it durable (docs/format.md §8.4). Every later frame must be signed by\n"
		"the successor: restart capture with --key NEW.key --trust OLD.pub. Readers\n"
		"that check the stream from its first frame (verify, apply from txseq 1) need\n"
		"only the root key; readers that start in a later segment need the key in\n"
		"force there (give --trust NEW.pub too). Run it while no capture writes the\n"
		"stream (it takes the stream's writer lock). The secret key of NEW is not\n"
		"needed here. With an S3 store, the handover goes into the spool's open\n"
		"segment (--spool: give the spool capture uses, so the restarted capture\n"
		"continues that segment); readers of the bucket see it when capture seals it.\n"
		"\n"
		"Options:\n"
		"  -s, --store S         store: a directory PATH, file://PATH or "
		"s3://BUCKET/PREFIX\n"
		"  -n, --stream NAME     stream name\n"
		"  -k, --key OLD.key     secret key in force (it must sign the handover)\n"
		"      --next NEW.pub    public key of the successor (sluice keygen)\n"
		"  -t, --trust PUB       earlier key of the stream, for reading its newest\n"
		"                        segment when OLD was itself handed over to (repeatable)\n"
		"      --reason TEXT     recorded in the handover for operators\n"
		"      --spool DIR       S3: the spool of the stream's capture (capture --spool)\n"
		"  -h, --help            show this help\n"
		"\n"
		"Exit status: 0 handed over, 2 usage error, 3 failure (keys, store, lock, or\n"
		"OLD.key is not the key in force).\n");
}

/* rotate_main parses the arguments (trust_paths has room for all) and rotates. */
static int
rotate_main(int argc, char **argv, char **trust_paths)
{
	enum { OPT_NEXT = 256, OPT_REASON, OPT_SPOOL };
	static const struct option opts[] = {
		{"store", required_argument, NULL, 's'},
		{"stream", required_argument, NULL, 'n'},
		{"key", required_argument, NULL, 'k'},
		{"next", required_argument, NULL, OPT_NEXT},
		{"trust", required_argument, NULL, 't'},
		{"reason", required_argument, NULL, OPT_REASON},
		{"spool", required_argument, NULL, OPT_SPOOL},
		{"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0},
	};
	const char *store_spec = NULL, *stream = NULL, *key_path = NULL, *next_path = NULL;
	const char *reason = NULL;
	sluice_store_options store_options = {0};
	size_t ntrust = 0;
	int c;
	while ((c = getopt_long(argc, argv, "s:n:k:t:h", opts, NULL)) != -1) {
		switch (c) {
		case 's':
			store_spec = optarg;
			break;
		case 'n':
			stream = optarg;
			break;
		case 'k':
			key_path = optarg;
			break;
		case OPT_NEXT:
			next_path = optarg;
			break;
		case 't':
			trust_paths[ntrust++] = optarg;
			break;
		case OPT_REASON:
			reason = optarg;
			break;
		case OPT_SPOOL:
			store_options.spool = optarg;
			break;
		case 'h':
			rotate_help(stdout);
			return SLUICE_EXIT_OK;
		default:
			return cli_usage_error("rotate-key", "invalid option");
		}
	}
	if (optind < argc)
		return cli_usage_error("rotate-key", "unexpected argument \"%s\"", argv[optind]);
	if (store_spec == NULL || stream == NULL || key_path == NULL || next_path == NULL)
		return cli_usage_error("rotate-key",
				       "--store, --stream, --key and --next are required");
	if (!sluice_store_valid_stream_name(stream))
		return cli_usage_error("rotate-key", "invalid stream name \"%s\"", stream);

	int rc = SLUICE_EXIT_FAILURE;
	sluice_key *key = NULL;
	sluice_store *store = NULL;
	sluice_trust *trust = NULL;
	sluice_writer *w = NULL;
	uint8_t next_pk[32];
	if (ntrust > 0 && (trust = cli_load_trust(trust_paths, ntrust)) == NULL)
		goto cleanup;
	if (!sluice_keys_load_public(next_path, next_pk))
		goto cleanup;
	if (!sluice_key_load(key_path, &key))
		goto cleanup;
	if (!sluice_store_open_with(store_spec, &store_options, &store))
		goto cleanup;
	sluice_writer_options wo = sluice_writer_default_options();
	wo.trust = trust;
	if (!sluice_writer_open(store, stream, key, &wo, &w, NULL))
		goto cleanup;
	if (!sluice_writer_handover(w, next_pk, reason))
		goto cleanup;
	bool closed = sluice_writer_close(w);
	w = NULL;
	if (!closed)
		goto cleanup;
	uint8_t next_id[SLUICE_FRAME_KEY_ID_SIZE];
	char old_hex[SLUICE_KEY_ID_HEX_SIZE], next_hex[SLUICE_KEY_ID_HEX_SIZE];
	sluice_keys_id(next_pk, next_id);
	sluice_keys_id_hex(next_id, next_hex);
	sluice_keys_id_hex(sluice_key_id(key), old_hex);
	printf("%s\n", next_hex);
	sluice_log_info("stream \"%s\": key %s handed over to %s; restart capture with the "
			"successor's secret key and --trust for %s",
			stream, old_hex, next_hex, old_hex);
	rc = SLUICE_EXIT_OK;

cleanup:
	if (w != NULL)
		(void)sluice_writer_close(w);
	sluice_store_close(store);
	sluice_key_free(key);
	sluice_trust_free(trust);
	return rc;
}

int
cmd_rotate_key(int argc, char **argv)
{
	char **trust_paths = calloc((size_t)argc + 1, sizeof(char *));
	if (trust_paths == NULL)
		abort();
	int rc = rotate_main(argc, argv, trust_paths);
	free(trust_paths);
	return rc;
}
