/* Fuzz target for the MongoDB test peer's message decoder (untrusted bytes from the network). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "wire.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	size_t len;
	mpw_request req;

	/* The framing the peer's reader does: a declared length, then exactly that many bytes. */
	if (mpw_message_length(data, size, &len) == MPW_OK && len <= size) {
		if (mpw_decode(data, len, &req) == MPW_OK) {
			size_t off;
			if (req.command == NULL ||
			    !bson_validate(req.command, BSON_VALIDATE_NONE, &off) ||
			    req.db[0] == '\0' || strlen(req.db) >= sizeof req.db)
				abort();
			/* A reply carrying the decoded command must encode and frame again. */
			uint8_t *out = NULL;
			size_t out_len = 0, out_cap = 0, rlen;
			if (mpw_encode_reply(&out, &out_len, &out_cap, req.request_id, req.op_code,
					     req.command) &&
			    (mpw_message_length(out, out_len, &rlen) != MPW_OK || rlen != out_len))
				abort();
			free(out);
			mpw_request_free(&req);
		}
	}
	/* The decoder must also refuse any length that is not the declared one. */
	if (mpw_decode(data, size, &req) == MPW_OK)
		mpw_request_free(&req);
	return 0;
}
