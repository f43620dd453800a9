/* The segments of one sluice stream as replayed from its JetStream messages: a pure model. */
#include "natslog.h"

#include <stdlib.h>
#include <string.h>

typedef struct natslog_piece {
	uint64_t seq;  /* stream sequence of the message */
	uint64_t off;  /* offset in the segment */
	uint64_t len;  /* bytes (a later cut may shorten it) */
	uint8_t *data; /* owned; NULL when dropped from memory */
} natslog_piece;

typedef struct natslog_segment {
	uint64_t first;
	uint64_t size;
	bool published; /* a message named it (else a writer's local, empty segment) */
	int pins;
	natslog_piece *pieces; /* owned, by offset */
	size_t n, cap;
} natslog_segment;

struct sluice_natslog {
	natslog_segment *segs; /* owned, by first txseq */
	size_t n, cap;
	uint64_t last_seq;
	sluice_natslog_status problem;
	uint64_t problem_seq;
	uint64_t kept;
	uint64_t floor;   /* segments below are not held (0: all) */
	uint64_t skipped; /* messages below the floor passed over */
	uint64_t applied; /* messages taken, in stream order */
	sluice_natslog_fetch_fn fetch;
	void *fetch_ctx; /* borrowed */
};

const char *
sluice_natslog_strerror(sluice_natslog_status status)
{
	switch (status) {
	case SLUICE_NATSLOG_OK:
		return "ok";
	case SLUICE_NATSLOG_E_HEADER:
		return "not a sluice message (its Sluice-* headers are missing or malformed)";
	case SLUICE_NATSLOG_E_OFFSET:
		return "its bytes are not at the end of their segment (a message removed, "
		       "reordered or replayed)";
	case SLUICE_NATSLOG_E_TRUNCATE:
		return "it cuts a segment beyond its end or one that does not exist";
	case SLUICE_NATSLOG_E_SIZE:
		return "segment too large";
	case SLUICE_NATSLOG_E_MISSING:
		return "no such segment";
	case SLUICE_NATSLOG_E_FETCH:
		return "a message could not be fetched again";
	}
	return "unknown status";
}

/* natslog_parse_hex reads exactly 16 lowercase hex digits. */
static bool
natslog_parse_hex(const char *s, uint64_t *out)
{
	uint64_t v = 0;
	for (int i = 0; i < 16; i++) {
		char c = s[i];
		int d;
		if (c >= '0' && c <= '9')
			d = c - '0';
		else if (c >= 'a' && c <= 'f')
			d = c - 'a' + 10;
		else
			return false; /* also stops at the NUL of a short value */
		v = (v << 4) | (uint64_t)d;
	}
	if (s[16] != '\0')
		return false;
	*out = v;
	return true;
}

/* natslog_parse_dec reads a decimal without sign or leading zero, at most max. */
static bool
natslog_parse_dec(const char *s, uint64_t max, uint64_t *out)
{
	uint64_t v = 0;
	size_t i = 0;
	if (s[0] == '\0' || (s[0] == '0' && s[1] != '\0'))
		return false;
	for (; s[i] != '\0'; i++) {
		if (s[i] < '0' || s[i] > '9' || i >= 20)
			return false;
		uint64_t d = (uint64_t)(s[i] - '0');
		if (v > (max - d) / 10)
			return false;
		v = v * 10 + d;
	}
	*out = v;
	return true;
}

sluice_natslog_status
sluice_natslog_parse(const char *segment, const char *offset, const char *truncate,
		     const char *remove, sluice_natslog_msg *out)
{
	if (segment == NULL || !natslog_parse_hex(segment, &out->segment) || out->segment == 0)
		return SLUICE_NATSLOG_E_HEADER;
	int kinds = (offset != NULL) + (truncate != NULL) + (remove != NULL);
	if (kinds != 1)
		return SLUICE_NATSLOG_E_HEADER;
	if (offset != NULL) {
		out->kind = SLUICE_NATSLOG_BYTES;
		if (!natslog_parse_dec(offset, SLUICE_NATSLOG_MAX_SEGMENT, &out->value))
			return SLUICE_NATSLOG_E_HEADER;
	} else if (truncate != NULL) {
		out->kind = SLUICE_NATSLOG_TRUNCATE;
		if (!natslog_parse_dec(truncate, SLUICE_NATSLOG_MAX_SEGMENT, &out->value))
			return SLUICE_NATSLOG_E_HEADER;
	} else {
		out->kind = SLUICE_NATSLOG_REMOVE;
		out->value = 0;
		if (strcmp(remove, "1") != 0)
			return SLUICE_NATSLOG_E_HEADER;
	}
	return SLUICE_NATSLOG_OK;
}

sluice_natslog *
sluice_natslog_create(sluice_natslog_fetch_fn fetch, void *ctx)
{
	sluice_natslog *log = calloc(1, sizeof(*log));
	if (log == NULL)
		abort();
	log->fetch = fetch;
	log->fetch_ctx = ctx;
	return log;
}

static void
natslog_segment_clear(sluice_natslog *log, natslog_segment *s)
{
	for (size_t i = 0; i < s->n; i++) {
		if (s->pieces[i].data != NULL)
			log->kept -= s->pieces[i].len;
		free(s->pieces[i].data);
	}
	free(s->pieces);
	s->pieces = NULL;
	s->n = s->cap = 0;
}

void
sluice_natslog_free(sluice_natslog *log)
{
	if (log == NULL)
		return;
	for (size_t i = 0; i < log->n; i++)
		natslog_segment_clear(log, &log->segs[i]);
	free(log->segs);
	free(log);
}

/* natslog_find returns the index of segment first, or where it would go (*found false). */
static size_t
natslog_find(const sluice_natslog *log, uint64_t first, bool *found)
{
	size_t lo = 0, hi = log->n;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		if (log->segs[mid].first < first)
			lo = mid + 1;
		else
			hi = mid;
	}
	*found = lo < log->n && log->segs[lo].first == first;
	return lo;
}

static natslog_segment *
natslog_get(const sluice_natslog *log, uint64_t first)
{
	bool found;
	size_t i = natslog_find(log, first, &found);
	return found ? &log->segs[i] : NULL;
}

/* natslog_trim drops from memory the bytes of segments neither open nor the newest. */
static void
natslog_trim(sluice_natslog *log)
{
	if (log->fetch == NULL)
		return;
	for (size_t i = 0; i + 1 < log->n; i++) {
		natslog_segment *s = &log->segs[i];
		if (s->pins > 0)
			continue;
		for (size_t j = 0; j < s->n; j++) {
			if (s->pieces[j].data == NULL)
				continue;
			log->kept -= s->pieces[j].len;
			free(s->pieces[j].data);
			s->pieces[j].data = NULL;
		}
	}
}

static natslog_segment *
natslog_insert(sluice_natslog *log, uint64_t first)
{
	bool found;
	size_t i = natslog_find(log, first, &found);
	if (found)
		return &log->segs[i];
	if (log->n == log->cap) {
		log->cap = log->cap ? log->cap * 2 : 16;
		log->segs = realloc(log->segs, log->cap * sizeof(*log->segs));
		if (log->segs == NULL)
			abort();
	}
	memmove(&log->segs[i + 1], &log->segs[i], (log->n - i) * sizeof(*log->segs));
	log->n++;
	memset(&log->segs[i], 0, sizeof(log->segs[i]));
	log->segs[i].first = first;
	return &log->segs[i];
}

static void
natslog_remove_at(sluice_natslog *log, natslog_segment *s)
{
	size_t i = (size_t)(s - log->segs);
	natslog_segment_clear(log, s);
	memmove(&log->segs[i], &log->segs[i + 1], (log->n - i - 1) * sizeof(*log->segs));
	log->n--;
}

void
sluice_natslog_break(sluice_natslog *log, uint64_t seq, sluice_natslog_status status)
{
	if (log->problem != SLUICE_NATSLOG_OK)
		return;
	log->problem = status;
	log->problem_seq = seq;
}

sluice_natslog_status
sluice_natslog_apply(sluice_natslog *log, uint64_t seq, const sluice_natslog_msg *msg,
		     const void *data, size_t len)
{
	if (log->problem != SLUICE_NATSLOG_OK)
		return log->problem;
	/*
	 * A consumer delivers in stream order: a message at or below the last
	 * one applied is one this model has (a writer's own publish, delivered
	 * back to it).
	 */
	if (seq <= log->last_seq)
		return SLUICE_NATSLOG_OK;
	log->last_seq = seq;
	log->applied++;
	if (msg->segment < log->floor) {
		log->skipped++;
		return SLUICE_NATSLOG_OK;
	}
	natslog_segment *s = natslog_get(log, msg->segment);
	sluice_natslog_status st = SLUICE_NATSLOG_OK;
	switch (msg->kind) {
	case SLUICE_NATSLOG_BYTES: {
		if (len == 0) {
			st = SLUICE_NATSLOG_E_HEADER;
			break;
		}
		uint64_t size = s ? s->size : 0;
		if (msg->value != size) {
			st = SLUICE_NATSLOG_E_OFFSET;
			break;
		}
		if (len > SLUICE_NATSLOG_MAX_SEGMENT - size) {
			st = SLUICE_NATSLOG_E_SIZE;
			break;
		}
		if (s == NULL)
			s = natslog_insert(log, msg->segment);
		if (s->n == s->cap) {
			s->cap = s->cap ? s->cap * 2 : 16;
			s->pieces = realloc(s->pieces, s->cap * sizeof(*s->pieces));
			if (s->pieces == NULL)
				abort();
		}
		uint8_t *copy = malloc(len);
		if (copy == NULL)
			abort();
		memcpy(copy, data, len);
		s->pieces[s->n++] = (natslog_piece){seq, size, len, copy};
		s->size = size + len;
		s->published = true;
		log->kept += len;
		natslog_trim(log);
		break;
	}
	case SLUICE_NATSLOG_TRUNCATE:
		if (s == NULL || msg->value > s->size) {
			st = SLUICE_NATSLOG_E_TRUNCATE;
			break;
		}
		while (s->n > 0 && s->pieces[s->n - 1].off >= msg->value) {
			natslog_piece *p = &s->pieces[--s->n];
			if (p->data != NULL)
				log->kept -= p->len;
			free(p->data);
		}
		if (s->n > 0) {
			natslog_piece *p = &s->pieces[s->n - 1];
			uint64_t keep = msg->value - p->off;
			if (p->data != NULL)
				log->kept -= p->len - keep;
			p->len = keep;
		}
		s->size = msg->value;
		s->published = true;
		break;
	case SLUICE_NATSLOG_REMOVE:
		if (s == NULL) {
			st = SLUICE_NATSLOG_E_TRUNCATE;
			break;
		}
		natslog_remove_at(log, s);
		break;
	default:
		st = SLUICE_NATSLOG_E_HEADER;
	}
	if (st != SLUICE_NATSLOG_OK)
		sluice_natslog_break(log, seq, st);
	return st;
}

void
sluice_natslog_set_floor(sluice_natslog *log, uint64_t segment)
{
	log->floor = segment;
	while (log->n > 0 && log->segs[0].first < segment)
		natslog_remove_at(log, &log->segs[0]);
}

uint64_t
sluice_natslog_skipped(const sluice_natslog *log)
{
	return log->skipped;
}

uint64_t
sluice_natslog_applied(const sluice_natslog *log)
{
	return log->applied;
}

sluice_natslog_status
sluice_natslog_problem(const sluice_natslog *log, uint64_t *seq)
{
	if (seq != NULL)
		*seq = log->problem_seq;
	return log->problem;
}

uint64_t
sluice_natslog_last_seq(const sluice_natslog *log)
{
	return log->last_seq;
}

sluice_natslog_status
sluice_natslog_add(sluice_natslog *log, uint64_t segment)
{
	if (natslog_get(log, segment) != NULL)
		return SLUICE_NATSLOG_E_OFFSET;
	natslog_insert(log, segment);
	natslog_trim(log);
	return SLUICE_NATSLOG_OK;
}

void
sluice_natslog_drop(sluice_natslog *log, uint64_t segment)
{
	natslog_segment *s = natslog_get(log, segment);
	if (s != NULL && !s->published)
		natslog_remove_at(log, s);
}

bool
sluice_natslog_published(const sluice_natslog *log, uint64_t segment)
{
	natslog_segment *s = natslog_get(log, segment);
	return s != NULL && s->published;
}

bool
sluice_natslog_exists(const sluice_natslog *log, uint64_t segment)
{
	return natslog_get(log, segment) != NULL;
}

void
sluice_natslog_list(const sluice_natslog *log, uint64_t **firsts, size_t *n)
{
	*firsts = malloc((log->n ? log->n : 1) * sizeof(**firsts));
	if (*firsts == NULL)
		abort();
	for (size_t i = 0; i < log->n; i++)
		(*firsts)[i] = log->segs[i].first;
	*n = log->n;
}

sluice_natslog_status
sluice_natslog_size(const sluice_natslog *log, uint64_t segment, uint64_t *size)
{
	natslog_segment *s = natslog_get(log, segment);
	if (s == NULL)
		return SLUICE_NATSLOG_E_MISSING;
	*size = s->size;
	return SLUICE_NATSLOG_OK;
}

/* natslog_piece_at returns the index of the piece holding offset off (off < size). */
static size_t
natslog_piece_at(const natslog_segment *s, uint64_t off)
{
	size_t lo = 0, hi = s->n;
	while (lo + 1 < hi) {
		size_t mid = lo + (hi - lo) / 2;
		if (s->pieces[mid].off <= off)
			lo = mid;
		else
			hi = mid;
	}
	return lo;
}

sluice_natslog_status
sluice_natslog_read(sluice_natslog *log, uint64_t segment, uint64_t off, void *buf, size_t len,
		    size_t *got)
{
	natslog_segment *s = natslog_get(log, segment);
	*got = 0;
	if (s == NULL)
		return SLUICE_NATSLOG_E_MISSING;
	if (off >= s->size || len == 0)
		return SLUICE_NATSLOG_OK;
	size_t i = natslog_piece_at(s, off);
	uint8_t *out = buf;
	sluice_buf fetched = {0};
	sluice_natslog_status st = SLUICE_NATSLOG_OK;
	while (*got < len && i < s->n) {
		natslog_piece *p = &s->pieces[i];
		const uint8_t *bytes = p->data;
		if (bytes == NULL) {
			sluice_buf_reset(&fetched);
			if (log->fetch == NULL ||
			    !log->fetch(log->fetch_ctx, p->seq, segment, p->off, &fetched) ||
			    fetched.len < p->len) {
				st = SLUICE_NATSLOG_E_FETCH;
				break;
			}
			bytes = fetched.data;
			if (s->pins > 0) { /* an open segment is read on: keep it */
				p->data = malloc((size_t)p->len);
				if (p->data == NULL)
					abort();
				memcpy(p->data, fetched.data, (size_t)p->len);
				log->kept += p->len;
			}
		}
		uint64_t at = off + *got - p->off;
		uint64_t n = p->len - at;
		if (n > len - *got)
			n = len - *got;
		memcpy(out + *got, bytes + at, (size_t)n);
		*got += (size_t)n;
		i++;
	}
	sluice_buf_free(&fetched);
	return st;
}

void
sluice_natslog_pin(sluice_natslog *log, uint64_t segment)
{
	natslog_segment *s = natslog_get(log, segment);
	if (s != NULL)
		s->pins++;
}

void
sluice_natslog_unpin(sluice_natslog *log, uint64_t segment)
{
	natslog_segment *s = natslog_get(log, segment);
	if (s != NULL && s->pins > 0)
		s->pins--;
	natslog_trim(log);
}

uint64_t
sluice_natslog_kept_bytes(const sluice_natslog *log)
{
	return log->kept;
}
