/* sluice apply and sluice prepare: replay a stream into PostgreSQL; set up a node. */
#include "cmd_apply.h"

#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "cli.h"
#include "log.h"
#include "apply.h"
#include "pgconn.h"
#include "mongoprepare.h"
#include "pgprepare.h"
#include "verify.h"

/*
 * apply_check_age logs when the stream's newest signed heartbeat is older
 * than max_age_us: apply goes on with what the stream holds (issue 10, §14).
 */
static void
apply_check_age(sluice_store *store, const sluice_trust *trust, const char *stream,
		int64_t max_age_us)
{
	int64_t commit_us = 0, heartbeat_us = 0;
	if (!sluice_verify_freshness(store, stream, trust, &commit_us, &heartbeat_us))
		return; /* the reader logged why; apply reports the damage itself */
	int64_t age = cli_now_us() - heartbeat_us;
	if (heartbeat_us == 0)
		sluice_log_warn("stream \"%s\" holds no signed heartbeat (--max-age %" PRId64
				" s): it may have been cut or rolled back; applying what it holds",
				stream, max_age_us / 1000000);
	else if (age > max_age_us)
		sluice_log_warn("stream \"%s\": newest signed heartbeat is %" PRId64
				" s old, older than --max-age %" PRId64
				" s: the source stopped writing, or the stream was cut or rolled "
				"back; applying what it holds",
				stream, age / 1000000, max_age_us / 1000000);
}

static void
apply_help(FILE *f)
{
	fprintf(f,
		"Usage: sluice apply --store S --stream NAME --trust PUB [--trust PUB2 ...]\n"
		"                    --target CONNINFO [--strategy replace|append|timestamp]\n"
		"                    [--timestamp-column TABLE=COLUMN ...] [--include PATTERN "
		"...]\n"
		"                    [--exclude PATTERN ...] [--until-time TIME] [--until-txseq "
		"N]\n"
		"                    [--until-lsn LSN] [--dry-run] [--exit-when-caught-up]\n"
		"                    [--follow] [--no-conflict-log] [--tombstone-horizon SECONDS]\n"
		"                    [--origin NAME] [--retry-report SECONDS] [--max-age "
		"DURATION]\n"
		"                    [--at-least-once] [--max-txn-writes N]\n"
		"                    [--max-rate ROWS[,BYTES]] [--group-size N]\n"
		"                    [--group-bytes B] [--group-ms T]\n"
		"\n"
		"Replay a verified stream into PostgreSQL, or a MongoDB stream into MongoDB (a\n"
		"mongodb:// or mongodb+srv:// --target): every frame is authenticated before it\n"
		"is decoded; a bad signature, untrusted key, broken chain or txseq gap stops "
		"apply\n"
		"before anything of the bad frame is applied. Each source transaction becomes one\n"
		"target transaction, in txseq order, and records its txseq as the progress of the\n"
		"replication origin sluice_<stream>@<database>: after a crash apply resumes\n"
		"exactly there. On MongoDB each source transaction is one multi-document\n"
		"transaction that also writes the stream's progress document in sluice.progress\n"
		"(a replica set or mongos is needed: a standalone server has no transactions).\n"
		"\n"
		"Transient target errors (deadlock 40P01, serialization failure 40001, lock\n"
		"timeout 55P03, cancelled statement 57014, server shutting down 57P01-57P03,\n"
		"connection errors 08xxx, a lost connection) roll the transaction back; it is\n"
		"applied again after a capped, jittered backoff (reconnecting when needed),\n"
		"never skipped. Retries are counted per cause in the exit summary. Any other\n"
		"error (schema mismatch, a constraint the strategy cannot resolve, a type\n"
		"error) stops apply with the table, operation and SQLSTATE. On MongoDB,\n"
		"TransientTransactionError, WriteConflict (112), a primary stepping down or\n"
		"shutting down, an unknown commit result and network errors are retried.\n"
		"\n"
		"Strategies (docs/conflicts.md):\n"
		"  replace    the stream is the source of truth (default)\n"
		"  append     never overwrite or delete; only add what is missing\n"
		"  timestamp  last writer wins by commit time, ties by node name; needs\n"
		"             track_commit_timestamp = on and `sluice prepare`\n"
		"\n"
		"Options:\n"
		"  -s, --store S            store: a directory PATH or file://PATH, or\n"
		"                           "
		"s3://BUCKET/PREFIX[?endpoint=URL&region=R&path_style=1]\n"
		"  -n, --stream NAME        stream name\n"
		"  -t, --trust PUB          root public key file (repeatable); apply resumes\n"
		"                           mid-stream, so after sluice rotate-key give the\n"
		"                           current key too\n"
		"      --target CONNINFO    target database (libpq URI or key=value), or a\n"
		"                           mongodb:// or mongodb+srv:// URI\n"
		"      --strategy S         replace, append or timestamp\n"
		"      --timestamp-column T=C  compare column C of table T (schema.table or "
		"table)\n"
		"                           instead of the commit time (timestamp strategy)\n"
		"      --include GLOB       only tables matching schema.table GLOB (repeatable)\n"
		"      --exclude GLOB       skip tables matching GLOB (repeatable)\n"
		"      --until-time TIME    stop after the last transaction committed at or "
		"before\n"
		"                           TIME (ISO 8601)\n"
		"      --until-txseq N      stop after txseq N\n"
		"      --until-lsn LSN      stop after the last transaction whose source LSN is "
		"at\n"
		"                           or before LSN\n"
		"      --dry-run            commit nothing; report what would have been done\n"
		"      --exit-when-caught-up  stop at the end of the stream (default: follow it)\n"
		"      --follow             keep following the stream (the default)\n"
		"      --no-conflict-log    do not write conflicts to sluice.conflicts\n"
		"      --tombstone-horizon S  drop tombstones older than S seconds (default 7 "
		"days)\n"
		"      --origin NAME        replication origin for the progress (default\n"
		"                           sluice_<stream>@<database>, or an existing\n"
		"                           sluice_<stream> that this database already owns)\n"
		"      --retry-report S     report a transaction that keeps failing transiently\n"
		"                           as an error every S seconds (default 300); it is\n"
		"                           still retried\n"
		"      --max-age D          warn (log) when the stream's newest signed heartbeat "
		"is\n"
		"                           older than D (\"90s\", \"15m\", \"2h\"), checked at "
		"start\n"
		"                           and at exit: the source stopped, or the stream was "
		"cut\n"
		"                           or rolled back; apply still applies what it holds\n"
		"      --at-least-once      MongoDB: apply to a standalone server (no "
		"transactions:\n"
		"                           after a crash the last transaction may be applied\n"
		"                           twice)\n"
		"      --max-txn-writes N   MongoDB: apply a source transaction with more than N\n"
		"                           writes (a large snapshot) in parts of N, each a\n"
		"                           transaction with its progress (default 10000; 0:\n"
		"                           never): a MongoDB transaction may not run long. The\n"
		"                           parts are not atomic on the target\n"
		"      --max-rate ROWS[,BYTES]  apply at most ROWS row changes and BYTES bytes\n"
		"                           of records per second (0 lifts one of the two): the\n"
		"                           target is spared and apply lags instead\n"
		"      --group-size N       PostgreSQL, replace strategy: apply up to N\n"
		"                           consecutive source transactions in one target\n"
		"                           transaction, their changes collapsed per key and\n"
		"                           written as multi-row statements (default 1000, or\n"
		"                           $SLUICE_APPLY_GROUP_SIZE; 1: one target transaction\n"
		"                           and one statement per change). The target only\n"
		"                           shows states the source had; a group that finds a\n"
		"                           row not where the source had it is applied again one\n"
		"                           transaction at a time, with conflict handling\n"
		"      --group-bytes B      end a group after B bytes of row data (default 16M;\n"
		"                           suffixes k, M, G)\n"
		"      --group-ms T         end a group T milliseconds after it began (default\n"
		"                           200)\n"
		"  -h, --help               show this help\n"
		"\n"
		"SIGINT/SIGTERM: the open transaction is rolled back, apply exits 0.\n"
		"Exit status: 0 done, 1 the stream failed verification (nothing of the bad frame\n"
		"was applied), 2 usage error, 3 failure (target refused a change, schema\n"
		"mismatch, settings, keys).\n");
}

int
cmd_apply(int argc, char **argv)
{
	enum {
		OPT_TARGET = 1000,
		OPT_STRATEGY,
		OPT_TSCOL,
		OPT_INCLUDE,
		OPT_EXCLUDE,
		OPT_UNTIL_TIME,
		OPT_UNTIL_TXSEQ,
		OPT_UNTIL_LSN,
		OPT_DRY_RUN,
		OPT_CAUGHT_UP,
		OPT_FOLLOW,
		OPT_NO_LOG,
		OPT_HORIZON,
		OPT_ORIGIN,
		OPT_RETRY_REPORT,
		OPT_MAX_AGE,
		OPT_AT_LEAST_ONCE,
		OPT_MAX_TXN_WRITES,
		OPT_MAX_RATE,
		OPT_GROUP_SIZE,
		OPT_GROUP_BYTES,
		OPT_GROUP_MS,
	};
	static const struct option opts[] = {
		{"store", required_argument, NULL, 's'},
		{"stream", required_argument, NULL, 'n'},
		{"trust", required_argument, NULL, 't'},
		{"target", required_argument, NULL, OPT_TARGET},
		{"strategy", required_argument, NULL, OPT_STRATEGY},
		{"timestamp-column", required_argument, NULL, OPT_TSCOL},
		{"include", required_argument, NULL, OPT_INCLUDE},
		{"exclude", required_argument, NULL, OPT_EXCLUDE},
		{"until-time", required_argument, NULL, OPT_UNTIL_TIME},
		{"until-txseq", required_argument, NULL, OPT_UNTIL_TXSEQ},
		{"until-lsn", required_argument, NULL, OPT_UNTIL_LSN},
		{"dry-run", no_argument, NULL, OPT_DRY_RUN},
		{"exit-when-caught-up", no_argument, NULL, OPT_CAUGHT_UP},
		{"follow", no_argument, NULL, OPT_FOLLOW},
		{"no-conflict-log", no_argument, NULL, OPT_NO_LOG},
		{"tombstone-horizon", required_argument, NULL, OPT_HORIZON},
		{"origin", required_argument, NULL, OPT_ORIGIN},
		{"retry-report", required_argument, NULL, OPT_RETRY_REPORT},
		{"max-age", required_argument, NULL, OPT_MAX_AGE},
		{"at-least-once", no_argument, NULL, OPT_AT_LEAST_ONCE},
		{"max-txn-writes", required_argument, NULL, OPT_MAX_TXN_WRITES},
		{"max-rate", required_argument, NULL, OPT_MAX_RATE},
		{"group-size", required_argument, NULL, OPT_GROUP_SIZE},
		{"group-bytes", required_argument, NULL, OPT_GROUP_BYTES},
		{"group-ms", required_argument, NULL, OPT_GROUP_MS},
		{"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0},
	};
	sluice_apply_options o;
	sluice_apply_default_options(&o);
	sluice_rate rate;
	sluice_rate_init(&rate, 0, 0);
	const char *store_spec = NULL;
	size_t cap = (size_t)argc + 1;
	char **trust_paths = calloc(cap, sizeof(char *));
	const char **tscols = calloc(cap, sizeof(char *));
	const char **inc = calloc(cap, sizeof(char *));
	const char **exc = calloc(cap, sizeof(char *));
	size_t ntrust = 0;
	int64_t max_age_us = 0;
	bool caught_up = false, follow = false;
	int rc = SLUICE_EXIT_USAGE;
	sluice_store *store = NULL;
	sluice_trust *trust = NULL;
	if (trust_paths == NULL || tscols == NULL || inc == NULL || exc == NULL)
		abort();
	int c;
	while ((c = getopt_long(argc, argv, "s:n:t:h", opts, NULL)) != -1) {
		switch (c) {
		case 's':
			store_spec = optarg;
			break;
		case 'n':
			o.stream = optarg;
			break;
		case 't':
			trust_paths[ntrust++] = optarg;
			break;
		case OPT_TARGET:
			o.target = optarg;
			break;
		case OPT_STRATEGY:
			if (strcmp(optarg, "replace") == 0)
				o.strategy = SLUICE_STRATEGY_REPLACE;
			else if (strcmp(optarg, "append") == 0)
				o.strategy = SLUICE_STRATEGY_APPEND;
			else if (strcmp(optarg, "timestamp") == 0)
				o.strategy = SLUICE_STRATEGY_TIMESTAMP;
			else {
				rc = cli_usage_error("apply",
						     "unknown strategy \"%s\": use replace, "
						     "append or timestamp",
						     optarg);
				goto cleanup;
			}
			break;
		case OPT_TSCOL:
			if (strchr(optarg, '=') == NULL) {
				rc = cli_usage_error("apply",
						     "--timestamp-column wants TABLE=COLUMN, "
						     "not \"%s\"",
						     optarg);
				goto cleanup;
			}
			tscols[o.nts_columns++] = optarg;
			break;
		case OPT_INCLUDE:
			inc[o.filter.ninclude++] = optarg;
			break;
		case OPT_AT_LEAST_ONCE:
			o.at_least_once = true;
			break;
		case OPT_MAX_TXN_WRITES: {
			char *end = NULL;
			unsigned long v = strtoul(optarg, &end, 10);
			if (end == optarg || *end != '\0' || v > UINT32_MAX) {
				rc = cli_usage_error("apply",
						     "--max-txn-writes wants a number of writes "
						     "(0: never split), not \"%s\"",
						     optarg);
				goto cleanup;
			}
			o.max_txn_writes = (uint32_t)v;
			break;
		}
		case OPT_EXCLUDE:
			exc[o.filter.nexclude++] = optarg;
			break;
		case OPT_UNTIL_TIME:
			if (!cli_parse_time("--until-time", optarg, &o.until_time_us))
				goto cleanup;
			break;
		case OPT_UNTIL_TXSEQ:
			if (!cli_parse_u64("--until-txseq", optarg, &o.until_txseq))
				goto cleanup;
			break;
		case OPT_UNTIL_LSN:
			if (!sluice_pg_lsn_parse(optarg, &o.until_lsn)) {
				rc = cli_usage_error("apply", "invalid --until-lsn \"%s\"", optarg);
				goto cleanup;
			}
			break;
		case OPT_DRY_RUN:
			o.dry_run = true;
			break;
		case OPT_CAUGHT_UP:
			caught_up = true;
			break;
		case OPT_FOLLOW:
			follow = true;
			break;
		case OPT_NO_LOG:
			o.conflict_log = false;
			break;
		case OPT_HORIZON: {
			uint64_t v;
			if (!cli_parse_u64("--tombstone-horizon", optarg, &v))
				goto cleanup;
			o.tombstone_horizon_s = (int64_t)v;
			break;
		}
		case OPT_ORIGIN:
			o.origin = optarg;
			break;
		case OPT_RETRY_REPORT: {
			uint64_t v;
			if (!cli_parse_u64("--retry-report", optarg, &v))
				goto cleanup;
			if (v == 0 || v > 365 * 24 * 3600) {
				rc = cli_usage_error("apply",
						     "--retry-report wants seconds between 1 and "
						     "one year, not \"%s\"",
						     optarg);
				goto cleanup;
			}
			o.retry_report_s = (int64_t)v;
			break;
		}
		case OPT_GROUP_SIZE:
		case OPT_GROUP_MS: {
			uint64_t v;
			const char *name = c == OPT_GROUP_SIZE ? "--group-size" : "--group-ms";
			if (!cli_parse_u64(name, optarg, &v))
				goto cleanup;
			if (v < 1 || v > UINT32_MAX) {
				rc = cli_usage_error("apply",
						     "%s wants a number from 1 to %u, not \"%s\"",
						     name, UINT32_MAX, optarg);
				goto cleanup;
			}
			if (c == OPT_GROUP_SIZE)
				o.group_size = (uint32_t)v;
			else
				o.group_ms = (int64_t)v;
			break;
		}
		case OPT_GROUP_BYTES:
			if (!cli_parse_size("--group-bytes", optarg, &o.group_bytes))
				goto cleanup;
			break;
		case OPT_MAX_RATE: {
			uint64_t rows, bytes;
			if (!cli_parse_rate("--max-rate", optarg, &rows, &bytes))
				goto cleanup;
			sluice_rate_init(&rate, rows, bytes);
			o.rate = &rate;
			break;
		}
		case OPT_MAX_AGE:
			if (!cli_parse_duration("--max-age", optarg, &max_age_us))
				goto cleanup;
			break;
		case 'h':
			apply_help(stdout);
			rc = SLUICE_EXIT_OK;
			goto cleanup;
		default:
			rc = cli_usage_error("apply", "invalid option");
			goto cleanup;
		}
	}
	if (optind < argc) {
		rc = cli_usage_error("apply", "unexpected argument \"%s\"", argv[optind]);
		goto cleanup;
	}
	if (store_spec == NULL || o.stream == NULL || ntrust == 0 || o.target == NULL) {
		rc = cli_usage_error("apply",
				     "--store, --stream, --trust and --target are required");
		goto cleanup;
	}
	if (caught_up && follow) {
		rc = cli_usage_error("apply",
				     "--follow and --exit-when-caught-up exclude each other");
		goto cleanup;
	}
	o.ts_columns = tscols;
	o.filter.include = inc;
	o.filter.exclude = exc;
	/* A bounded or dry run ends at the end of the stream; otherwise follow it. */
	o.follow = follow ||
		   (!caught_up && !o.dry_run && !o.until_time_us && !o.until_txseq && !o.until_lsn);
	rc = SLUICE_EXIT_FAILURE;
	trust = cli_load_trust(trust_paths, ntrust);
	if (trust == NULL || !sluice_store_open(store_spec, &store))
		goto cleanup;

	o.stop = cli_stop_on_signals();

	if (max_age_us > 0)
		apply_check_age(store, trust, o.stream, max_age_us);
	sluice_apply_stats st;
	bool ok = sluice_apply_run(store, trust, &o, &st);
	if (o.rate != NULL)
		sluice_log_info("--max-rate: waited %.1f s in all for the limit of %" PRIu64
				" row changes and %" PRIu64 " bytes per second (0: none)",
				(double)o.rate->waited_ms / 1000, o.rate->rows_per_s,
				o.rate->bytes_per_s);
	if (max_age_us > 0)
		apply_check_age(store, trust, o.stream, max_age_us);
	if (o.dry_run) {
		printf("dry run: %" PRIu64 " transactions, %" PRIu64 " inserts, %" PRIu64
		       " updates, %" PRIu64 " deletes, %" PRIu64 " truncates, %" PRIu64
		       " skipped\n",
		       st.transactions, st.inserts, st.updates, st.deletes, st.truncates,
		       st.skipped);
		for (int k = 0; k < SLUICE_CONFLICT_COUNT; k++)
			printf("conflict %s: %" PRIu64 "\n",
			       sluice_conflict_name((sluice_conflict)k), st.conflicts[k]);
	}
	rc = ok ? SLUICE_EXIT_OK : st.refused ? SLUICE_EXIT_PROBLEM : SLUICE_EXIT_FAILURE;

cleanup:
	sluice_store_close(store);
	sluice_trust_free(trust);
	free(exc);
	free(inc);
	free(tscols);
	free(trust_paths);
	return rc;
}

static void
prepare_help(FILE *f)
{
	fprintf(f,
		"Usage: sluice prepare --target CONNINFO --node NAME [--include GLOB ...]\n"
		"                      [--exclude GLOB ...]\n"
		"       sluice prepare --target CONNINFO --undo [--include GLOB ...] [--all]\n"
		"       sluice prepare --target mongodb://... --node NAME [--tombstone-horizon S]\n"
		"       sluice prepare --target mongodb://... --undo --all\n"
		"\n"
		"Set up a node for active-active apply, explicitly and idempotently: creates the\n"
		"schema sluice (node name, tombstones, conflict log, version functions) and\n"
		"installs delete tracking (an AFTER DELETE trigger, enabled ALWAYS) on every\n"
		"matching table, so that local deletes leave tombstones too and an older remote\n"
		"update cannot bring a deleted row back. --undo removes the triggers from the\n"
		"matching tables; with --all it also drops the schema sluice.\n"
		"\n"
		"With a MongoDB target (a replica set): records the node's name and the point\n"
		"from which apply --strategy timestamp versions local writes (sluice.node; it\n"
		"reads them from the deployment's change stream into sluice.versions, since\n"
		"MongoDB keeps no commit time per document and has no triggers), and creates\n"
		"the TTL index that removes tombstones past the horizon. NAME must be the\n"
		"--node of the capture of that deployment. --undo --all drops sluice.node,\n"
		"sluice.versions and sluice.watch.\n"
		"\n"
		"Options:\n"
		"      --target CONNINFO  the node's database\n"
		"      --node NAME        this node's name (ties between equal commit times are\n"
		"                         won by the greater name; every node needs its own)\n"
		"      --include GLOB     only tables matching schema.table GLOB (repeatable)\n"
		"      --exclude GLOB     skip matching tables (repeatable)\n"
		"      --undo             remove delete tracking\n"
		"      --all              with --undo: drop the schema sluice as well\n"
		"      --tombstone-horizon S  MongoDB: tombstones expire after S seconds (default\n"
		"                         604800, 7 days)\n"
		"  -h, --help             show this help\n"
		"\n"
		"Exit status: 0 done, 2 usage error, 3 failure.\n");
}

int
cmd_prepare(int argc, char **argv)
{
	enum {
		OPT_TARGET = 1000,
		OPT_NODE,
		OPT_INCLUDE,
		OPT_EXCLUDE,
		OPT_UNDO,
		OPT_ALL,
		OPT_HORIZON
	};
	static const struct option opts[] = {
		{"target", required_argument, NULL, OPT_TARGET},
		{"node", required_argument, NULL, OPT_NODE},
		{"include", required_argument, NULL, OPT_INCLUDE},
		{"exclude", required_argument, NULL, OPT_EXCLUDE},
		{"undo", no_argument, NULL, OPT_UNDO},
		{"all", no_argument, NULL, OPT_ALL},
		{"tombstone-horizon", required_argument, NULL, OPT_HORIZON},
		{"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0},
	};
	const char *target = NULL, *node = NULL;
	uint64_t horizon = 7 * 86400;
	bool has_horizon = false;
	bool undo = false, all = false;
	const char **inc = calloc((size_t)argc + 1, sizeof(char *));
	const char **exc = calloc((size_t)argc + 1, sizeof(char *));
	if (inc == NULL || exc == NULL)
		abort();
	sluice_table_filter f = {.include = inc, .exclude = exc};
	int rc = SLUICE_EXIT_USAGE;
	PGconn *conn = NULL;
	int c;
	while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		switch (c) {
		case OPT_TARGET:
			target = optarg;
			break;
		case OPT_NODE:
			node = optarg;
			break;
		case OPT_INCLUDE:
			inc[f.ninclude++] = optarg;
			break;
		case OPT_EXCLUDE:
			exc[f.nexclude++] = optarg;
			break;
		case OPT_UNDO:
			undo = true;
			break;
		case OPT_ALL:
			all = true;
			break;
		case OPT_HORIZON:
			if (!cli_parse_u64("--tombstone-horizon", optarg, &horizon) ||
			    horizon == 0 || horizon > INT32_MAX) {
				rc = cli_usage_error("prepare", "--tombstone-horizon takes seconds "
								"(1 to 2147483647)");
				goto cleanup;
			}
			has_horizon = true;
			break;
		case 'h':
			prepare_help(stdout);
			rc = SLUICE_EXIT_OK;
			goto cleanup;
		default:
			rc = cli_usage_error("prepare", "invalid option");
			goto cleanup;
		}
	}
	if (optind < argc) {
		rc = cli_usage_error("prepare", "unexpected argument \"%s\"", argv[optind]);
		goto cleanup;
	}
	if (target == NULL || (!undo && node == NULL)) {
		rc = cli_usage_error("prepare", "--target and --node are required (or --undo)");
		goto cleanup;
	}
	if (all && !undo) {
		rc = cli_usage_error("prepare", "--all goes with --undo");
		goto cleanup;
	}
	bool mongodb = strncmp(target, "mongodb://", 10) == 0 ||
		       strncmp(target, "mongodb+srv://", 14) == 0;
	if (mongodb && (f.ninclude > 0 || f.nexclude > 0)) {
		rc = cli_usage_error("prepare",
				     "--include and --exclude are for PostgreSQL targets "
				     "(a MongoDB node versions every collection)");
		goto cleanup;
	}
	if (!mongodb && has_horizon) {
		rc = cli_usage_error("prepare", "--tombstone-horizon is for MongoDB targets "
						"(PostgreSQL's is an apply option)");
		goto cleanup;
	}
	rc = SLUICE_EXIT_FAILURE;
	if (mongodb) {
		bool ok = undo ? sluice_mongo_prepare_undo(target, all)
			       : sluice_mongo_prepare_install(target, node, (int64_t)horizon);
		rc = ok ? SLUICE_EXIT_OK : SLUICE_EXIT_FAILURE;
		goto cleanup;
	}
	conn = sluice_pg_connect(target, false, "the target");
	if (conn == NULL)
		goto cleanup;
	bool ok =
		undo ? sluice_prepare_undo(conn, &f, all) : sluice_prepare_install(conn, node, &f);
	rc = ok ? SLUICE_EXIT_OK : SLUICE_EXIT_FAILURE;

cleanup:
	PQfinish(conn);
	free(exc);
	free(inc);
	return rc;
}
