/* A small bounded reader for the XML of S3 responses (ListObjectsV2, errors, multipart). */
#ifndef SLUICE_STORE_S3XML_H
#define SLUICE_STORE_S3XML_H

#include <stdbool.h>
#include <stddef.h>

/*
 * S3 answers with flat, machine-written XML; sluice needs a few elements'
 * text (Key, IsTruncated, NextContinuationToken, Code, Message, UploadId).
 * This reads exactly that and nothing more: no DTDs, no entities beyond the
 * five predefined ones and numeric references, no nesting awareness beyond
 * "the next <name>…</name> after a position". Untrusted input: every read is
 * bounded by len, and the result is a copy into a caller buffer.
 */
typedef enum sluice_s3xml_status {
	SLUICE_S3XML_OK = 0,
	SLUICE_S3XML_NONE = 1,      /* no (more) such element */
	SLUICE_S3XML_BAD = -1,      /* unterminated element or bad reference */
	SLUICE_S3XML_TOO_LONG = -2, /* the text does not fit the buffer */
} sluice_s3xml_status;

/*
 * sluice_s3xml_next finds the next element <name>TEXT</name> at or after
 * *pos in xml[0..len), unescapes TEXT into out (NUL-terminated, at most
 * cap - 1 bytes; *out_len its length) and moves *pos past the element.
 * An empty element <name/> gives an empty text.
 */
sluice_s3xml_status sluice_s3xml_next(const char *xml, size_t len, size_t *pos, const char *name,
				      char *out, size_t cap, size_t *out_len);

/* sluice_s3xml_strerror describes a status. */
const char *sluice_s3xml_strerror(sluice_s3xml_status st);

#endif
