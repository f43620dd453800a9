/* Checked-frame cursor: the records of one authenticated, linked frame, decoded within limits. */
#include "cursor.h"

#include <stdlib.h>

#include "arena.h"
#include "buf.h"

struct sluice_cursor {
	sluice_frame_codec *codec; /* owned */
	sluice_arena *arena;       /* owned: records of the loaded frame */
	sluice_buf raw;            /* owned: decompressed payload */
	size_t pos;
	uint32_t records;
	uint32_t record_count; /* the header's */
	bool done;
	sluice_frame_status frame_status;
	sluice_records_status records_status;
	sluice_chain_status chain_status;
	bool too_many;
};

sluice_cursor *
sluice_cursor_create(void)
{
	sluice_cursor *c = calloc(1, sizeof(*c));
	if (c == NULL)
		abort();
	c->codec = sluice_frame_codec_create(1);
	if (c->codec == NULL)
		abort();
	c->arena = sluice_arena_create();
	sluice_arena_set_limit(c->arena, SLUICE_FRAME_MAX_DECODED);
	c->done = true;
	return c;
}

void
sluice_cursor_free(sluice_cursor *c)
{
	if (c == NULL)
		return;
	sluice_frame_codec_free(c->codec);
	sluice_arena_free(c->arena);
	sluice_buf_free(&c->raw);
	free(c);
}

sluice_cursor_status
sluice_cursor_load(sluice_cursor *c, const sluice_scan_frame *f)
{
	sluice_arena_reset(c->arena);
	c->pos = 0;
	c->records = 0;
	c->record_count = f->hdr.record_count;
	c->done = true;
	c->too_many = false;
	c->frame_status = SLUICE_FRAME_OK;
	c->records_status = SLUICE_RECORDS_OK;
	c->chain_status = SLUICE_CHAIN_OK;
	c->frame_status = sluice_frame_decompress(c->codec, &f->hdr, f->payload, &c->raw);
	if (c->frame_status != SLUICE_FRAME_OK)
		return SLUICE_CURSOR_E_FRAME;
	c->done = false;
	return SLUICE_CURSOR_END;
}

sluice_cursor_status
sluice_cursor_next(sluice_cursor *c, sluice_chain *chain, const sluice_record **rec)
{
	if (c->done)
		return SLUICE_CURSOR_END;
	sluice_record *r = NULL;
	sluice_records_status rs =
		sluice_records_unpack(c->raw.data, c->raw.len, &c->pos, c->arena, &r);
	if (rs == SLUICE_RECORDS_END) {
		c->done = true;
		c->chain_status = sluice_chain_frame_end(chain);
		return c->chain_status == SLUICE_CHAIN_OK ? SLUICE_CURSOR_END
							  : SLUICE_CURSOR_E_CHAIN;
	}
	if (rs != SLUICE_RECORDS_OK) {
		c->done = true;
		c->records_status = rs;
		return SLUICE_CURSOR_E_RECORDS;
	}
	/* More records than the signed header counts: stop before decoding the rest. */
	if (++c->records > c->record_count) {
		c->done = true;
		c->too_many = true;
		return SLUICE_CURSOR_E_RECORDS;
	}
	c->chain_status = sluice_chain_record(chain, r);
	if (c->chain_status != SLUICE_CHAIN_OK) {
		c->done = true;
		return SLUICE_CURSOR_E_CHAIN;
	}
	*rec = r;
	return SLUICE_CURSOR_RECORD;
}

const char *
sluice_cursor_cause(const sluice_cursor *c)
{
	if (c->frame_status != SLUICE_FRAME_OK)
		return sluice_frame_strerror(c->frame_status);
	if (c->too_many)
		return "more records than the frame header counts";
	if (c->records_status != SLUICE_RECORDS_OK)
		return sluice_records_strerror(c->records_status);
	return sluice_chain_strerror(c->chain_status);
}
