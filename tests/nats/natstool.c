/*
 * natstool: a raw JetStream client for the NATS tests (libnats, no sluice
 * code): makes mirror and deletable streams, and alters a stream the way an
 * attacker with publish rights could (forged, replayed, deleted messages).
 */
#include <inttypes.h>
#include <nats/nats.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void
natstool_usage(void)
{
	fprintf(stderr,
		"Usage: natstool URL add-stream NAME SUBJECTS REPLICAS\n"
		"       natstool URL add-mirror NAME ORIGIN REPLICAS\n"
		"       natstool URL last-seq STREAM SUBJECT\n"
		"       natstool URL msgs STREAM\n"
		"       natstool URL delete STREAM SEQ\n"
		"       natstool URL forge STREAM SUBJECT flip|garbage|replay SEQ\n"
		"forge publishes after the last message on SUBJECT, in its segment and at its\n"
		"end: flip: that message's bytes with one byte changed; replay: the bytes of\n"
		"message SEQ again; garbage: a message without sluice headers.\n");
	exit(2);
}

static uint64_t
natstool_u64(const char *s)
{
	char *end = NULL;
	unsigned long long v = strtoull(s, &end, 10);
	if (end == s || *end != '\0')
		natstool_usage();
	return (uint64_t)v;
}

static void
natstool_check(natsStatus s, const char *what)
{
	if (s == NATS_OK)
		return;
	natsStatus st;
	const char *text = nats_GetLastError(&st);
	fprintf(stderr, "natstool: %s: %s\n", what, text && *text ? text : natsStatus_GetText(s));
	exit(1);
}

static void
natstool_add(jsCtx *js, const char *name, const char *subjects, const char *origin, int replicas)
{
	jsStreamConfig cfg;
	jsStreamSource src;
	jsStreamConfig_Init(&cfg);
	cfg.Name = name;
	cfg.Replicas = replicas;
	cfg.Duplicates = 120LL * 1000000000LL;
	const char *subj[] = {subjects};
	if (origin != NULL) {
		jsStreamSource_Init(&src);
		src.Name = origin;
		cfg.Mirror = &src;
	} else {
		cfg.Subjects = subj;
		cfg.SubjectsLen = 1;
	}
	jsStreamInfo *si = NULL;
	jsErrCode jerr = 0;
	natstool_check(js_AddStream(&si, js, &cfg, NULL, &jerr), "add stream");
	jsStreamInfo_Destroy(si);
}

int
main(int argc, char **argv)
{
	if (argc < 4)
		natstool_usage();
	natsConnection *nc = NULL;
	jsCtx *js = NULL;
	natstool_check(natsConnection_ConnectTo(&nc, argv[1]), "connect");
	natstool_check(natsConnection_JetStream(&js, nc, NULL), "jetstream");
	const char *cmd = argv[2];
	jsErrCode jerr = 0;
	if (strcmp(cmd, "add-stream") == 0 && argc == 6) {
		natstool_add(js, argv[3], argv[4], NULL, (int)natstool_u64(argv[5]));
	} else if (strcmp(cmd, "add-mirror") == 0 && argc == 6) {
		natstool_add(js, argv[3], NULL, argv[4], (int)natstool_u64(argv[5]));
	} else if (strcmp(cmd, "msgs") == 0 && argc == 4) {
		jsStreamInfo *si = NULL;
		natstool_check(js_GetStreamInfo(&si, js, argv[3], NULL, &jerr), "stream info");
		printf("%" PRIu64 "\n", si->State.Msgs);
		jsStreamInfo_Destroy(si);
	} else if (strcmp(cmd, "last-seq") == 0 && argc == 5) {
		natsMsg *m = NULL;
		natstool_check(js_GetLastMsg(&m, js, argv[3], argv[4], NULL, &jerr),
			       "last message");
		printf("%" PRIu64 "\n", natsMsg_GetSequence(m));
		natsMsg_Destroy(m);
	} else if (strcmp(cmd, "delete") == 0 && argc == 5) {
		natstool_check(js_DeleteMsg(js, argv[3], natstool_u64(argv[4]), NULL, &jerr),
			       "delete message");
	} else if (strcmp(cmd, "forge") == 0 && argc >= 6) {
		const char *mode = argv[5];
		natsMsg *last = NULL, *src = NULL, *out = NULL;
		natstool_check(js_GetLastMsg(&last, js, argv[3], argv[4], NULL, &jerr),
			       "last message");
		const char *seg = NULL, *off = NULL;
		natsMsgHeader_Get(last, "Sluice-Segment", &seg);
		natsMsgHeader_Get(last, "Sluice-Offset", &off);
		if (seg == NULL || off == NULL) {
			fprintf(stderr, "natstool: the last message is not a frame\n");
			return 1;
		}
		char end[32];
		snprintf(end, sizeof(end), "%" PRIu64,
			 natstool_u64(off) + (uint64_t)natsMsg_GetDataLength(last));
		if (strcmp(mode, "replay") == 0 && argc == 7)
			natstool_check(
				js_GetMsg(&src, js, argv[3], natstool_u64(argv[6]), NULL, &jerr),
				"get message");
		else if (strcmp(mode, "flip") == 0 || strcmp(mode, "garbage") == 0)
			src = last;
		else
			natstool_usage();
		int len = natsMsg_GetDataLength(src);
		char *data = malloc((size_t)len + 1);
		memcpy(data, natsMsg_GetData(src), (size_t)len);
		if (strcmp(mode, "flip") == 0)
			data[len - 1] ^= 0x20;
		natstool_check(natsMsg_Create(&out, argv[4], NULL, data, len), "message");
		if (strcmp(mode, "garbage") != 0) {
			natsMsgHeader_Set(out, "Sluice-Segment", seg);
			natsMsgHeader_Set(out, "Sluice-Offset", end);
		}
		jsPubAck *pa = NULL;
		natstool_check(js_PublishMsg(&pa, js, out, NULL, &jerr), "publish");
		printf("%" PRIu64 "\n", pa->Sequence);
		jsPubAck_Destroy(pa);
		natsMsg_Destroy(out);
		if (src != last)
			natsMsg_Destroy(src);
		natsMsg_Destroy(last);
		free(data);
	} else {
		natstool_usage();
	}
	jsCtx_Destroy(js);
	natsConnection_Destroy(nc);
	nats_Close();
	return 0;
}
