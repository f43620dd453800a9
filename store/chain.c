/* Stream-level checks: hash chain, frame order, txseq density, seals, record order. */
#include "chain.h"

#include <string.h>

const char *
sluice_chain_strerror(sluice_chain_status status)
{
	switch (status) {
	case SLUICE_CHAIN_OK:
		return "ok";
	case SLUICE_CHAIN_E_STREAM:
		return "frame belongs to another stream";
	case SLUICE_CHAIN_E_PREV_HASH:
		return "chain broken: previous-frame hash does not match";
	case SLUICE_CHAIN_E_FRAME_SEQ:
		return "frame number does not follow the previous frame";
	case SLUICE_CHAIN_E_TXSEQ_GAP:
		return "txseq gap: frame does not continue where the previous frame ended";
	case SLUICE_CHAIN_E_CONT:
		return "continuation flag disagrees with the previous frame";
	case SLUICE_CHAIN_E_FIRST:
		return "first-frame flag does not match the frame's position";
	case SLUICE_CHAIN_E_NAME:
		return "segment name is not the txseq its first frame starts at";
	case SLUICE_CHAIN_E_AFTER_SEAL:
		return "frame follows the segment's seal";
	case SLUICE_CHAIN_E_RECORD_ORDER:
		return "records out of order (begin/commit/txseq)";
	case SLUICE_CHAIN_E_FRAME_END:
		return "records disagree with the frame header's txseq range or count";
	case SLUICE_CHAIN_E_TIME:
		return "commit time outside the frame header's time range";
	case SLUICE_CHAIN_E_GENESIS:
		return "first frame does not chain to the stream's genesis (earlier segments "
		       "missing, or the frame belongs to another stream)";
	case SLUICE_CHAIN_E_KEY:
		return "frame signed by a key other than the key in force";
	case SLUICE_CHAIN_E_HANDOVER:
		return "key handover malformed or misplaced (it must be the only record of its "
		       "frame, between transactions, and name another 32-byte public key)";
	}
	return "unknown chain status";
}

void
sluice_chain_init(sluice_chain *chain, const char *stream)
{
	memset(chain, 0, sizeof(*chain));
	chain->stream_id = sluice_frame_stream_id(stream);
	chain->anchored = true;
	sluice_frame_genesis(stream, chain->prev_hash);
	chain->next_frame_seq = 0;
	chain->txseq_end = 1;
	chain->next_txseq = 1;
}

void
sluice_chain_init_unanchored(sluice_chain *chain, const char *stream)
{
	memset(chain, 0, sizeof(*chain));
	chain->stream_id = sluice_frame_stream_id(stream);
	chain->anchored = false;
}

void
sluice_chain_segment_start(sluice_chain *chain)
{
	chain->sealed = false;
}

const uint8_t *
sluice_chain_key(const sluice_chain *chain, const sluice_trust *trust,
		 const uint8_t key_id[SLUICE_FRAME_KEY_ID_SIZE])
{
	if (!chain->key_known)
		return sluice_trust_find(trust, key_id);
	if (memcmp(chain->key_id, key_id, SLUICE_FRAME_KEY_ID_SIZE) != 0)
		return NULL;
	return chain->key_has_pk ? chain->key_pk : sluice_trust_find(trust, key_id);
}

sluice_chain_status
sluice_chain_check(const sluice_chain *chain, const sluice_frame_header *hdr, bool first_in_segment,
		   uint64_t segment_first)
{
	bool is_first = (hdr->flags & SLUICE_FRAME_FIRST) != 0;
	bool is_cont = (hdr->flags & SLUICE_FRAME_CONT) != 0;

	if (hdr->stream_id != chain->stream_id)
		return SLUICE_CHAIN_E_STREAM;
	if (chain->sealed)
		return SLUICE_CHAIN_E_AFTER_SEAL;
	if (is_first != first_in_segment || (first_in_segment && is_cont))
		return SLUICE_CHAIN_E_FIRST;
	if (first_in_segment && hdr->txseq_start != segment_first)
		return SLUICE_CHAIN_E_NAME;
	if (chain->key_known && memcmp(hdr->key_id, chain->key_id, SLUICE_FRAME_KEY_ID_SIZE) != 0)
		return SLUICE_CHAIN_E_KEY;
	if (!chain->anchored)
		return SLUICE_CHAIN_OK;
	if (hdr->txseq_start != chain->txseq_end)
		return SLUICE_CHAIN_E_TXSEQ_GAP;
	if (memcmp(hdr->prev_hash, chain->prev_hash, SLUICE_FRAME_HASH_SIZE) != 0)
		return chain->next_frame_seq == 0 ? SLUICE_CHAIN_E_GENESIS
						  : SLUICE_CHAIN_E_PREV_HASH;
	if (hdr->frame_seq != chain->next_frame_seq)
		return SLUICE_CHAIN_E_FRAME_SEQ;
	if (is_cont != chain->open)
		return SLUICE_CHAIN_E_CONT;
	return SLUICE_CHAIN_OK;
}

sluice_chain_status
sluice_chain_frame(sluice_chain *chain, const sluice_frame_header *hdr,
		   const uint8_t hash[SLUICE_FRAME_HASH_SIZE], bool first_in_segment,
		   uint64_t segment_first)
{
	bool is_cont = (hdr->flags & SLUICE_FRAME_CONT) != 0;
	sluice_chain_status st = sluice_chain_check(chain, hdr, first_in_segment, segment_first);

	/*
	 * Advance even on error so that one damaged link is reported once and the
	 * frames after it are checked against it rather than all failing.
	 */
	memcpy(chain->prev_hash, hash, SLUICE_FRAME_HASH_SIZE);
	chain->next_frame_seq = hdr->frame_seq + 1;
	chain->txseq_end = hdr->txseq_end;
	chain->open = (hdr->flags & SLUICE_FRAME_OPEN) != 0;
	if (hdr->flags & SLUICE_FRAME_SEAL)
		chain->sealed = true;
	chain->anchored = true;
	if (!chain->key_known) {
		/* The first frame checked names the key in force (a root: see sluice_chain_key). */
		chain->key_known = true;
		memcpy(chain->key_id, hdr->key_id, SLUICE_FRAME_KEY_ID_SIZE);
		chain->key_has_pk = false;
	}
	chain->handover = false;

	chain->frame = *hdr;
	chain->records_seen = 0;
	if (!is_cont || chain->cur_txseq != hdr->txseq_start) {
		/* Unknown when starting in the middle of a transaction. */
		chain->cur_snapshot = false;
		chain->cur_kind_known = false;
	}
	chain->cur_txseq = is_cont ? hdr->txseq_start : 0;
	chain->next_txseq = is_cont ? hdr->txseq_start + 1 : hdr->txseq_start;
	return st;
}

/* chain_check_time checks a commit time against the frame's stated range. */
static sluice_chain_status
chain_check_time(const sluice_chain *chain, int64_t t)
{
	if (t < chain->frame.time_min || t > chain->frame.time_max)
		return SLUICE_CHAIN_E_TIME;
	return SLUICE_CHAIN_OK;
}

sluice_chain_status
sluice_chain_record(sluice_chain *chain, const sluice_record *rec)
{
	chain->records_seen++;
	switch (rec->body_case) {
	case SLUICE__V1__RECORD__BODY_BEGIN:
		if (chain->cur_txseq != 0 || rec->begin->txseq != chain->next_txseq)
			return SLUICE_CHAIN_E_RECORD_ORDER;
		chain->cur_txseq = rec->begin->txseq;
		chain->cur_snapshot = false;
		chain->cur_kind_known = true;
		chain->next_txseq = chain->cur_txseq + 1;
		return chain_check_time(chain, rec->begin->commit_time_us);
	case SLUICE__V1__RECORD__BODY_SNAPSHOT_BEGIN:
		if (chain->cur_txseq != 0 || rec->snapshot_begin->txseq != chain->next_txseq)
			return SLUICE_CHAIN_E_RECORD_ORDER;
		chain->cur_txseq = rec->snapshot_begin->txseq;
		chain->cur_snapshot = true;
		chain->cur_kind_known = true;
		chain->next_txseq = chain->cur_txseq + 1;
		return chain_check_time(chain, rec->snapshot_begin->time_us);
	case SLUICE__V1__RECORD__BODY_COMMIT:
		if (chain->cur_txseq == 0 || rec->commit->txseq != chain->cur_txseq ||
		    (chain->cur_kind_known && chain->cur_snapshot))
			return SLUICE_CHAIN_E_RECORD_ORDER;
		chain->cur_txseq = 0;
		return chain_check_time(chain, rec->commit->commit_time_us);
	case SLUICE__V1__RECORD__BODY_SNAPSHOT_END:
		if (chain->cur_txseq == 0 || rec->snapshot_end->txseq != chain->cur_txseq ||
		    (chain->cur_kind_known && !chain->cur_snapshot))
			return SLUICE_CHAIN_E_RECORD_ORDER;
		chain->cur_txseq = 0;
		return SLUICE_CHAIN_OK;
	case SLUICE__V1__RECORD__BODY_INSERT:
	case SLUICE__V1__RECORD__BODY_UPDATE:
	case SLUICE__V1__RECORD__BODY_DELETE:
	case SLUICE__V1__RECORD__BODY_TRUNCATE:
	case SLUICE__V1__RECORD__BODY_SNAPSHOT_ROW:
	case SLUICE__V1__RECORD__BODY_NAMESPACE_CHANGE:
		/* Row changes only inside a transaction. */
		if (chain->cur_txseq == 0)
			return SLUICE_CHAIN_E_RECORD_ORDER;
		return SLUICE_CHAIN_OK;
	case SLUICE__V1__RECORD__BODY_HEARTBEAT:
		if (chain->cur_txseq != 0)
			return SLUICE_CHAIN_E_RECORD_ORDER;
		return SLUICE_CHAIN_OK;
	case SLUICE__V1__RECORD__BODY_KEY_HANDOVER: {
		/*
		 * Alone in a frame between transactions: the frame after it is the
		 * first one signed by the successor, so writer recovery, which keeps
		 * whole frames ending between transactions, never splits a key change.
		 */
		const ProtobufCBinaryData *next = &rec->key_handover->next_public_key;
		uint8_t next_id[SLUICE_FRAME_KEY_ID_SIZE];
		if (chain->cur_txseq != 0 || chain->records_seen != 1 ||
		    chain->frame.record_count != 1 || (chain->frame.flags & SLUICE_FRAME_OPEN) ||
		    next->len != 32)
			return SLUICE_CHAIN_E_HANDOVER;
		sluice_keys_id(next->data, next_id);
		if (memcmp(next_id, chain->frame.key_id, SLUICE_FRAME_KEY_ID_SIZE) == 0)
			return SLUICE_CHAIN_E_HANDOVER;
		chain->handover = true;
		memcpy(chain->next_pk, next->data, 32);
		return SLUICE_CHAIN_OK;
	}
	default:
		/* Relations, messages and records of later schema versions go anywhere. */
		return SLUICE_CHAIN_OK;
	}
}

sluice_chain_status
sluice_chain_frame_end(sluice_chain *chain)
{
	const sluice_frame_header *h = &chain->frame;
	bool open = (h->flags & SLUICE_FRAME_OPEN) != 0;
	if (chain->records_seen != h->record_count)
		return SLUICE_CHAIN_E_FRAME_END;
	if (open) {
		if (chain->cur_txseq == 0 || chain->cur_txseq != h->txseq_end)
			return SLUICE_CHAIN_E_FRAME_END;
	} else {
		if (chain->cur_txseq != 0 || chain->next_txseq != h->txseq_end)
			return SLUICE_CHAIN_E_FRAME_END;
	}
	if (chain->handover) {
		chain->handover = false;
		sluice_keys_id(chain->next_pk, chain->key_id);
		memcpy(chain->key_pk, chain->next_pk, sizeof(chain->key_pk));
		chain->key_has_pk = true;
		chain->key_known = true;
	}
	return SLUICE_CHAIN_OK;
}
