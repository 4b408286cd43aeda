/*
 * The listening socket, accepting, signals, readiness, the work between
 * loop iterations and the graceful shutdown of notifyd-ws; see server.h.
 */
#include <errno.h>
#include <netdb.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/resource.h>
#include <sys/socket.h>

#include "conn.h"
#include "deliver.h"
#include "handshake.h"
#include "nt_log.h"
#include "nt_sdnotify.h"
#include "rds.h"
#include "server.h"

#define ACCEPT_BATCH   64
#define EMFILE_PAUSE_S 0.1

static struct {
	struct ev_loop          *loop;
	struct ntws_config      *cfg;
	struct nt_jwt_verifier  *jwt;
	int                      lfd;
	ev_io                    accept_io;
	ev_timer                 accept_pause;
	int                      accept_paused_logged;
	ev_prepare               between;
	ev_signal                sigterm, sigint, sighup;
	ev_timer                 shutdown_timer;
	int                      shutting_down;
	int                      sigints;
	int                      ready_sent;
	int                      started;   /* the modules are up */
} s;

static void
accept_cb(struct ev_loop *loop, ev_io *w, int revents)
{
	struct sockaddr_storage peer;
	socklen_t peerlen;
	int i, fd, one = 1;

	for (i = 0; i < ACCEPT_BATCH; i++) {
		peerlen = sizeof(peer);
		fd = accept4(s.lfd, (struct sockaddr *)&peer, &peerlen,
		    SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (fd < 0) {
			if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS ||
			    errno == ENOMEM) {
				/* Out of descriptors: pause instead of spinning. */
				if (!s.accept_paused_logged)
					nt_log_warn("accept: %s; pausing accepts for %gs "
					    "at a time", strerror(errno), EMFILE_PAUSE_S);
				s.accept_paused_logged = 1;
				ev_io_stop(loop, &s.accept_io);
				ev_timer_set(&s.accept_pause, EMFILE_PAUSE_S, 0.);
				ev_timer_start(loop, &s.accept_pause);
			}
			return;
		}
		s.accept_paused_logged = 0;
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
		ntws_conn_accept(fd, (struct sockaddr *)&peer);
	}
}

static void
accept_resume_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	if (!s.shutting_down)
		ev_io_start(loop, &s.accept_io);
}

static void maybe_ready(void);

/*
 * Once per loop iteration, before it blocks: write what was queued
 * during it, free the connections that died (the writes may kill some),
 * then give out page read slots and write the read marks (the writes
 * raise them). None of these queues anything for a socket.
 */
static void
between_cb(struct ev_loop *loop, ev_prepare *w, int revents)
{
	ntws_conn_reap();
	ntws_conn_flush_all();
	ntws_conn_reap();
	ntws_deliver_tick();
	maybe_ready();
	if (s.shutting_down && ntws_conn_count() == 0 &&
	    ntws_deliver_idle() && ntws_rds_idle())
		ev_break(loop, EVBREAK_ALL);
}

static void
shutdown_timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	nt_log_warn("shutdown: deadline reached, closing what is left");
	ev_break(loop, EVBREAK_ALL);
}

static void
shutdown_begin(void)
{
	if (s.shutting_down)
		return;
	s.shutting_down = 1;
	nt_log_info("shutting down: closing %zu connections",
	    ntws_conn_count());
	ev_io_stop(s.loop, &s.accept_io);
	ev_timer_stop(s.loop, &s.accept_pause);
	if (s.lfd >= 0) {
		close(s.lfd);
		s.lfd = -1;
	}
	ntws_handshake_shutdown();
	ntws_conn_close_all(1001, "server shutting down");
	ntws_rds_presence_clear();
	ev_timer_set(&s.shutdown_timer, s.cfg->shutdown_timeout, 0.);
	ev_timer_start(s.loop, &s.shutdown_timer);
}

static void
signal_cb(struct ev_loop *loop, ev_signal *w, int revents)
{
	char err[256];

	switch (w->signum) {
	case SIGHUP:
		if (s.jwt != NULL &&
		    nt_jwt_verifier_reload(s.jwt, err, sizeof(err)) != 0)
			nt_log_err("SIGHUP: key not reloaded: %s", err);
		else
			nt_log_info("SIGHUP: JWT key reloaded");
		break;
	case SIGINT:
		if (++s.sigints > 1) {
			nt_log_warn("second SIGINT: exiting now");
			_exit(NT_EXIT_OK);
		}
		/* FALLTHROUGH */
	case SIGTERM:
		shutdown_begin();
		break;
	}
}

/* Listening and subscribed: tell whoever waits on --ready-fd, once. */
static void
maybe_ready(void)
{
	char err[256];

	if (s.ready_sent || s.lfd < 0 || !ntws_rds_ready())
		return;
	s.ready_sent = 1;
	nt_log_info("ready: listening on %s:%d", s.cfg->listen.host,
	    s.cfg->listen.port);
	if (s.cfg->ready_fd >= 0) {
		if (write(s.cfg->ready_fd, "\n", 1) != 1)
			nt_log_warn("--ready-fd: %s", strerror(errno));
		close(s.cfg->ready_fd);
		s.cfg->ready_fd = -1;
	}
	/* systemd's Type=notify: the same moment as --ready-fd. */
	if (nt_sdnotify("READY=1\n", err, sizeof(err)) != 0)
		nt_log_warn("%s", err);
}

static void
raise_nofile(void)
{
	struct rlimit rl;

	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		if (setrlimit(RLIMIT_NOFILE, &rl) != 0)
			nt_log_warn("cannot raise RLIMIT_NOFILE: %s",
			    strerror(errno));
	}
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0)
		nt_log_debug("open files limit: %llu",
		    (unsigned long long)rl.rlim_cur);
}

static int
listen_on(const struct ntws_config *cfg, char *err, size_t errlen)
{
	struct addrinfo hints, *res, *ai;
	char port[16];
	int fd = -1, one = 1, rc;

	memset(&hints, 0, sizeof(hints));
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
	snprintf(port, sizeof(port), "%d", cfg->listen.port);
	rc = getaddrinfo(cfg->listen.host[0] ? cfg->listen.host : NULL, port,
	    &hints, &res);
	if (rc != 0) {
		snprintf(err, errlen, "--listen %s: %s", cfg->listen.host,
		    gai_strerror(rc));
		return -1;
	}
	for (ai = res; ai != NULL; ai = ai->ai_next) {
		fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK |
		    SOCK_CLOEXEC, ai->ai_protocol);
		if (fd < 0)
			continue;
		setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
		if (cfg->reuseport &&
		    setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one,
		    sizeof(one)) != 0) {
			snprintf(err, errlen, "SO_REUSEPORT: %s", strerror(errno));
			close(fd);
			freeaddrinfo(res);
			return -1;
		}
		if (bind(fd, ai->ai_addr, ai->ai_addrlen) == 0 &&
		    listen(fd, 4096) == 0)
			break;
		snprintf(err, errlen, "listen on %s:%d: %s", cfg->listen.host,
		    cfg->listen.port, strerror(errno));
		close(fd);
		fd = -1;
	}
	freeaddrinfo(res);
	return fd;
}

int
ntws_server_init(struct ev_loop *loop, struct ntws_config *cfg,
    struct nt_jwt_verifier *jwt, char *err, size_t errlen)
{
	memset(&s, 0, sizeof(s));
	s.loop = loop;
	s.cfg = cfg;
	s.jwt = jwt;
	s.lfd = -1;
	raise_nofile();
	if ((s.lfd = listen_on(cfg, err, errlen)) < 0)
		return -1;
	if (ntws_deliver_init(loop, cfg) != 0) {
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	ntws_conn_init(loop, cfg, &ntws_handshake_hooks);
	ntws_handshake_init(cfg, jwt);
	ev_io_init(&s.accept_io, accept_cb, s.lfd, EV_READ);
	ev_io_start(loop, &s.accept_io);
	ev_init(&s.accept_pause, accept_resume_cb);
	ev_prepare_init(&s.between, between_cb);
	ev_prepare_start(loop, &s.between);
	ev_init(&s.shutdown_timer, shutdown_timer_cb);
	ev_signal_init(&s.sigterm, signal_cb, SIGTERM);
	ev_signal_init(&s.sigint, signal_cb, SIGINT);
	ev_signal_init(&s.sighup, signal_cb, SIGHUP);
	ev_signal_start(loop, &s.sigterm);
	ev_signal_start(loop, &s.sigint);
	ev_signal_start(loop, &s.sighup);
	nt_log_info("listening on %s:%d (instance %s)", cfg->listen.host,
	    cfg->listen.port, cfg->instance_id);
	ntws_rds_start(loop, cfg, &ntws_deliver_redis_hooks);
	s.started = 1;
	return 0;
}

void
ntws_server_free(void)
{
	if (s.started) {
		ntws_conn_free_all();
		ntws_rds_stop();   /* NULL replies release what waited */
		ntws_deliver_free();
	}
	ev_io_stop(s.loop, &s.accept_io);
	ev_timer_stop(s.loop, &s.accept_pause);
	ev_timer_stop(s.loop, &s.shutdown_timer);
	ev_prepare_stop(s.loop, &s.between);
	ev_signal_stop(s.loop, &s.sigterm);
	ev_signal_stop(s.loop, &s.sigint);
	ev_signal_stop(s.loop, &s.sighup);
	if (s.lfd >= 0)
		close(s.lfd);
	s.lfd = -1;
}
