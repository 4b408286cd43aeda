/*
 * proto: the client side of the WebSocket protocol of notifyd-ws(8) in
 * JSON: what a client may send (ping, subscribe, unsubscribe, ack) and
 * the control frames the server answers with (pong, subscribed,
 * unsubscribed, error, resume). Pure: no connection, no Redis; the
 * caller decides what a request does.
 */
#ifndef NTWS_PROTO_H
#define NTWS_PROTO_H

#include <stddef.h>
#include <stdint.h>

#include "nt_msg.h"

#define NTWS_ACK_ID_MAX 64     /* bytes of an acknowledged id */

enum ntws_req_type {
	NTWS_REQ_INVALID = 0,  /* error says why; answer with an error */
	NTWS_REQ_PING,
	NTWS_REQ_SUBSCRIBE,    /* channel */
	NTWS_REQ_UNSUBSCRIBE,  /* channel */
	NTWS_REQ_ACK,          /* id */
};

/* One client request, copied out of the message (no borrowing). */
struct ntws_req {
	enum ntws_req_type type;
	const char        *error;                  /* static, when INVALID */
	char               channel[NT_USER_MAX + 1];
	char               id[NTWS_ACK_ID_MAX + 1];
};

/*
 * Parse one text message msg[0..len) from a client into req. Always
 * fills req: a message that is not a valid request is NTWS_REQ_INVALID
 * with the reason the client is told ("invalid JSON: expected an
 * object", "missing type", "unknown type", "invalid channel",
 * "invalid id").
 */
void ntws_proto_parse(const uint8_t *msg, size_t len, struct ntws_req *req);

/*
 * Control frames, each as a new malloc'd compact JSON string of *len
 * bytes that the caller frees; NULL when out of memory.
 */
char *ntws_proto_pong(size_t *len);
char *ntws_proto_error(const char *reason, size_t *len);
/* {"type":"error","error":reason,"channel":channel}: a request about
 * that channel was refused. */
char *ntws_proto_error_channel(const char *reason, const char *channel,
    size_t *len);
/* {"type":"subscribed"|"unsubscribed","channel":channel} */
char *ntws_proto_channel(int subscribed, const char *channel, size_t *len);
/* {"type":"resume","since":since,"recovered":true|false} */
char *ntws_proto_resume(const char *since, int recovered, size_t *len);

#endif
