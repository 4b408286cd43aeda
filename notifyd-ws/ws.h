/*
 * notifyd-ws internals shared by its files: the server, its connections,
 * the shared outbound buffers, and the Redis side. One thread, one libev
 * loop: nothing here is locked.
 */
#ifndef NTWS_WS_H
#define NTWS_WS_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <ev.h>
#include <hiredis/async.h>
#include <wslay/wslay.h>

#include "nt_config.h"
#include "nt_jwt.h"
#include "nt_msg.h"
#include "nt_opt.h"
#include "nt_proxy.h"
#include "nt_redis.h"

struct ntws_server;

/* ---- configuration (main.c fills it from flags and environment) ---- */

struct ntws_config {
	struct nt_opt_listen listen;
	struct nt_redis_url  redis;
	const char          *prefix;
	const char          *instance_id;
	const char          *allowed_origins;  /* NULL: any */
	struct nt_proxy_list trusted_proxies;  /* may set X-Forwarded-For */
	int                  reuseport;
	int                  demo;
	size_t               max_message;
	size_t               send_queue_max;
	long long            max_channels;
	double               ping_interval;    /* seconds */
	double               ping_timeout;
	double               handshake_timeout;
	double               shutdown_timeout;
	double               redis_timeout;
	int                  ready_fd;
};

/* ---- shared, refcounted outbound bytes ---- */

/*
 * One encoded WebSocket frame (or an HTTP response), shared by every
 * connection it goes to: a broadcast is encoded once. A notification
 * carries its id so that a connection that writes it can HDEL it.
 */
struct ntws_buf {
	uint32_t refs;
	uint32_t len;
	int64_t  ts_us;          /* message timestamp, 0: no latency sample */
	uint8_t  targeted;       /* a targeted notification: HDEL when written */
	uint8_t  notification;   /* counts as a delivery */
	uint8_t  text;           /* a text message (reply) of ours */
	char    *id;             /* points into the same allocation, or NULL */
	uint8_t  data[];
};

/* A server->client frame of opcode with payload; id copied when given. */
struct ntws_buf *ntws_buf_frame(int opcode, const void *payload, size_t len,
    const char *id);
/* Raw bytes (an HTTP response). */
struct ntws_buf *ntws_buf_raw(const void *data, size_t len);
static inline struct ntws_buf *
ntws_buf_ref(struct ntws_buf *b)
{
	b->refs++;
	return b;
}
void ntws_buf_unref(struct ntws_buf *b);

/* ---- connections ---- */

enum ntws_conn_state {
	NTWS_CS_HTTP = 0,   /* reading the request head */
	NTWS_CS_REPLAY,     /* authenticated, offline replay in progress */
	NTWS_CS_OPEN,       /* live delivery */
	NTWS_CS_CLOSING,    /* flushing, then waiting for the peer's EOF */
	NTWS_CS_DEAD,       /* fd closed, waiting to be reaped */
};

struct ntws_user;

/*
 * State of the window in which offline and live delivery overlap. The
 * offline messages (backlog, sorted by id) are fed to the send queue as
 * it drains, so a backlog larger than --send-queue-max still goes out;
 * live messages wait in pending until the backlog is through.
 */
struct ntws_replay {
	struct ntws_buf **pending;   /* live messages held during replay */
	uint32_t          npending, cap, ppos;
	size_t            pending_bytes;
	struct ntws_buf **backlog;   /* offline messages, sorted by id */
	uint32_t          nbacklog, bpos;
	uint64_t          fence;     /* heartbeat after the HGETALL reply */
	uint8_t           inflight;  /* HGETALL sent, reply not yet in */
	uint8_t           loaded;    /* reply in: feeding the queue */
};

struct ntws_conn {
	struct ntws_server *srv;
	ev_io               io;
	ev_timer            timer;
	int                 fd;
	uint8_t             state;
	uint8_t             ack_mode;
	uint8_t             ping_out;       /* a ping waits for its pong */
	uint8_t             frame_open;     /* wslay holds part of a frame */
	uint8_t             msg_open;       /* a fragmented message is open */
	uint8_t             close_sent;
	uint8_t             http_only;      /* plain HTTP: close after reply */
	uint8_t             in_all;         /* linked in srv->conns */
	uint8_t             authed;         /* counted in nconns_ws */
	uint8_t             wr_shut;        /* shutdown(SHUT_WR) done */
	uint8_t             eof;            /* the peer closed or failed */
	uint8_t             flush_queued;   /* in srv->flushq */
	uint8_t             in_wslay;       /* inside wslay_event_recv */
	uint8_t             peer_family;    /* of peer_addr: AF_INET(6) or 0 */
	uint16_t            close_code;
	uint16_t            nchannels;
	uint16_t            peer_port;      /* 0: not known (behind a proxy) */
	uint32_t            redis_pending;  /* replies that will name us */
	uint32_t            replay_gen;
	uint64_t            serial;
	ev_tstamp           last_rx;
	ev_tstamp           ping_sent;
	ev_tstamp           authed_at;      /* for the disconnect log line */
	/* The client for logs: the TCP peer, or the client that a trusted
	 * proxy names. Binary: text would cost 30 bytes more per connection. */
	uint8_t             peer_addr[16];

	/* Inbound bytes not yet given to wslay (the request's tail). */
	char               *inbuf;
	uint32_t            inlen, inoff;

	/* wslay context, only while it holds state (see conn.c). */
	wslay_event_context_ptr ws;
	uint64_t            ws_fed, ws_done, frame_bytes;
	size_t              read_budget;

	/* Outbound queue of shared buffers; v is NULL while empty. */
	struct ntws_buf   **qv;
	uint32_t            qhead, qn, qcap, qoff;
	size_t              qbytes;

	struct ntws_user   *user;
	struct ntws_conn   *user_next, *user_prev;
	struct ntws_conn   *next, *prev;     /* all connections */
	struct ntws_conn   *dead_next;
	struct ntws_conn   *flush_next;

	char              **channels;        /* NULL until a subscribe */
	struct ntws_replay *rp;              /* NULL outside the replay window */
	char              **seen;            /* sorted ids replayed, until fence */
	uint32_t            nseen;
	uint64_t            fence;           /* heartbeat that retires seen */
};

/* Users with at least one authenticated connection here. */
struct ntws_user {
	struct ntws_user *hnext;
	struct ntws_conn *conns;
	uint32_t          nconns;
	char              name[];
};

/* ---- metrics ---- */

#define NTWS_LAT_BUCKETS 12
#define NTWS_CLOSE_CODES 16

struct ntws_metrics {
	uint64_t accepted;
	uint64_t auth_ok;
	uint64_t auth_failures;
	uint64_t messages_in;         /* notifications read from Redis */
	uint64_t client_messages;     /* client frames handled */
	uint64_t messages_out;        /* every text message written */
	uint64_t replies;             /* of which answers to clients */
	uint64_t deliveries;          /* notifications written */
	uint64_t replayed;            /* offline notifications written */
	uint64_t duplicates_dropped;
	uint64_t slow_consumers;
	uint64_t redis_reconnects;
	uint64_t lat_counts[NTWS_LAT_BUCKETS + 1];
	double   lat_sum;
	uint64_t lat_n;
	struct { uint16_t code; uint64_t n; } closes[NTWS_CLOSE_CODES];
};

void ntws_metrics_close(struct ntws_metrics *m, uint16_t code);
void ntws_metrics_latency(struct ntws_metrics *m, double seconds);
/* Render the Prometheus text into a malloc'd string (caller frees). */
char *ntws_metrics_render(const struct ntws_server *s, size_t *len);

/* ---- Redis side (rds.c) ---- */

/*
 * Unanswered HDELs beyond which client acks are refused: each waits in
 * memory until Redis answers, and a client can send acks faster than
 * Redis answers, or while it is away. A refused ack only means the
 * message comes again on the next connect.
 */
#define NTWS_HDEL_ACK_MAX 65536

struct ntws_hdel {
	struct ntws_hdel *next;
	char             *id;
	char              user[];
};

struct ntws_redis {
	redisAsyncContext *sub, *cmd;
	int                sub_ready;     /* SUBSCRIBE confirmed */
	int                cmd_ready;     /* AUTH/SELECT done */
	ev_timer           sub_retry, cmd_retry, tick;
	double             sub_backoff, cmd_backoff;
	ev_tstamp          cmd_ping_at;   /* 0: no PING outstanding */
	ev_tstamp          hb_pub_at;     /* PUBLISH answered, awaiting echo */
	uint64_t           hb_next, hb_seen, hb_waiting;
	ev_tstamp          presence_at;
	ev_tstamp          sub_started, cmd_started;
	int                clear_pending; /* presence removal at shutdown */
	char               channel[NT_KEY_MAX];
	char               hb_channel[NT_KEY_MAX];
	char               presence_key[NT_KEY_MAX];
	char               instances_key[NT_KEY_MAX];
	char               last_error[128];
	/* HDELs not yet answered: the first hdel_sent are on the wire. */
	struct ntws_hdel  *hdel_head, *hdel_tail;
	size_t             hdel_n, hdel_sent;
};

void ntws_redis_start(struct ntws_server *s);
void ntws_redis_stop(struct ntws_server *s);
int  ntws_redis_healthy(const struct ntws_server *s);
/* Each connection on its own: subscribed, and the command one ready. */
int  ntws_redis_sub_up(const struct ntws_server *s);
int  ntws_redis_cmd_up(const struct ntws_server *s);
/* Both connections up: replays may start. */
int  ntws_redis_can_replay(const struct ntws_server *s);
void ntws_redis_hgetall(struct ntws_server *s, struct ntws_conn *c);
void ntws_redis_hdel(struct ntws_server *s, const char *user, const char *id);
void ntws_redis_presence(struct ntws_server *s, const char *user, int add);
/* At shutdown: drop this instance's presence. */
void ntws_redis_presence_clear(struct ntws_server *s);
int  ntws_redis_idle(const struct ntws_server *s);

/* ---- the server ---- */

struct ntws_server {
	struct ev_loop          *loop;
	struct ntws_config      *cfg;
	struct nt_jwt_verifier  *jwt;
	int                      lfd;
	ev_io                    accept_io;
	ev_timer                 accept_pause;
	int                      accept_paused_logged;
	ev_prepare               reaper;
	ev_signal                sigterm, sigint, sighup;
	ev_timer                 shutdown_timer;
	int                      shutting_down;
	int                      sigints;
	int                      ready_sent;
	uint64_t                 next_serial;

	struct ntws_conn        *conns;          /* all connections */
	size_t                   nconns_total;
	size_t                   nconns_ws;      /* authenticated */
	struct ntws_conn        *dead;           /* to reap */
	struct ntws_conn        *flushq;         /* to write before blocking */

	struct ntws_user       **users;          /* hash buckets */
	size_t                   nbuckets, nusers;

	size_t                   queued_bytes;   /* sum of send queues */
	struct ntws_metrics      m;
	struct ntws_redis        r;

	char                    *rbuf;           /* the shared read buffer */
	size_t                   rbuf_len;
};

/* server.c */
int  ntws_server_init(struct ntws_server *s, struct ev_loop *loop,
    struct ntws_config *cfg, struct nt_jwt_verifier *jwt,
    char *err, size_t errlen);
void ntws_server_free(struct ntws_server *s);
void ntws_server_maybe_ready(struct ntws_server *s);
void ntws_server_shutdown(struct ntws_server *s);
struct ntws_user *ntws_user_find(struct ntws_server *s, const char *name);
size_t ntws_user_hash(const char *name);

/* conn.c */
#define NTWS_CLOSE_LINGER_S 2.0   /* wait for the peer's EOF after a close */
/* Queue b (takes the reference) without limits or flushing. */
int  ntws_conn_push(struct ntws_conn *c, struct ntws_buf *b);
void ntws_conn_flush_now(struct ntws_conn *c);
void ntws_conn_timer_in(struct ntws_conn *c, double after);
/* "addr:port" of the peer (or "addr" of the client behind a trusted
 * proxy) into buf, for logs; returns buf. */
const char *ntws_conn_peer(const struct ntws_conn *c, char *buf, size_t len);
/* The address alone, as text ("?" when unknown); returns buf. */
const char *ntws_conn_addr(const struct ntws_conn *c, char *buf, size_t len);
/* The client is the textual address addr, as a trusted proxy said; no
 * port. Ignored when addr does not parse. */
void ntws_conn_set_client(struct ntws_conn *c, const char *addr);
/* Register an authenticated connection under its user (presence). */
void ntws_conn_attach_user(struct ntws_conn *c, const char *name);
/* Give the bytes that arrived (and arrive) to the WebSocket parser. */
void ntws_conn_ws_read(struct ntws_conn *c);
/* A new socket fd from peer (copied). */
void ntws_conn_accept(struct ntws_server *s, int fd,
    const struct sockaddr *peer);
void ntws_conn_enqueue(struct ntws_conn *c, struct ntws_buf *b);
void ntws_conn_send_text(struct ntws_conn *c, const char *json, size_t len);
void ntws_conn_close(struct ntws_conn *c, uint16_t code, const char *reason);
void ntws_conn_kill(struct ntws_conn *c);
/* Whether a queued, unwritten buffer carries this message id. */
int  ntws_conn_queue_has(const struct ntws_conn *c, const char *id);
void ntws_conn_reap(struct ntws_server *s);
/* Write what was queued during this iteration (ev_prepare). */
void ntws_conn_flush_all(struct ntws_server *s);

/* handshake.c */
/* Read the request head and answer it or upgrade (state HTTP). */
void ntws_http_read(struct ntws_conn *c);

/* deliver.c */
void ntws_deliver_payload(struct ntws_server *s, const char *json, size_t len);
void ntws_deliver_to(struct ntws_conn *c, struct ntws_buf *b);
void ntws_replay_begin(struct ntws_conn *c);
void ntws_replay_done(struct ntws_conn *c, redisReply *reply);
void ntws_replay_restart_all(struct ntws_server *s);
void ntws_replay_kick_all(struct ntws_server *s);
void ntws_replay_free(struct ntws_conn *c);
/* Feed the send queue from the replay while it has room. */
void ntws_replay_pump(struct ntws_conn *c);
void ntws_seen_free(struct ntws_conn *c);
/* Remember one id sent to c (kept sorted, until the fence). */
void ntws_seen_add(struct ntws_conn *c, const char *id);
void ntws_client_message(struct ntws_conn *c, const uint8_t *msg, size_t len);
void ntws_channels_free(struct ntws_conn *c);

/* Wall clock in microseconds: latency is measured against the message's
 * own (wall clock) timestamp. */
int64_t ntws_now_us(void);

#endif
