/* Shared helpers for the cmocka unit tests of the stream format. */
#ifndef SLUICE_TESTS_UNIT_TESTUTIL_H
#define SLUICE_TESTS_UNIT_TESTUTIL_H

/* cmocka needs these before its header. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdbool.h>
#include <sys/types.h>

#include "arena.h"
#include "backend.h"
#include "buf.h"
#include "frame.h"
#include "keys.h"
#include "log.h"
#include "reader.h"
#include "records.h"
#include "verify.h"
#include "writer.h"

#define TU_PATH_MAX 1024
#define TU_STREAM   "unit.stream-1"

/* tu_setup_process: sodium_init (asserting success) and quiet logging. Call first in main. */
void tu_setup_process(void);

/* ---- files ---- */

/* tu_path formats a path into out (TU_PATH_MAX bytes), failing the test if it does not fit. */
void tu_path(char *out, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* tu_mkdtemp makes a fresh directory under $TMPDIR or /tmp; returns a malloc'd path. */
char *tu_mkdtemp(const char *tag);
/* tu_rmrf removes a directory tree (read-only files included). */
void tu_rmrf(const char *path);
/* tu_copy_file copies src to dst (dst must not exist) and gives dst the mode of src. */
void tu_copy_file(const char *src, const char *dst);
/* tu_copy_dir copies the regular files of a flat directory into dst (created). */
void tu_copy_dir(const char *src, const char *dst);
/* tu_read_file reads a whole file into out (replacing its contents). */
void tu_read_file(const char *path, sluice_buf *out);
/* tu_write_file replaces a file's contents, keeping its mode (even if read-only). */
void tu_write_file(const char *path, const void *data, size_t len);
/* tu_flip_byte XORs the byte at off with mask, keeping the file's mode. */
void tu_flip_byte(const char *path, uint64_t off, uint8_t mask);
/* tu_truncate_file cuts a file to len bytes, keeping its mode. */
void tu_truncate_file(const char *path, uint64_t len);
uint64_t tu_file_size(const char *path);
mode_t tu_file_mode(const char *path);

/* ---- keys ---- */

typedef struct tu_keypair {
	char keypath[TU_PATH_MAX];
	char pubpath[TU_PATH_MAX];
	char id_hex[SLUICE_KEY_ID_HEX_SIZE];
	sluice_key *key; /* owned */
} tu_keypair;

/* tu_keypair_make generates DIR/NAME.key/.pub with sluice_keys_generate and loads it. */
void tu_keypair_make(tu_keypair *kp, const char *dir, const char *name);
void tu_keypair_free(tu_keypair *kp);
/* tu_trust_of makes a trust set holding the .pub files given (NULL-terminated). */
sluice_trust *tu_trust_of(const char *pubpath, ...);

/* ---- a test store: temp dir + key + trust ---- */

typedef struct tu_env {
	char *dir; /* owned: temp root, holds keys/ and store/ */
	char store_dir[TU_PATH_MAX];
	char stream_dir[TU_PATH_MAX];
	tu_keypair kp;
	sluice_trust *trust; /* owned: trusts kp */
	sluice_store *store; /* owned */
} tu_env;

void tu_env_init(tu_env *env, const char *tag);
void tu_env_free(tu_env *env);
/* tu_env_reopen_store closes and reopens env->store (e.g. after copying files). */
void tu_env_reopen_store(tu_env *env);
/* tu_segment_path formats STREAM_DIR/<first>.seg. */
void tu_segment_path(const tu_env *env, uint64_t first, char out[TU_PATH_MAX]);
/* tu_segments lists the first txseq of every segment; returns the count. */
size_t tu_segments(tu_env *env, uint64_t **firsts);

/* tu_writer_options makes writer options with the given frame and segment targets. */
sluice_writer_options tu_writer_options(size_t frame_target, uint64_t segment_target);

/* ---- frames of a segment file (parsed from the raw bytes) ---- */

typedef struct tu_frame_info {
	uint64_t offset;
	uint64_t size; /* header + payload */
	sluice_frame_header hdr;
} tu_frame_info;

/* tu_segment_frames walks the complete frames of a segment file. */
size_t tu_segment_frames(const char *path, tu_frame_info **out);

/* ---- verify with collected findings ---- */

typedef struct tu_finding {
	bool is_error;
	char segment[SLUICE_SEGMENT_NAME_SIZE + 8]; /* "" when NULL */
	int64_t offset;
	char cause[600];
} tu_finding;

typedef struct tu_findings {
	tu_finding *v;
	size_t n;
} tu_findings;

/* tu_verify runs sluice_verify_stream, asserting it returns true. */
void tu_verify(sluice_store *store, const char *stream, const sluice_trust *trust,
	       tu_findings *findings, sluice_verify_report *report);
void tu_findings_free(tu_findings *f);
void tu_findings_print(const tu_findings *f);
/* tu_findings_has_error: an error naming segment (NULL: any) at offset (-2: any). */
bool tu_findings_has_error(const tu_findings *f, const char *segment, int64_t offset);

/* ---- records built in an arena ---- */

sluice_record *tu_rec(sluice_arena *a);
sluice_record *tu_begin(sluice_arena *a, int64_t time_us, uint64_t source_lsn, const char *origin);
sluice_record *tu_commit(sluice_arena *a, uint64_t end_lsn, uint32_t change_count);
sluice_record *tu_heartbeat(sluice_arena *a, int64_t time_us, uint64_t lsn);
/* tu_relation: columns given as "name:oid" strings; the first is the key. */
sluice_record *tu_relation(sluice_arena *a, uint32_t id, const char *schema, const char *name,
			   size_t ncols, const char *const *cols);
Sluice__V1__Row *tu_row(sluice_arena *a, size_t n, const Sluice__V1__ValueKind *kinds,
			const ProtobufCBinaryData *values);
ProtobufCBinaryData tu_bin(sluice_arena *a, const void *data, size_t len);
ProtobufCBinaryData tu_text(sluice_arena *a, const char *s);
char *tu_strdup(sluice_arena *a, const char *s);
sluice_record *tu_insert(sluice_arena *a, uint32_t relid, Sluice__V1__Row *row);

/* The standard test relation and rows for it (4 columns: id, name, bio, blob). */
#define TU_REL_ID 16384u
sluice_record *tu_std_relation(sluice_arena *a);
/* tu_std_insert: row with id, a name, and blob_len deterministic pseudo-random bytes. */
sluice_record *tu_std_insert(sluice_arena *a, uint64_t seed, uint64_t id, size_t blob_len);

/* tu_append appends a record, asserting success. */
void tu_append(sluice_writer *w, sluice_record *rec);
/* tu_append_txn appends Begin, nrows std inserts, Commit; returns the txseq given. */
uint64_t tu_append_txn(sluice_writer *w, sluice_arena *a, int64_t time_us, uint64_t seed,
		       size_t nrows, size_t blob_len);

/* ---- packing and comparing ---- */

void tu_pack(const ProtobufCMessage *m, sluice_buf *out);
bool tu_msg_equal(const ProtobufCMessage *a, const ProtobufCMessage *b);

/* ---- pseudo-random numbers (splitmix64) ---- */

uint64_t tu_rand(uint64_t *state);
void tu_rand_bytes(uint64_t *state, uint8_t *p, size_t n);

/* ---- reading a whole stream ---- */

typedef struct tu_read_stats {
	sluice_reader_status end; /* status that stopped the read */
	uint64_t records;
	uint64_t transactions; /* commits + snapshot ends */
	uint64_t first_txseq;  /* first begin seen, 0 if none */
	uint64_t last_txseq;   /* last commit seen */
	bool dense;            /* begins were first, first+1, ... and commits matched */
	int64_t last_commit_time;
} tu_read_stats;

/* tu_read_all reads from from_txseq until WAIT or ERROR, checking txseq density. */
void tu_read_all(sluice_store *store, const char *stream, const sluice_trust *trust,
		 uint64_t from_txseq, tu_read_stats *st);

#endif
