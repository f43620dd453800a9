/* Frame appender: the writer's two threads, one encoding frames and one writing them, in order. */
#include "appender.h"

#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"

/* Chunks of encoded frames that may wait for the store thread. */
#define APPENDER_STORE_DEPTH 2

typedef enum appender_kind {
	APPENDER_OPEN,  /* create the segment named by first_txseq */
	APPENDER_FRAME, /* encode bytes as the next frame (to the encoding thread only) */
	APPENDER_WRITE, /* write bytes, encoded frames, without waiting for them to be durable */
	APPENDER_PUSH,  /* write bytes and make everything written durable; report mark */
	APPENDER_SEAL,  /* push, then seal and close the open segment */
} appender_kind;

/* One piece of work. Slots keep their buffers between uses, for their memory. */
typedef struct appender_job {
	appender_kind kind;
	uint64_t first_txseq;      /* OPEN */
	sluice_frame_header hdr;   /* FRAME: the fields the writer chose */
	sluice_appender_mark mark; /* PUSH, SEAL */
	sluice_buf bytes;          /* owned: FRAME's records; encoded frames for the store */
} appender_job;

/* A bounded queue from one thread to the next, under the appender's mutex. */
typedef struct appender_ring {
	appender_job *jobs; /* owned: depth slots */
	size_t depth;
	size_t head;          /* the oldest job (the one being done, if any) */
	size_t count;         /* jobs waiting or being done */
	pthread_cond_t ready; /* a job was queued, or the producer ended */
	bool ended;           /* the producer hands over nothing more */
} appender_ring;

struct sluice_appender {
	sluice_store *store;   /* borrowed */
	char *stream;          /* owned */
	const sluice_key *key; /* borrowed */
	uint64_t stream_id;
	size_t max_chunk;
	uint64_t asked; /* pushes and seals handed over (the writer's thread only) */

	/* The encoding thread's alone once it runs. */
	sluice_frame_codec *codec; /* owned */
	uint8_t prev_hash[SLUICE_FRAME_HASH_SIZE];
	uint64_t next_frame_seq;
	uint64_t seg_frames;
	sluice_buf chunk; /* owned: encoded frames not yet handed to the store thread */

	/* The store thread's alone once it runs. */
	sluice_segment *seg; /* owned; NULL between a seal and the next open */
	bool unsynced;       /* frames were written without being made durable */

	pthread_t encoder, writer;
	bool encoder_started, writer_started;
	pthread_mutex_t mu;   /* guards everything below */
	pthread_cond_t done;  /* a job was done */
	appender_ring frames; /* the writer's thread to the encoding thread */
	appender_ring chunks; /* the encoding thread to the store thread */
	bool failed;          /* a job failed: later ones are dropped */
	uint64_t answered;    /* pushes and seals done */
	sluice_appender_mark synced, sealed;
	uint64_t seg_size; /* bytes encoded into the open segment */
	uint64_t frames_encoded, bytes_encoded;
};

/*
 * appender_reserve waits for a free slot of ring: the one after the waiting
 * jobs, which its consumer does not touch until appender_commit counts it.
 * @return NULL once the appender has failed.
 */
static appender_job *
appender_reserve(sluice_appender *a, appender_ring *ring, appender_kind kind)
{
	pthread_mutex_lock(&a->mu);
	while (ring->count == ring->depth && !a->failed)
		pthread_cond_wait(&a->done, &a->mu);
	appender_job *job =
		a->failed ? NULL : &ring->jobs[(ring->head + ring->count) % ring->depth];
	pthread_mutex_unlock(&a->mu);
	if (job != NULL)
		job->kind = kind;
	return job;
}

/* appender_commit queues the slot appender_reserve gave. */
static void
appender_commit(sluice_appender *a, appender_ring *ring)
{
	pthread_mutex_lock(&a->mu);
	ring->count++;
	pthread_cond_signal(&ring->ready);
	pthread_mutex_unlock(&a->mu);
}

/*
 * appender_serve is a consumer thread's loop: each job of ring in turn to
 * do, until its producer ended and nothing waits. After a failure jobs are
 * dropped, not done. Every buffer is emptied (its memory kept) once done.
 */
static void
appender_serve(sluice_appender *a, appender_ring *ring,
	       bool (*do_job)(sluice_appender *, appender_job *))
{
	pthread_mutex_lock(&a->mu);
	for (;;) {
		while (ring->count == 0 && !ring->ended)
			pthread_cond_wait(&ring->ready, &a->mu);
		if (ring->count == 0)
			break;
		appender_job *job = &ring->jobs[ring->head];
		bool skip = a->failed;
		pthread_mutex_unlock(&a->mu);
		bool ok = skip || do_job(a, job);
		sluice_buf_reset(&job->bytes);
		pthread_mutex_lock(&a->mu);
		if (!ok)
			a->failed = true;
		ring->head = (ring->head + 1) % ring->depth;
		ring->count--;
		pthread_cond_broadcast(&a->done);
	}
	pthread_mutex_unlock(&a->mu);
}

/* appender_end tells the consumer of ring that nothing more comes. */
static void
appender_end(sluice_appender *a, appender_ring *ring)
{
	pthread_mutex_lock(&a->mu);
	ring->ended = true;
	pthread_cond_signal(&ring->ready);
	pthread_mutex_unlock(&a->mu);
}

/* ---- the store thread ---- */

/*
 * appender_write writes encoded frames to the open segment: durably, or
 * (a chunk that grew to max_chunk, which no one waits for) only written, to
 * become durable with the next durable write. That one happens even when
 * no frame is left to write: the frame holding a commit may have gone out
 * in a chunk that was only written.
 */
static bool
appender_write(sluice_appender *a, const sluice_buf *bytes, bool durable)
{
	if (bytes->len == 0 && !(durable && a->unsynced))
		return true;
	if (a->seg == NULL) {
		sluice_log_error("stream \"%s\": frames to write without an open segment",
				 a->stream);
		return false;
	}
	if (!sluice_segment_write(a->seg, bytes->data, bytes->len, durable))
		return false;
	a->unsynced = !durable;
	return true;
}

/* appender_store does one job of the store thread. */
static bool
appender_store(sluice_appender *a, appender_job *job)
{
	switch (job->kind) {
	case APPENDER_OPEN:
		if (a->seg != NULL) {
			sluice_log_error("stream \"%s\": a segment is opened while another is open",
					 a->stream);
			return false;
		}
		return sluice_store_segment_open(a->store, a->stream, job->first_txseq, true, true,
						 &a->seg);
	case APPENDER_WRITE:
		return appender_write(a, &job->bytes, false);
	case APPENDER_PUSH:
	case APPENDER_SEAL:
		if (!appender_write(a, &job->bytes, true))
			return false;
		if (job->kind == APPENDER_SEAL) {
			if (a->seg == NULL) {
				sluice_log_error("stream \"%s\": no segment is open to seal",
						 a->stream);
				return false;
			}
			if (!sluice_segment_seal(a->seg))
				return false;
			sluice_segment_close(a->seg);
			a->seg = NULL;
		}
		pthread_mutex_lock(&a->mu);
		a->synced = job->mark;
		if (job->kind == APPENDER_SEAL)
			a->sealed = job->mark;
		a->answered++;
		pthread_mutex_unlock(&a->mu);
		return true;
	case APPENDER_FRAME:
		break;
	}
	sluice_log_error("stream \"%s\": the store thread was handed a frame to encode", a->stream);
	return false;
}

static void *
appender_store_main(void *arg)
{
	sluice_appender *a = arg;
	appender_serve(a, &a->chunks, appender_store);
	return NULL;
}

/* ---- the encoding thread ---- */

/* appender_forward hands the encoded frames (all of them, maybe none) on with job's kind. */
static bool
appender_forward(sluice_appender *a, const appender_job *job)
{
	appender_job *next = appender_reserve(a, &a->chunks, job->kind);
	if (next == NULL)
		return false;
	next->first_txseq = job->first_txseq;
	next->mark = job->mark;
	/* The slot's empty buffer becomes the chunk to encode into next. */
	sluice_buf empty = next->bytes;
	next->bytes = a->chunk;
	a->chunk = empty;
	appender_commit(a, &a->chunks);
	return true;
}

/* appender_encode signs the frame of job into the chunk and moves the chain on. */
static bool
appender_encode(sluice_appender *a, appender_job *job)
{
	sluice_frame_header hdr = job->hdr;
	if (a->seg_frames == 0)
		hdr.flags |= SLUICE_FRAME_FIRST;
	hdr.stream_id = a->stream_id;
	hdr.frame_seq = a->next_frame_seq;
	memcpy(hdr.key_id, sluice_key_id(a->key), SLUICE_FRAME_KEY_ID_SIZE);
	memcpy(hdr.prev_hash, a->prev_hash, SLUICE_FRAME_HASH_SIZE);

	size_t before = a->chunk.len;
	sluice_frame_status fs =
		sluice_frame_encode(a->codec, &hdr, job->bytes.data, job->bytes.len,
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
	a->frames_encoded++;
	a->bytes_encoded += n;
	a->seg_size += n;
	pthread_mutex_unlock(&a->mu);
	if (a->chunk.len < a->max_chunk)
		return true;
	appender_job write = {.kind = APPENDER_WRITE};
	return appender_forward(a, &write);
}

/* appender_encoder does one job of the encoding thread. */
static bool
appender_encoder(sluice_appender *a, appender_job *job)
{
	switch (job->kind) {
	case APPENDER_FRAME:
		return appender_encode(a, job);
	case APPENDER_OPEN:
		if (a->chunk.len > 0) {
			sluice_log_error("stream \"%s\": a segment is opened with frames of the "
					 "last one still to write",
					 a->stream);
			return false;
		}
		a->seg_frames = 0;
		pthread_mutex_lock(&a->mu);
		a->seg_size = 0;
		pthread_mutex_unlock(&a->mu);
		return appender_forward(a, job);
	case APPENDER_WRITE:
	case APPENDER_PUSH:
	case APPENDER_SEAL:
		return appender_forward(a, job);
	}
	return false;
}

static void *
appender_encoder_main(void *arg)
{
	sluice_appender *a = arg;
	appender_serve(a, &a->frames, appender_encoder);
	appender_end(a, &a->chunks);
	return NULL;
}

/* ---- the writer's side ---- */

static void
appender_ring_init(appender_ring *ring, size_t depth)
{
	ring->depth = depth;
	ring->jobs = calloc(depth, sizeof(*ring->jobs));
	if (ring->jobs == NULL)
		abort();
	pthread_cond_init(&ring->ready, NULL);
}

static void
appender_ring_free(appender_ring *ring)
{
	for (size_t i = 0; i < ring->depth; i++)
		sluice_buf_free(&ring->jobs[i].bytes);
	free(ring->jobs);
	pthread_cond_destroy(&ring->ready);
}

/* appender_start starts a thread with every signal blocked: they go to the writer's thread. */
static bool
appender_start(sluice_appender *a, pthread_t *thread, void *(*run)(void *), const char *what)
{
	sigset_t all, old;
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	int rc = pthread_create(thread, NULL, run, a);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (rc != 0) {
		sluice_log_error("could not start the %s thread of stream \"%s\": %s", what,
				 a->stream, strerror(rc));
		return false;
	}
	return true;
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
	a->seg = tail->seg;
	a->seg_size = tail->seg_size;
	a->seg_frames = tail->seg_frames;
	a->next_frame_seq = tail->next_frame_seq;
	memcpy(a->prev_hash, tail->prev_hash, SLUICE_FRAME_HASH_SIZE);
	a->synced = tail->synced;
	a->sealed = tail->sealed;
	pthread_mutex_init(&a->mu, NULL);
	pthread_cond_init(&a->done, NULL);
	appender_ring_init(&a->frames, options->depth > 0 ? options->depth : 1);
	appender_ring_init(&a->chunks, APPENDER_STORE_DEPTH);
	a->codec = sluice_frame_codec_create(options->zstd_level);
	if (a->codec == NULL) {
		sluice_log_error("could not create zstd contexts");
		goto fail;
	}
	a->writer_started = appender_start(a, &a->writer, appender_store_main, "segment writer");
	if (!a->writer_started)
		goto fail;
	a->encoder_started = appender_start(a, &a->encoder, appender_encoder_main, "frame encoder");
	if (!a->encoder_started)
		goto fail;
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
	/* Each thread ends once its queue is empty and its producer has ended. */
	appender_end(a, &a->frames);
	if (a->encoder_started)
		pthread_join(a->encoder, NULL);
	else
		appender_end(a, &a->chunks);
	if (a->writer_started)
		pthread_join(a->writer, NULL);
	sluice_segment_close(a->seg);
	appender_ring_free(&a->frames);
	appender_ring_free(&a->chunks);
	sluice_buf_free(&a->chunk);
	sluice_frame_codec_free(a->codec);
	pthread_cond_destroy(&a->done);
	pthread_mutex_destroy(&a->mu);
	free(a->stream);
	free(a);
}

bool
sluice_appender_open_segment(sluice_appender *a, uint64_t first_txseq)
{
	appender_job *job = appender_reserve(a, &a->frames, APPENDER_OPEN);
	if (job == NULL)
		return false;
	job->first_txseq = first_txseq;
	appender_commit(a, &a->frames);
	return true;
}

bool
sluice_appender_frame(sluice_appender *a, const sluice_frame_header *hdr, sluice_buf *raw,
		      size_t len)
{
	appender_job *job = appender_reserve(a, &a->frames, APPENDER_FRAME);
	if (job == NULL)
		return false;
	job->hdr = *hdr;
	/* The slot's empty buffer becomes the caller's; its records become the job's. */
	sluice_buf empty = job->bytes;
	job->bytes = *raw;
	*raw = empty;
	if (len < job->bytes.len) {
		sluice_buf_append(raw, job->bytes.data + len, job->bytes.len - len);
		job->bytes.len = len;
	}
	appender_commit(a, &a->frames);
	return true;
}

/* appender_ask hands over a push or a seal with its mark. */
static bool
appender_ask(sluice_appender *a, appender_kind kind, sluice_appender_mark mark)
{
	appender_job *job = appender_reserve(a, &a->frames, kind);
	if (job == NULL)
		return false;
	job->mark = mark;
	a->asked++;
	appender_commit(a, &a->frames);
	return true;
}

bool
sluice_appender_push(sluice_appender *a, sluice_appender_mark mark)
{
	return appender_ask(a, APPENDER_PUSH, mark);
}

bool
sluice_appender_seal(sluice_appender *a, sluice_appender_mark mark)
{
	return appender_ask(a, APPENDER_SEAL, mark);
}

bool
sluice_appender_wait(sluice_appender *a)
{
	pthread_mutex_lock(&a->mu);
	while (a->frames.count > 0 || a->chunks.count > 0)
		pthread_cond_wait(&a->done, &a->mu);
	bool ok = !a->failed;
	pthread_mutex_unlock(&a->mu);
	return ok;
}

bool
sluice_appender_failed(sluice_appender *a)
{
	pthread_mutex_lock(&a->mu);
	bool failed = a->failed;
	pthread_mutex_unlock(&a->mu);
	return failed;
}

bool
sluice_appender_pending(sluice_appender *a)
{
	pthread_mutex_lock(&a->mu);
	bool pending = a->answered < a->asked;
	pthread_mutex_unlock(&a->mu);
	return pending;
}

void
sluice_appender_marks(sluice_appender *a, sluice_appender_mark *synced,
		      sluice_appender_mark *sealed)
{
	pthread_mutex_lock(&a->mu);
	*synced = a->synced;
	*sealed = a->sealed;
	pthread_mutex_unlock(&a->mu);
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
	*frames = a->frames_encoded;
	*bytes = a->bytes_encoded;
	pthread_mutex_unlock(&a->mu);
}
