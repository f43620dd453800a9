/*
 * mongo_cs_reader: a plain libmongoc change stream reader, the baseline of
 * tools/bench.sh's MongoDB capture benchmark. It watches the deployment from
 * a cluster time, writes every event's BSON to stdout and stops after N events.
 *   mongo_cs_reader URI SECONDS INCREMENT N
 * Exit status: 0 read N events, 1 an error (said on stderr), 2 usage.
 */
#include <mongoc/mongoc.h>
#include <stdio.h>
#include <stdlib.h>

int
main(int argc, char **argv)
{
	if (argc != 5) {
		fprintf(stderr, "usage: mongo_cs_reader URI SECONDS INCREMENT N\n");
		return 2;
	}
	uint32_t t = (uint32_t)strtoul(argv[2], NULL, 10);
	uint32_t i = (uint32_t)strtoul(argv[3], NULL, 10);
	unsigned long long want = strtoull(argv[4], NULL, 10);
	mongoc_init();
	bson_error_t err;
	mongoc_uri_t *uri = mongoc_uri_new_with_error(argv[1], &err);
	if (uri == NULL) {
		fprintf(stderr, "mongo_cs_reader: %s\n", err.message);
		return 2;
	}
	mongoc_client_t *client = mongoc_client_new_from_uri(uri);
	bson_t opts = BSON_INITIALIZER, pipeline = BSON_INITIALIZER;
	BSON_APPEND_TIMESTAMP(&opts, "startAtOperationTime", t, i);
	BSON_APPEND_INT64(&opts, "maxAwaitTimeMS", 200);
	mongoc_change_stream_t *cs = mongoc_client_watch(client, &pipeline, &opts);
	unsigned long long n = 0;
	int rc = 0;
	const bson_t *ev;
	const bson_t *reply;
	while (n < want) {
		if (mongoc_change_stream_next(cs, &ev)) {
			if (fwrite(bson_get_data(ev), 1, ev->len, stdout) != ev->len) {
				perror("mongo_cs_reader: write");
				rc = 1;
				break;
			}
			n++;
		} else if (mongoc_change_stream_error_document(cs, &err, &reply)) {
			fprintf(stderr, "mongo_cs_reader: %s\n", err.message);
			rc = 1;
			break;
		}
	}
	fflush(stdout);
	mongoc_change_stream_destroy(cs);
	bson_destroy(&opts);
	bson_destroy(&pipeline);
	mongoc_client_destroy(client);
	mongoc_uri_destroy(uri);
	mongoc_cleanup();
	return rc;
}
