/* Frame appender: the writer's second thread, which encodes frames and appends them in order. */
#include "appender.h"

#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"

typedef enum appender_kind {
	APPENDER_OPEN,  /* create the segment named by first_txseq */
	APPENDER_FRAME, /* encode raw as the next frame */
	APPENDER_PUSH,  /* hand the encoded frames to the store, durably */
	APPENDER_SEAL,  /* push, then seal and close the open segment */
} appender_kind;

/* One piece of work; the ring's slots keep their raw buffers between uses. */
typedef struct appender_job {
	appender_kind kind;
	uint64_t first_txseq;    /* OPEN */
	sluice_frame_header hdr; /* FRAME: the fields the writer chose */
	sluice_buf raw;          /* owned: FRAME's records */
} appender_job;

struct sluice_appender {
	sluice_store *store;   /* borrowed */
	char *stream;          /* owned */
	const sluice_key *key; /* borrowed */
	uint64_t stream_id;
	size_t max_chunk;

	/* The appender thread's alone once it runs. */
	sluice_frame_codec *codec; /* owned */
	sluice_segment *seg;       /* owned; NULL between a seal and the next open */
	uint8_t prev_hash[SLUICE_FRAME_HASH_SIZE];
	uint64_t next_frame_seq;
	uint64_t seg_frames;
	sluice_buf chunk; /* owned: encoded frames not yet handed to the store */
	bool unsynced;    /* frames were handed to the store without being made durable */

	pthread_t thread;
	bool started;
	pthread_mutex_t mu;  /* guards everything below */
	pthread_cond_t work; /* a job was queued, or stop was set */
	pthread_cond_t done; /* a job was done */
	appender_job *jobs;  /* owned ring of depth slots */
	size_t depth;
	size_t head;       /* the oldest waiting job (the one being done, if any) */
	size_t count;      /* jobs waiting or being done */
	bool stop;         /* finish the queue and end the thread */
	bool failed;       /* a job failed: later ones are dropped */
	uint64_t seg_size; /* bytes encoded into the open segment */
	uint64_t frames, bytes;
};

/*
 * appender_flush_chunk hands the encoded frames to the store: durably, or
 * (a chunk that grew to max_chunk, which no one waits for) only written, to
 * become durable with the next durable write. That one happens even when
 * no frame is left to write: the frame holding a commit may have gone out
 * in a chunk that was only written.
 */
static bool
appender_flush_chunk(sluice_appender *a, bool durable)
{
	if (a->chunk.len == 0 && !(durable && a->unsynced))
		return true;
	if (a->seg == NULL || !sluice_segment_write(a->seg, a->chunk.data, a->chunk.len, durable))
		return false;
	sluice_buf_reset(&a->chunk);
	a->unsynced = !durable;
	return true;
}

/* appender_encode signs the frame of job into the chunk and moves the chain on. */
static bool
appender_encode(sluice_appender *a, appender_job *job)
{
	if (a->seg == NULL) {
		sluice_log_error("stream \"%s\": frame %" PRIu64 " handed over without a segment",
				 a->stream, a->next_frame_seq);
		return false;
	}
	sluice_frame_header hdr = job->hdr;
	if (a->seg_frames == 0)
		hdr.flags |= SLUICE_FRAME_FIRST;
	hdr.stream_id = a->stream_id;
	hdr.frame_seq = a->next_frame_seq;
	memcpy(hdr.key_id, sluice_key_id(a->key), SLUICE_FRAME_KEY_ID_SIZE);
	memcpy(hdr.prev_hash, a->prev_hash, SLUICE_FRAME_HASH_SIZE);

	size_t before = a->chunk.len;
	sluice_frame_status fs =
		sluice_frame_encode(a->codec, &hdr, job->raw.data, job->raw.len,
				    sluice_key_secret(a->key), &a->chunk, a->prev_hash);
	if (fs != SLUICE_FRAME_OK) {
		sluice_log_error("could not encode frame %" PRIu64 " of stream \"%s\": %s",
				 hdr.frame_seq, a->stream, sluice_frame_strerror(fs));
		return false;
	}
	uint64_t n = a->chunk.len - before;
	a->next_frame_seq++;
	a->seg_frames++;
	pthread_mutex_lock(&a->mu);
	a->frames++;
	a->bytes += n;
	a->seg_size += n;
	pthread_mutex_unlock(&a->mu);
	return a->chunk.len < a->max_chunk || appender_flush_chunk(a, false);
}

/* appender_do does one job on the appender thread. */
static bool
appender_do(sluice_appender *a, appender_job *job)
{
	switch (job->kind) {
	case APPENDER_OPEN:
		if (a->seg != NULL) {
			sluice_log_error("stream \"%s\": a segment is opened while another is open",
					 a->stream);
			return false;
		}
		if (!sluice_store_segment_open(a->store, a->stream, job->first_txseq, true, true,
					       &a->seg))
			return false;
		a->seg_frames = 0;
		pthread_mutex_lock(&a->mu);
		a->seg_size = 0;
		pthread_mutex_unlock(&a->mu);
		return true;
	case APPENDER_FRAME:
		return appender_encode(a, job);
	case APPENDER_PUSH:
		return appender_flush_chunk(a, true);
	case APPENDER_SEAL:
		if (a->seg == NULL) {
			sluice_log_error("stream \"%s\": no segment is open to seal", a->stream);
			return false;
		}
		if (!appender_flush_chunk(a, true) || !sluice_segment_seal(a->seg))
			return false;
		sluice_segment_close(a->seg);
		a->seg = NULL;
		a->unsynced = false;
		return true;
	}
	return false;
}

/* appender_main is the appender thread: jobs in order until stopped and drained. */
static void *
appender_main(void *arg)
{
	sluice_appender *a = arg;
	pthread_mutex_lock(&a->mu);
	for (;;) {
		while (a->count == 0 && !a->stop)
			pthread_cond_wait(&a->work, &a->mu);
		if (a->count == 0)
			break;
		appender_job *job = &a->jobs[a->head];
		bool skip = a->failed;
		pthread_mutex_unlock(&a->mu);
		bool ok = skip || appender_do(a, job);
		sluice_buf_reset(&job->raw);
		pthread_mutex_lock(&a->mu);
		if (!ok)
			a->failed = true;
		a->head = (a->head + 1) % a->depth;
		a->count--;
		pthread_cond_broadcast(&a->done);
	}
	pthread_mutex_unlock(&a->mu);
	return NULL;
}

sluice_appender *
sluice_appender_create(sluice_store *store, const char *stream, const sluice_key *key,
		       const sluice_appender_options *options, const sluice_appender_tail *tail)
{
	sluice_appender *a = calloc(1, sizeof(*a));
	if (a == NULL)
		abort();
	a->store = store;
	a->key = key;
	a->stream = strdup(stream);
	if (a->stream == NULL)
		abort();
	a->stream_id = sluice_frame_stream_id(stream);
	a->max_chunk = options->max_chunk;
	a->depth = options->depth > 0 ? options->depth : 1;
	a->jobs = calloc(a->depth, sizeof(*a->jobs));
	if (a->jobs == NULL)
		abort();
	a->seg = tail->seg;
	a->seg_size = tail->seg_size;
	a->seg_frames = tail->seg_frames;
	a->next_frame_seq = tail->next_frame_seq;
	memcpy(a->prev_hash, tail->prev_hash, SLUICE_FRAME_HASH_SIZE);
	pthread_mutex_init(&a->mu, NULL);
	pthread_cond_init(&a->work, NULL);
	pthread_cond_init(&a->done, NULL);
	a->codec = sluice_frame_codec_create(options->zstd_level);
	if (a->codec == NULL) {
		sluice_log_error("could not create zstd contexts");
		goto fail;
	}
	/* Signals go to the thread that handles them: the appender's blocks them all. */
	sigset_t all, old;
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	int rc = pthread_create(&a->thread, NULL, appender_main, a);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (rc != 0) {
		sluice_log_error("could not start the frame appender thread of stream \"%s\": %s",
				 stream, strerror(rc));
		goto fail;
	}
	a->started = true;
	return a;

fail:
	sluice_appender_free(a);
	return NULL;
}

void
sluice_appender_free(sluice_appender *a)
{
	if (a == NULL)
		return;
	if (a->started) {
		pthread_mutex_lock(&a->mu);
		a->stop = true;
		pthread_cond_signal(&a->work);
		pthread_mutex_unlock(&a->mu);
		pthread_join(a->thread, NULL);
	}
	sluice_segment_close(a->seg);
	for (size_t i = 0; i < a->depth; i++)
		sluice_buf_free(&a->jobs[i].raw);
	free(a->jobs);
	sluice_buf_free(&a->chunk);
	sluice_frame_codec_free(a->codec);
	pthread_cond_destroy(&a->done);
	pthread_cond_destroy(&a->work);
	pthread_mutex_destroy(&a->mu);
	free(a->stream);
	free(a);
}

/*
 * appender_reserve waits for a free slot: the one after the waiting jobs,
 * which the appender thread does not touch until appender_commit counts it.
 * @return NULL once the appender has failed.
 */
static appender_job *
appender_reserve(sluice_appender *a, appender_kind kind)
{
	pthread_mutex_lock(&a->mu);
	while (a->count == a->depth && !a->failed)
		pthread_cond_wait(&a->done, &a->mu);
	appender_job *job = a->failed ? NULL : &a->jobs[(a->head + a->count) % a->depth];
	pthread_mutex_unlock(&a->mu);
	if (job != NULL)
		job->kind = kind;
	return job;
}

/* appender_commit queues the reserved slot. */
static void
appender_commit(sluice_appender *a)
{
	pthread_mutex_lock(&a->mu);
	a->count++;
	pthread_cond_signal(&a->work);
	pthread_mutex_unlock(&a->mu);
}

bool
sluice_appender_open_segment(sluice_appender *a, uint64_t first_txseq)
{
	appender_job *job = appender_reserve(a, APPENDER_OPEN);
	if (job == NULL)
		return false;
	job->first_txseq = first_txseq;
	appender_commit(a);
	return true;
}

bool
sluice_appender_frame(sluice_appender *a, const sluice_frame_header *hdr, sluice_buf *raw,
		      size_t len)
{
	appender_job *job = appender_reserve(a, APPENDER_FRAME);
	if (job == NULL)
		return false;
	job->hdr = *hdr;
	/* The slot's empty buffer becomes the caller's; its records become the job's. */
	sluice_buf mine = job->raw;
	job->raw = *raw;
	*raw = mine;
	if (len < job->raw.len) {
		sluice_buf_append(raw, job->raw.data + len, job->raw.len - len);
		job->raw.len = len;
	}
	appender_commit(a);
	return true;
}

bool
sluice_appender_push(sluice_appender *a)
{
	if (appender_reserve(a, APPENDER_PUSH) == NULL)
		return false;
	appender_commit(a);
	return true;
}

bool
sluice_appender_seal(sluice_appender *a)
{
	if (appender_reserve(a, APPENDER_SEAL) == NULL)
		return false;
	appender_commit(a);
	return true;
}

bool
sluice_appender_wait(sluice_appender *a)
{
	pthread_mutex_lock(&a->mu);
	while (a->count > 0)
		pthread_cond_wait(&a->done, &a->mu);
	bool ok = !a->failed;
	pthread_mutex_unlock(&a->mu);
	return ok;
}

uint64_t
sluice_appender_segment_size(sluice_appender *a)
{
	pthread_mutex_lock(&a->mu);
	uint64_t size = a->seg_size;
	pthread_mutex_unlock(&a->mu);
	return size;
}

void
sluice_appender_counters(sluice_appender *a, uint64_t *frames, uint64_t *bytes)
{
	pthread_mutex_lock(&a->mu);
	*frames = a->frames;
	*bytes = a->bytes;
	pthread_mutex_unlock(&a->mu);
}
