/* sluice capture: stream a PostgreSQL or MongoDB source's transactions into a signed stream. */
#include "cmd_capture.h"

#include <ctype.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "backend.h"
#include "cli.h"
#include "keys.h"
#include "log.h"
#include "capture.h"
#include "pgconn.h"

static void
capture_help(FILE *f)
{
	fprintf(f,
		"Usage: sluice capture --source CONNINFO --store S --stream NAME --key PREFIX.key\n"
		"                      [--node NAME] [--slot NAME] [--publication NAME] "
		"[--create]\n"
		"                      [--allow-no-identity]\n"
		"                      [--snapshot] [--until-lsn LSN] [--exit-when-caught-up]\n"
		"                      [--forward-origins] [--messages] [--trust OLD.pub ...]\n"
		"       sluice capture --source mongodb://HOST:PORT/?replicaSet=RS --store S\n"
		"                      --stream NAME --key PREFIX.key [--node NAME] [--db DB ...]\n"
		"                      [--collection DB.COLL ...] [--snapshot]\n"
		"                      [--full-document default|updateLookup|whenAvailable]\n"
		"                      [--full-document-before-change off|whenAvailable|required]\n"
		"                      [--until-time TIME] [--exit-when-caught-up]\n"
		"\n"
		"Stream committed transactions of a PostgreSQL database (logical replication,\n"
		"pgoutput) into a signed stream, exactly once: the position acknowledged to the\n"
		"server is the end of the last transaction whose frames are fsynced. After a\n"
		"crash, the same command continues the chain and the txseq sequence.\n"
		"\n"
		"Durability with an S3 store: by default a transaction is acknowledged to the\n"
		"source only once the segment holding it is uploaded and the bucket confirmed\n"
		"it (--ack remote); with --ack local, once the spool has fsynced it.\n"
		"\n"
		"With a mongodb:// or mongodb+srv:// source, stream a MongoDB deployment's\n"
		"change events (a change stream; replica set or sharded cluster, 4.2 or later)\n"
		"as raw BSON, the events of a multi-document transaction as one transaction.\n"
		"The resume token of the last durable transaction is kept in the stream: the\n"
		"same command resumes after it. If the oplog no longer holds that point\n"
		"(ChangeStreamHistoryLost), capture stops (exit 3): take a new --snapshot into\n"
		"a new stream.\n"
		"\n"
		"Options:\n"
		"      --source CONNINFO   libpq URI or key=value string (PG* variables apply),\n"
		"                          or a MongoDB URI (mongodb://, mongodb+srv://)\n"
		"  -s, --store S           store: a directory PATH or file://PATH, or\n"
		"                          "
		"s3://BUCKET/PREFIX[?endpoint=URL&region=R&path_style=1]\n"
		"                          (also AWS_ENDPOINT_URL, AWS_REGION; credentials from\n"
		"                          AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY/\n"
		"                          AWS_SESSION_TOKEN or ~/.aws/credentials, AWS_PROFILE),\n"
		"                          or "
		"nats://HOST:PORT[,HOST:PORT...]/JSSTREAM[?creds=FILE]\n"
		"                          (a NATS JetStream stream; docs/architecture.md)\n"
		"      --spool DIR         S3: local directory for the open segment; each\n"
		"                          segment is uploaded when it seals. Keep it across\n"
		"                          restarts (it also names this writer in the lease)\n"
		"      --ack remote|local  S3: acknowledge to the source what the bucket has\n"
		"                          confirmed (remote, the default: a lost machine loses\n"
		"                          nothing), or what the spool has fsynced (local: less\n"
		"                          source history kept, but the spool must survive)\n"
		"      --segment-seconds N seal a segment once it is N seconds old (default 2\n"
		"                          for S3, so that readers see a commit within seconds;\n"
		"                          off for directories, whose readers see every frame)\n"
		"      --segment-size SIZE seal a segment past SIZE bytes (default 64 MiB)\n"
		"  -n, --stream NAME       stream name\n"
		"  -k, --key PREFIX.key    secret signing key (sluice keygen); the stream's key\n"
		"                          in force: the one it started with, or the successor\n"
		"                          named by sluice rotate-key\n"
		"  -t, --trust OLD.pub     public key that signed the stream before its handover\n"
		"                          to --key (repeatable): needed while the newest\n"
		"                          segment still holds frames of the earlier key\n"
		"      --node NAME         origin node name in every transaction (default: the\n"
		"                          stream name)\n"
		"      --slot NAME         replication slot (default: sluice_<stream>)\n"
		"      --publication NAME  publication (default: sluice_<stream>)\n"
		"      --create            create the publication (all tables) and the slot if\n"
		"                          missing. Refused while tables without a replica\n"
		"                          identity exist: PostgreSQL rejects UPDATE and DELETE\n"
		"                          on a published table without one, which would break\n"
		"                          the application (give them REPLICA IDENTITY FULL or a\n"
		"                          key, or create the publication yourself). With a\n"
		"                          nats:// store, also the JetStream stream (URI options\n"
		"                          replicas=N, max_age=SECONDS, max_bytes=N)\n"
		"      --allow-no-identity with --create: create it anyway\n"
		"      --snapshot          with --create: copy every published table into the\n"
		"                          stream first, consistent with the slot. MongoDB: on a\n"
		"                          new stream, copy every watched collection at a\n"
		"                          cluster time T first; changes then start at T\n"
		"      --until-lsn LSN     stop once everything up to LSN is durable\n"
		"      --until-time TIME   stop before the first transaction committed after TIME\n"
		"                          (ISO 8601, e.g. 2026-12-03T10:00:00Z)\n"
		"      --db DB             MongoDB: watch database DB (repeatable; default: the\n"
		"                          whole deployment but admin, local and config)\n"
		"      --collection DB.COLL  MongoDB: watch this collection (repeatable)\n"
		"      --full-document MODE  MongoDB: default, updateLookup (updates carry the\n"
		"                          document as it is when the event is read) or\n"
		"                          whenAvailable\n"
		"      --full-document-before-change MODE  MongoDB: off (default), whenAvailable\n"
		"                          (updates, replacements and deletes carry the document\n"
		"                          before the change where the collection keeps\n"
		"                          pre-images: changeStreamPreAndPostImages) or required\n"
		"                          (a change without one stops capture)\n"
		"      --exit-when-caught-up  stop once everything committed before the start is\n"
		"                          durable\n"
		"      --forward-origins   also capture transactions written by a replication\n"
		"                          origin (e.g. by sluice apply); off to prevent loops\n"
		"      --messages          capture logical decoding messages\n"
		"      --zstd-level L      compression level (default 1)\n"
		"      --max-rate ROWS[,BYTES]  at most ROWS row changes (snapshot rows\n"
		"                          included) and BYTES bytes of records per second;\n"
		"                          0 lifts one of the two. Capture then waits and\n"
		"                          lags (the source keeps the changes: the slot's WAL\n"
		"                          or the oplog) instead of loading the source, the\n"
		"                          store and the applies downstream\n"
		"      --no-heartbeat      no heartbeat records while idle\n"
		"      --busy-timeout S    give up (exit 3) when the slot or stream is still\n"
		"                          held by another process after S seconds (default 30)\n"
		"      --status-interval S report progress to the server every S seconds\n"
		"                          (default 10); idle captures confirm its position\n"
		"      --no-progress       no progress lines on a terminal\n"
		"  -h, --help              show this help\n"
		"\n"
		"SIGINT/SIGTERM: flush, acknowledge, exit 0. A lost connection is retried with\n"
		"exponential backoff.\n"
		"Exit status: 0 stopped cleanly, 2 usage error, 3 failure (source settings,\n"
		"permissions, slot in use, key or store problems).\n");
}

/* capture_default_name makes sluice_<stream> usable as a slot name. */
static void
capture_default_name(const char *stream, char *out, size_t size)
{
	snprintf(out, size, "sluice_%s", stream);
	for (char *p = out; *p; p++) {
		*p = (char)tolower((unsigned char)*p);
		if (!((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '_'))
			*p = '_';
	}
}

/*
 * capture_main parses the arguments (trust_paths has room for all) and runs
 * capture; rate is where a --max-rate limit lives.
 */
static int
capture_main(int argc, char **argv, char **trust_paths, const char **dbs, const char **colls,
	     sluice_rate *rate)
{
	enum {
		OPT_SOURCE = 1000,
		OPT_NODE,
		OPT_SLOT,
		OPT_PUB,
		OPT_CREATE,
		OPT_ALLOW_NO_IDENTITY,
		OPT_SNAPSHOT,
		OPT_UNTIL,
		OPT_CAUGHT_UP,
		OPT_FORWARD,
		OPT_MESSAGES,
		OPT_ZSTD,
		OPT_SPOOL,
		OPT_ACK,
		OPT_SEGMENT_SECONDS,
		OPT_SEGMENT_SIZE,
		OPT_NO_HEARTBEAT,
		OPT_NO_PROGRESS,
		OPT_STATUS_INTERVAL,
		OPT_UNTIL_TIME,
		OPT_DB,
		OPT_COLLECTION,
		OPT_FULL_DOCUMENT,
		OPT_FULL_DOCUMENT_BEFORE,
		OPT_MAX_RATE,
		OPT_BUSY_TIMEOUT,
	};
	static const struct option opts[] = {
		{"source", required_argument, NULL, OPT_SOURCE},
		{"store", required_argument, NULL, 's'},
		{"stream", required_argument, NULL, 'n'},
		{"key", required_argument, NULL, 'k'},
		{"trust", required_argument, NULL, 't'},
		{"node", required_argument, NULL, OPT_NODE},
		{"slot", required_argument, NULL, OPT_SLOT},
		{"publication", required_argument, NULL, OPT_PUB},
		{"create", no_argument, NULL, OPT_CREATE},
		{"allow-no-identity", no_argument, NULL, OPT_ALLOW_NO_IDENTITY},
		{"snapshot", no_argument, NULL, OPT_SNAPSHOT},
		{"until-lsn", required_argument, NULL, OPT_UNTIL},
		{"exit-when-caught-up", no_argument, NULL, OPT_CAUGHT_UP},
		{"forward-origins", no_argument, NULL, OPT_FORWARD},
		{"messages", no_argument, NULL, OPT_MESSAGES},
		{"zstd-level", required_argument, NULL, OPT_ZSTD},
		{"spool", required_argument, NULL, OPT_SPOOL},
		{"ack", required_argument, NULL, OPT_ACK},
		{"segment-seconds", required_argument, NULL, OPT_SEGMENT_SECONDS},
		{"segment-size", required_argument, NULL, OPT_SEGMENT_SIZE},
		{"no-heartbeat", no_argument, NULL, OPT_NO_HEARTBEAT},
		{"no-progress", no_argument, NULL, OPT_NO_PROGRESS},
		{"status-interval", required_argument, NULL, OPT_STATUS_INTERVAL},
		{"until-time", required_argument, NULL, OPT_UNTIL_TIME},
		{"db", required_argument, NULL, OPT_DB},
		{"collection", required_argument, NULL, OPT_COLLECTION},
		{"full-document", required_argument, NULL, OPT_FULL_DOCUMENT},
		{"full-document-before-change", required_argument, NULL, OPT_FULL_DOCUMENT_BEFORE},
		{"max-rate", required_argument, NULL, OPT_MAX_RATE},
		{"busy-timeout", required_argument, NULL, OPT_BUSY_TIMEOUT},
		{"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0},
	};
	sluice_capture_options o;
	sluice_capture_default_options(&o);
	o.progress = isatty(STDERR_FILENO);
	const char *store_spec = NULL, *key_path = NULL;
	sluice_store_options store_options = {0};
	int64_t segment_seconds = -1; /* -1: the store's default */
	char slot[128], pub[128];
	size_t ntrust = 0;
	int c;
	while ((c = getopt_long(argc, argv, "s:n:k:t:h", opts, NULL)) != -1) {
		switch (c) {
		case OPT_SOURCE:
			o.source = optarg;
			break;
		case 's':
			store_spec = optarg;
			break;
		case 'n':
			o.stream = optarg;
			break;
		case 'k':
			key_path = optarg;
			break;
		case 't':
			trust_paths[ntrust++] = optarg;
			break;
		case OPT_NODE:
			o.node = optarg;
			break;
		case OPT_SLOT:
			o.slot = optarg;
			break;
		case OPT_PUB:
			o.publication = optarg;
			break;
		case OPT_ALLOW_NO_IDENTITY:
			o.allow_no_identity = true;
			break;
		case OPT_CREATE:
			o.create = true;
			store_options.create = true; /* a nats:// store's JetStream stream too */
			break;
		case OPT_SNAPSHOT:
			o.snapshot = true;
			break;
		case OPT_UNTIL:
			if (!sluice_pg_lsn_parse(optarg, &o.until_position))
				return cli_usage_error("capture",
						       "invalid --until-lsn \"%s\": expected "
						       "an LSN like 0/16B3748",
						       optarg);
			break;
		case OPT_CAUGHT_UP:
			o.exit_when_caught_up = true;
			break;
		case OPT_UNTIL_TIME:
			if (!cli_parse_time("--until-time", optarg, &o.until_time_us))
				return SLUICE_EXIT_USAGE;
			break;
		case OPT_DB:
			if (optarg[0] == '\0' || strchr(optarg, '.') != NULL)
				return cli_usage_error("capture", "invalid --db \"%s\"", optarg);
			dbs[o.n_databases++] = optarg;
			break;
		case OPT_COLLECTION: {
			const char *dot = strchr(optarg, '.');
			if (dot == NULL || dot == optarg || dot[1] == '\0' || dot - optarg > 63)
				return cli_usage_error("capture",
						       "invalid --collection \"%s\": expected "
						       "DB.COLLECTION",
						       optarg);
			colls[o.n_collections++] = optarg;
			break;
		}
		case OPT_FULL_DOCUMENT:
			if (strcmp(optarg, "default") == 0)
				o.full_document = NULL;
			else if (strcmp(optarg, "updateLookup") == 0 ||
				 strcmp(optarg, "whenAvailable") == 0)
				o.full_document = optarg;
			else
				return cli_usage_error("capture",
						       "--full-document must be default, "
						       "updateLookup or whenAvailable");
			break;
		case OPT_FULL_DOCUMENT_BEFORE:
			if (strcmp(optarg, "off") == 0)
				o.full_document_before_change = NULL;
			else if (strcmp(optarg, "whenAvailable") == 0 ||
				 strcmp(optarg, "required") == 0)
				o.full_document_before_change = optarg;
			else
				return cli_usage_error("capture",
						       "--full-document-before-change must be off, "
						       "whenAvailable or required");
			break;
		case OPT_FORWARD:
			o.forward_origins = true;
			break;
		case OPT_MESSAGES:
			o.messages = true;
			break;
		case OPT_ZSTD: {
			char *end = NULL;
			long v = strtol(optarg, &end, 10);
			if (end == optarg || *end != '\0' || v < -7 || v > 19)
				return cli_usage_error("capture", "--zstd-level must be -7..19");
			o.writer.zstd_level = (int)v;
			break;
		}
		case OPT_SPOOL:
			store_options.spool = optarg;
			break;
		case OPT_ACK:
			if (strcmp(optarg, "local") == 0)
				store_options.ack_local = true;
			else if (strcmp(optarg, "remote") == 0)
				store_options.ack_local = false;
			else
				return cli_usage_error("capture", "--ack must be remote or local");
			break;
		case OPT_SEGMENT_SECONDS: {
			uint64_t v;
			if (!cli_parse_u64("--segment-seconds", optarg, &v) || v > 86400)
				return cli_usage_error("capture",
						       "--segment-seconds must be 0..86400");
			segment_seconds = (int64_t)v;
			break;
		}
		case OPT_SEGMENT_SIZE: {
			uint64_t v;
			if (!cli_parse_u64("--segment-size", optarg, &v) || v < 4096)
				return cli_usage_error(
					"capture", "--segment-size must be at least 4096 bytes");
			o.writer.segment_target = v;
			break;
		}
		case OPT_NO_HEARTBEAT:
			o.heartbeat_interval_ms = 0;
			break;
		case OPT_NO_PROGRESS:
			o.progress = false;
			break;
		case OPT_MAX_RATE: {
			uint64_t rows, bytes;
			if (!cli_parse_rate("--max-rate", optarg, &rows, &bytes))
				return SLUICE_EXIT_USAGE;
			sluice_rate_init(rate, rows, bytes);
			o.rate = rate;
			break;
		}
		case OPT_STATUS_INTERVAL: {
			uint64_t v;
			if (!cli_parse_u64("--status-interval", optarg, &v) || v == 0 || v > 3600)
				return cli_usage_error("capture",
						       "--status-interval must be 1..3600 "
						       "seconds");
			o.status_interval_ms = (int)v * 1000;
			break;
		}
		case OPT_BUSY_TIMEOUT: {
			uint64_t v;
			if (!cli_parse_u64("--busy-timeout", optarg, &v) || v > 3600)
				return cli_usage_error("capture",
						       "--busy-timeout must be 0..3600 seconds");
			o.busy_timeout_ms = (int)v * 1000;
			break;
		}
		case 'h':
			capture_help(stdout);
			return SLUICE_EXIT_OK;
		default:
			return cli_usage_error("capture", "invalid option");
		}
	}
	if (optind < argc)
		return cli_usage_error("capture", "unexpected argument \"%s\"", argv[optind]);
	if (o.source == NULL || store_spec == NULL || o.stream == NULL || key_path == NULL)
		return cli_usage_error("capture",
				       "--source, --store, --stream and --key are required");
	if (!sluice_store_valid_stream_name(o.stream))
		return cli_usage_error("capture", "invalid stream name \"%s\"", o.stream);
	bool mongodb = strncmp(o.source, "mongodb://", 10) == 0 ||
		       strncmp(o.source, "mongodb+srv://", 14) == 0;
	o.databases = dbs;
	o.collections = colls;
	if (mongodb) {
		if (o.create || o.slot || o.publication || o.until_position || o.messages ||
		    o.forward_origins || o.allow_no_identity)
			return cli_usage_error("capture",
					       "--create, --slot, --publication, --until-lsn, "
					       "--messages, --forward-origins and "
					       "--allow-no-identity are PostgreSQL options");
	} else {
		if (o.n_databases || o.n_collections || o.full_document ||
		    o.full_document_before_change)
			return cli_usage_error("capture",
					       "--db, --collection, --full-document and "
					       "--full-document-before-change are MongoDB options");
		if (o.snapshot && !o.create)
			return cli_usage_error("capture",
					       "--snapshot needs --create: the snapshot is taken "
					       "when the slot is created");
	}
	if (o.node == NULL)
		o.node = o.stream;
	if (o.slot == NULL) {
		capture_default_name(o.stream, slot, sizeof(slot));
		o.slot = slot;
	}
	if (o.publication == NULL) {
		capture_default_name(o.stream, pub, sizeof(pub));
		o.publication = pub;
	}

	o.stop = cli_stop_on_signals();

	int rc = SLUICE_EXIT_FAILURE;
	sluice_key *key = NULL;
	sluice_store *store = NULL;
	sluice_trust *trust = NULL;
	if (ntrust > 0) {
		trust = cli_load_trust(trust_paths, ntrust);
		if (trust == NULL)
			goto cleanup;
		o.writer.trust = trust;
	}
	if (!sluice_key_load(key_path, &key))
		goto cleanup;
	if (!sluice_store_open_with(store_spec, &store_options, &store))
		goto cleanup;
	/* Readers of a store that shows only sealed segments see a commit once it seals. */
	if (segment_seconds < 0)
		segment_seconds = sluice_store_caps_get(store)->append_visible ? 0 : 2;
	o.writer.segment_max_age_ms = segment_seconds * 1000;
	sluice_capture_stats st;
	bool ok = sluice_capture_run(store, key, &o, &st);
	sluice_log_info("capture %s: %" PRIu64 " transactions (txseq %" PRIu64 "..%" PRIu64
			"), %" PRIu64 " changes, %" PRIu64 " skipped (origin), %" PRIu64
			" already in the stream, %" PRIu64 " reconnects, %s %s",
			ok ? "stopped" : "failed", st.transactions, st.first_txseq, st.last_txseq,
			st.changes, st.skipped_origin, st.skipped_duplicate, st.reconnects,
			mongodb ? "last position" : "acknowledged", st.position);
	if (o.rate != NULL)
		sluice_log_info("--max-rate: waited %.1f s in all for the limit of %" PRIu64
				" row changes and %" PRIu64 " bytes per second (0: none)",
				(double)o.rate->waited_ms / 1000, o.rate->rows_per_s,
				o.rate->bytes_per_s);
	rc = ok ? SLUICE_EXIT_OK : SLUICE_EXIT_FAILURE;

cleanup:
	sluice_store_close(store);
	sluice_key_free(key);
	sluice_trust_free(trust);
	return rc;
}

int
cmd_capture(int argc, char **argv)
{
	char **trust_paths = calloc((size_t)argc + 1, sizeof(char *));
	const char **dbs = calloc((size_t)argc + 1, sizeof(char *));
	const char **colls = calloc((size_t)argc + 1, sizeof(char *));
	if (trust_paths == NULL || dbs == NULL || colls == NULL)
		abort();
	sluice_rate rate;
	sluice_rate_init(&rate, 0, 0);
	int rc = capture_main(argc, argv, trust_paths, dbs, colls, &rate);
	free(trust_paths);
	free(dbs);
	free(colls);
	return rc;
}
