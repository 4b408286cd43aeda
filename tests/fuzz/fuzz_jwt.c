/*
 * fuzz_jwt: nt_jwt_verify with an HS256 verifier on arbitrary tokens.
 * It must never crash, and must accept a token only when an independent
 * HMAC-SHA256 (OpenSSL) says the signature is right, the header names
 * HS256, and the token's sub is a valid user id; the strict verifier,
 * which requires exp and a maximum age, only when the verified claims
 * hold an exp and an iat within that age.
 *
 * The first input byte picks the mode: even, the rest is the token as
 * given; odd, the rest is HEADER 0xff PAYLOAD (JSON texts) that this
 * target encodes and signs itself, so that the claim checks behind the
 * signature are reached too.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "nt_jwt.h"
#include "nt_msg.h"

/* 32 bytes or more: nt_jwt refuses shorter HS256 secrets. */
#define SECRET "fuzz-secret-0123456789-0123456789"
#define MAX_AGE 3600
#define NOW    ((time_t)1764000000)  /* fixed: the corpus stays valid */
#define TOKEN_MAX (16 * 1024)

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static struct nt_jwt_verifier *verifier;
/*
 * The same secret, with iss and aud required, no leeway, exp required
 * and a maximum age of MAX_AGE.
 */
static struct nt_jwt_verifier *strict;

int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
	struct nt_jwt_config cfg = { .alg = "HS256", .leeway_s = 30 };
	char path[] = "/tmp/fuzz_jwt_secret.XXXXXX", err[256];
	int fd = mkstemp(path);

	(void)argc;
	(void)argv;
	if (fd < 0 || write(fd, SECRET "\n", sizeof(SECRET)) !=
	    (ssize_t)sizeof(SECRET)) {
		perror("fuzz_jwt: secret file");
		abort();
	}
	close(fd);
	cfg.key_file = path;
	if (nt_jwt_verifier_new(&cfg, &verifier, err, sizeof(err)) < 0) {
		fprintf(stderr, "fuzz_jwt: %s\n", err);
		abort();
	}
	cfg.issuer = "me";
	cfg.audience = "x";
	cfg.leeway_s = 0;
	cfg.require_exp = 1;
	cfg.max_age_s = MAX_AGE;
	if (nt_jwt_verifier_new(&cfg, &strict, err, sizeof(err)) < 0) {
		fprintf(stderr, "fuzz_jwt: %s\n", err);
		abort();
	}
	unlink(path);
	return 0;
}

/*
 * Unpadded base64url of n bytes into out (room for 4 * (n + 2) / 3 + 1
 * bytes); returns the length. libcrypto encodes the standard alphabet
 * with padding: translate it, drop the padding.
 */
static size_t
b64url(const unsigned char *in, size_t n, char *out)
{
	int len = EVP_EncodeBlock((unsigned char *)out, in, (int)n);
	int i;

	if (len < 0)
		abort();
	while (len > 0 && out[len - 1] == '=')
		len--;
	out[len] = '\0';
	for (i = 0; i < len; i++)
		if (out[i] == '+')
			out[i] = '-';
		else if (out[i] == '/')
			out[i] = '_';
	return (size_t)len;
}

/* The signature of the n bytes of signing input, base64url, into out. */
static void
sign(const char *input, size_t n, char out[64])
{
	unsigned char mac[EVP_MAX_MD_SIZE];
	unsigned int maclen = 0;

	if (HMAC(EVP_sha256(), SECRET, (int)strlen(SECRET),
	    (const unsigned char *)input, n, mac, &maclen) == NULL)
		abort();
	b64url(mac, maclen, out);
}

/* An accepted token must be one we would have signed ourselves. */
static void
check_accepted(const struct nt_jwt_verifier *v, const char *token,
    const char *user)
{
	const char *d1, *d2;
	char sig[64], user2[NT_USER_MAX + 1], err[256];

	d1 = strchr(token, '.');
	d2 = d1 != NULL ? strchr(d1 + 1, '.') : NULL;
	if (d2 == NULL)
		abort();
	sign(token, (size_t)(d2 - token), sig);
	if (strcmp(sig, d2 + 1) != 0) {
		fprintf(stderr, "fuzz_jwt: accepted a badly signed token\n");
		abort();
	}
	if (strlen(user) > NT_USER_MAX || nt_user_valid(user, NULL, 0) < 0)
		abort();
	if (nt_jwt_verify(v, token, NOW, user2, err, sizeof(err)) != 0 ||
	    strcmp(user, user2) != 0)
		abort();
}

/* What strict accepted must meet its lifetime rules. */
static void
check_lifetime(const json_t *claims)
{
	const json_t *exp = json_object_get(claims, "exp");
	const json_t *iat = json_object_get(claims, "iat");
	double e, i;

	if (!json_is_number(exp) || !json_is_number(iat)) {
		fprintf(stderr, "fuzz_jwt: strict accepted no exp or no iat\n");
		abort();
	}
	e = json_number_value(exp);
	i = json_number_value(iat);
	if (!(e > (double)NOW) || !(i <= (double)NOW) ||
	    !((double)NOW - i <= MAX_AGE) || !(e - i <= MAX_AGE)) {
		fprintf(stderr, "fuzz_jwt: strict accepted a token out of "
		    "its lifetime\n");
		abort();
	}
}

static void
verify_with(const struct nt_jwt_verifier *v, const char *token)
{
	char user[NT_USER_MAX + 1], err[256] = "";
	json_t *claims = NULL;

	memset(user, 0, sizeof(user));
	if (nt_jwt_verify_claims(v, token, NOW, user, &claims, err,
	    sizeof(err)) == 0) {
		check_accepted(v, token, user);
		if (v == strict)
			check_lifetime(claims);
		json_decref(claims);
	} else if (err[0] == '\0' || (strlen(token) >= 8 && strstr(err, token)))
		abort();  /* a reason is owed, and never quotes the token */
}

static void
verify(const char *token)
{
	verify_with(verifier, token);
	verify_with(strict, token);
}

/* A plain {"sub": valid} payload under the canonical header must pass. */
static int
must_accept(const char *hdr, size_t hlen, const char *pl, size_t plen)
{
	static const char canon[] = "{\"alg\":\"HS256\",\"typ\":\"JWT\"}";
	json_t *claims, *sub;
	int ok;

	if (hlen != sizeof(canon) - 1 || memcmp(hdr, canon, hlen) != 0)
		return 0;
	if (memchr(pl, '\0', plen) != NULL)
		return 0;
	claims = json_loadb(pl, plen, JSON_REJECT_DUPLICATES, NULL);
	sub = json_object_get(claims, "sub");
	ok = json_is_object(claims) && json_object_size(claims) == 1 &&
	    json_is_string(sub) && strlen(json_string_value(sub)) <= NT_USER_MAX &&
	    nt_user_valid(json_string_value(sub), NULL, 0) == 0;
	json_decref(claims);
	return ok;
}

static void
signed_token(const uint8_t *data, size_t size)
{
	const uint8_t *sep = memchr(data, 0xff, size);
	size_t hlen, plen, o;
	char *tok, sig[64], user[NT_USER_MAX + 1], err[256];

	if (sep == NULL)
		return;
	hlen = (size_t)(sep - data);
	plen = size - hlen - 1;
	tok = malloc(4 * (hlen + plen) / 3 + 4 + 2 + 64);
	if (tok == NULL)
		return;
	o = b64url(data, hlen, tok);
	tok[o++] = '.';
	o += b64url(sep + 1, plen, tok + o);
	sign(tok, o, sig);
	tok[o++] = '.';
	strcpy(tok + o, sig);
	verify(tok);
	if (must_accept((const char *)data, hlen, (const char *)sep + 1, plen) &&
	    nt_jwt_verify(verifier, tok, NOW, user, err, sizeof(err)) != 0) {
		fprintf(stderr, "fuzz_jwt: refused a good token: %s\n", err);
		abort();
	}
	free(tok);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *tok;

	if (size < 1 || size > TOKEN_MAX)
		return 0;
	if (data[0] & 1) {
		signed_token(data + 1, size - 1);
		return 0;
	}
	tok = malloc(size);
	if (tok == NULL)
		return 0;
	memcpy(tok, data + 1, size - 1);
	tok[size - 1] = '\0';
	verify(tok);
	free(tok);
	return 0;
}
