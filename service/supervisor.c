/*
 * The supervisor of sluice run: one child process per pipeline (docs/
 * architecture.md "Service" says why), restarts with capped jittered
 * backoff, signals, reloads, and the metrics and health endpoint.
 */
#include "supervisor.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "backoff.h"
#include "buf.h"
#include "clock.h"
#include "config.h"
#include "log.h"
#include "metrics.h"
#include "stats.h"

/* A child that ran this long before failing starts its backoff from the bottom again. */
#define SUP_HEALTHY_RUN_MS 60000
/* --once: a pipeline failing this many times in a row gives up. */
#define SUP_ONCE_ATTEMPTS 5

typedef struct sup_pipeline {
	sluice_pipeline_view view; /* what the endpoint shows; counters over runs */
	char fingerprint[33];
	char store[104];            /* the store's name in the configuration */
	int memfd;                  /* the configuration text its child runs with (owned) */
	pid_t pid;                  /* 0: no child */
	int stats_fd;               /* read end of the child's stats pipe, -1: none */
	int64_t started_ms;         /* monotonic */
	int64_t stats_ms;           /* when the last record arrived */
	int attempts;               /* failures in a row */
	int64_t next_start_ms;      /* 0: start at once */
	bool removed;               /* gone from the configuration: stop, then forget */
	bool restart_now;           /* its settings changed: start again once stopped */
	bool given_up;              /* exit status 2, or --once attempts exhausted */
	sluice_pipeline_stats base; /* counters of finished runs */
} sup_pipeline;

typedef struct sup {
	const sluice_supervisor_options *o;
	char exe[4096];
	pthread_mutex_t lock; /* guards pipelines for the HTTP thread */
	sup_pipeline *pipelines;
	size_t n;
	int64_t restart_min_ms, restart_max_ms;
	bool stopping;
	int64_t started_us;
} sup;

static volatile sig_atomic_t sup_stop_flag, sup_reload_flag, sup_child_flag;
static int sup_wake[2] = {-1, -1};

static void
sup_on_signal(int sig)
{
	int saved = errno;
	if (sig == SIGHUP)
		sup_reload_flag = 1;
	else if (sig == SIGCHLD)
		sup_child_flag = 1;
	else
		sup_stop_flag = 1;
	if (sup_wake[1] >= 0) {
		ssize_t r = write(sup_wake[1], "x", 1);
		(void)r;
	}
	errno = saved;
}

/* ---- configuration ------------------------------------------------------------- */

/* sup_load reads and checks the file; the text goes into a memory file for the children. */
static sluice_config *
sup_load(const char *path, int *memfd)
{
	*memfd = -1;
	FILE *f = fopen(path, "re");
	if (f == NULL) {
		sluice_log_error("could not open configuration \"%s\": %m", path);
		return NULL;
	}
	sluice_buf text = {0};
	char chunk[8192];
	size_t got;
	while ((got = fread(chunk, 1, sizeof(chunk), f)) > 0)
		sluice_buf_append(&text, chunk, got);
	fclose(f);
	sluice_buf errors = {0};
	size_t nerrors = 0;
	sluice_config *c = sluice_config_parse(path, text.data ? (const char *)text.data : "",
					       text.len, &errors, &nerrors);
	if (c == NULL) {
		/* one log line per problem */
		char *s = strndup(errors.data ? (const char *)errors.data : "", errors.len);
		for (char *line = s, *nl; line && *line; line = nl ? nl + 1 : NULL) {
			nl = strchr(line, '\n');
			if (nl)
				*nl = '\0';
			sluice_log_error("%s", line);
		}
		free(s);
		sluice_log_error("configuration \"%s\": %zu problems", path, nerrors);
	} else {
		*memfd = memfd_create("sluice-config", MFD_CLOEXEC | MFD_ALLOW_SEALING);
		if (*memfd < 0 ||
		    (text.len > 0 && write(*memfd, text.data, text.len) != (ssize_t)text.len)) {
			sluice_log_error("could not keep the configuration in memory: %m");
			sluice_config_free(c);
			c = NULL;
			if (*memfd >= 0)
				close(*memfd);
			*memfd = -1;
		} else {
			(void)fcntl(*memfd, F_ADD_SEALS,
				    F_SEAL_WRITE | F_SEAL_GROW | F_SEAL_SHRINK);
		}
	}
	sluice_buf_free(&errors);
	sluice_buf_free(&text);
	return c;
}

/* sup_view_settings copies what the endpoint shows of a pipeline's settings. */
static void
sup_view_settings(sup_pipeline *p, const sluice_config *c, const sluice_config_pipeline *pl)
{
	snprintf(p->view.name, sizeof(p->view.name), "%s", pl->name);
	snprintf(p->view.stream, sizeof(p->view.stream), "%s", pl->stream);
	p->view.kind = pl->kind;
	p->view.max_rows_per_s = pl->max_rows_per_s;
	p->view.max_bytes_per_s = pl->max_bytes_per_s;
	p->view.max_lag_ms = pl->ready_max_lag_ms ? pl->ready_max_lag_ms : c->ready_max_lag_ms;
	p->view.max_heartbeat_age_ms = pl->ready_max_heartbeat_age_ms
					       ? pl->ready_max_heartbeat_age_ms
					       : c->ready_max_heartbeat_age_ms;
	memcpy(p->fingerprint, pl->fingerprint, sizeof(p->fingerprint));
	snprintf(p->store, sizeof(p->store), "%s", pl->store);
}

/*
 * sup_waits_for_capture: with --once, an apply of a stream that a capture of
 * this configuration writes starts once that capture finished, so that it
 * reads up to where the source was.
 */
static bool
sup_waits_for_capture(const sup *s, const sup_pipeline *p)
{
	if (!s->o->once || p->view.kind != SLUICE_PIPELINE_APPLY)
		return false;
	for (size_t i = 0; i < s->n; i++) {
		const sup_pipeline *q = &s->pipelines[i];
		if (q->view.kind == SLUICE_PIPELINE_CAPTURE && !q->view.done && !q->given_up &&
		    strcmp(q->store, p->store) == 0 && strcmp(q->view.stream, p->view.stream) == 0)
			return true;
	}
	return false;
}

/*
 * sup_apply_config takes a (re)loaded configuration: new pipelines are
 * added, removed ones marked to stop, changed ones marked to restart with
 * the new text. The memfd is shared by the pipelines that take it.
 */
static void
sup_apply_config(sup *s, const sluice_config *c, int memfd)
{
	pthread_mutex_lock(&s->lock);
	s->restart_min_ms = c->restart_min_ms;
	s->restart_max_ms = c->restart_max_ms;
	for (size_t i = 0; i < s->n; i++)
		if (sluice_config_pipeline_find(c, s->pipelines[i].view.name) == NULL) {
			s->pipelines[i].removed = true;
			sluice_log_info("pipeline \"%s\" is no longer configured: stopping it",
					s->pipelines[i].view.name);
			if (s->pipelines[i].pid > 0)
				kill(s->pipelines[i].pid, SIGTERM);
		}
	for (size_t k = 0; k < c->npipelines; k++) {
		const sluice_config_pipeline *pl = &c->pipelines[k];
		sup_pipeline *p = NULL;
		for (size_t i = 0; i < s->n; i++)
			if (strcmp(s->pipelines[i].view.name, pl->name) == 0)
				p = &s->pipelines[i];
		if (p != NULL && strcmp(p->fingerprint, pl->fingerprint) == 0 && !p->removed)
			continue; /* unchanged: keeps running with the text it has */
		if (p == NULL) {
			sup_pipeline *np = realloc(s->pipelines, (s->n + 1) * sizeof(*np));
			if (np == NULL)
				abort();
			s->pipelines = np;
			p = &s->pipelines[s->n++];
			memset(p, 0, sizeof(*p));
			p->memfd = -1;
			p->stats_fd = -1;
			p->view.last_exit = -1;
			p->base.wal_retained = -1;
		} else {
			sluice_log_info("pipeline \"%s\" changed: restarting it", pl->name);
			p->restart_now = true;
			p->removed = false;
			p->given_up = false;
			p->attempts = 0;
			p->next_start_ms = 0;
			if (p->pid > 0)
				kill(p->pid, SIGTERM);
		}
		sup_view_settings(p, c, pl);
		if (p->memfd >= 0)
			close(p->memfd);
		p->memfd = dup(memfd);
		(void)fcntl(p->memfd, F_SETFD, FD_CLOEXEC);
	}
	pthread_mutex_unlock(&s->lock);
}

/* ---- children ----------------------------------------------------------------------- */

/* sup_start forks and execs the child of pipeline p (only async-signal-safe calls after fork). */
static void
sup_start(sup *s, sup_pipeline *p)
{
	int fds[2];
	if (pipe2(fds, O_CLOEXEC) != 0) {
		sluice_log_error("could not create a pipe for pipeline \"%s\": %m", p->view.name);
		p->next_start_ms = sluice_clock_mono_ms() + 1000;
		return;
	}
	char *argv[16];
	int a = 0;
	argv[a++] = (char *)"sluice";
	argv[a++] = (char *)"--log-format";
	argv[a++] = (char *)s->o->log_format;
	if (s->o->verbose)
		argv[a++] = (char *)"--verbose";
	argv[a++] = (char *)"run";
	argv[a++] = (char *)"--child";
	argv[a++] = p->view.name;
	argv[a++] = (char *)"--config";
	argv[a++] = (char *)s->o->config_path;
	if (s->o->once)
		argv[a++] = (char *)"--once";
	argv[a] = NULL;
	pid_t parent = getpid();
	pid_t pid = fork();
	if (pid < 0) {
		sluice_log_error("could not start pipeline \"%s\": fork: %m", p->view.name);
		close(fds[0]);
		close(fds[1]);
		p->next_start_ms = sluice_clock_mono_ms() + 1000;
		return;
	}
	if (pid == 0) {
		/* The child: a kill -9 of the supervisor must not leave it running. */
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		if (getppid() != parent)
			_exit(3);
		sigset_t none;
		sigemptyset(&none);
		sigprocmask(SIG_SETMASK, &none, NULL);
		signal(SIGHUP, SIG_DFL);
		signal(SIGCHLD, SIG_DFL);
		/* fds 3 and 4, whatever numbers the originals have (dup2 clears CLOEXEC; the
		   copies at 10 and up keep it, so the child holds no extra descriptors) */
		int m = fcntl(p->memfd, F_DUPFD_CLOEXEC, 10),
		    w = fcntl(fds[1], F_DUPFD_CLOEXEC, 10);
		if (m < 0 || w < 0 || dup2(m, 3) < 0 || dup2(w, 4) < 0)
			_exit(3);
		execv(s->exe, argv);
		static const char msg[] = "sluice run: could not execute the child\n";
		ssize_t r = write(2, msg, sizeof(msg) - 1);
		(void)r;
		_exit(3);
	}
	close(fds[1]);
	(void)fcntl(fds[0], F_SETFL, O_NONBLOCK);
	pthread_mutex_lock(&s->lock);
	p->pid = pid;
	p->stats_fd = fds[0];
	p->started_ms = sluice_clock_mono_ms();
	p->view.running = true;
	p->view.have_stats = false;
	p->restart_now = false;
	memset(&p->view.now, 0, sizeof(p->view.now));
	pthread_mutex_unlock(&s->lock);
	sluice_log_info("pipeline \"%s\" started (pid %ld)", p->view.name, (long)pid);
}

/* sup_add_counters adds a run's counters to the totals of finished runs. */
static void
sup_add_counters(sluice_pipeline_stats *to, const sluice_pipeline_stats *run)
{
	to->transactions += run->transactions;
	to->changes += run->changes;
	to->frames += run->frames;
	to->bytes += run->bytes;
	to->inserts += run->inserts;
	to->updates += run->updates;
	to->deletes += run->deletes;
	to->truncates += run->truncates;
	to->skipped += run->skipped;
	for (int k = 0; k < SLUICE_CONFLICT_COUNT; k++)
		to->conflicts[k] += run->conflicts[k];
	for (int k = 0; k < SLUICE_RETRY_COUNT; k++)
		to->retries[k] += run->retries[k];
	to->reconnects += run->reconnects;
	to->throttled_ms += run->throttled_ms;
}

/* sup_read_stats takes every whole record waiting on a child's pipe; the last one counts. */
static void
sup_read_stats(sup *s, sup_pipeline *p)
{
	sluice_pipeline_stats recs[8];
	for (;;) {
		ssize_t n = read(p->stats_fd, recs, sizeof(recs));
		if (n <= 0)
			return;
		size_t k = (size_t)n / sizeof(recs[0]);
		if (k == 0 || recs[k - 1].magic != SLUICE_PIPELINE_STATS_MAGIC)
			continue;
		pthread_mutex_lock(&s->lock);
		p->view.now = recs[k - 1];
		p->view.have_stats = true;
		p->stats_ms = sluice_clock_mono_ms();
		p->view.total = p->base;
		sup_add_counters(&p->view.total, &p->view.now);
		pthread_mutex_unlock(&s->lock);
	}
}

/* sup_reap collects ended children and schedules their restart. */
static void
sup_reap(sup *s)
{
	for (;;) {
		int status;
		pid_t pid = waitpid(-1, &status, WNOHANG);
		if (pid <= 0)
			return;
		for (size_t i = 0; i < s->n; i++) {
			sup_pipeline *p = &s->pipelines[i];
			if (p->pid != pid)
				continue;
			sup_read_stats(s, p);
			int code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
			int64_t now = sluice_clock_mono_ms();
			pthread_mutex_lock(&s->lock);
			close(p->stats_fd);
			p->stats_fd = -1;
			p->pid = 0;
			p->view.running = false;
			p->view.last_exit = code;
			if (p->view.have_stats)
				sup_add_counters(&p->base, &p->view.now);
			p->view.total = p->base;
			if (code == 0 && s->o->once)
				p->view.done = true;
			pthread_mutex_unlock(&s->lock);
			if (s->stopping || p->removed) {
				sluice_log_info("pipeline \"%s\" stopped (exit status %d)",
						p->view.name, code);
				break;
			}
			if (p->restart_now) {
				p->next_start_ms = 0;
				break;
			}
			if (code == 0 && s->o->once) {
				sluice_log_info("pipeline \"%s\" caught up and finished",
						p->view.name);
				break;
			}
			if (now - p->started_ms >= SUP_HEALTHY_RUN_MS)
				p->attempts = 0;
			p->attempts++;
			if (code == 2 || (s->o->once && p->attempts >= SUP_ONCE_ATTEMPTS)) {
				p->given_up = true;
				sluice_log_error(
					"pipeline \"%s\" exited with status %d: not restarted "
					"%s",
					p->view.name, code,
					code == 2 ? "until the configuration is reloaded "
						    "(SIGHUP)"
						  : "(--once)");
				break;
			}
			int delay = sluice_backoff_ms(p->attempts, (int)s->restart_min_ms,
						      (int)s->restart_max_ms);
			p->next_start_ms = now + delay;
			pthread_mutex_lock(&s->lock);
			p->view.restarts++;
			pthread_mutex_unlock(&s->lock);
			sluice_log_warn(
				"pipeline \"%s\" exited with status %d; restarting in %d ms "
				"(attempt %d)",
				p->view.name, code, delay, p->attempts);
			break;
		}
	}
}

/* ---- the endpoint --------------------------------------------------------------------- */

static enum MHD_Result
sup_http(void *cls, struct MHD_Connection *conn, const char *url, const char *method,
	 const char *version, const char *upload_data, size_t *upload_data_size, void **con_cls)
{
	(void)version;
	(void)upload_data;
	(void)upload_data_size;
	(void)con_cls;
	sup *s = cls;
	if (strcmp(method, "GET") != 0 && strcmp(method, "HEAD") != 0)
		return MHD_NO;
	sluice_buf body = {0};
	unsigned int code = MHD_HTTP_OK;
	const char *type = "application/json";
	int64_t now = sluice_clock_unix_us();
	pthread_mutex_lock(&s->lock);
	size_t n = 0;
	sluice_pipeline_view *views = calloc(s->n + 1, sizeof(*views));
	if (views == NULL)
		abort();
	for (size_t i = 0; i < s->n; i++) {
		if (s->pipelines[i].removed && s->pipelines[i].pid == 0)
			continue;
		views[n] = s->pipelines[i].view;
		views[n].stats_age_ms = sluice_clock_mono_ms() - s->pipelines[i].stats_ms;
		n++;
	}
	pthread_mutex_unlock(&s->lock);
	if (strcmp(url, "/metrics") == 0) {
		type = "text/plain; version=0.0.4; charset=utf-8";
		sluice_metrics_prometheus(&body, views, n, now);
	} else if (strcmp(url, "/healthz") == 0) {
		sluice_buf_printf(
			&body,
			"{\"status\":\"ok\",\"pid\":%ld,\"pipelines\":%zu,\"uptime_s\":%.0f}"
			"\n",
			(long)getpid(), n, (double)(now - s->started_us) / 1e6);
	} else if (strcmp(url, "/readyz") == 0 || strcmp(url, "/status") == 0) {
		bool ready = sluice_metrics_status(&body, views, n, now, NULL);
		if (!ready && url[1] == 'r')
			code = MHD_HTTP_SERVICE_UNAVAILABLE;
	} else if (strncmp(url, "/readyz/", 8) == 0) {
		bool found = false;
		for (size_t i = 0; i < n; i++)
			found = found || strcmp(views[i].name, url + 8) == 0;
		if (!found) {
			code = MHD_HTTP_NOT_FOUND;
			sluice_buf_append_str(&body, "{\"error\":\"no such pipeline\"}\n");
		} else if (!sluice_metrics_status(&body, views, n, now, url + 8))
			code = MHD_HTTP_SERVICE_UNAVAILABLE;
	} else {
		code = MHD_HTTP_NOT_FOUND;
		type = "text/plain";
		sluice_buf_append_str(&body, "not found: /metrics, /healthz, /readyz[/PIPELINE], "
					     "/status\n");
	}
	free(views);
	struct MHD_Response *r = MHD_create_response_from_buffer(
		body.len, body.data ? body.data : (void *)"", MHD_RESPMEM_MUST_COPY);
	sluice_buf_free(&body);
	if (r == NULL)
		return MHD_NO;
	MHD_add_response_header(r, "Content-Type", type);
	enum MHD_Result ret = MHD_queue_response(conn, code, r);
	MHD_destroy_response(r);
	return ret;
}

/* sup_listen starts the endpoint on ADDR:PORT (IPv4 or [IPv6]). */
static struct MHD_Daemon *
sup_listen(sup *s, const char *spec)
{
	char host[256];
	const char *colon = strrchr(spec, ':');
	if (colon == NULL || colon == spec || colon[1] == '\0') {
		sluice_log_error("invalid listen address \"%s\": expected ADDR:PORT", spec);
		return NULL;
	}
	char *end = NULL;
	long port = strtol(colon + 1, &end, 10);
	if (*end != '\0' || port < 0 || port > 65535) {
		sluice_log_error("invalid port in listen address \"%s\"", spec);
		return NULL;
	}
	size_t hl = (size_t)(colon - spec);
	if (hl >= sizeof(host))
		hl = sizeof(host) - 1;
	memcpy(host, spec, hl);
	host[hl] = '\0';
	struct sockaddr_storage ss;
	memset(&ss, 0, sizeof(ss));
	unsigned int flags = MHD_USE_INTERNAL_POLLING_THREAD;
	if (host[0] == '[' && hl > 2 && host[hl - 1] == ']') {
		host[hl - 1] = '\0';
		struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)&ss;
		a6->sin6_family = AF_INET6;
		a6->sin6_port = htons((uint16_t)port);
		if (inet_pton(AF_INET6, host + 1, &a6->sin6_addr) != 1) {
			sluice_log_error("invalid address in \"%s\"", spec);
			return NULL;
		}
		flags |= MHD_USE_IPv6;
	} else {
		struct sockaddr_in *a4 = (struct sockaddr_in *)&ss;
		a4->sin_family = AF_INET;
		a4->sin_port = htons((uint16_t)port);
		if (strcmp(host, "localhost") == 0)
			snprintf(host, sizeof(host), "127.0.0.1");
		if (strcmp(host, "*") == 0 || host[0] == '\0')
			a4->sin_addr.s_addr = htonl(INADDR_ANY);
		else if (inet_pton(AF_INET, host, &a4->sin_addr) != 1) {
			sluice_log_error("invalid address in \"%s\" (give an IP address)", spec);
			return NULL;
		}
	}
	struct MHD_Daemon *d =
		MHD_start_daemon(flags, (uint16_t)port, NULL, NULL, sup_http, s,
				 MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&ss,
				 MHD_OPTION_CONNECTION_TIMEOUT, (unsigned int)10, MHD_OPTION_END);
	if (d == NULL)
		sluice_log_error("could not listen on %s: %m", spec);
	else
		sluice_log_info("metrics and health on http://%s/ (/metrics, /healthz, /readyz)",
				spec);
	return d;
}

/* ---- the loop ---------------------------------------------------------------------------- */

int
sluice_supervisor_run(const sluice_supervisor_options *o)
{
	sup s;
	memset(&s, 0, sizeof(s));
	s.o = o;
	s.started_us = sluice_clock_unix_us();
	pthread_mutex_init(&s.lock, NULL);
	ssize_t el = readlink("/proc/self/exe", s.exe, sizeof(s.exe) - 1);
	if (el <= 0) {
		sluice_log_error("could not find the sluice executable (/proc/self/exe): %m");
		return 3;
	}
	s.exe[el] = '\0';
	int memfd;
	sluice_config *c = sup_load(o->config_path, &memfd);
	if (c == NULL)
		return 2;
	if (pipe2(sup_wake, O_CLOEXEC | O_NONBLOCK) != 0) {
		sluice_log_error("could not create a pipe: %m");
		sluice_config_free(c);
		close(memfd);
		return 3;
	}
	struct sigaction sa;
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = sup_on_signal;
	sa.sa_flags = SA_RESTART;
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGHUP, &sa, NULL);
	sigaction(SIGCHLD, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);

	sup_apply_config(&s, c, memfd);
	close(memfd);
	/* A copy: c is freed below, and a reload compares its listen with this one. */
	char listen_buf[256];
	const char *listen = NULL;
	if (o->listen != NULL || c->listen != NULL) {
		snprintf(listen_buf, sizeof(listen_buf), "%s", o->listen ? o->listen : c->listen);
		listen = listen_buf;
	}
	struct MHD_Daemon *httpd = NULL;
	int rc = 0;
	if (listen != NULL && (httpd = sup_listen(&s, listen)) == NULL) {
		rc = 3;
		s.stopping = true;
	}
	sluice_config_free(c);
	sluice_log_info("supervising %zu pipelines from %s%s", s.n, o->config_path,
			o->once ? " until each has caught up" : "");

	for (;;) {
		if (sup_stop_flag && !s.stopping) {
			s.stopping = true;
			sluice_log_info("stopping: every pipeline stops at a transaction boundary");
			for (size_t i = 0; i < s.n; i++)
				if (s.pipelines[i].pid > 0)
					kill(s.pipelines[i].pid, SIGTERM);
		}
		if (sup_reload_flag && !s.stopping) {
			sup_reload_flag = 0;
			sluice_log_info("reloading %s", o->config_path);
			sluice_config *nc = sup_load(o->config_path, &memfd);
			if (nc == NULL) {
				sluice_log_error(
					"the new configuration has errors: keeping the one "
					"running");
			} else {
				sup_apply_config(&s, nc, memfd);
				close(memfd);
				if (nc->listen &&
				    (listen == NULL || strcmp(nc->listen, listen) != 0))
					sluice_log_warn("a new listen address takes a restart of "
							"sluice run");
				sluice_config_free(nc);
			}
		}
		sup_child_flag = 0;
		sup_reap(&s);
		/* removed pipelines whose child ended are forgotten */
		pthread_mutex_lock(&s.lock);
		for (size_t i = 0; i < s.n;) {
			sup_pipeline *p = &s.pipelines[i];
			if (p->removed && p->pid == 0) {
				if (p->memfd >= 0)
					close(p->memfd);
				memmove(p, p + 1, (s.n - i - 1) * sizeof(*p));
				s.n--;
			} else
				i++;
		}
		pthread_mutex_unlock(&s.lock);
		bool any_running = false, all_done = true;
		int64_t now = sluice_clock_mono_ms();
		for (size_t i = 0; i < s.n; i++) {
			sup_pipeline *p = &s.pipelines[i];
			if (!s.stopping && p->pid == 0 && !p->removed && !p->given_up &&
			    !p->view.done && now >= p->next_start_ms &&
			    !sup_waits_for_capture(&s, p))
				sup_start(&s, p);
			if (p->pid > 0)
				any_running = true;
			if (!p->view.done)
				all_done = false;
		}
		if (s.stopping && !any_running)
			break;
		if (o->once && !any_running) {
			bool waiting = false;
			for (size_t i = 0; i < s.n; i++)
				if (!s.pipelines[i].view.done && !s.pipelines[i].given_up)
					waiting = true;
			if (!waiting)
				break;
		}
		(void)all_done;

		struct pollfd pfd[257];
		size_t np = 0;
		pfd[np++] = (struct pollfd){.fd = sup_wake[0], .events = POLLIN};
		for (size_t i = 0; i < s.n && np < 257; i++)
			if (s.pipelines[i].stats_fd >= 0)
				pfd[np++] = (struct pollfd){.fd = s.pipelines[i].stats_fd,
							    .events = POLLIN};
		int r = poll(pfd, (nfds_t)np, 200);
		if (r > 0 && (pfd[0].revents & POLLIN)) {
			char drain[64];
			while (read(sup_wake[0], drain, sizeof(drain)) > 0)
				;
		}
		for (size_t i = 0; i < s.n; i++)
			if (s.pipelines[i].stats_fd >= 0)
				sup_read_stats(&s, &s.pipelines[i]);
	}

	for (size_t i = 0; i < s.n; i++) {
		sup_pipeline *p = &s.pipelines[i];
		bool clean = p->view.last_exit == 0 || p->view.done ||
			     (p->view.last_exit == -1 && !p->given_up);
		if (!clean || p->given_up)
			rc = rc ? rc : 3;
	}
	if (httpd != NULL)
		MHD_stop_daemon(httpd);
	for (size_t i = 0; i < s.n; i++)
		if (s.pipelines[i].memfd >= 0)
			close(s.pipelines[i].memfd);
	free(s.pipelines);
	close(sup_wake[0]);
	close(sup_wake[1]);
	sup_wake[0] = sup_wake[1] = -1;
	pthread_mutex_destroy(&s.lock);
	sluice_log_info("sluice run exits with status %d", rc);
	return rc;
}
