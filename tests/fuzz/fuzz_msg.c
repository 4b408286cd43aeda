/*
 * fuzz_msg: the message model on arbitrary bytes. The input is used
 * three ways: as a message read from Redis (nt_msg_decode, then an
 * encode/decode round trip), as a REST request body (json_loadb,
 * nt_msg_req_parse as a send and as a broadcast, nt_msg_build,
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
build_one(const struct nt_msg_req *req, const struct nt_limits *lim,
    int must_build)
{
	char err[256], *s;
	size_t len;
	json_t *msg, *back;

	err[0] = '\0';
	msg = nt_msg_build(req, lim, err, sizeof(err));
	if (msg == NULL) {
		/* What the strict parser accepts builds under the defaults
		 * (the fuzzer's inputs are far below 64k of content). */
		if (err[0] == '\0' || must_build)
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
	struct nt_msg_req req, req_many, req_all;
	json_t *obj, *many, *el;
	char field[64], err[256];
	size_t i;
	int r_send, r_all;

	nt_limits_default(&lim);
	obj = json_loadb((const char *)data, size, JSON_REJECT_DUPLICATES,
	    NULL);
	if (obj == NULL)
		return;
	r_send = nt_msg_req_parse(obj, NT_REQ_SEND, &req_many, &many, field,
	    sizeof(field), err, sizeof(err));
	r_all = nt_msg_req_parse(obj, NT_REQ_BROADCAST, &req_all, NULL, field,
	    sizeof(field), err, sizeof(err));
	/* A request says whom it is for, or is a broadcast: never both. */
	if (r_send == 0 && r_all == 0)
		abort();
	if (r_send != 0 && many != NULL)
		abort();
	if (r_all == 0) {
		if (req_all.target_user != NULL)
			abort();
		build_one(&req_all, &lim, 1);
		build_one(&req_all, &small, 0);
	}
	if (r_send == 0 && many == NULL) {
		if (req_many.target_user == NULL)
			abort();
		req = req_many;
		build_one(&req, &lim, 1);
		build_one(&req, &small, 0);
	}
	if (r_send == 0 && many != NULL) {
		if (!json_is_array(many) || req_many.target_user != NULL)
			abort();
		json_array_foreach(many, i, el) {
			if (i >= 4)
				break;
			if (!json_is_string(el))
				abort();
			req_many.target_user = json_string_value(el);
			build_one(&req_many, &lim, 1);
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
