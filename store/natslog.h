/* The segments of one sluice stream as replayed from its JetStream messages: a pure model. */
#ifndef SLUICE_STORE_NATSLOG_H
#define SLUICE_STORE_NATSLOG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "buf.h"

/*
 * Every message of a sluice stream in JetStream names a segment (header
 * Sluice-Segment, 16 lowercase hex digits: the segment's first txseq) and is
 * one of (docs/format.md §3.1):
 *   - bytes of the segment at an offset (Sluice-Offset: decimal): a frame, or
 *     a piece of one larger than the server's message limit;
 *   - Sluice-Truncate: SIZE: the segment is cut to SIZE bytes (writer recovery);
 *   - Sluice-Remove: 1: the segment is removed (writer recovery).
 * Replaying the messages in stream order gives every segment's bytes. The
 * messages are untrusted: a message that does not fit (bytes not at the end
 * of their segment, a cut beyond the end) breaks the model there, and every
 * later read of the stream fails with the reason; what fits is then checked
 * frame by frame by the scan like a directory's files.
 */

#define SLUICE_NATSLOG_MAX_SEGMENT ((uint64_t)1 << 40) /* bytes in one segment */

#define SLUICE_NATSLOG_HDR_SEGMENT  "Sluice-Segment"
#define SLUICE_NATSLOG_HDR_OFFSET   "Sluice-Offset"
#define SLUICE_NATSLOG_HDR_TRUNCATE "Sluice-Truncate"
#define SLUICE_NATSLOG_HDR_REMOVE   "Sluice-Remove"

typedef enum sluice_natslog_status {
	SLUICE_NATSLOG_OK = 0,
	SLUICE_NATSLOG_E_HEADER = -1,   /* not a sluice message: headers missing or malformed */
	SLUICE_NATSLOG_E_OFFSET = -2,   /* bytes not at the end of their segment */
	SLUICE_NATSLOG_E_TRUNCATE = -3, /* a cut beyond the end, or of a missing segment */
	SLUICE_NATSLOG_E_SIZE = -5,     /* segment larger than SLUICE_NATSLOG_MAX_SEGMENT */
	SLUICE_NATSLOG_E_MISSING = -6,  /* no such segment */
	SLUICE_NATSLOG_E_FETCH = -7,    /* bytes dropped from memory could not be fetched again */
} sluice_natslog_status;

const char *sluice_natslog_strerror(sluice_natslog_status status);

typedef enum sluice_natslog_kind {
	SLUICE_NATSLOG_BYTES = 1,
	SLUICE_NATSLOG_TRUNCATE = 2,
	SLUICE_NATSLOG_REMOVE = 3,
} sluice_natslog_kind;

/* A message's sluice headers, decoded: a plain value. */
typedef struct sluice_natslog_msg {
	sluice_natslog_kind kind;
	uint64_t segment; /* first txseq of the segment */
	uint64_t value;   /* BYTES: offset; TRUNCATE: new size; REMOVE: 0 */
} sluice_natslog_msg;

/*
 * sluice_natslog_parse decodes the header values of a message (each NULL when
 * absent; NUL-terminated, of any length): exactly one of offset, truncate and
 * remove must be present, segment always.
 */
sluice_natslog_status sluice_natslog_parse(const char *segment, const char *offset,
					   const char *truncate, const char *remove,
					   sluice_natslog_msg *out);

typedef struct sluice_natslog sluice_natslog;

/*
 * The fetch callback gets the bytes of message seq again (appended to out),
 * for bytes the model dropped from memory; false on failure (logged by it).
 */
typedef bool (*sluice_natslog_fetch_fn)(void *ctx, uint64_t seq, uint64_t segment, uint64_t offset,
					sluice_buf *out);

/* sluice_natslog_create makes an empty model; fetch may be NULL (everything kept). */
sluice_natslog *sluice_natslog_create(sluice_natslog_fetch_fn fetch, void *ctx);
/* sluice_natslog_free releases the model; NULL is a no-op. */
void sluice_natslog_free(sluice_natslog *log);

/*
 * sluice_natslog_apply replays message seq (data: its body, copied). A
 * message with seq not above the last applied one is one the model has
 * already (a writer's own publish delivered back): ignored. After a refusal
 * the model stays broken: sluice_natslog_problem says why.
 */
sluice_natslog_status sluice_natslog_apply(sluice_natslog *log, uint64_t seq,
					   const sluice_natslog_msg *msg, const void *data,
					   size_t len);
/*
 * sluice_natslog_set_floor makes the model hold only segments from segment
 * on (a reader that starts mid-stream, at the first message of that
 * segment): messages naming earlier segments are passed over (counted by
 * sluice_natslog_skipped) instead of breaking the model, since no reader of
 * this model reads those segments. Segments below it already held are
 * forgotten.
 */
void sluice_natslog_set_floor(sluice_natslog *log, uint64_t segment);
/* sluice_natslog_skipped: messages passed over because they named a segment below the floor. */
uint64_t sluice_natslog_skipped(const sluice_natslog *log);
/* sluice_natslog_applied: messages applied (counted once each, the skipped ones too). */
uint64_t sluice_natslog_applied(const sluice_natslog *log);
/* sluice_natslog_break marks the model broken at seq with status (a message it could not parse). */
void sluice_natslog_break(sluice_natslog *log, uint64_t seq, sluice_natslog_status status);
/*
 * sluice_natslog_problem: SLUICE_NATSLOG_OK, or the refusal that broke the
 * model and the stream sequence of the message (*seq).
 */
sluice_natslog_status sluice_natslog_problem(const sluice_natslog *log, uint64_t *seq);
/* sluice_natslog_last_seq: stream sequence of the last message applied (0: none). */
uint64_t sluice_natslog_last_seq(const sluice_natslog *log);

/* sluice_natslog_add creates an empty segment known only locally (a writer's new segment). */
sluice_natslog_status sluice_natslog_add(sluice_natslog *log, uint64_t segment);
/* sluice_natslog_drop forgets a segment known only locally (nothing of it was published). */
void sluice_natslog_drop(sluice_natslog *log, uint64_t segment);
/* sluice_natslog_published: whether any message named the segment. */
bool sluice_natslog_published(const sluice_natslog *log, uint64_t segment);

bool sluice_natslog_exists(const sluice_natslog *log, uint64_t segment);
/* sluice_natslog_list: first txseqs of the segments, ascending (*firsts owned by the caller). */
void sluice_natslog_list(const sluice_natslog *log, uint64_t **firsts, size_t *n);
sluice_natslog_status sluice_natslog_size(const sluice_natslog *log, uint64_t segment,
					  uint64_t *size);
/* sluice_natslog_read reads up to len bytes at off (*got < len only at the end). */
sluice_natslog_status sluice_natslog_read(sluice_natslog *log, uint64_t segment, uint64_t off,
					  void *buf, size_t len, size_t *got);

/*
 * sluice_natslog_pin keeps a segment's bytes in memory while it is open;
 * unpinned segments other than the newest keep only where their bytes are
 * (read again through the fetch callback).
 */
void sluice_natslog_pin(sluice_natslog *log, uint64_t segment);
void sluice_natslog_unpin(sluice_natslog *log, uint64_t segment);
/* sluice_natslog_kept_bytes: bytes held in memory (tests). */
uint64_t sluice_natslog_kept_bytes(const sluice_natslog *log);

#endif
