/* Frame appender: the writer's threads; frames compressed in parallel, written in order. */
#include "appender.h"

#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"

#define APPENDER_MAX_ENCODERS 16
/*
 * Frames smaller than this are compressed by the store thread itself: a hand
 * over to an encoding thread costs two thread wake-ups, about what
 * compressing 128 KiB costs, and small frames come one per flush in streams
 * of small transactions. Large frames (a large transaction's) go in parallel.
 */
#define APPENDER_SMALL_FRAME (128 * 1024)

typedef enum appender_kind {
	APPENDER_OPEN,  /* create the segment named by first_txseq */
	APPENDER_FRAME, /* compress raw, then chain, sign and write it as the next frame */
	APPENDER_PUSH,  /* make everything written durable; report mark */
	APPENDER_SEAL,  /* push, then seal and close the open segment */
} appender_kind;

typedef enum appender_state {
	APPENDER_WAITING,  /* a frame for an encoding thread to take */
	APPENDER_ENCODING, /* an encoding thread compresses it */
	APPENDER_SMALL,    /* a small frame: the store thread compresses it when its turn comes */
	APPENDER_READY,    /* compressed, or nothing to compress: the store thread's turn */
} appender_state;

/* One piece of work in the queue. Slots keep their buffers between uses, for their memory. */
typedef struct appender_job {
	appender_kind kind;
	appender_state state;
	sluice_frame_status status; /* FRAME: how the compression went */
	uint64_t first_txseq;       /* OPEN */
	sluice_frame_header hdr;    /* FRAME: the fields the writer chose, then the payload's */
	sluice_appender_mark mark;  /* PUSH, SEAL */
	sluice_buf raw;             /* owned: FRAME's records */
	sluice_buf frame;           /* owned: FRAME's room for the header, then its payload */
} appender_job;

struct sluice_appender {
	sluice_store *store;   /* borrowed */
	char *stream;          /* owned */
	const sluice_key *key; /* borrowed */
	uint64_t stream_id;
	size_t max_chunk;
	uint64_t asked; /* pushes and seals handed over (the writer's thread only) */

	/* The store thread's alone once it runs. */
	sluice_segment *seg; /* owned; NULL between a seal and the next open */
	uint8_t prev_hash[SLUICE_FRAME_HASH_SIZE];
	uint64_t next_frame_seq;
	uint64_t seg_frames;
	sluice_buf chunk; /* owned: frames not yet handed to the store */
	bool unsynced;    /* frames were written without being made durable */

	/* What the writer's thread last read of the marks (its alone). */
	uint64_t seen;
	sluice_appender_mark seen_synced, seen_sealed;

	size_t nencoders;
	/* owned: one per encoding thread, and the last for the store thread's small frames */
	sluice_frame_codec *codecs[APPENDER_MAX_ENCODERS + 1];
	pthread_t encoders[APPENDER_MAX_ENCODERS];
	size_t encoders_started;
	pthread_t writer;
	bool writer_started;

	pthread_mutex_t mu;    /* guards everything below */
	pthread_cond_t queued; /* a frame was queued, or the queue ended: encoding threads wait */
	pthread_cond_t ready;  /* the oldest job is the store's turn, or the queue ended */
	pthread_cond_t done;   /* a job was done: the writer's thread waits */
	appender_job *jobs;    /* owned: a ring of depth slots */
	size_t depth;
	size_t head;  /* the oldest job */
	size_t count; /* jobs in the ring, from head */
	bool ended;   /* nothing more is handed over */
	/* a job failed, later ones are dropped (the writer's thread reads it without the mutex) */
	atomic_bool failed;
	atomic_uint_least64_t answered; /* pushes and seals done (set with the marks) */
	sluice_appender_mark synced, sealed;
	uint64_t seg_size; /* bytes written or to write into the open segment */
	uint64_t frames_encoded, bytes_encoded;
};

/* ---- the encoding threads: compression, any number at once ---- */

typedef struct appender_encoder_arg {
	sluice_appender *a;
	size_t index;
} appender_encoder_arg;

/* appender_unclaimed: the oldest frame waiting for an encoding thread, NULL if none. */
static appender_job *
appender_unclaimed(sluice_appender *a)
{
	for (size_t i = 0; i < a->count; i++) {
		appender_job *job = &a->jobs[(a->head + i) % a->depth];
		if (job->state == APPENDER_WAITING)
			return job;
	}
	return NULL;
}

/*
 * appender_encode_loop takes the oldest frame waiting for an encoding
 * thread and compresses it, until the queue ended and none is left. (Other
 * work needs no compression, small frames are the store thread's.)
 */
static void
appender_encode_loop(sluice_appender *a, sluice_frame_codec *codec)
{
	pthread_mutex_lock(&a->mu);
	for (;;) {
		appender_job *job;
		while ((job = appender_unclaimed(a)) == NULL && !a->ended)
			pthread_cond_wait(&a->queued, &a->mu);
		if (job == NULL)
			break;
		job->state = APPENDER_ENCODING;
		bool work = !atomic_load(&a->failed);
		pthread_mutex_unlock(&a->mu);
		if (work)
			job->status = sluice_frame_compress(codec, &job->hdr, job->raw.data,
							    job->raw.len, &job->frame);
		pthread_mutex_lock(&a->mu);
		job->state = APPENDER_READY;
		if (job == &a->jobs[a->head])
			pthread_cond_signal(&a->ready);
	}
	pthread_mutex_unlock(&a->mu);
}

static void *
appender_encoder_main(void *arg)
{
	appender_encoder_arg *e = arg;
	appender_encode_loop(e->a, e->a->codecs[e->index]);
	free(e);
	return NULL;
}

/* ---- the store thread: chain, signature and the store, in order ---- */

/*
 * appender_write writes the chunk to the open segment: durably, or (a chunk
 * that grew to max_chunk, which no one waits for) only written, to become
 * durable with the next durable write. That one happens even when no frame
 * is left to write: the frame holding a commit may have gone out in a chunk
 * that was only written.
 */
static bool
appender_write(sluice_appender *a, bool durable)
{
	if (a->chunk.len == 0 && !(durable && a->unsynced))
		return true;
	if (a->seg == NULL) {
		sluice_log_error("stream \"%s\": frames to write without an open segment",
				 a->stream);
		return false;
	}
	if (!sluice_segment_write(a->seg, a->chunk.data, a->chunk.len, durable))
		return false;
	sluice_buf_reset(&a->chunk);
	a->unsynced = !durable;
	return true;
}

/* appender_chain links the compressed frame of job to the chain, signs it and adds it to the chunk.
 */
static bool
appender_chain(sluice_appender *a, appender_job *job)
{
	sluice_frame_header *hdr = &job->hdr;
	if (job->status != SLUICE_FRAME_OK) {
		sluice_log_error("could not encode frame %" PRIu64 " of stream \"%s\": %s",
				 a->next_frame_seq, a->stream, sluice_frame_strerror(job->status));
		return false;
	}
	if (a->seg == NULL) {
		sluice_log_error("stream \"%s\": frame %" PRIu64 " handed over without a segment",
				 a->stream, a->next_frame_seq);
		return false;
	}
	if (a->seg_frames == 0)
		hdr->flags |= SLUICE_FRAME_FIRST;
	hdr->stream_id = a->stream_id;
	hdr->frame_seq = a->next_frame_seq;
	memcpy(hdr->key_id, sluice_key_id(a->key), SLUICE_FRAME_KEY_ID_SIZE);
	memcpy(hdr->prev_hash, a->prev_hash, SLUICE_FRAME_HASH_SIZE);
	sluice_frame_sign(hdr, sluice_key_secret(a->key), job->frame.data, a->prev_hash);
	sluice_buf_append(&a->chunk, job->frame.data, job->frame.len);
	a->next_frame_seq++;
	a->seg_frames++;
	pthread_mutex_lock(&a->mu);
	a->frames_encoded++;
	a->bytes_encoded += job->frame.len;
	a->seg_size += job->frame.len;
	pthread_mutex_unlock(&a->mu);
	return a->chunk.len < a->max_chunk || appender_write(a, false);
}

/* appender_store does the oldest job, once ready, on the store thread. */
static bool
appender_store(sluice_appender *a, appender_job *job)
{
	switch (job->kind) {
	case APPENDER_FRAME:
		return appender_chain(a, job);
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
	case APPENDER_PUSH:
	case APPENDER_SEAL:
		if (!appender_write(a, true))
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
		atomic_fetch_add(&a->answered, 1);
		pthread_mutex_unlock(&a->mu);
		return true;
	}
	return false;
}

/*
 * appender_store_main is the store thread: the oldest job each time it is
 * ready, until the queue ended and is empty. After a failure jobs are
 * dropped, not done. Buffers are emptied (their memory kept) once done.
 */
static void *
appender_store_main(void *arg)
{
	sluice_appender *a = arg;
	pthread_mutex_lock(&a->mu);
	for (;;) {
		while (!(a->count > 0 && (a->jobs[a->head].state == APPENDER_READY ||
					  a->jobs[a->head].state == APPENDER_SMALL)) &&
		       !(a->count == 0 && a->ended))
			pthread_cond_wait(&a->ready, &a->mu);
		if (a->count == 0)
			break;
		appender_job *job = &a->jobs[a->head];
		bool skip = atomic_load(&a->failed);
		pthread_mutex_unlock(&a->mu);
		if (job->state == APPENDER_SMALL && !skip)
			job->status =
				sluice_frame_compress(a->codecs[a->nencoders], &job->hdr,
						      job->raw.data, job->raw.len, &job->frame);
		bool ok = skip || appender_store(a, job);
		sluice_buf_reset(&job->raw);
		sluice_buf_reset(&job->frame);
		pthread_mutex_lock(&a->mu);
		if (!ok)
			atomic_store(&a->failed, true);
		job->state = APPENDER_WAITING;
		a->head = (a->head + 1) % a->depth;
		a->count--;
		pthread_cond_broadcast(&a->done);
	}
	pthread_mutex_unlock(&a->mu);
	return NULL;
}

/* ---- the writer's side ---- */

/* appender_start starts a thread with every signal blocked: they go to the writer's thread. */
static bool
appender_start(sluice_appender *a, pthread_t *thread, void *(*run)(void *), void *arg)
{
	sigset_t all, old;
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	int rc = pthread_create(thread, NULL, run, arg);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (rc != 0) {
		sluice_log_error("could not start a frame appender thread of stream \"%s\": %s",
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
	a->synced = a->seen_synced = tail->synced;
	a->sealed = a->seen_sealed = tail->sealed;
	atomic_init(&a->failed, false);
	atomic_init(&a->answered, 0);
	a->nencoders = options->encoders < 1                       ? 1
		       : options->encoders > APPENDER_MAX_ENCODERS ? APPENDER_MAX_ENCODERS
								   : options->encoders;
	/* Every encoding thread can hold a frame while one more waits. */
	a->depth = options->depth > a->nencoders ? options->depth : a->nencoders + 1;
	a->jobs = calloc(a->depth, sizeof(*a->jobs));
	if (a->jobs == NULL)
		abort();
	pthread_mutex_init(&a->mu, NULL);
	pthread_cond_init(&a->queued, NULL);
	pthread_cond_init(&a->ready, NULL);
	pthread_cond_init(&a->done, NULL);
	for (size_t i = 0; i <= a->nencoders; i++) {
		a->codecs[i] = sluice_frame_codec_create(options->zstd_level);
		if (a->codecs[i] == NULL) {
			sluice_log_error("could not create zstd contexts");
			goto fail;
		}
	}
	a->writer_started = appender_start(a, &a->writer, appender_store_main, a);
	if (!a->writer_started)
		goto fail;
	for (size_t i = 0; i < a->nencoders; i++) {
		appender_encoder_arg *e = malloc(sizeof(*e));
		if (e == NULL)
			abort();
		*e = (appender_encoder_arg){.a = a, .index = i};
		if (!appender_start(a, &a->encoders[i], appender_encoder_main, e)) {
			free(e);
			goto fail;
		}
		a->encoders_started++;
	}
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
	/* The threads end once the queue ended and is empty (jobs after a failure are dropped). */
	pthread_mutex_lock(&a->mu);
	a->ended = true;
	pthread_cond_broadcast(&a->queued);
	pthread_cond_broadcast(&a->ready);
	pthread_mutex_unlock(&a->mu);
	for (size_t i = 0; i < a->encoders_started; i++)
		pthread_join(a->encoders[i], NULL);
	if (a->writer_started)
		pthread_join(a->writer, NULL);
	sluice_segment_close(a->seg);
	for (size_t i = 0; i < a->depth; i++) {
		sluice_buf_free(&a->jobs[i].raw);
		sluice_buf_free(&a->jobs[i].frame);
	}
	free(a->jobs);
	sluice_buf_free(&a->chunk);
	for (size_t i = 0; i <= a->nencoders; i++)
		sluice_frame_codec_free(a->codecs[i]);
	pthread_cond_destroy(&a->done);
	pthread_cond_destroy(&a->ready);
	pthread_cond_destroy(&a->queued);
	pthread_mutex_destroy(&a->mu);
	free(a->stream);
	free(a);
}

/*
 * appender_reserve waits for a free slot: the one after the queued jobs,
 * which no other thread touches until appender_commit counts it.
 * @return NULL once the appender has failed.
 */
static appender_job *
appender_reserve(sluice_appender *a, appender_kind kind)
{
	pthread_mutex_lock(&a->mu);
	while (a->count == a->depth && !atomic_load(&a->failed))
		pthread_cond_wait(&a->done, &a->mu);
	appender_job *job =
		atomic_load(&a->failed) ? NULL : &a->jobs[(a->head + a->count) % a->depth];
	pthread_mutex_unlock(&a->mu);
	if (job != NULL)
		job->kind = kind;
	return job;
}

/*
 * appender_commit queues the slot appender_reserve gave: a large frame for
 * an encoding thread, anything else for the store thread.
 */
static void
appender_commit(sluice_appender *a, appender_job *job)
{
	pthread_mutex_lock(&a->mu);
	a->count++;
	if (job->kind == APPENDER_FRAME && job->raw.len >= APPENDER_SMALL_FRAME) {
		job->state = APPENDER_WAITING;
		pthread_cond_signal(&a->queued);
	} else {
		job->state = job->kind == APPENDER_FRAME ? APPENDER_SMALL : APPENDER_READY;
		if (job == &a->jobs[a->head])
			pthread_cond_signal(&a->ready);
	}
	pthread_mutex_unlock(&a->mu);
}

bool
sluice_appender_open_segment(sluice_appender *a, uint64_t first_txseq)
{
	appender_job *job = appender_reserve(a, APPENDER_OPEN);
	if (job == NULL)
		return false;
	job->first_txseq = first_txseq;
	appender_commit(a, job);
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
	job->status = SLUICE_FRAME_OK;
	/* The slot's empty buffer becomes the caller's; its records become the job's. */
	sluice_buf empty = job->raw;
	job->raw = *raw;
	*raw = empty;
	if (len < job->raw.len) {
		sluice_buf_append(raw, job->raw.data + len, job->raw.len - len);
		job->raw.len = len;
	}
	appender_commit(a, job);
	return true;
}

/* appender_ask hands over a push or a seal with its mark. */
static bool
appender_ask(sluice_appender *a, appender_kind kind, sluice_appender_mark mark)
{
	appender_job *job = appender_reserve(a, kind);
	if (job == NULL)
		return false;
	job->mark = mark;
	a->asked++;
	appender_commit(a, job);
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
	while (a->count > 0)
		pthread_cond_wait(&a->done, &a->mu);
	pthread_mutex_unlock(&a->mu);
	return !atomic_load(&a->failed);
}

bool
sluice_appender_failed(sluice_appender *a)
{
	return atomic_load(&a->failed);
}

bool
sluice_appender_pending(sluice_appender *a)
{
	return atomic_load(&a->answered) < a->asked;
}

void
sluice_appender_marks(sluice_appender *a, sluice_appender_mark *synced,
		      sluice_appender_mark *sealed)
{
	/* The marks change only with answered: read them again only then. */
	if (atomic_load(&a->answered) != a->seen) {
		pthread_mutex_lock(&a->mu);
		a->seen_synced = a->synced;
		a->seen_sealed = a->sealed;
		a->seen = atomic_load(&a->answered);
		pthread_mutex_unlock(&a->mu);
	}
	*synced = a->seen_synced;
	*sealed = a->seen_sealed;
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
