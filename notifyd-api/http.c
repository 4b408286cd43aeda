/*
 * The HTTP side: libmicrohttpd in "internal polling thread + thread
 * pool" mode. Each worker thread owns its connections and one Redis
 * connection (store.c), so a request is handled start to finish on one
 * thread with plain blocking calls, and a slow Redis stalls only the
 * connections of the worker that waits for it (bounded by
 * --redis-timeout), never the whole daemon. See notifyd-api(8).
 *
 * The access handler is called once when the headers are in (route,
 * method, auth, rate limit, content type and declared length are all
 * checked then, before any body is read), once per piece of body, and
 * once more at the end of the body. Per-request state is freed in the
 * completion callback, which runs on every path, client abort included.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include <jansson.h>
#include <microhttpd.h>

#include "api.h"
#include "nt_log.h"
#include "nt_msg.h"
#include "nt_redis.h"
#include "nt_userlog.h"
#include "nt_uuid.h"
#include "watchdog.h"

_Static_assert(API_MAX_RECIPIENTS <= NT_USERLOG_MAX_TARGETS,
    "target_users must fit in one atomic send");

#define ALLOW_POST "POST"
#define ALLOW_GET  "GET, HEAD"
#define JSON_TYPE  "application/json"
#define BODY_INITIAL 16384
/*
 * Per-connection memory of libmicrohttpd (headers, read buffer, response
 * headers). It is zeroed for every request, so its size is paid on every
 * request: 16 KiB leaves ample room for an API client's headers and
 * halves the default's cost.
 */
#define CONN_MEMORY  (16 * 1024)
/* Bytes of the path kept for the access log line; longer ones end "...". */
#define LOG_PATH_MAX 256

struct api_server {
	struct MHD_Daemon       *mhd;
	const struct api_config *cfg;
	struct api_auth         *auth;
	struct api_watchdog     *watchdog;
	int                      draining;   /* atomic */
	unsigned                 in_flight;  /* atomic */
};

struct request {
	enum api_route route;
	unsigned  status;        /* 0 until a response is queued */
	uint64_t  start_us;
	/* For the access log line, copied while the headers are at hand. */
	char      method[16];
	char      path[LOG_PATH_MAX + 8];   /* room for one %XX and "..." */
	char      client[64];    /* the peer, or the client behind a proxy */
	char      user[NT_USER_MAX + 1];   /* /api/users/{user}/online */
	char      key_name[API_NAME_MAX + 1];
	struct api_caller caller;  /* whose bucket pays for recipients */
	int       has_body;      /* a Content-Length over 0, or chunked */
	int       close_after;   /* answer "Connection: close" */
	int       json_body;     /* Content-Type is application/json */
	int       too_large;
	char     *body;
	size_t    len, cap;
	size_t    discarded;     /* bytes dropped after too_large */
};

/* ---- responses --------------------------------------------------------- */

static enum MHD_Result
queue(struct api_server *s, struct MHD_Connection *conn, struct request *rq,
    unsigned status, char *body, size_t len, const char *ctype,
    const char *hname, const char *hvalue)
{
	struct MHD_Response *resp;
	enum MHD_Result ret;

	if (body == NULL)
		return MHD_NO;
	resp = MHD_create_response_from_buffer(len, body, MHD_RESPMEM_MUST_FREE);
	if (resp == NULL) {
		free(body);
		return MHD_NO;
	}
	MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, ctype);
	MHD_add_response_header(resp, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
	if (hname != NULL)
		MHD_add_response_header(resp, hname, hvalue);
	if (rq->close_after || __atomic_load_n(&s->draining,
	    __ATOMIC_RELAXED))
		MHD_add_response_header(resp, MHD_HTTP_HEADER_CONNECTION, "close");
	ret = MHD_queue_response(conn, status, resp);
	MHD_destroy_response(resp);
	if (ret == MHD_YES)
		rq->status = status;
	return ret;
}

/* Takes the reference to obj. */
static enum MHD_Result
respond_json(struct api_server *s, struct MHD_Connection *conn,
    struct request *rq, unsigned status, json_t *obj,
    const char *hname, const char *hvalue)
{
	char *text = obj ? json_dumps(obj, JSON_COMPACT) : NULL;

	json_decref(obj);
	return queue(s, conn, rq, status, text, text ? strlen(text) : 0,
	    JSON_TYPE, hname, hvalue);
}

/*
 * {"status":"error","error":msg}, plus "field" naming the request key
 * or parameter at fault when there is one (field NULL or "": none).
 */
static enum MHD_Result
respond_error_text(struct api_server *s, struct MHD_Connection *conn,
    struct request *rq, unsigned status, const char *hname,
    const char *hvalue, const char *field, const char *msg)
{
	json_t *obj;

	if (status >= 500)
		nt_log_warn("%s: %u %s", api_route_name(rq->route), status, msg);
	obj = json_pack("{s:s, s:s}", "status", "error", "error", msg);
	if (obj != NULL && field != NULL && field[0] != '\0')
		json_object_set_new(obj, "field", json_string(field));
	return respond_json(s, conn, rq, status, obj, hname, hvalue);
}

__attribute__((format(printf, 7, 8)))
static enum MHD_Result
respond_error(struct api_server *s, struct MHD_Connection *conn,
    struct request *rq, unsigned status, const char *hname,
    const char *hvalue, const char *fmt, ...)
{
	char msg[512];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	return respond_error_text(s, conn, rq, status, hname, hvalue, NULL,
	    msg);
}

#define ERR(st, ...) respond_error(s, conn, rq, (st), NULL, NULL, __VA_ARGS__)
/* A 400 about one key of the request. */
#define ERR_FIELD(field, msg) respond_error_text(s, conn, rq, \
    MHD_HTTP_BAD_REQUEST, NULL, NULL, (field), (msg))

/* ---- routing ----------------------------------------------------------- */

static enum api_route
route_of(const char *url, struct request *rq)
{
	static const char users[] = "/api/users/", online[] = "/online";
	size_t ulen = strlen(url);

	if (strcmp(url, "/api/notifications/send") == 0)
		return API_ROUTE_SEND;
	if (strcmp(url, "/api/notifications/broadcast") == 0)
		return API_ROUTE_BROADCAST;
	if (strcmp(url, "/api/notifications/online-count") == 0)
		return API_ROUTE_ONLINE_COUNT;
	if (strcmp(url, "/livez") == 0)
		return API_ROUTE_LIVEZ;
	if (strcmp(url, "/readyz") == 0)
		return API_ROUTE_READYZ;
	if (strcmp(url, "/healthz") == 0)
		return API_ROUTE_HEALTHZ;
	if (strcmp(url, "/metrics") == 0)
		return API_ROUTE_METRICS;
	if (strncmp(url, users, sizeof(users) - 1) == 0 &&
	    ulen > sizeof(users) - 1 + sizeof(online) - 1 &&
	    strcmp(url + ulen - (sizeof(online) - 1), online) == 0) {
		const char *u = url + sizeof(users) - 1;
		size_t n = ulen - (sizeof(users) - 1) - (sizeof(online) - 1);
		if (memchr(u, '/', n) != NULL)
			return API_ROUTE_UNKNOWN;
		/* Too long to be valid: leave it empty, which fails the same. */
		if (n <= NT_USER_MAX) {
			memcpy(rq->user, u, n);
			rq->user[n] = '\0';
		}
		return API_ROUTE_USER_ONLINE;
	}
	return API_ROUTE_UNKNOWN;
}

static const char *
allowed_methods(enum api_route r)
{
	return r == API_ROUTE_SEND || r == API_ROUTE_BROADCAST ?
	    ALLOW_POST : ALLOW_GET;
}

static int
method_ok(enum api_route r, const char *method)
{
	if (r == API_ROUTE_SEND || r == API_ROUTE_BROADCAST)
		return strcmp(method, MHD_HTTP_METHOD_POST) == 0;
	return strcmp(method, MHD_HTTP_METHOD_GET) == 0 ||
	    strcmp(method, MHD_HTTP_METHOD_HEAD) == 0;
}

/* "application/json" with optional parameters (charset=utf-8). */
static int
is_json_type(const char *ct)
{
	size_t n = sizeof(JSON_TYPE) - 1;

	if (ct == NULL)
		return 0;
	while (*ct == ' ')
		ct++;
	if (strncasecmp(ct, JSON_TYPE, n) != 0)
		return 0;
	ct += n;
	while (*ct == ' ')
		ct++;
	return *ct == '\0' || *ct == ';';
}

/* ---- Redis-backed handlers --------------------------------------------- */

static int
redis_failed(redisContext *c)
{
	api_metrics_redis_error();
	if (c->err) {
		api_store_drop();
		return 1;
	}
	return 0;
}

/* What one send attempt came to. */
enum attempt { SENT, REFUSED, CONN_LOST };

/* Queue and read one atomic send of n messages (users NULL: broadcast). */
static enum attempt
send_attempt(struct api_server *s, redisContext *c,
    const struct nt_userlog_cfg *log, const char *const *users,
    const char *const *ids, const char *const *texts, const size_t *lens,
    size_t n, struct nt_userlog_sent *sent, char *err, size_t errlen)
{
	if (nt_userlog_send_append(c, log, n, users, ids, texts, lens) < 0) {
		snprintf(err, errlen, "redis: cannot queue the command");
		return REFUSED;
	}
	if (nt_userlog_send_read(c, n, sent, err, errlen) == 0)
		return SENT;
	/* A receive timeout reads as EAGAIN: say what it means. */
	if (c->err == REDIS_ERR_IO && (errno == EAGAIN || errno == EWOULDBLOCK))
		snprintf(err, errlen, "redis: no answer within %d ms",
		    s->cfg->redis_timeout_ms);
	return c->err ? CONN_LOST : REFUSED;
}

/*
 * A refusal that will not go away by itself (a key of another type, a
 * message the script rejects) is the server's fault, 500; one that may
 * (out of memory, loading, read-only replica) is 503.
 */
static unsigned
refusal_status(const char *err)
{
	return strstr(err, "WRONGTYPE") != NULL || strstr(err, "cannot queue")
	    != NULL || strstr(err, "ERR message") != NULL ?
	    MHD_HTTP_INTERNAL_SERVER_ERROR : MHD_HTTP_SERVICE_UNAVAILABLE;
}

/*
 * Append n messages to their users' logs and publish them, all or none,
 * in one script and one round trip; a broadcast (users[0] NULL, n 1) is
 * only published. Returns 0 with sent[] filled, or the HTTP status to
 * answer with and a reason in err.
 *
 * A connection that breaks after the command went out (a timeout, a
 * reset) leaves the outcome unknown: the messages may be stored and
 * published. A 503 then would hide them, and a client's retry would mint
 * new ids and send them twice. So the same ids are sent once more on a
 * new connection: a log stores and publishes an id at most once and
 * answers with its position either way. 503 only when that fails too.
 * A broadcast has no log to say what was published, so it is not sent
 * twice: its 503 says the outcome is unknown.
 */
static unsigned
send_all(struct api_server *s, const char *const *users,
    const char *const *ids, const char *const *texts, const size_t *lens,
    size_t n, struct nt_userlog_sent *sent, char *err, size_t errlen)
{
	struct nt_userlog_cfg log = { s->cfg->redis_prefix,
	    s->cfg->offline_ttl_s, s->cfg->offline_max };
	redisContext *c = api_store_get(err, errlen);
	enum attempt a;

	if (c == NULL)
		return MHD_HTTP_SERVICE_UNAVAILABLE;
	a = send_attempt(s, c, &log, users, ids, texts, lens, n, sent, err,
	    errlen);
	if (a == CONN_LOST && users[0] == NULL) {
		redis_failed(c);
		snprintf(err + strlen(err), errlen - strlen(err),
		    " (the broadcast may or may not have gone out)");
		return MHD_HTTP_SERVICE_UNAVAILABLE;
	}
	if (a == CONN_LOST) {
		redis_failed(c);
		nt_log_warn("%s; sending %s%s again on a new connection", err,
		    ids[0], n > 1 ? " and the other target_users" : "");
		c = api_store_get(err, errlen);
		if (c != NULL)
			a = send_attempt(s, c, &log, users, ids, texts, lens,
			    n, sent, err, errlen);
	}
	if (c != NULL && a != SENT)
		redis_failed(c);
	if (c == NULL || a == CONN_LOST) {
		snprintf(err + strlen(err), errlen - strlen(err), " (the "
		    "notification may or may not have been stored and "
		    "published)");
		return MHD_HTTP_SERVICE_UNAVAILABLE;
	}
	return a == REFUSED ? refusal_status(err) : 0;
}

/* The answer to a send that went through. */
static json_t *
sent_answer(const char *const *users, const char *const *ids, size_t n,
    const struct nt_userlog_sent *sent, int many)
{
	json_t *ans, *idlist, *results;

	if (!many) {
		ans = json_pack("{s:s, s:s, s:s}", "status", "ok", "message",
		    users[0] ? "notification sent" : "broadcast sent", "id",
		    ids[0]);
		if (ans != NULL && users[0] != NULL)
			json_object_set_new(ans, "seq",
			    json_integer(sent[0].seq));
		return ans;
	}
	/* "ids" as before, for the seed's clients; "results" adds seq. */
	idlist = json_array();
	results = json_array();
	for (size_t i = 0; i < n; i++) {
		json_array_append_new(idlist, json_string(ids[i]));
		json_array_append_new(results, json_pack("{s:s, s:s, s:I}",
		    "target_user", users[i], "id", ids[i],
		    "seq", (json_int_t)sent[i].seq));
	}
	return json_pack("{s:s, s:s, s:o, s:o}", "status", "ok", "message",
	    "notifications sent", "ids", idlist, "results", results);
}

/*
 * The rest of a request's price: one rate-limit token per recipient, the
 * first of which api_auth_check took with the headers. All or none, so
 * a refused request sends nothing. 0: paid; -1: answered, with what
 * queuing the answer returned in *ret.
 */
static int
charge_recipients(struct api_server *s, struct MHD_Connection *conn,
    struct request *rq, size_t n, enum MHD_Result *ret)
{
	double burst = api_auth_burst(s->auth);
	unsigned retry = 0;
	char retry_s[16];

	if (n <= 1)
		return 0;
	if (burst > 0 && (double)n > burst) {
		/* No wait would ever do: say which limit to raise instead. */
		*ret = ERR(MHD_HTTP_CONTENT_TOO_LARGE, "%zu recipients cost %zu "
		    "rate-limit tokens, more than the %.0f of --rate-burst",
		    n, n, burst);
		return -1;
	}
	switch (api_auth_charge(s->auth, &rq->caller, (double)(n - 1),
	    &retry)) {
	case API_AUTH_OK:
		return 0;
	case API_AUTH_LIMITED:
		snprintf(retry_s, sizeof(retry_s), "%u", retry);
		*ret = respond_error(s, conn, rq, MHD_HTTP_TOO_MANY_REQUESTS,
		    MHD_HTTP_HEADER_RETRY_AFTER, retry_s, "rate limit exceeded "
		    "for key %s: %zu recipients cost %zu tokens", rq->key_name,
		    n, n);
		return -1;
	default:
		*ret = respond_error(s, conn, rq, MHD_HTTP_UNAUTHORIZED,
		    MHD_HTTP_HEADER_WWW_AUTHENTICATE,
		    "Bearer error=\"invalid_token\"", "invalid credentials");
		return -1;
	}
}

/*
 * The encoded messages for users[0..n) (users[0] NULL: a broadcast),
 * into texts/lens/ids. Each message object is freed as soon as it is
 * encoded, so the memory a send holds is its encoded bytes, which
 * --max-fanout bounds: 0, or the status to answer with and err.
 */
static unsigned
encode_all(struct api_server *s, struct nt_msg_req *req,
    const char *const *users, size_t n, char **texts, size_t *lens,
    char (*idbuf)[NT_UUID_STRLEN + 1], char *err, size_t errlen)
{
	size_t total = 0;
	json_t *msg;

	for (size_t i = 0; i < n; i++) {
		req->target_user = users[i];
		if ((msg = nt_msg_build(req, &s->cfg->limits, err,
		    errlen)) == NULL)
			return MHD_HTTP_BAD_REQUEST;
		snprintf(idbuf[i], sizeof(idbuf[i]), "%s", nt_msg_id(msg));
		texts[i] = nt_msg_encode(msg, &s->cfg->limits, &lens[i], err,
		    errlen);
		json_decref(msg);
		if (texts[i] == NULL)
			return MHD_HTTP_BAD_REQUEST;
		total += lens[i];
		if (total > s->cfg->max_fanout) {
			snprintf(err, errlen, "the messages for %zu recipients "
			    "come to more than --max-fanout (%zu bytes): send "
			    "fewer recipients or less content", n,
			    s->cfg->max_fanout);
			return MHD_HTTP_CONTENT_TOO_LARGE;
		}
	}
	return 0;
}

/* Build, send and answer for the recipients users[0..n) (NULL: broadcast). */
static enum MHD_Result
deliver(struct api_server *s, struct MHD_Connection *conn, struct request *rq,
    struct nt_msg_req *req, const char **users, size_t n, int many)
{
	char **texts = calloc(n, sizeof(*texts));
	char (*idbuf)[NT_UUID_STRLEN + 1] = calloc(n, sizeof(*idbuf));
	const char **ids = calloc(n, sizeof(*ids));
	size_t *lens = calloc(n, sizeof(*lens));
	struct nt_userlog_sent *sent = calloc(n, sizeof(*sent));
	char err[512];
	unsigned status = 0;
	enum MHD_Result ret = MHD_YES;

	if (texts == NULL || idbuf == NULL || ids == NULL || lens == NULL ||
	    sent == NULL) {
		snprintf(err, sizeof(err), "out of memory");
		status = MHD_HTTP_INTERNAL_SERVER_ERROR;
	}
	for (size_t i = 0; status == 0 && i < n; i++)
		ids[i] = idbuf[i];
	if (status == 0)
		status = encode_all(s, req, users, n, texts, lens, idbuf, err,
		    sizeof(err));
	if (status == 0 && charge_recipients(s, conn, rq, n, &ret) < 0)
		goto out;   /* answered */
	if (status == 0)
		status = send_all(s, users, ids, (const char *const *)texts,
		    lens, n, sent, err, sizeof(err));
	if (status != 0)
		ret = ERR(status, "%s", err);
	else
		ret = respond_json(s, conn, rq, MHD_HTTP_OK,
		    sent_answer(users, ids, n, sent, many), NULL, NULL);
out:
	for (size_t i = 0; texts != NULL && i < n; i++)
		free(texts[i]);
	free(texts);
	free(idbuf);
	free(ids);
	free(lens);
	free(sent);
	return ret;
}

static json_t *
parse_body(struct request *rq, char *err, size_t errlen)
{
	json_error_t je;
	json_t *root;

	if (rq->len == 0) {
		snprintf(err, errlen, "empty body: a JSON object is required");
		return NULL;
	}
	root = json_loadb(rq->body, rq->len, JSON_REJECT_DUPLICATES, &je);
	if (root == NULL) {
		snprintf(err, errlen, "malformed JSON: %s (line %d, column %d)",
		    je.text, je.line, je.column);
		return NULL;
	}
	if (!json_is_object(root)) {
		json_decref(root);
		snprintf(err, errlen, "the body must be a JSON object");
		return NULL;
	}
	return root;
}

/*
 * target_users, which nt_msg_req_parse found a non-empty array of valid
 * ids: distinct, and at most --max-targets of them (checked first, so
 * that the quadratic duplicate check is bounded). 0, or the status.
 */
static unsigned
collect_users(json_t *many, unsigned max, const char **users, size_t *n,
    char *err, size_t errlen)
{
	size_t count = json_array_size(many);

	if (count > max) {
		snprintf(err, errlen, "\"target_users\" holds %zu user ids, "
		    "over --max-targets (%u)", count, max);
		return MHD_HTTP_CONTENT_TOO_LARGE;
	}
	if (count == 0) {
		snprintf(err, errlen, "\"target_users\" is empty");
		return MHD_HTTP_BAD_REQUEST;
	}
	for (size_t i = 0; i < count; i++) {
		const char *u = json_string_value(json_array_get(many, i));
		char verr[256];
		if (u == NULL) {
			snprintf(err, errlen, "\"target_users\"[%zu] must be a "
			    "string", i);
			return MHD_HTTP_BAD_REQUEST;
		}
		if (nt_user_valid(u, verr, sizeof(verr)) < 0) {
			snprintf(err, errlen, "\"target_users\"[%zu]: %s", i, verr);
			return MHD_HTTP_BAD_REQUEST;
		}
		for (size_t j = 0; j < i; j++) {
			if (strcmp(users[j], u) == 0) {
				snprintf(err, errlen, "\"target_users\"[%zu]: "
				    "duplicate user id", i);
				return MHD_HTTP_BAD_REQUEST;
			}
		}
		users[i] = u;
	}
	*n = count;
	return 0;
}

static enum MHD_Result
handle_send(struct api_server *s, struct MHD_Connection *conn,
    struct request *rq)
{
	char err[512], field[64];
	struct nt_msg_req req;
	json_t *root, *many = NULL;
	const char **users = NULL;
	size_t n = 1;
	unsigned status;
	enum MHD_Result ret;

	if ((root = parse_body(rq, err, sizeof(err))) == NULL)
		return ERR(MHD_HTTP_BAD_REQUEST, "%s", err);
	if (nt_msg_req_parse(root, NT_REQ_SEND, &req, &many, field,
	    sizeof(field), err, sizeof(err)) < 0) {
		ret = ERR_FIELD(field, err);
		goto out;
	}
	users = calloc(many ? json_array_size(many) + 1 : 1, sizeof(*users));
	if (users == NULL) {
		ret = ERR(MHD_HTTP_INTERNAL_SERVER_ERROR, "out of memory");
		goto out;
	}
	users[0] = req.target_user;
	if (many != NULL && (status = collect_users(many,
	    s->cfg->max_targets, users, &n, err, sizeof(err))) != 0)
		ret = respond_error_text(s, conn, rq, status, NULL, NULL,
		    "target_users", err);
	else
		ret = deliver(s, conn, rq, &req, users, n, many != NULL);
out:
	free(users);
	json_decref(root);
	return ret;
}

/* The parameters of the query-string form of a broadcast, as an object. */
struct query_args {
	json_t     *obj;
	char        bad[64];    /* the first parameter at fault */
	const char *why;
};

static enum MHD_Result
query_collect(void *cls, enum MHD_ValueKind kind, const char *key,
    const char *value)
{
	struct query_args *q = cls;

	json_t *v;

	/* Twice the same name: which one counts would be a guess. */
	if (json_object_get(q->obj, key) != NULL)
		q->why = "is repeated";
	else if (value == NULL)
		q->why = "has no value";
	else if ((v = json_string(value)) == NULL ||
	    json_object_set_new(q->obj, key, v) != 0)
		q->why = "is not valid UTF-8";
	if (q->why == NULL)
		return MHD_YES;
	snprintf(q->bad, sizeof(q->bad), "%s", key);
	return MHD_NO;
}

/*
 * The seed's form, everything in the query string, read as the JSON
 * form is (nt_msg_req_parse): an unknown or repeated parameter and an
 * empty content are errors, named in "field". NULL when answered;
 * else an object the caller frees, req borrowing from it.
 */
static json_t *
query_request(struct api_server *s, struct MHD_Connection *conn,
    struct request *rq, struct nt_msg_req *req, enum MHD_Result *ret)
{
	struct query_args q = { .obj = json_object() };
	char err[512], field[64];

	*ret = MHD_NO;
	if (q.obj == NULL) {
		*ret = ERR(MHD_HTTP_INTERNAL_SERVER_ERROR, "out of memory");
		return NULL;
	}
	MHD_get_connection_values(conn, MHD_GET_ARGUMENT_KIND, query_collect,
	    &q);
	if (q.why != NULL) {
		snprintf(err, sizeof(err), "query parameter \"%s\" %s", q.bad,
		    q.why);
		*ret = ERR_FIELD(q.bad, err);
	} else if (json_object_size(q.obj) == 0) {
		*ret = ERR_FIELD("", "no notification: give notification_type "
		    "and content as query parameters or in a JSON body");
	} else if (nt_msg_req_parse(q.obj, NT_REQ_BROADCAST, req, NULL, field,
	    sizeof(field), err, sizeof(err)) < 0) {
		*ret = ERR_FIELD(field, err);
	} else if (req->type == NULL) {
		/* The seed required both here; clients rely on it failing. */
		*ret = ERR_FIELD("notification_type", "no \"notification_type"
		    "\": the query-string form needs it and \"content\"");
	} else {
		return q.obj;
	}
	json_decref(q.obj);
	return NULL;
}

/* Query parameters beside a JSON body would be silently ignored. */
static enum MHD_Result
count_args(void *cls, enum MHD_ValueKind kind, const char *key,
    const char *value)
{
	(*(unsigned *)cls)++;
	return MHD_YES;
}

static enum MHD_Result
handle_broadcast(struct api_server *s, struct MHD_Connection *conn,
    struct request *rq)
{
	char err[512], field[64];
	struct nt_msg_req req;
	const char *none = NULL;
	json_t *root = NULL;
	unsigned nargs = 0;
	enum MHD_Result ret = MHD_NO;

	if (rq->len > 0 && !rq->json_body)
		return ERR(MHD_HTTP_UNSUPPORTED_MEDIA_TYPE, "Content-Type must "
		    "be application/json");
	if (rq->len == 0) {
		if ((root = query_request(s, conn, rq, &req, &ret)) == NULL)
			return ret;
		ret = deliver(s, conn, rq, &req, &none, 1, 0);
		json_decref(root);
		return ret;
	}
	MHD_get_connection_values(conn, MHD_GET_ARGUMENT_KIND, count_args,
	    &nargs);
	if (nargs > 0)
		return ERR_FIELD("", "give the notification as query "
		    "parameters or as a JSON body, not both");
	if ((root = parse_body(rq, err, sizeof(err))) == NULL)
		return ERR(MHD_HTTP_BAD_REQUEST, "%s", err);
	if (nt_msg_req_parse(root, NT_REQ_BROADCAST, &req, NULL, field,
	    sizeof(field), err, sizeof(err)) < 0)
		ret = ERR_FIELD(field, err);
	else
		ret = deliver(s, conn, rq, &req, &none, 1, 0);
	json_decref(root);
	return ret;
}

static enum MHD_Result
handle_presence(struct api_server *s, struct MHD_Connection *conn,
    struct request *rq)
{
	char err[512];
	redisContext *c;
	long long count = 0;
	int online = 0, rc;

	if (rq->route == API_ROUTE_USER_ONLINE &&
	    nt_user_valid(rq->user, err, sizeof(err)) < 0)
		return ERR(MHD_HTTP_BAD_REQUEST, "%s", err);
	if ((c = api_store_get(err, sizeof(err))) == NULL)
		return ERR(MHD_HTTP_SERVICE_UNAVAILABLE, "%s", err);
	if (rq->route == API_ROUTE_ONLINE_COUNT)
		rc = nt_redis_online_count(c, s->cfg->redis_prefix, &count, err,
		    sizeof(err));
	else
		rc = nt_redis_user_online(c, s->cfg->redis_prefix, rq->user,
		    &online, err, sizeof(err));
	if (rc < 0) {
		redis_failed(c);
		return ERR(MHD_HTTP_SERVICE_UNAVAILABLE, "%s", err);
	}
	if (rq->route == API_ROUTE_ONLINE_COUNT)
		return respond_json(s, conn, rq, MHD_HTTP_OK,
		    json_pack("{s:I}", "online_count", (json_int_t)count),
		    NULL, NULL);
	return respond_json(s, conn, rq, MHD_HTTP_OK, json_pack("{s:s, s:b}",
	    "user", rq->user, "online", online), NULL, NULL);
}

/* Alive as long as it answers HTTP: nothing else is checked. */
static enum MHD_Result
handle_livez(struct api_server *s, struct MHD_Connection *conn,
    struct request *rq)
{
	return respond_json(s, conn, rq, MHD_HTTP_OK,
	    json_pack("{s:s}", "status", "ok"), NULL, NULL);
}

/*
 * Ready when this worker's own Redis connection answers PING within
 * --redis-timeout: that is the connection the worker's requests use.
 * /healthz answers the same.
 */
static enum MHD_Result
handle_readyz(struct api_server *s, struct MHD_Connection *conn,
    struct request *rq)
{
	char err[512];
	redisContext *c = api_store_get(err, sizeof(err));
	redisReply *r;
	int ok;

	if (c == NULL)
		return ERR(MHD_HTTP_SERVICE_UNAVAILABLE, "%s", err);
	r = redisCommand(c, "PING");
	ok = r != NULL && r->type == REDIS_REPLY_STATUS;
	if (!ok)
		snprintf(err, sizeof(err), "redis: %s", r ? (r->str ? r->str :
		    "unexpected reply") : c->errstr);
	freeReplyObject(r);
	if (!ok) {
		redis_failed(c);
		return ERR(MHD_HTTP_SERVICE_UNAVAILABLE, "%s", err);
	}
	return respond_json(s, conn, rq, MHD_HTTP_OK,
	    json_pack("{s:s, s:s}", "status", "ok", "redis", "ok"), NULL, NULL);
}

static enum MHD_Result
handle_metrics(struct api_server *s, struct MHD_Connection *conn,
    struct request *rq)
{
	size_t len = 0;
	char *text = api_metrics_render(&len);

	if (text == NULL)
		return ERR(MHD_HTTP_INTERNAL_SERVER_ERROR, "out of memory");
	return queue(s, conn, rq, MHD_HTTP_OK, text, len,
	    "text/plain; version=0.0.4; charset=utf-8", NULL, NULL);
}

/* ---- the access handler ------------------------------------------------ */

static enum MHD_Result
check_auth(struct api_server *s, struct MHD_Connection *conn,
    struct request *rq)
{
	unsigned retry = 0;
	char retry_s[16];
	const char *hdr = MHD_lookup_connection_value(conn, MHD_HEADER_KIND,
	    MHD_HTTP_HEADER_AUTHORIZATION);

	switch (api_auth_check(s->auth, hdr, &retry, rq->key_name,
	    &rq->caller)) {
	case API_AUTH_OK:
		return MHD_YES;
	case API_AUTH_MISSING:
		respond_error(s, conn, rq, MHD_HTTP_UNAUTHORIZED,
		    MHD_HTTP_HEADER_WWW_AUTHENTICATE, "Bearer",
		    "missing credentials: send Authorization: Bearer KEY");
		return MHD_NO;
	case API_AUTH_INVALID:
		nt_log_info("rejected an invalid API key");
		respond_error(s, conn, rq, MHD_HTTP_UNAUTHORIZED,
		    MHD_HTTP_HEADER_WWW_AUTHENTICATE,
		    "Bearer error=\"invalid_token\"", "invalid credentials");
		return MHD_NO;
	case API_AUTH_FORBIDDEN:
		respond_error(s, conn, rq, MHD_HTTP_FORBIDDEN,
		    MHD_HTTP_HEADER_WWW_AUTHENTICATE,
		    "Bearer error=\"insufficient_scope\"",
		    "the token lacks the scope %s", s->cfg->jwt_scope);
		return MHD_NO;
	case API_AUTH_LIMITED:
		snprintf(retry_s, sizeof(retry_s), "%u", retry);
		respond_error(s, conn, rq, MHD_HTTP_TOO_MANY_REQUESTS,
		    MHD_HTTP_HEADER_RETRY_AFTER, retry_s,
		    "rate limit exceeded for key %s", rq->key_name);
		return MHD_NO;
	}
	return MHD_NO;
}

/* The headers that say where a request's body ends. */
struct framing {
	unsigned    n_cl, n_te;
	const char *cl, *te;
	int         spaced_name;   /* "Content-Length :" and the like */
};

static enum MHD_Result
framing_collect(void *cls, enum MHD_ValueKind kind, const char *key,
    const char *value)
{
	struct framing *f = cls;

	/*
	 * libmicrohttpd keeps "Content-Length :" as a header of another
	 * name and reads no body, where a lenient proxy reads one (RFC 9112
	 * section 5.1 says to refuse such a request).
	 */
	if (strpbrk(key, " \t") != NULL)
		f->spaced_name = 1;
	if (strcasecmp(key, MHD_HTTP_HEADER_CONTENT_LENGTH) == 0) {
		f->n_cl++;
		f->cl = value != NULL ? value : "";
	} else if (strcasecmp(key, MHD_HTTP_HEADER_TRANSFER_ENCODING) == 0) {
		f->n_te++;
		f->te = value != NULL ? value : "";
	}
	return MHD_YES;
}

/*
 * Where the body ends must be beyond doubt. When a proxy in front reads
 * the framing one way and libmicrohttpd another (it takes the first of
 * two Content-Lengths, a proxy may take the last), the rest of one
 * request's body becomes the next request: request smuggling. So every
 * framing that two readers could take differently is refused, and the
 * connection closed. RFC 9112 section 6.3 allows a repeated
 * Content-Length only with identical values; refusing every repeat is
 * simpler, and no client has a reason to send one. NULL when the
 * framing is clear (*has_body set), else the reason.
 */
static const char *
framing_error(struct MHD_Connection *conn, const char *version,
    int *has_body)
{
	struct framing f = { 0, 0, NULL, NULL, 0 };

	MHD_get_connection_values(conn, MHD_HEADER_KIND, framing_collect, &f);
	if (f.spaced_name)
		return "white space in a header name";
	if (f.n_cl > 1)
		return "more than one Content-Length header";
	if (f.n_te > 1)
		return "more than one Transfer-Encoding header";
	if (f.n_cl > 0 && f.n_te > 0)
		return "both Content-Length and Transfer-Encoding";
	if (f.n_te > 0 && strcasecmp(f.te, "chunked") != 0)
		return "a Transfer-Encoding other than \"chunked\"";
	if (f.n_te > 0 && strcmp(version, MHD_HTTP_VERSION_1_1) != 0)
		return "Transfer-Encoding in an HTTP/1.0 request";
	if (f.n_cl > 0 && (f.cl[0] == '\0' || strlen(f.cl) > 18 ||
	    f.cl[strspn(f.cl, "0123456789")] != '\0'))
		return "a Content-Length that is not a decimal number of at "
		    "most 18 digits";
	*has_body = f.n_te > 0 || (f.n_cl > 0 && strtoull(f.cl, NULL, 10) > 0);
	return NULL;
}

/* The connection's deadline entry (watchdog.h); NULL once it closed. */
static struct api_watch *
conn_watch(struct MHD_Connection *conn)
{
	const union MHD_ConnectionInfo *ci = MHD_get_connection_info(conn,
	    MHD_CONNECTION_INFO_SOCKET_CONTEXT);

	return ci != NULL ? ci->socket_context : NULL;
}

/* The whole request is in: what follows may wait on Redis, which
 * --redis-timeout bounds, not --request-timeout. */
static void
request_received(struct api_server *s, struct MHD_Connection *conn)
{
	api_watch_received(s->watchdog, conn_watch(conn));
}

/* Checks that need only the headers. MHD_YES: go on and read the body. */
static enum MHD_Result
on_headers(struct api_server *s, struct MHD_Connection *conn,
    struct request *rq, const char *method, const char *version)
{
	const char *ct, *cl, *why;
	unsigned long long declared = 0;

	if ((why = framing_error(conn, version, &rq->has_body)) != NULL) {
		/* Nothing after this on the connection can be trusted. */
		rq->close_after = 1;
		return ERR(MHD_HTTP_BAD_REQUEST, "ambiguous request framing: "
		    "%s", why);
	}
	if (rq->route == API_ROUTE_UNKNOWN)
		return ERR(MHD_HTTP_NOT_FOUND, "no such route");
	if (!method_ok(rq->route, method))
		return respond_error(s, conn, rq, MHD_HTTP_METHOD_NOT_ALLOWED,
		    MHD_HTTP_HEADER_ALLOW, allowed_methods(rq->route),
		    "method %s not allowed here", method);
	if (rq->route == API_ROUTE_LIVEZ)
		return handle_livez(s, conn, rq);
	if (!rq->has_body)
		request_received(s, conn);
	if (rq->route == API_ROUTE_READYZ || rq->route == API_ROUTE_HEALTHZ)
		return handle_readyz(s, conn, rq);
	if (rq->route == API_ROUTE_METRICS)
		return handle_metrics(s, conn, rq);
	if (check_auth(s, conn, rq) != MHD_YES)
		return rq->status != 0 ? MHD_YES : MHD_NO;
	if (rq->route == API_ROUTE_ONLINE_COUNT ||
	    rq->route == API_ROUTE_USER_ONLINE)
		return handle_presence(s, conn, rq);

	ct = MHD_lookup_connection_value(conn, MHD_HEADER_KIND,
	    MHD_HTTP_HEADER_CONTENT_TYPE);
	cl = MHD_lookup_connection_value(conn, MHD_HEADER_KIND,
	    MHD_HTTP_HEADER_CONTENT_LENGTH);
	if (cl != NULL)
		declared = strtoull(cl, NULL, 10);
	rq->json_body = is_json_type(ct);
	if (!rq->json_body && (rq->route == API_ROUTE_SEND || rq->has_body))
		return ERR(MHD_HTTP_UNSUPPORTED_MEDIA_TYPE,
		    "Content-Type must be application/json");
	if (declared > s->cfg->max_body)
		return ERR(MHD_HTTP_CONTENT_TOO_LARGE, "body over %zu bytes",
		    s->cfg->max_body);
	if (declared > 0) {
		/* Grow as bytes arrive: a declared length costs nothing until
		 * the client actually sends. */
		rq->cap = declared < BODY_INITIAL ? declared : BODY_INITIAL;
		rq->body = malloc(rq->cap);
		if (rq->body == NULL)
			return ERR(MHD_HTTP_INTERNAL_SERVER_ERROR, "out of memory");
	}
	return MHD_YES;
}

static int
body_append(struct request *rq, const char *data, size_t n)
{
	if (rq->len + n > rq->cap) {
		size_t ncap = rq->cap ? rq->cap : BODY_INITIAL;
		while (ncap < rq->len + n)
			ncap *= 2;
		char *nb = realloc(rq->body, ncap);
		if (nb == NULL)
			return -1;
		rq->body = nb;
		rq->cap = ncap;
	}
	memcpy(rq->body + rq->len, data, n);
	rq->len += n;
	return 0;
}

/* A piece of body. MHD_NO closes the connection. */
static enum MHD_Result
on_body(struct api_server *s, struct request *rq, const char *data,
    size_t *size)
{
	size_t n = *size;

	/* How long the upload may take is the watchdog's business. */
	*size = 0;
	if (rq->too_large) {
		/*
		 * libmicrohttpd cannot queue a response in the middle of an
		 * upload: drop up to --max-body more bytes to answer 413 at
		 * the end of the body, and hang up on anything larger.
		 */
		rq->discarded += n;
		return rq->discarded > s->cfg->max_body ? MHD_NO : MHD_YES;
	}
	if (rq->len + n > s->cfg->max_body) {
		rq->too_large = 1;
		free(rq->body);
		rq->body = NULL;
		rq->len = rq->cap = 0;
		return MHD_YES;
	}
	return body_append(rq, data, n) == 0 ? MHD_YES : MHD_NO;
}

/* ---- the access log ---------------------------------------------------- */

/*
 * The path as the log shows it: libmicrohttpd hands it over without the
 * query string (which may carry content) but percent-decoded, so bytes
 * that could forge or break a log line are encoded again.
 */
static void
log_path(const char *url, char out[LOG_PATH_MAX + 8])
{
	static const char hex[] = "0123456789ABCDEF";
	size_t o = 0;
	const unsigned char *u = (const unsigned char *)url;

	for (; *u != '\0' && o < LOG_PATH_MAX; u++) {
		if (*u > ' ' && *u < 0x7f && *u != '%') {
			out[o++] = (char)*u;
		} else {
			out[o++] = '%';
			out[o++] = hex[*u >> 4];
			out[o++] = hex[*u & 15];
		}
	}
	out[o] = '\0';
	if (*u != '\0')
		memcpy(out + o, "...", 4);
}

struct xff {
	char   buf[1024];
	size_t len;
	int    too_long;
};

/* Join every X-Forwarded-For header in order, as one list (RFC 9110). */
static enum MHD_Result
xff_collect(void *cls, enum MHD_ValueKind kind, const char *key,
    const char *value)
{
	struct xff *x = cls;
	size_t n;

	if (strcasecmp(key, "X-Forwarded-For") != 0 || value == NULL)
		return MHD_YES;
	n = strlen(value);
	if (x->len + n + 2 > sizeof(x->buf)) {
		x->too_long = 1;
		return MHD_NO;
	}
	if (x->len > 0)
		x->buf[x->len++] = ',';
	memcpy(x->buf + x->len, value, n);
	x->len += n;
	x->buf[x->len] = '\0';
	return MHD_YES;
}

/*
 * Who sent the request: the TCP peer, or, when the peer is a trusted
 * proxy (--trusted-proxy), the client it names in X-Forwarded-For.
 */
static void
client_address(struct api_server *s, struct MHD_Connection *conn,
    char *out, size_t outlen)
{
	const union MHD_ConnectionInfo *ci = MHD_get_connection_info(conn,
	    MHD_CONNECTION_INFO_CLIENT_ADDRESS);
	char peer[64];
	struct xff x = { .len = 0 };

	if (ci == NULL || ci->client_addr == NULL)
		snprintf(peer, sizeof(peer), "?");
	else
		nt_proxy_addr_text(ci->client_addr, peer, sizeof(peer));
	if (s->cfg->trusted_proxies.n == 0 ||
	    !nt_proxy_trusted(&s->cfg->trusted_proxies, peer)) {
		snprintf(out, outlen, "%s", peer);
		return;
	}
	MHD_get_connection_values(conn, MHD_HEADER_KIND, xff_collect, &x);
	/*
	 * A list too long to hold is not read at all: its trustworthy entries
	 * are at the right end, which a cut would lose. The proxy is named.
	 */
	nt_proxy_client(&s->cfg->trusted_proxies, peer,
	    x.len > 0 && !x.too_long ? x.buf : NULL, x.len, out, outlen);
}

/* ---- the access handler, continued ------------------------------------- */

static enum MHD_Result
on_request(void *cls, struct MHD_Connection *conn, const char *url,
    const char *method, const char *version, const char *upload_data,
    size_t *upload_data_size, void **con_cls)
{
	struct api_server *s = cls;
	struct request *rq = *con_cls;

	if (rq == NULL) {
		if ((rq = calloc(1, sizeof(*rq))) == NULL)
			return MHD_NO;
		rq->start_us = api_now_us();
		rq->route = route_of(url, rq);
		snprintf(rq->method, sizeof(rq->method), "%s", method);
		log_path(url, rq->path);
		client_address(s, conn, rq->client, sizeof(rq->client));
		*con_cls = rq;
		__atomic_fetch_add(&s->in_flight, 1, __ATOMIC_RELAXED);
		api_watch_request(s->watchdog, conn_watch(conn));
		return on_headers(s, conn, rq, method, version);
	}
	if (rq->status != 0) {
		/* Answered from the headers: ignore any body. */
		*upload_data_size = 0;
		return MHD_YES;
	}
	if (*upload_data_size > 0)
		return on_body(s, rq, upload_data, upload_data_size);
	request_received(s, conn);
	if (rq->too_large)
		return ERR(MHD_HTTP_CONTENT_TOO_LARGE, "body over %zu bytes",
		    s->cfg->max_body);
	if (rq->route == API_ROUTE_SEND)
		return handle_send(s, conn, rq);
	return handle_broadcast(s, conn, rq);
}

static void
on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
    enum MHD_RequestTerminationCode toe)
{
	struct api_server *s = cls;
	struct request *rq = *con_cls;
	uint64_t elapsed;

	if (rq == NULL)
		return;
	elapsed = api_now_us() - rq->start_us;
	api_metrics_request(rq->route, rq->status, elapsed);
	/* The key's name, never the key; status 0: no answer was sent. */
	nt_log_info("%s %s %u %.3fms client=%s key=%s%s", rq->method,
	    rq->path, rq->status, (double)elapsed / 1000.0, rq->client,
	    rq->key_name[0] ? rq->key_name : "-",
	    toe == MHD_REQUEST_TERMINATED_COMPLETED_OK ? "" :
	    " (connection ended early)");
	free(rq->body);
	free(rq);
	*con_cls = NULL;
	__atomic_fetch_sub(&s->in_flight, 1, __ATOMIC_RELAXED);
	api_watch_idle(s->watchdog, conn_watch(conn));
}

/*
 * Each TCP connection gets a deadline entry while it is open. CLOSED
 * comes before libmicrohttpd closes the descriptor, so the watchdog
 * never touches a number that a new connection may have been given.
 */
static void
on_connection(void *cls, struct MHD_Connection *conn, void **socket_context,
    enum MHD_ConnectionNotificationCode code)
{
	struct api_server *s = cls;
	const union MHD_ConnectionInfo *fdi, *ai;
	char peer[64] = "?";

	if (code == MHD_CONNECTION_NOTIFY_CLOSED) {
		api_watch_remove(s->watchdog, *socket_context);
		*socket_context = NULL;
		return;
	}
	fdi = MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CONNECTION_FD);
	ai = MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
	if (fdi == NULL)
		return;
	if (ai != NULL && ai->client_addr != NULL)
		nt_proxy_addr_text(ai->client_addr, peer, sizeof(peer));
	*socket_context = api_watch_add(s->watchdog, fdi->connect_fd, peer);
}

static void
mhd_log(void *cls, const char *fmt, va_list ap)
{
	char line[512];
	size_t n;

	vsnprintf(line, sizeof(line), fmt, ap);
	n = strlen(line);
	while (n > 0 && line[n - 1] == '\n')
		line[--n] = '\0';
	nt_log_info("libmicrohttpd: %s", line);
}

/* ---- lifecycle --------------------------------------------------------- */

static int
resolve(const struct api_config *cfg, struct sockaddr_storage *ss,
    char *err, size_t errlen)
{
	struct addrinfo hints = { .ai_socktype = SOCK_STREAM,
	    .ai_flags = AI_PASSIVE };
	struct addrinfo *res;
	char port[8];
	int rc;

	snprintf(port, sizeof(port), "%d", cfg->listen.port);
	rc = getaddrinfo(cfg->listen.host, port, &hints, &res);
	if (rc != 0) {
		snprintf(err, errlen, "cannot resolve %s: %s", cfg->listen.host,
		    gai_strerror(rc));
		return -1;
	}
	memcpy(ss, res->ai_addr, res->ai_addrlen);
	freeaddrinfo(res);
	return 0;
}

int
api_server_start(const struct api_config *cfg, struct api_auth *auth,
    struct api_server **out, char *err, size_t errlen)
{
	struct sockaddr_storage ss;
	struct api_server *s;
	unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_ITC |
	    MHD_USE_AUTO | MHD_USE_ERROR_LOG;

	memset(&ss, 0, sizeof(ss));
	if (resolve(cfg, &ss, err, errlen) < 0)
		return -1;
	if (ss.ss_family == AF_INET6)
		flags |= MHD_USE_IPv6;
	if ((s = calloc(1, sizeof(*s))) == NULL) {
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	s->cfg = cfg;
	s->auth = auth;
	if (api_watchdog_start(cfg->request_timeout_us, &s->watchdog, err,
	    errlen) < 0) {
		free(s);
		return -1;
	}
	s->mhd = MHD_start_daemon(flags, (uint16_t)cfg->listen.port, NULL, NULL,
	    on_request, s,
	    MHD_OPTION_EXTERNAL_LOGGER, mhd_log, NULL,
	    MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&ss,
	    MHD_OPTION_THREAD_POOL_SIZE, cfg->threads > 1 ? cfg->threads : 0u,
	    MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)cfg->connection_timeout_s,
	    MHD_OPTION_CONNECTION_LIMIT, (unsigned)cfg->max_connections,
	    MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)CONN_MEMORY,
	    MHD_OPTION_NOTIFY_COMPLETED, on_completed, s,
	    MHD_OPTION_NOTIFY_CONNECTION, on_connection, s,
	    MHD_OPTION_END);
	if (s->mhd == NULL) {
		api_watchdog_stop(s->watchdog);
		snprintf(err, errlen, "cannot listen on %s:%d (address in use or "
		    "not local?)", cfg->listen.host, cfg->listen.port);
		free(s);
		return -1;
	}
	*out = s;
	return 0;
}

void
api_server_quiesce(struct api_server *s)
{
	MHD_socket fd;

	__atomic_store_n(&s->draining, 1, __ATOMIC_RELAXED);
	fd = MHD_quiesce_daemon(s->mhd);
	if (fd != MHD_INVALID_SOCKET)
		close(fd);
}

unsigned
api_server_in_flight(const struct api_server *s)
{
	return __atomic_load_n(&s->in_flight, __ATOMIC_RELAXED);
}

void
api_server_stop(struct api_server *s)
{
	if (s == NULL)
		return;
	MHD_stop_daemon(s->mhd);
	api_watchdog_stop(s->watchdog);
	free(s);
}
