/*
 * The client JSON protocol; see proto.h.
 */
#include <stdlib.h>
#include <string.h>
#include <jansson.h>

#include "proto.h"

static const char *
string_member(json_t *obj, const char *key)
{
	json_t *v = json_object_get(obj, key);

	return json_is_string(v) ? json_string_value(v) : NULL;
}

static void
parse_channel(json_t *obj, struct ntws_req *req)
{
	const char *channel = string_member(obj, "channel");
	char err[128];

	if (channel == NULL || nt_channel_valid(channel, err, sizeof(err)) != 0 ||
	    strlen(channel) >= sizeof(req->channel)) {
		req->type = NTWS_REQ_INVALID;
		req->error = "invalid channel";
		return;
	}
	strcpy(req->channel, channel);
}

static void
parse_ack(json_t *obj, struct ntws_req *req)
{
	json_t *id = json_object_get(obj, "id");

	if (!json_is_string(id) || json_string_length(id) == 0 ||
	    json_string_length(id) > NTWS_ACK_ID_MAX ||
	    strlen(json_string_value(id)) != json_string_length(id)) {
		req->type = NTWS_REQ_INVALID;
		req->error = "invalid id";
		return;
	}
	strcpy(req->id, json_string_value(id));
}

void
ntws_proto_parse(const uint8_t *msg, size_t len, struct ntws_req *req)
{
	json_t *obj;
	const char *type;

	memset(req, 0, sizeof(*req));
	obj = json_loadb((const char *)msg, len, 0, NULL);
	if (!json_is_object(obj)) {
		req->error = "invalid JSON: expected an object";
	} else if ((type = string_member(obj, "type")) == NULL) {
		req->error = "missing type";
	} else if (strcmp(type, "ping") == 0) {
		req->type = NTWS_REQ_PING;
	} else if (strcmp(type, "subscribe") == 0) {
		req->type = NTWS_REQ_SUBSCRIBE;
		parse_channel(obj, req);
	} else if (strcmp(type, "unsubscribe") == 0) {
		req->type = NTWS_REQ_UNSUBSCRIBE;
		parse_channel(obj, req);
	} else if (strcmp(type, "ack") == 0) {
		req->type = NTWS_REQ_ACK;
		parse_ack(obj, req);
	} else {
		req->error = "unknown type";
	}
	json_decref(obj);
}

static char *
dump(json_t *obj, size_t *len)
{
	char *text;

	if (obj == NULL)
		return NULL;
	text = json_dumps(obj, JSON_COMPACT);
	json_decref(obj);
	if (text != NULL)
		*len = strlen(text);
	return text;
}

char *
ntws_proto_pong(size_t *len)
{
	char ts[NT_TIMESTAMP_LEN + 1];

	nt_timestamp_now(ts);
	return dump(json_pack("{s:s, s:s}", "type", "pong", "timestamp", ts),
	    len);
}

char *
ntws_proto_error(const char *reason, size_t *len)
{
	return dump(json_pack("{s:s, s:s}", "type", "error", "error", reason),
	    len);
}

char *
ntws_proto_error_channel(const char *reason, const char *channel,
    size_t *len)
{
	return dump(json_pack("{s:s, s:s, s:s}", "type", "error", "error",
	    reason, "channel", channel), len);
}

char *
ntws_proto_channel(int subscribed, const char *channel, size_t *len)
{
	return dump(json_pack("{s:s, s:s}", "type",
	    subscribed ? "subscribed" : "unsubscribed", "channel", channel), len);
}

char *
ntws_proto_resume(const char *since, int recovered, size_t *len)
{
	return dump(json_pack("{s:s, s:s, s:b}", "type", "resume", "since",
	    since, "recovered", recovered), len);
}
