/*
 * A MongoDB change event's updateDescription applied to a document, byte for
 * byte: what the server did to the source document, done again to the
 * target's copy (libbson only: no server operator semantics involved, so
 * dotted, numeric-looking and '$' field names are written as they are).
 *
 * Semantics (those of the server's update and of tests/mongo/stream_replay.py):
 * truncatedArrays cut arrays to newSize first; then each updatedFields path
 * is set (its parts name fields of documents, or indexes of arrays, where
 * missing documents are created and short arrays padded with null); then
 * each removedFields path is unset (in an array the element becomes null).
 * A path's parts are the disambiguatedPaths entry when the event has one,
 * else the path split at dots. Unchanged values keep their bytes and their
 * order; a new field goes last in its document.
 */
#ifndef SLUICE_APPLY_MONGO_MONGOUPDATE_H
#define SLUICE_APPLY_MONGO_MONGOUPDATE_H

#include <bson/bson.h>
#include <stdbool.h>
#include <stddef.h>

/*
 * sluice_mongo_apply_update applies update description ud (raw BSON) to doc
 * (raw BSON) into out (initialised by the caller, appended to).
 * @return true; false with the reason in err (err_size bytes) when doc or ud
 * is not valid BSON (nested values included, 200 levels deep at most), a path
 * is malformed, or the result would pass 16 MiB.
 */
bool sluice_mongo_apply_update(const uint8_t *doc, size_t doc_len, const uint8_t *ud, size_t ud_len,
			       bson_t *out, char *err, size_t err_size);

#endif
