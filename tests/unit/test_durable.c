/* What the writer reports durable was fsynced: write, fdatasync, fsync and close are wrapped at
 * link time. */
#include "testutil.h"

#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define DURABLE_MAX_FD 1024

/* Files written since their last fdatasync or fsync, by descriptor. */
static bool durable_dirty[DURABLE_MAX_FD];
static pthread_mutex_t durable_mu = PTHREAD_MUTEX_INITIALIZER;
/* fdatasync takes this long (ms) before it does its work: a slow disk. */
static int durable_sync_delay_ms;

ssize_t __real_write(int fd, const void *buf, size_t n);
ssize_t __wrap_write(int fd, const void *buf, size_t n);
int __real_fdatasync(int fd);
int __wrap_fdatasync(int fd);
int __real_fsync(int fd);
int __wrap_fsync(int fd);
int __real_close(int fd);
int __wrap_close(int fd);

/* Inodes fdatasynced or fsynced since durable_synced_reset. */
#define DURABLE_MAX_SYNCED 256
static ino_t durable_synced[DURABLE_MAX_SYNCED];
static size_t durable_nsynced;

static void
durable_note_sync(int fd)
{
	struct stat st;
	if (fstat(fd, &st) != 0)
		return;
	ino_t ino = st.st_ino;
	pthread_mutex_lock(&durable_mu);
	if (durable_nsynced < DURABLE_MAX_SYNCED)
		durable_synced[durable_nsynced++] = ino;
	pthread_mutex_unlock(&durable_mu);
}

static void
durable_synced_reset(void)
{
	pthread_mutex_lock(&durable_mu);
	durable_nsynced = 0;
	pthread_mutex_unlock(&durable_mu);
}

/* durable_was_synced tells whether the file at path was synced since durable_synced_reset. */
static bool
durable_was_synced(const char *path)
{
	struct stat st;
	if (stat(path, &st) != 0)
		return false;
	bool found = false;
	pthread_mutex_lock(&durable_mu);
	for (size_t i = 0; i < durable_nsynced; i++)
		found = found || durable_synced[i] == st.st_ino;
	pthread_mutex_unlock(&durable_mu);
	return found;
}

static void
durable_mark(int fd, bool dirty)
{
	if (fd < 0 || fd >= DURABLE_MAX_FD)
		return;
	pthread_mutex_lock(&durable_mu);
	durable_dirty[fd] = dirty;
	pthread_mutex_unlock(&durable_mu);
}

ssize_t
__wrap_write(int fd, const void *buf, size_t n)
{
	ssize_t r = __real_write(fd, buf, n);
	if (r > 0)
		durable_mark(fd, true);
	return r;
}

/* durable_synced_if notes fd clean and synced when a sync of it returned 0 (r); returns r. */
static int
durable_synced_if(int fd, int r)
{
	if (r == 0) {
		durable_mark(fd, false);
		durable_note_sync(fd);
	}
	return r;
}

int
__wrap_fdatasync(int fd)
{
	pthread_mutex_lock(&durable_mu);
	int delay = durable_sync_delay_ms;
	pthread_mutex_unlock(&durable_mu);
	if (delay > 0)
		usleep((useconds_t)delay * 1000);
	return durable_synced_if(fd, __real_fdatasync(fd));
}

int
__wrap_fsync(int fd)
{
	return durable_synced_if(fd, __real_fsync(fd));
}

int
__wrap_close(int fd)
{
	durable_mark(fd, false);
	return __real_close(fd);
}

/* durable_unsynced_segments counts segment files written since they were last synced. */
static int
durable_unsynced_segments(void)
{
	int n = 0;
	for (int fd = 0; fd < DURABLE_MAX_FD; fd++) {
		pthread_mutex_lock(&durable_mu);
		bool dirty = durable_dirty[fd];
		pthread_mutex_unlock(&durable_mu);
		if (!dirty)
			continue;
		char link[64], target[PATH_MAX];
		snprintf(link, sizeof(link), "/proc/self/fd/%d", fd);
		ssize_t len = readlink(link, target, sizeof(target) - 1);
		if (len < 4)
			continue;
		target[len] = '\0';
		if (strcmp(target + len - 4, ".seg") == 0) {
			print_message("segment written but not synced: %s\n", target);
			n++;
		}
	}
	return n;
}

static size_t
durable_packed_size(const sluice_record *rec)
{
	sluice_buf b = {0};
	sluice_records_pack(rec, &b);
	size_t n = b.len;
	sluice_buf_free(&b);
	return n;
}

/*
 * A transaction whose commit is the record that fills its frame: that frame
 * is cut right after the commit and, being as large as the store takes at
 * once, is written at once, before any flush. The flush that reports the
 * commit durable must still fsync the segment, though no frame is left to
 * write then.
 */
static void
test_commit_in_a_written_chunk(void **state)
{
	(void)state;
	const size_t frame_target = 4 << 20; /* the directory store's chunk size: see below */
	tu_env env;
	tu_env_init(&env, "durable");
	sluice_arena *a = sluice_arena_create();
	sluice_writer_options o = tu_writer_options(frame_target, 64 << 20);

	/* Records sized so that the frame holds frame_target - 1 bytes before the commit. */
	sluice_record *rel = tu_std_relation(a);
	sluice_record *begin = tu_begin(a, 1000, 16000, "node-a");
	sluice_record *commit = tu_commit(a, 16008, 1);
	begin->begin->txseq = 1;
	commit->commit->txseq = 1;
	commit->commit->commit_time_us = 1000;
	size_t fixed = durable_packed_size(rel) + durable_packed_size(begin);
	size_t guess = frame_target - 4096;
	size_t blob = guess + (frame_target - 1 - fixed -
			       durable_packed_size(tu_std_insert(a, 7, 1, guess)));
	sluice_record *insert = tu_std_insert(a, 7, 1, blob);
	assert_int_equal(fixed + durable_packed_size(insert), frame_target - 1);

	sluice_writer *w = NULL;
	assert_true(sluice_writer_open(env.store, TU_STREAM, env.kp.key, &o, &w, NULL));
	tu_append(w, rel);
	tu_append(w, begin);
	tu_append(w, insert);
	tu_append(w, commit);
	assert_true(sluice_writer_flush(w));
	assert_int_equal(sluice_writer_durable_txseq(w), 1);
	assert_int_equal(durable_unsynced_segments(), 0);

	/* The case arose: one frame ending with the commit, too large to wait for a flush. */
	char path[TU_PATH_MAX];
	tu_segment_path(&env, 1, path);
	tu_frame_info *frames = NULL;
	size_t n = tu_segment_frames(path, &frames);
	assert_int_equal(n, 1);
	assert_int_equal(frames[0].hdr.record_count, 4);
	assert_false(frames[0].hdr.flags & SLUICE_FRAME_OPEN);
	assert_true(frames[0].size >= sluice_store_caps_get(env.store)->max_chunk);
	free(frames);

	assert_true(sluice_writer_close(w));
	sluice_arena_free(a);
	tu_env_free(&env);
}

/*
 * A flush handed over without waiting (sluice_writer_flush_async) counts as
 * durable only once its fdatasync returned, however long the disk takes.
 */
static void
test_async_flush_durable_after_sync(void **state)
{
	(void)state;
	tu_env env;
	tu_env_init(&env, "durable-async");
	sluice_arena *a = sluice_arena_create();
	sluice_writer_options o = tu_writer_options(64 * 1024, 64 << 20);
	sluice_writer *w = NULL;
	assert_true(sluice_writer_open(env.store, TU_STREAM, env.kp.key, &o, &w, NULL));
	tu_append(w, tu_std_relation(a));
	tu_append_txn(w, a, 1000, 1, 10, 100);
	assert_true(sluice_writer_flush(w));
	assert_int_equal(sluice_writer_durable_txseq(w), 1);
	uint64_t durable_position = sluice_writer_durable_position(w);

	pthread_mutex_lock(&durable_mu);
	durable_sync_delay_ms = 300;
	pthread_mutex_unlock(&durable_mu);
	tu_append_txn(w, a, 2000, 2, 10, 100);
	assert_true(sluice_writer_flush_due(w));
	assert_true(sluice_writer_flush_async(w));
	assert_false(sluice_writer_flush_due(w));
	/* The store thread is in the slow fdatasync: nothing new is durable. */
	usleep(100 * 1000);
	assert_true(sluice_writer_flushing(w));
	assert_int_equal(sluice_writer_durable_txseq(w), 1);
	assert_int_equal(sluice_writer_durable_position(w), durable_position);
	/* Appending goes on meanwhile. */
	tu_append_txn(w, a, 3000, 3, 10, 100);
	while (sluice_writer_flushing(w))
		usleep(10 * 1000);
	assert_false(sluice_writer_failed(w));
	assert_int_equal(sluice_writer_durable_txseq(w), 2);
	assert_true(sluice_writer_durable_position(w) > durable_position);
	assert_true(sluice_writer_flush_due(w)); /* transaction 3 */

	pthread_mutex_lock(&durable_mu);
	durable_sync_delay_ms = 0;
	pthread_mutex_unlock(&durable_mu);
	assert_true(sluice_writer_flush(w));
	assert_int_equal(sluice_writer_durable_txseq(w), 3);
	assert_int_equal(durable_unsynced_segments(), 0);
	assert_true(sluice_writer_close(w));
	sluice_arena_free(a);
	tu_env_free(&env);
}

/*
 * A writer that reopens a stream counts what the newest, unsealed segment
 * holds as durable: a writer killed with -9 may have left it only in the page
 * cache (chunks written inside a transaction, a flush that did not return),
 * so the reopening writer syncs the segment before it reports anything.
 */
static void
test_reopen_syncs_the_tail(void **state)
{
	(void)state;
	tu_env env;
	tu_env_init(&env, "durable-reopen");
	sluice_arena *a = sluice_arena_create();
	sluice_writer_options o = tu_writer_options(64 << 10, 64 << 20);
	sluice_record *begin = tu_begin(a, 1000, 16000, "node-a");
	sluice_record *commit = tu_commit(a, 16008, 1);
	begin->begin->txseq = 1;
	commit->commit->txseq = 1;
	commit->commit->commit_time_us = 1000;

	sluice_writer *w = NULL;
	assert_true(sluice_writer_open(env.store, TU_STREAM, env.kp.key, &o, &w, NULL));
	tu_append(w, tu_std_relation(a));
	tu_append(w, begin);
	tu_append(w, tu_std_insert(a, 7, 1, 100));
	tu_append(w, commit);
	assert_true(sluice_writer_close(w));

	char path[TU_PATH_MAX];
	tu_segment_path(&env, 1, path);
	durable_synced_reset();
	w = NULL;
	assert_true(sluice_writer_open(env.store, TU_STREAM, env.kp.key, &o, &w, NULL));
	assert_int_equal(sluice_writer_durable_txseq(w), 1);
	assert_true(durable_was_synced(path));
	assert_true(sluice_writer_close(w));
	sluice_arena_free(a);
	tu_env_free(&env);
}

int
main(void)
{
	tu_setup_process();
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_commit_in_a_written_chunk),
		cmocka_unit_test(test_async_flush_durable_after_sync),
		cmocka_unit_test(test_reopen_syncs_the_tail),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
