/* Human-readable and JSON renderings of stream records for `inspect --records`. */
#ifndef SLUICE_TOOLS_PRINT_H
#define SLUICE_TOOLS_PRINT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "buf.h"
#include "reader.h"
#include "records.h"

/*
 * Deepest nesting of BSON documents, arrays and code scopes print_bson
 * renders: MongoDB stores documents of at most 100 levels, and a change event
 * wraps them in a few more; libbson's renderer stops at 200.
 */
#define PRINT_BSON_MAX_DEPTH 150

/*
 * Longest string (key, string, code, symbol, regex, collection name) and
 * binary value of a document print_bson renders, and the longest rendering
 * it asks libbson for. libbson 1.23 escapes a value whole before it looks at
 * its length limit, and aborts once its text would pass 2 GiB (its strings
 * count in 32 bits): the limit plus the longest element (a key, a pattern
 * and its options, 6 bytes of text a byte at most) stays below that.
 * MongoDB's documents are at most 16 MiB: they render to less.
 */
#define PRINT_BSON_MAX_STRING ((size_t)64 << 20)
#define PRINT_BSON_MAX_TEXT   ((size_t)512 << 20)

/* Longest value inspect prints whole by default; inspect stays fast and small on huge values. */
#define PRINT_MAX_VALUE ((size_t)1 << 20)

/*
 * print_record appends one line describing rec (of transaction txseq, 0 if
 * none) to out: JSON with json, readable text otherwise. Column names come
 * from the reader's relation descriptions (reader may be NULL: none known).
 * MongoDB documents are rendered with print_bson.
 *
 * A value longer than max bytes (PRINT_MAX_VALUE by default, SIZE_MAX for
 * none: --full-values) is cut to its first max bytes. In JSON it is then
 * printed, where the whole value would be, as its own marker
 * {"truncated":true,"bytes":N,"prefix":P}: N the value's size in bytes (of
 * a MongoDB document: its BSON size), P the beginning written as the whole
 * value would be (text: a JSON string; bytes: base64 of the first max bytes;
 * a document: the first max bytes at most of its Extended JSON, on a
 * character boundary, as a JSON string). In text a cut value is followed by
 * ...<N bytes>.
 */
void print_record(sluice_buf *out, bool json, const sluice_record *rec, uint64_t txseq,
		  const sluice_reader *reader, size_t max);

/*
 * print_bson appends the BSON document data[0..len) (untrusted bytes) as
 * extended JSON v2 on one line, without spaces: canonical with json, relaxed
 * otherwise. A rendering longer than max bytes (or than PRINT_BSON_MAX_TEXT)
 * is cut to its first max bytes (at most; on a character boundary): with
 * json as {"truncated":true,"bytes":len,"prefix":"..."}, otherwise followed
 * by ...<len bytes>.
 * @return false, having appended nothing, if the bytes are not one
 * well-formed BSON document with UTF-8 keys and strings, nested at most
 * PRINT_BSON_MAX_DEPTH deep, without a string or binary value longer than
 * PRINT_BSON_MAX_STRING.
 */
bool print_bson(sluice_buf *out, bool json, const uint8_t *data, size_t len, size_t max);

#endif
