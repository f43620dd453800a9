/* Local-directory store backend: STORE/STREAM/<first txseq>.seg files. */
#include "backend_file.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <unistd.h>

#include "log.h"
#include "segname.h"

/* Lock file in the stream directory; not a segment, never read by readers. */
#define FILE_LOCK_NAME ".writer.lock"

typedef struct file_store {
	char *root; /* owned */
} file_store;

typedef struct file_segment {
	int fd;
	bool writable;
	char path[PATH_MAX + 64];
} file_segment;

typedef struct file_watch {
	int fd;        /* inotify descriptor */
	int stream_wd; /* watch on the stream directory, or -1 until it exists */
	char dir[PATH_MAX];
	char name[256]; /* stream name, to recognise its creation in the root */
} file_watch;

/* file_fsync_dir makes directory entries under path durable. */
static bool
file_fsync_dir(const char *path)
{
	int fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0) {
		sluice_log_error("could not open directory \"%s\": %m", path);
		return false;
	}
	bool ok = fsync(fd) == 0;
	if (!ok)
		sluice_log_error("could not fsync directory \"%s\": %m", path);
	close(fd);
	return ok;
}

static bool
file_open(const char *location, const sluice_store_options *options, void **state,
	  sluice_store_caps *caps)
{
	(void)options; /* a directory appends in place: no spool, every write is durable */
	if (mkdir(location, 0755) != 0 && errno != EEXIST) {
		sluice_log_error("could not create store directory \"%s\": %m", location);
		return false;
	}
	struct stat st;
	if (stat(location, &st) != 0) {
		sluice_log_error("could not open store \"%s\": %m", location);
		return false;
	}
	if (!S_ISDIR(st.st_mode)) {
		sluice_log_error("store \"%s\" is not a directory", location);
		return false;
	}
	file_store *fs = calloc(1, sizeof(*fs));
	if (fs == NULL)
		abort();
	fs->root = strdup(location);
	if (fs->root == NULL)
		abort();
	*state = fs;
	caps->append_visible = true;
	caps->watch = true;
	caps->durable_write = true;
	caps->cheap_list = true;
	caps->max_chunk = 4 * 1024 * 1024;
	return true;
}

static void
file_close(void *state)
{
	file_store *fs = state;
	if (fs == NULL)
		return;
	free(fs->root);
	free(fs);
}

static bool
file_list(void *state, const char *stream, uint64_t **firsts, size_t *n, size_t *strays)
{
	file_store *fs = state;
	char dir[PATH_MAX];
	snprintf(dir, sizeof(dir), "%s/%s", fs->root, stream);
	*firsts = NULL;
	*n = 0;
	*strays = 0;
	DIR *d = opendir(dir);
	if (d == NULL) {
		if (errno == ENOENT)
			return true;
		sluice_log_error("could not open stream directory \"%s\": %m", dir);
		return false;
	}
	size_t cap = 0;
	uint64_t *list = NULL;
	struct dirent *de;
	while ((de = readdir(d)) != NULL) {
		if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
			continue;
		uint64_t first;
		if (strcmp(de->d_name, FILE_LOCK_NAME) == 0)
			continue;
		if (!sluice_segname_parse(de->d_name, &first)) {
			(*strays)++;
			continue;
		}
		if (*n == cap) {
			cap = cap ? cap * 2 : 64;
			uint64_t *p = realloc(list, cap * sizeof(*p));
			if (p == NULL)
				abort();
			list = p;
		}
		list[(*n)++] = first;
	}
	closedir(d);
	if (*n > 1)
		qsort(list, *n, sizeof(*list), sluice_segname_cmp);
	*firsts = list;
	return true;
}

/* file_segment_new prepares a handle for segment name of stream. */
static file_segment *
file_segment_new(const file_store *fs, const char *stream, const char *name, bool writable)
{
	file_segment *seg = calloc(1, sizeof(*seg));
	if (seg == NULL)
		abort();
	seg->fd = -1;
	seg->writable = writable;
	snprintf(seg->path, sizeof(seg->path), "%s/%s/%s", fs->root, stream, name);
	return seg;
}

static bool
file_segment_create(void *state, const char *stream, const char *name, void **out)
{
	file_store *fs = state;
	char dir[PATH_MAX];
	snprintf(dir, sizeof(dir), "%s/%s", fs->root, stream);
	file_segment *seg = file_segment_new(fs, stream, name, true);
	if (mkdir(dir, 0755) == 0) {
		if (!file_fsync_dir(fs->root))
			goto fail;
	} else if (errno != EEXIST) {
		sluice_log_error("could not create stream directory \"%s\": %m", dir);
		goto fail;
	}
	seg->fd = open(seg->path, O_RDWR | O_CREAT | O_EXCL | O_APPEND | O_CLOEXEC, 0644);
	if (seg->fd < 0) {
		sluice_log_error("could not create segment \"%s\": %m", seg->path);
		goto fail;
	}
	/* The new name must survive a crash before anything is acknowledged in it. */
	if (!file_fsync_dir(dir))
		goto fail;
	*out = seg;
	return true;

fail:
	if (seg->fd >= 0)
		close(seg->fd);
	free(seg);
	return false;
}

static bool
file_segment_open(void *state, const char *stream, const char *name, bool writable, void **out)
{
	file_store *fs = state;
	file_segment *seg = file_segment_new(fs, stream, name, writable);
	/*
	 * Only regular files are segments. O_NONBLOCK keeps open() from
	 * waiting on a FIFO and O_NOFOLLOW refuses a symbolic link, so the
	 * type is known before anything blocks; fstat then checks it.
	 */
	int flags = writable ? (O_RDWR | O_APPEND) : O_RDONLY;
	seg->fd = open(seg->path, flags | O_CLOEXEC | O_NONBLOCK | O_NOFOLLOW);
	if (seg->fd < 0) {
		if (errno == ELOOP)
			sluice_log_error("could not open segment \"%s\": it is a symbolic "
					 "link (segments must be regular files)",
					 seg->path);
		else
			sluice_log_error("could not open segment \"%s\": %m", seg->path);
		goto fail;
	}
	struct stat st;
	if (fstat(seg->fd, &st) != 0) {
		sluice_log_error("could not stat segment \"%s\": %m", seg->path);
		goto fail;
	}
	if (!S_ISREG(st.st_mode)) {
		sluice_log_error("could not open segment \"%s\": not a regular file", seg->path);
		goto fail;
	}
	if (fcntl(seg->fd, F_SETFL, flags) != 0) {
		sluice_log_error("could not set flags of segment \"%s\": %m", seg->path);
		goto fail;
	}
	*out = seg;
	return true;

fail:
	if (seg->fd >= 0)
		close(seg->fd);
	free(seg);
	return false;
}

static bool
file_segment_probe(void *state, const char *stream, const char *name, bool *exists)
{
	file_store *fs = state;
	char path[PATH_MAX + 64];
	snprintf(path, sizeof(path), "%s/%s/%s", fs->root, stream, name);
	struct stat st;
	if (lstat(path, &st) == 0) {
		*exists = true;
		return true;
	}
	if (errno == ENOENT || errno == ENOTDIR) {
		*exists = false;
		return true;
	}
	sluice_log_error("could not stat segment \"%s\": %m", path);
	return false;
}

/* file_write_all writes len bytes to fd (which appends). */
static bool
file_write_all(int fd, const char *path, const void *data, size_t len)
{
	size_t done = 0;
	while (done < len) {
		ssize_t n = write(fd, (const char *)data + done, len - done);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			sluice_log_error("could not write segment \"%s\": %m", path);
			return false;
		}
		done += (size_t)n;
	}
	return true;
}

/* file_same_content tells whether the file at path holds exactly data. */
static bool
file_same_content(const char *path, const void *data, size_t len)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);
	if (fd < 0)
		return false;
	bool same = false;
	struct stat st;
	if (fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && (uint64_t)st.st_size == len) {
		char buf[65536];
		size_t off = 0;
		same = true;
		while (same && off < len) {
			size_t want = len - off < sizeof(buf) ? len - off : sizeof(buf);
			ssize_t n = pread(fd, buf, want, (off_t)off);
			if (n <= 0 || memcmp(buf, (const char *)data + off, (size_t)n) != 0)
				same = false;
			else
				off += (size_t)n;
		}
	}
	close(fd);
	return same;
}

static bool
file_segment_put(void *state, const char *stream, const char *name, const void *data, size_t len)
{
	file_store *fs = state;
	char dir[PATH_MAX], path[PATH_MAX + 64], tmp[PATH_MAX + 96];
	snprintf(dir, sizeof(dir), "%s/%s", fs->root, stream);
	snprintf(path, sizeof(path), "%s/%s", dir, name);
	snprintf(tmp, sizeof(tmp), "%s/.%s.%ld.tmp", dir, name, (long)getpid());
	if (mkdir(dir, 0755) == 0) {
		if (!file_fsync_dir(fs->root))
			return false;
	} else if (errno != EEXIST) {
		sluice_log_error("could not create stream directory \"%s\": %m", dir);
		return false;
	}
	int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0444);
	if (fd < 0) {
		sluice_log_error("could not create \"%s\": %m", tmp);
		return false;
	}
	bool ok = file_write_all(fd, tmp, data, len);
	if (ok && fsync(fd) != 0) {
		sluice_log_error("could not fsync \"%s\": %m", tmp);
		ok = false;
	}
	close(fd);
	/* link() never replaces: the segment appears whole, once. */
	if (ok && link(tmp, path) != 0) {
		if (errno == EEXIST && file_same_content(path, data, len))
			;
		else if (errno == EEXIST) {
			sluice_log_error("segment \"%s\" already exists with other contents; it is "
					 "never overwritten",
					 path);
			ok = false;
		} else {
			sluice_log_error("could not create segment \"%s\": %m", path);
			ok = false;
		}
	}
	(void)unlink(tmp);
	return ok && file_fsync_dir(dir);
}

static bool
file_segment_remove(void *state, const char *stream, const char *name)
{
	file_store *fs = state;
	char dir[PATH_MAX];
	char path[PATH_MAX + 32];
	snprintf(dir, sizeof(dir), "%s/%s", fs->root, stream);
	snprintf(path, sizeof(path), "%s/%s", dir, name);
	if (unlink(path) != 0) {
		sluice_log_error("could not remove segment \"%s\": %m", path);
		return false;
	}
	return file_fsync_dir(dir);
}

static bool
file_segment_size(void *handle, uint64_t *size)
{
	file_segment *seg = handle;
	struct stat st;
	if (fstat(seg->fd, &st) != 0) {
		sluice_log_error("could not stat segment \"%s\": %m", seg->path);
		return false;
	}
	*size = (uint64_t)st.st_size;
	return true;
}

static bool
file_segment_read(void *handle, uint64_t off, void *buf, size_t len, size_t *got)
{
	file_segment *seg = handle;
	size_t done = 0;
	while (done < len) {
		ssize_t n = pread(seg->fd, (char *)buf + done, len - done, (off_t)(off + done));
		if (n < 0) {
			if (errno == EINTR)
				continue;
			sluice_log_error("could not read segment \"%s\" at offset %" PRIu64 ": %m",
					 seg->path, off + done);
			return false;
		}
		if (n == 0)
			break;
		done += (size_t)n;
	}
	*got = done;
	return true;
}

static bool
file_segment_write(void *handle, const void *chunk, size_t len, bool durable)
{
	file_segment *seg = handle;
	if (!file_write_all(seg->fd, seg->path, chunk, len))
		return false;
	if (!durable) {
#ifdef SYNC_FILE_RANGE_WRITE
		/* Start the writeback now, without waiting: the fdatasync that makes
		 * it durable at the end of the transaction finds less to do. */
		(void)sync_file_range(seg->fd, 0, 0, SYNC_FILE_RANGE_WRITE);
#endif
		return true;
	}
	if (fdatasync(seg->fd) != 0) {
		sluice_log_error("could not fsync segment \"%s\": %m", seg->path);
		return false;
	}
	return true;
}

static bool
file_segment_truncate(void *handle, uint64_t size)
{
	file_segment *seg = handle;
	if (ftruncate(seg->fd, (off_t)size) != 0) {
		sluice_log_error("could not truncate segment \"%s\" to %" PRIu64 " bytes: %m",
				 seg->path, size);
		return false;
	}
	if (fsync(seg->fd) != 0) {
		sluice_log_error("could not fsync segment \"%s\": %m", seg->path);
		return false;
	}
	return true;
}

static bool
file_segment_seal(void *handle)
{
	file_segment *seg = handle;
	if (fsync(seg->fd) != 0) {
		sluice_log_error("could not fsync segment \"%s\": %m", seg->path);
		return false;
	}
	/* Read-only marks the segment as written once; the frames say so authoritatively. */
	if (fchmod(seg->fd, 0444) != 0) {
		sluice_log_error("could not make segment \"%s\" read-only: %m", seg->path);
		return false;
	}
	return true;
}

static void
file_segment_close(void *handle)
{
	file_segment *seg = handle;
	if (seg == NULL)
		return;
	if (seg->fd >= 0)
		close(seg->fd);
	free(seg);
}

static bool
file_lock(void *state, const char *stream, void **out)
{
	file_store *fs = state;
	char dir[PATH_MAX];
	char path[PATH_MAX + 32];
	snprintf(dir, sizeof(dir), "%s/%s", fs->root, stream);
	snprintf(path, sizeof(path), "%s/%s", dir, FILE_LOCK_NAME);
	if (mkdir(dir, 0755) == 0) {
		if (!file_fsync_dir(fs->root))
			return false;
	} else if (errno != EEXIST) {
		sluice_log_error("could not create stream directory \"%s\": %m", dir);
		return false;
	}
	int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
	if (fd < 0) {
		sluice_log_error("could not open lock file \"%s\": %m", path);
		return false;
	}
	if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
		char holder[64] = "";
		ssize_t n = pread(fd, holder, sizeof(holder) - 1, 0);
		holder[n > 0 ? n : 0] = '\0';
		holder[strcspn(holder, "\n")] = '\0';
		if (errno == EWOULDBLOCK || errno == EAGAIN || n >= 0)
			sluice_log_error(
				"stream \"%s\" in store \"%s\" is being written by another "
				"process (pid %s, lock \"%s\")",
				stream, fs->root, holder[0] ? holder : "unknown", path);
		close(fd);
		return false;
	}
	char pid[32];
	int len = snprintf(pid, sizeof(pid), "%ld\n", (long)getpid());
	if (ftruncate(fd, 0) != 0 || pwrite(fd, pid, (size_t)len, 0) != len)
		sluice_log_warn("could not record the pid in lock file \"%s\": %m", path);
	int *h = malloc(sizeof(int));
	if (h == NULL)
		abort();
	*h = fd;
	*out = h;
	return true;
}

/* file_lock_held tries the lock without taking it; a missing stream is not held. */
static bool
file_lock_held(void *state, const char *stream, bool *held)
{
	file_store *fs = state;
	char path[PATH_MAX + 64];
	snprintf(path, sizeof(path), "%s/%s/%s", fs->root, stream, FILE_LOCK_NAME);
	*held = false;
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		if (errno == ENOENT)
			return true;
		sluice_log_error("could not open lock file \"%s\": %m", path);
		return false;
	}
	if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
		if (errno != EWOULDBLOCK) {
			sluice_log_error("could not try lock file \"%s\": %m", path);
			close(fd);
			return false;
		}
		*held = true;
	}
	close(fd); /* releases the lock if it was taken */
	return true;
}

static void
file_unlock(void *lock)
{
	int *h = lock;
	if (h == NULL)
		return;
	close(*h); /* releases the flock */
	free(h);
}

static bool
file_watch_open(void *state, const char *stream, void **out)
{
	file_store *fs = state;
	file_watch *w = calloc(1, sizeof(*w));
	if (w == NULL)
		abort();
	w->stream_wd = -1;
	snprintf(w->dir, sizeof(w->dir), "%s/%s", fs->root, stream);
	snprintf(w->name, sizeof(w->name), "%s", stream);
	w->fd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
	if (w->fd < 0) {
		sluice_log_error("could not start watching \"%s\": %m", w->dir);
		free(w);
		return false;
	}
	/* Watch the root for the stream directory appearing, and the directory itself. */
	if (inotify_add_watch(w->fd, fs->root, IN_CREATE | IN_MOVED_TO) < 0) {
		sluice_log_error("could not watch store \"%s\": %m", fs->root);
		close(w->fd);
		free(w);
		return false;
	}
	w->stream_wd = inotify_add_watch(w->fd, w->dir,
					 IN_MODIFY | IN_CREATE | IN_MOVED_TO | IN_DELETE |
						 IN_ATTRIB | IN_CLOSE_WRITE);
	*out = w;
	return true;
}

static int
file_watch_wait(void *handle, int timeout_ms)
{
	file_watch *w = handle;
	if (w->stream_wd < 0)
		w->stream_wd = inotify_add_watch(w->fd, w->dir,
						 IN_MODIFY | IN_CREATE | IN_MOVED_TO | IN_DELETE |
							 IN_ATTRIB | IN_CLOSE_WRITE);
	struct pollfd pfd = {.fd = w->fd, .events = POLLIN};
	int rc = poll(&pfd, 1, timeout_ms);
	if (rc < 0) {
		if (errno == EINTR)
			return 1;
		sluice_log_error("could not wait for changes in \"%s\": %m", w->dir);
		return -1;
	}
	if (rc == 0)
		return 0;
	/* Drain the events: the caller re-reads the store whatever they were. */
	char buf[4096] __attribute__((aligned(__alignof__(struct inotify_event))));
	while (read(w->fd, buf, sizeof(buf)) > 0)
		;
	return 1;
}

static void
file_watch_close(void *handle)
{
	file_watch *w = handle;
	if (w == NULL)
		return;
	close(w->fd);
	free(w);
}

const sluice_store_ops sluice_backend_file_ops = {
	.scheme = "file",
	.open = file_open,
	.close = file_close,
	.list = file_list,
	.segment_probe = file_segment_probe,
	.segment_open = file_segment_open,
	.segment_create = file_segment_create,
	.segment_put = file_segment_put,
	.segment_remove = file_segment_remove,
	.segment_size = file_segment_size,
	.segment_read = file_segment_read,
	.segment_write = file_segment_write,
	.segment_truncate = file_segment_truncate,
	.segment_seal = file_segment_seal,
	.segment_close = file_segment_close,
	.lock = file_lock,
	.unlock = file_unlock,
	.lock_held = file_lock_held,
	.watch_open = file_watch_open,
	.watch_wait = file_watch_wait,
	.watch_close = file_watch_close,
};
