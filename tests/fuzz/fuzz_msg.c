/*
 * fuzz_msg: the message model on arbitrary bytes. The input is used
 * three ways: as a message read from Redis (nt_msg_decode, then an
 * encode/decode round trip), as a REST request body (json_loadb,
 * nt_msg_req_from_json with and without target_users, nt_msg_build,
 * nt_msg_encode, and the result decoded back), and as a string whose
 * UTF-8 validity nt_utf8_valid and jansson must judge alike.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "nt_msg.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int
same_string(const char *a, const char *b)
{
	return (a == NULL && b == NULL) ||
	    (a != NULL && b != NULL && strcmp(a, b) == 0);
}

/* A message that decoded must encode, and decode again to its equal. */
static void
round_trip(const json_t *msg)
{
	char err[256];
	size_t len = 0;
	char *s = nt_msg_encode(msg, NULL, &len, err, sizeof(err));
	json_t *again;

	if (s == NULL || strlen(s) != len)
		abort();
	again = nt_msg_decode(s, len, err, sizeof(err));
	if (again == NULL || !json_equal(msg, again))
		abort();
	json_decref(again);
	free(s);
}

static void
check_decode(const uint8_t *data, size_t size)
{
	char err[256] = "";
	json_t *msg = nt_msg_decode((const char *)data, size, err, sizeof(err));

	if (msg == NULL) {
		if (err[0] == '\0')
			abort();
		return;
	}
	if (nt_msg_id(msg) == NULL)
		abort();
	(void)nt_msg_target_user(msg);
	(void)nt_msg_channel(msg);
	round_trip(msg);
	json_decref(msg);
}

/* Build from req under lim; what comes out must be a valid message. */
static void
build_one(const struct nt_msg_req *req, const struct nt_limits *lim)
{
	char err[256], *s;
	size_t len;
	json_t *msg, *back;

	err[0] = '\0';
	msg = nt_msg_build(req, lim, err, sizeof(err));
	if (msg == NULL) {
		if (err[0] == '\0')
			abort();
		return;
	}
	if ((req->target_user != NULL &&
	    nt_user_valid(req->target_user, NULL, 0) < 0) ||
	    (req->channel != NULL &&
	    nt_channel_valid(req->channel, NULL, 0) < 0))
		abort();
	s = nt_msg_encode(msg, lim, &len, err, sizeof(err));
	if (s == NULL) {
		json_decref(msg);
		return;
	}
	if (len > lim->max_message)
		abort();
	back = nt_msg_decode(s, len, err, sizeof(err));
	if (back == NULL || !json_equal(back, msg) ||
	    !same_string(nt_msg_target_user(back), req->target_user) ||
	    !same_string(nt_msg_channel(back), req->channel) ||
	    nt_msg_id(back) == NULL)
		abort();
	json_decref(back);
	free(s);
	json_decref(msg);
}

static void
check_request(const uint8_t *data, size_t size)
{
	static const struct nt_limits small = { 16, 256 };
	struct nt_limits lim;
	struct nt_msg_req req, req_many;
	json_t *obj, *many, *el;
	char err[256];
	size_t i;
	int r1, r2;

	nt_limits_default(&lim);
	obj = json_loadb((const char *)data, size, 0, NULL);
	if (obj == NULL)
		return;
	r1 = nt_msg_req_from_json(obj, &req, NULL, err, sizeof(err));
	r2 = nt_msg_req_from_json(obj, &req_many, &many, err, sizeof(err));
	/* Allowing many never refuses what a single request accepts. */
	if (r1 == 0 && (r2 != 0 || many != NULL))
		abort();
	if (r2 != 0 && many != NULL)
		abort();
	if (r1 == 0) {
		build_one(&req, &lim);
		build_one(&req, &small);
	}
	if (r2 == 0 && many != NULL) {
		if (!json_is_array(many) || req_many.target_user != NULL)
			abort();
		json_array_foreach(many, i, el) {
			if (i >= 4)
				break;
			if (!json_is_string(el))
				continue;
			req_many.target_user = json_string_value(el);
			build_one(&req_many, &lim);
		}
	}
	json_decref(obj);
}

/* nt_utf8_valid and jansson must agree on every byte string. */
static void
check_utf8(const uint8_t *data, size_t size)
{
	int ours = nt_utf8_valid((const char *)data, size) == 0;
	json_t *s = json_stringn((const char *)data, size);
	int theirs = s != NULL;

	json_decref(s);
	if (ours != theirs) {
		fprintf(stderr, "utf8 disagreement: nt_utf8_valid %s, "
		    "jansson %s\n", ours ? "accepts" : "refuses",
		    theirs ? "accepts" : "refuses");
		abort();
	}
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	check_utf8(data, size);
	check_decode(data, size);
	check_request(data, size);
	return 0;
}
