/*
 * Keys bound to streams (issue 10, finding 6): only the key in force signs,
 * a handover signed by it names the successor, and every reader and the
 * writer follow the same rule (docs/format.md §8).
 */
#include "testutil.h"

#include <errno.h>
#include <inttypes.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include "frame.h"

/* The sluice binary (argv[1], optional): the forged store is also checked through it. */
static const char *keys_sluice;

/*
 * keys_run_cli runs "sluice ARGS" (a shell command line of quoted paths)
 * with stdout and stderr into out_path, and returns its exit status.
 */
static int
keys_run_cli(const char *args, const char *out_path)
{
	char cmd[7 * TU_PATH_MAX];
	int n = snprintf(cmd, sizeof(cmd), "'%s' %s >'%s' 2>&1", keys_sluice, args, out_path);
	assert_true(n > 0 && (size_t)n < sizeof(cmd));
	int st = system(cmd);
	assert_true(st != -1 && WIFEXITED(st));
	return WEXITSTATUS(st);
}

/* keys_file_has tells whether the file at path contains both strings. */
static bool
keys_file_has(const char *path, const char *a, const char *b)
{
	sluice_buf text = {0};
	tu_read_file(path, &text);
	sluice_buf_append_byte(&text, 0);
	const char *t = (const char *)text.data;
	bool has = strstr(t, a) != NULL && strstr(t, b) != NULL;
	sluice_buf_free(&text);
	return has;
}

/* keys_write runs transactions first..first+n-1 through a writer signed by key. */
static void
keys_write(tu_env *env, sluice_key *key, const sluice_trust *earlier, uint64_t first, uint64_t n,
	   uint64_t segment_target)
{
	sluice_arena *a = sluice_arena_create();
	sluice_writer_options o = tu_writer_options(2048, segment_target);
	o.trust = earlier;
	sluice_writer *w = NULL;
	assert_true(sluice_writer_open(env->store, TU_STREAM, key, &o, &w, NULL));
	tu_append(w, tu_std_relation(a));
	for (uint64_t t = first; t < first + n; t++) {
		sluice_arena_reset(a);
		assert_int_equal(tu_append_txn(w, a, (int64_t)(t * 1000), t, 2, 600), t);
		assert_true(sluice_writer_flush(w));
	}
	assert_true(sluice_writer_close(w));
	sluice_arena_free(a);
}

/* keys_hand_over appends a handover from key to next's public key. */
static void
keys_hand_over(tu_env *env, sluice_key *key, const sluice_trust *earlier, const sluice_key *next)
{
	sluice_writer_options o = tu_writer_options(2048, 1 << 20);
	o.trust = earlier;
	sluice_writer *w = NULL;
	assert_true(sluice_writer_open(env->store, TU_STREAM, key, &o, &w, NULL));
	assert_true(sluice_writer_handover(w, sluice_key_public(next), "test rotation"));
	/* The writer signs nothing more. */
	sluice_arena *a = sluice_arena_create();
	assert_false(sluice_writer_append(w, tu_heartbeat(a, 5, 0)));
	sluice_arena_free(a);
	assert_true(sluice_writer_close(w));
}

/* keys_has_error_with tells whether an error finding contains both strings (b may be NULL). */
static bool
keys_has_error_with(const tu_findings *fd, const char *a, const char *b)
{
	for (size_t i = 0; i < fd->n; i++)
		if (fd->v[i].is_error && strstr(fd->v[i].cause, a) != NULL &&
		    (b == NULL || strstr(fd->v[i].cause, b) != NULL))
			return true;
	return false;
}

/* keys_verify_clean asserts that verify finds no problem and counts n transactions. */
static void
keys_verify_clean(tu_env *env, const sluice_trust *trust, uint64_t n)
{
	tu_findings fd;
	sluice_verify_report rep;
	tu_verify(env->store, TU_STREAM, trust, &fd, &rep);
	if (rep.problems != 0 || rep.warnings != 0)
		tu_findings_print(&fd);
	assert_int_equal(rep.problems, 0);
	assert_int_equal(rep.warnings, 0);
	assert_int_equal(rep.transactions, n);
	tu_findings_free(&fd);
}

/*
 * keys_forge_from re-signs every frame from frame index k of segment index s
 * to the end of the stream with forger, after changing the row values they
 * carry, and recomputes the chain hashes: what the holder of another trusted
 * key can do to a stream it does not own.
 */
static void
keys_forge_from(tu_env *env, size_t s, size_t k, const sluice_key *forger)
{
	uint64_t *firsts = NULL;
	size_t nsegs = tu_segments(env, &firsts);
	assert_true(s < nsegs);
	sluice_frame_codec *codec = sluice_frame_codec_create(1);
	sluice_arena *a = sluice_arena_create();
	sluice_buf file = {0}, out = {0}, raw = {0}, packed = {0};
	uint8_t prev[SLUICE_FRAME_HASH_SIZE];
	for (size_t i = s; i < nsegs; i++) {
		char path[TU_PATH_MAX];
		tu_segment_path(env, firsts[i], path);
		tu_read_file(path, &file);
		tu_frame_info *fr = NULL;
		size_t nf = tu_segment_frames(path, &fr);
		sluice_buf_reset(&out);
		for (size_t j = 0; j < nf; j++) {
			const uint8_t *at = file.data + fr[j].offset;
			if (i == s && j < k) {
				sluice_buf_append(&out, at, fr[j].size);
				sluice_frame_hash(at, prev);
				continue;
			}
			sluice_frame_header h = fr[j].hdr;
			assert_int_equal(sluice_frame_decompress(
						 codec, &h, at + SLUICE_FRAME_HEADER_SIZE, &raw),
					 SLUICE_FRAME_OK);
			sluice_arena_reset(a);
			sluice_buf_reset(&packed);
			size_t pos = 0;
			sluice_record *rec = NULL;
			while (sluice_records_unpack(raw.data, raw.len, &pos, a, &rec) ==
			       SLUICE_RECORDS_OK) {
				if (rec->body_case == SLUICE__V1__RECORD__BODY_INSERT &&
				    rec->insert->new_row != NULL &&
				    rec->insert->new_row->n_values > 1)
					rec->insert->new_row->values[1] = tu_text(a, "forged");
				sluice_records_pack(rec, &packed);
			}
			memcpy(h.key_id, sluice_key_id(forger), SLUICE_FRAME_KEY_ID_SIZE);
			memcpy(h.prev_hash, prev, SLUICE_FRAME_HASH_SIZE);
			assert_int_equal(sluice_frame_encode(codec, &h, packed.data, packed.len,
							     sluice_key_secret(forger), &out, prev),
					 SLUICE_FRAME_OK);
		}
		tu_write_file(path, out.data, out.len);
		free(fr);
	}
	sluice_buf_free(&file);
	sluice_buf_free(&out);
	sluice_buf_free(&raw);
	sluice_buf_free(&packed);
	sluice_arena_free(a);
	sluice_frame_codec_free(codec);
	free(firsts);
}

/*
 * keys_append_frame appends to the newest segment (not sealed) a frame
 * signed by signer that links to the last one and holds recs (between
 * transactions).
 */
static void
keys_append_frame(tu_env *env, const sluice_key *signer, sluice_record **recs, size_t n)
{
	uint64_t *firsts = NULL;
	size_t nsegs = tu_segments(env, &firsts);
	char path[TU_PATH_MAX];
	tu_segment_path(env, firsts[nsegs - 1], path);
	free(firsts);
	sluice_buf file = {0}, raw = {0}, out = {0};
	tu_read_file(path, &file);
	tu_frame_info *fr = NULL;
	size_t nf = tu_segment_frames(path, &fr);
	assert_true(nf > 0);
	const tu_frame_info *last = &fr[nf - 1];
	assert_int_equal(last->hdr.flags & (SLUICE_FRAME_SEAL | SLUICE_FRAME_OPEN), 0);
	sluice_frame_header h;
	memset(&h, 0, sizeof(h));
	h.stream_id = last->hdr.stream_id;
	h.frame_seq = last->hdr.frame_seq + 1;
	h.txseq_start = h.txseq_end = last->hdr.txseq_end;
	h.record_count = (uint32_t)n;
	memcpy(h.key_id, sluice_key_id(signer), SLUICE_FRAME_KEY_ID_SIZE);
	sluice_frame_hash(file.data + last->offset, h.prev_hash);
	for (size_t i = 0; i < n; i++)
		sluice_records_pack(recs[i], &raw);
	sluice_frame_codec *codec = sluice_frame_codec_create(1);
	uint8_t hash[SLUICE_FRAME_HASH_SIZE];
	assert_int_equal(sluice_frame_encode(codec, &h, raw.data, raw.len,
					     sluice_key_secret(signer), &out, hash),
			 SLUICE_FRAME_OK);
	sluice_buf_append(&file, out.data, out.len);
	tu_write_file(path, file.data, file.len);
	sluice_frame_codec_free(codec);
	free(fr);
	sluice_buf_free(&file);
	sluice_buf_free(&raw);
	sluice_buf_free(&out);
}

/* keys_first_segment_signed_by gives the first segment whose first frame key signed, or 0. */
static uint64_t
keys_first_segment_signed_by(tu_env *env, const sluice_key *key)
{
	uint64_t *firsts = NULL, found = 0;
	size_t nsegs = tu_segments(env, &firsts);
	for (size_t i = 0; i < nsegs && found == 0; i++) {
		char path[TU_PATH_MAX];
		tu_segment_path(env, firsts[i], path);
		tu_frame_info *fr = NULL;
		size_t nf = tu_segment_frames(path, &fr);
		if (nf > 0 &&
		    memcmp(fr[0].hdr.key_id, sluice_key_id(key), SLUICE_FRAME_KEY_ID_SIZE) == 0)
			found = firsts[i];
		free(fr);
	}
	free(firsts);
	return found;
}

/* keys_handover_record makes a KeyHandover record naming pk. */
static sluice_record *
keys_handover_record(sluice_arena *a, const uint8_t pk[32])
{
	sluice_record *r = tu_rec(a);
	Sluice__V1__KeyHandover *k = sluice_arena_alloc(a, sizeof(*k));
	sluice__v1__key_handover__init(k);
	k->next_public_key = tu_bin(a, pk, 32);
	r->body_case = SLUICE__V1__RECORD__BODY_KEY_HANDOVER;
	r->key_handover = k;
	return r;
}

/*
 * With A and B both trusted (as during a rotation), the holder of B rewrites
 * the tail of A's stream, validly signed and chained: every reader refuses
 * it and names both keys. Before key binding, verify passed.
 */
static void
test_keys_other_trusted_key_cannot_rewrite_tail(void **state)
{
	(void)state;
	tu_env env;
	tu_env_init(&env, "keys-forge");
	tu_keypair b;
	char keys[TU_PATH_MAX];
	tu_path(keys, "%s/keys", env.dir);
	tu_keypair_make(&b, keys, "b");
	keys_write(&env, env.kp.key, NULL, 1, 24, 12 * 1024);
	uint64_t *firsts = NULL;
	size_t nsegs = tu_segments(&env, &firsts);
	assert_true(nsegs >= 3);
	sluice_trust *both = tu_trust_of(env.kp.pubpath, b.pubpath, (const char *)NULL);
	keys_verify_clean(&env, both, 24);

	/* Forge from the second frame of the second segment on. */
	keys_forge_from(&env, 1, 1, b.key);
	tu_findings fd;
	sluice_verify_report rep;
	tu_verify(env.store, TU_STREAM, both, &fd, &rep);
	char seg[SLUICE_SEGMENT_NAME_SIZE];
	sluice_store_segment_name(firsts[1], seg);
	assert_true(rep.problems >= 1);
	assert_true(tu_findings_has_error(&fd, seg, -2));
	assert_true(keys_has_error_with(&fd, b.id_hex, env.kp.id_hex));
	assert_true(keys_has_error_with(&fd, "key in force", NULL));
	tu_findings_free(&fd);

	/* The reader from the start, and from the segment where the forgery begins. */
	tu_read_stats st;
	tu_read_all(env.store, TU_STREAM, both, 1, &st);
	assert_int_equal(st.end, SLUICE_READER_ERROR);
	assert_true(st.last_txseq < firsts[1] + 1);
	tu_read_all(env.store, TU_STREAM, both, firsts[1], &st);
	assert_int_equal(st.end, SLUICE_READER_ERROR);

	/* Through the binary: verify --strict and inspect --trust refuse it, naming both keys. */
	if (keys_sluice != NULL) {
		char args[5 * TU_PATH_MAX], out[TU_PATH_MAX];
		tu_path(out, "%s/cli.txt", env.dir);
		snprintf(args, sizeof(args),
			 "verify --store '%s' --stream %s --trust '%s' --trust '%s' --strict",
			 env.store_dir, TU_STREAM, env.kp.pubpath, b.pubpath);
		assert_int_equal(keys_run_cli(args, out), 1);
		assert_true(keys_file_has(out, b.id_hex, "key in force"));
		snprintf(args, sizeof(args),
			 "inspect --store '%s' --stream %s --trust '%s' --trust '%s'",
			 env.store_dir, TU_STREAM, env.kp.pubpath, b.pubpath);
		assert_int_equal(keys_run_cli(args, out), 1);
		assert_true(keys_file_has(out, b.id_hex, env.kp.id_hex));
	}

	/* The writer with A does not continue it either. */
	sluice_writer *w = NULL;
	assert_false(sluice_writer_open(env.store, TU_STREAM, env.kp.key, NULL, &w, NULL));

	sluice_trust_free(both);
	free(firsts);
	tu_keypair_free(&b);
	tu_env_free(&env);
}

/*
 * A rotation A -> B: verify passes trusting A only (B is reached through the
 * handover) and trusting A and B; it fails trusting B only. Reading resumes
 * after the rotation; the writer restarts with B (and A for the frames before
 * the handover), cuts an unfinished transaction, and a second rotation works.
 */
static void
test_keys_rotation(void **state)
{
	(void)state;
	tu_env env;
	tu_env_init(&env, "keys-rotate");
	tu_keypair b, c;
	char keys[TU_PATH_MAX];
	tu_path(keys, "%s/keys", env.dir);
	tu_keypair_make(&b, keys, "b");
	tu_keypair_make(&c, keys, "c");
	sluice_trust *only_a = env.trust;
	sluice_trust *only_b = tu_trust_of(b.pubpath, (const char *)NULL);
	sluice_trust *a_b = tu_trust_of(env.kp.pubpath, b.pubpath, (const char *)NULL);

	keys_write(&env, env.kp.key, NULL, 1, 10, 12 * 1024);
	keys_hand_over(&env, env.kp.key, NULL, b.key);

	/* A no longer writes; B needs A's public key for the frames before the handover. */
	sluice_writer *w = NULL;
	assert_false(sluice_writer_open(env.store, TU_STREAM, env.kp.key, NULL, &w, NULL));
	assert_false(sluice_writer_open(env.store, TU_STREAM, b.key, NULL, &w, NULL));
	keys_write(&env, b.key, only_a, 11, 10, 12 * 1024);
	/* A restart after the rotation goes on with B. */
	keys_write(&env, b.key, only_a, 21, 4, 12 * 1024);

	keys_verify_clean(&env, only_a, 24);
	keys_verify_clean(&env, a_b, 24);
	tu_findings fd;
	sluice_verify_report rep;
	tu_verify(env.store, TU_STREAM, only_b, &fd, &rep);
	assert_true(rep.problems >= 1);
	assert_true(keys_has_error_with(&fd, env.kp.id_hex, "not trusted"));
	tu_findings_free(&fd);

	tu_read_stats st;
	tu_read_all(env.store, TU_STREAM, only_a, 1, &st);
	assert_int_equal(st.end, SLUICE_READER_WAIT);
	assert_true(st.dense);
	assert_int_equal(st.first_txseq, 1);
	assert_int_equal(st.last_txseq, 24);
	/*
	 * Resuming mid-stream in a segment that B started: the key in force
	 * there must be trusted. In a segment that A started, A suffices.
	 */
	uint64_t from_b = keys_first_segment_signed_by(&env, b.key);
	assert_true(from_b > 10);
	tu_read_all(env.store, TU_STREAM, a_b, from_b, &st);
	assert_int_equal(st.end, SLUICE_READER_WAIT);
	assert_true(st.dense);
	assert_int_equal(st.first_txseq, from_b);
	assert_int_equal(st.last_txseq, 24);
	tu_read_all(env.store, TU_STREAM, only_a, from_b, &st);
	assert_int_equal(st.end, SLUICE_READER_ERROR);
	tu_read_all(env.store, TU_STREAM, only_a, 9, &st);
	assert_int_equal(st.end, SLUICE_READER_WAIT);
	assert_int_equal(st.last_txseq, 24);

	/* An unfinished transaction of B after a restart is cut, and the chain goes on. */
	{
		sluice_arena *a = sluice_arena_create();
		sluice_writer_options o = tu_writer_options(1024, 1 << 20);
		o.trust = only_a;
		assert_true(sluice_writer_open(env.store, TU_STREAM, b.key, &o, &w, NULL));
		tu_append(w, tu_std_relation(a));
		tu_append(w, tu_begin(a, 99000, 0, "n"));
		for (uint64_t i = 0; i < 4; i++)
			tu_append(w, tu_std_insert(a, 7, i, 900));
		assert_true(sluice_writer_flush(w));
		assert_true(sluice_writer_close(w));
		sluice_arena_free(a);
		sluice_writer_recovery rec;
		assert_true(sluice_writer_open(env.store, TU_STREAM, b.key, &o, &w, &rec));
		assert_int_equal(rec.partial_txseq, 25);
		assert_true(sluice_writer_close(w));
	}

	/* A second rotation B -> C; C's writer needs the keys before it. */
	keys_hand_over(&env, b.key, only_a, c.key);
	sluice_trust *a_b_c = tu_trust_of(env.kp.pubpath, b.pubpath, c.pubpath, (const char *)NULL);
	keys_write(&env, c.key, a_b, 25, 3, 12 * 1024);
	keys_verify_clean(&env, only_a, 27);
	keys_verify_clean(&env, a_b_c, 27);
	tu_read_all(env.store, TU_STREAM, only_a, 1, &st);
	assert_int_equal(st.end, SLUICE_READER_WAIT);
	assert_int_equal(st.last_txseq, 27);

	sluice_trust_free(a_b_c);
	sluice_trust_free(a_b);
	sluice_trust_free(only_b);
	tu_keypair_free(&c);
	tu_keypair_free(&b);
	tu_env_free(&env);
}

/*
 * A handover signed by a trusted key that is not the key in force is
 * refused, and so is one that is not alone in its frame.
 */
static void
test_keys_handover_by_key_not_in_force(void **state)
{
	(void)state;
	tu_env env;
	tu_env_init(&env, "keys-handover");
	tu_keypair b, c;
	char keys[TU_PATH_MAX];
	tu_path(keys, "%s/keys", env.dir);
	tu_keypair_make(&b, keys, "b");
	tu_keypair_make(&c, keys, "c");
	sluice_trust *a_b = tu_trust_of(env.kp.pubpath, b.pubpath, (const char *)NULL);
	keys_write(&env, env.kp.key, NULL, 1, 3, 1 << 20);
	char path[TU_PATH_MAX];
	tu_segment_path(&env, 1, path);
	sluice_buf clean = {0};
	tu_read_file(path, &clean);

	/* B, trusted but not in force, hands the stream over to C. */
	sluice_arena *a = sluice_arena_create();
	sluice_record *ho = keys_handover_record(a, sluice_key_public(c.key));
	keys_append_frame(&env, b.key, &ho, 1);
	tu_findings fd;
	sluice_verify_report rep;
	tu_verify(env.store, TU_STREAM, a_b, &fd, &rep);
	assert_true(rep.problems >= 1);
	assert_true(keys_has_error_with(&fd, b.id_hex, env.kp.id_hex));
	tu_findings_free(&fd);
	tu_read_stats st;
	tu_read_all(env.store, TU_STREAM, a_b, 1, &st);
	assert_int_equal(st.end, SLUICE_READER_ERROR);

	/* A handover next to another record, signed by the key in force. */
	tu_write_file(path, clean.data, clean.len);
	sluice_record *two[2] = {tu_heartbeat(a, 4000, 0),
				 keys_handover_record(a, sluice_key_public(c.key))};
	keys_append_frame(&env, env.kp.key, two, 2);
	tu_verify(env.store, TU_STREAM, a_b, &fd, &rep);
	assert_true(rep.problems >= 1);
	assert_true(keys_has_error_with(&fd, "handover", NULL));
	tu_findings_free(&fd);

	/* A handover of the key to itself. */
	tu_write_file(path, clean.data, clean.len);
	sluice_record *self = keys_handover_record(a, sluice_key_public(env.kp.key));
	keys_append_frame(&env, env.kp.key, &self, 1);
	tu_verify(env.store, TU_STREAM, a_b, &fd, &rep);
	assert_true(keys_has_error_with(&fd, "handover", NULL));
	tu_findings_free(&fd);

	/* A proper one, by the key in force, alone in its frame: accepted. */
	tu_write_file(path, clean.data, clean.len);
	ho = keys_handover_record(a, sluice_key_public(c.key));
	keys_append_frame(&env, env.kp.key, &ho, 1);
	keys_verify_clean(&env, env.trust, 3);

	sluice_arena_free(a);
	sluice_buf_free(&clean);
	sluice_trust_free(a_b);
	tu_keypair_free(&c);
	tu_keypair_free(&b);
	tu_env_free(&env);
}

/*
 * A stream written before key binding has one key throughout and no
 * handover: it reads unchanged, whatever else is trusted.
 */
static void
test_keys_single_key_stream_unchanged(void **state)
{
	(void)state;
	tu_env env;
	tu_env_init(&env, "keys-single");
	tu_keypair b;
	char keys[TU_PATH_MAX];
	tu_path(keys, "%s/keys", env.dir);
	tu_keypair_make(&b, keys, "b");
	sluice_trust *a_b = tu_trust_of(b.pubpath, env.kp.pubpath, (const char *)NULL);
	keys_write(&env, env.kp.key, NULL, 1, 12, 12 * 1024);
	keys_verify_clean(&env, env.trust, 12);
	keys_verify_clean(&env, a_b, 12);
	tu_read_stats st;
	tu_read_all(env.store, TU_STREAM, a_b, 7, &st);
	assert_int_equal(st.end, SLUICE_READER_WAIT);
	assert_int_equal(st.last_txseq, 12);
	sluice_trust_free(a_b);
	tu_keypair_free(&b);
	tu_env_free(&env);
}

int
main(int argc, char **argv)
{
	keys_sluice = argc > 1 ? argv[1] : NULL;
	if (sodium_init() < 0)
		return 1;
	tu_setup_process();
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_keys_other_trusted_key_cannot_rewrite_tail),
		cmocka_unit_test(test_keys_rotation),
		cmocka_unit_test(test_keys_handover_by_key_not_in_force),
		cmocka_unit_test(test_keys_single_key_stream_unchanged),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
