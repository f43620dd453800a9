/* libmongoc set-up, URIs and messages without credentials. */
#include "mongoconn.h"

#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

#include "log.h"

static void
mongo_log_handler(mongoc_log_level_t level, const char *domain, const char *message, void *data)
{
	(void)data;
	if (level <= MONGOC_LOG_LEVEL_WARNING)
		sluice_log_warn("libmongoc (%s): %s", domain, message);
}

/*
 * mongo_unpublish_counters: libmongoc as Debian builds it sets itself up in a shared-library
 * constructor, before main, in every process linked with it (a PostgreSQL capture too), and
 * publishes its counters as the POSIX shared memory object "/mongoc-<pid>", which it removes only
 * at a normal exit. A sluice killed with kill -9 left one behind, and the next process given that
 * pid printed "Falling back to malloc for counters" raw onto stderr. Nothing reads those counters,
 * so the name is removed as soon as the process starts (this constructor runs after the
 * libraries'): the mapping stays and a killed process leaves nothing in /dev/shm.
 */
__attribute__((constructor)) static void
mongo_unpublish_counters(void)
{
	char name[32];
	snprintf(name, sizeof(name), "/mongoc-%u", (unsigned)getpid());
	shm_unlink(name);
}

static pthread_once_t mongo_init_once = PTHREAD_ONCE_INIT;

static void
mongo_init(void)
{
	mongoc_init();
	mongoc_log_set_handler(mongo_log_handler, NULL);
	atexit(mongoc_cleanup);
}

void
sluice_mongo_init(void)
{
	pthread_once(&mongo_init_once, mongo_init);
}

mongoc_uri_t *
sluice_mongo_uri(const char *text, const char *appname)
{
	bson_error_t err;
	mongoc_uri_t *uri = mongoc_uri_new_with_error(text, &err);
	if (uri == NULL) {
		/* libmongoc's message may quote the password or auth properties */
		sluice_log_error("invalid MongoDB URI (libmongoc error %" PRIu32
				 "; the URI is not shown: it may hold credentials)",
				 err.code);
		return NULL;
	}
	if (!mongoc_uri_has_option(uri, MONGOC_URI_SERVERSELECTIONTIMEOUTMS))
		mongoc_uri_set_option_as_int32(uri, MONGOC_URI_SERVERSELECTIONTIMEOUTMS, 10000);
	if (!mongoc_uri_has_option(uri, MONGOC_URI_SOCKETTIMEOUTMS))
		mongoc_uri_set_option_as_int32(uri, MONGOC_URI_SOCKETTIMEOUTMS, 30000);
	if (!mongoc_uri_has_option(uri, MONGOC_URI_APPNAME))
		mongoc_uri_set_appname(uri, appname);
	return uri;
}

void
sluice_mongo_hosts(const mongoc_uri_t *uri, char *out, size_t size)
{
	size_t n = 0;
	if (size == 0)
		return;
	out[0] = '\0';
	for (const mongoc_host_list_t *h = mongoc_uri_get_hosts(uri); h != NULL; h = h->next) {
		int w = snprintf(out + n, size - n, "%s%s", n ? "," : "", h->host_and_port);
		if (w < 0 || (size_t)w >= size - n)
			break;
		n += (size_t)w;
	}
	if (n == 0 && mongoc_uri_get_srv_hostname(uri) != NULL)
		snprintf(out, size, "%s (SRV)", mongoc_uri_get_srv_hostname(uri));
}

const char *
sluice_mongo_error_text(const bson_error_t *err)
{
	return err->message[0] ? err->message : "unknown error";
}
