/*
 * metrics: the counters and gauges of notifyd-ws and their Prometheus
 * text (/metrics). One process-wide record that each module writes its
 * own fields of, directly (one thread: no locks); nothing here calls
 * back into the modules, so every module may include it.
 */
#ifndef NTWS_METRICS_H
#define NTWS_METRICS_H

#include <stddef.h>
#include <stdint.h>

#define NTWS_LAT_BUCKETS 12
/*
 * The close codes counted each in its own series (metrics.c has the
 * list, notifyd-ws(8) documents it); any other code a client chooses is
 * counted as "other", so that clients cannot crowd the known ones out.
 */
#define NTWS_CLOSE_CODES 16

struct ntws_metrics {
	/* conn.c */
	uint64_t sockets;             /* gauge: client sockets of any state */
	uint64_t accepted;
	uint64_t client_messages;     /* client frames handled */
	uint64_t messages_out;        /* every text message written */
	uint64_t replies;             /* of which answers to clients */
	uint64_t deliveries;          /* notifications written */
	uint64_t send_queue_bytes;    /* gauge: sum of the send queues */
	uint64_t slow_consumers;      /* closed 1013 at --send-queue-max */
	uint64_t write_timeouts;      /* closed at --write-timeout */
	/* handshake.c */
	uint64_t auth_ok;
	uint64_t auth_failures;
	/* deliver.c */
	uint64_t connections;         /* gauge: sessions (authenticated) */
	uint64_t users;               /* gauge */
	uint64_t messages_in;         /* notifications read from the channel */
	uint64_t replayed;            /* notifications queued from log pages */
	uint64_t duplicates_dropped;  /* live copies of positions already sent */
	uint64_t catchups;            /* connections that went to read the log */
	uint64_t gaps;                /* of which for a position skipped live */
	uint64_t deferred;            /* of which for --max-queued-bytes */
	uint64_t pages_read;
	uint64_t page_reads_inflight; /* gauge */
	uint64_t page_reads_waiting;  /* gauge: connections queued for a slot */
	uint64_t page_bytes;          /* gauge: reply budget of reads in flight */
	uint64_t resumes_recovered;
	uint64_t resumes_lost;        /* since= id no longer in the log */
	uint64_t marks_pending;       /* gauge: users with a read mark to write */
	uint64_t marks_written;       /* mark commands Redis answered */
	uint64_t acks_dropped;        /* ack ids over the per-user bound */
	uint64_t refused_user_limit;  /* over --max-conns-per-user */
	/* rds.c */
	uint8_t  redis_sub_up, redis_cmd_up;
	uint64_t redis_sub_reconnects;
	uint64_t redis_cmd_reconnects;
	uint64_t presence_errors;     /* presence writes Redis refused */
	uint8_t  presence_stale;      /* gauge: the set awaits a rewrite */
	/* latency and closes */
	uint64_t lat_counts[NTWS_LAT_BUCKETS + 1];
	double   lat_sum;
	uint64_t lat_n;
	uint64_t closes[NTWS_CLOSE_CODES];  /* by index in metrics.c's list */
	uint64_t closes_other;              /* every code not in that list */
};

/* The one record (zeroed at start). */
extern struct ntws_metrics ntws_m;

/* Count a connection closed with WebSocket close code code. */
void ntws_metrics_close(uint16_t code);

/* Add one delivery latency sample, in seconds. */
void ntws_metrics_latency(double seconds);

/*
 * The Prometheus text of ntws_m plus the process_* series, in a new
 * malloc'd string of *len bytes that the caller frees; NULL when out of
 * memory.
 */
char *ntws_metrics_render(size_t *len);

#endif
