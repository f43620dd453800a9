/* Human-readable and JSON renderings of stream records for `inspect --records`. */
#ifndef SLUICE_TOOLS_PRINT_H
#define SLUICE_TOOLS_PRINT_H

#include <stdbool.h>
#include <stdint.h>

#include "buf.h"
#include "reader.h"
#include "records.h"

/*
 * print_record appends one line describing rec (of transaction txseq, 0 if
 * none) to out: JSON with json, readable text otherwise. Column names come
 * from the reader's relation descriptions.
 */
void print_record(sluice_buf *out, bool json, const sluice_record *rec, uint64_t txseq,
		  const sluice_reader *reader);

#endif
