/*
 * Unit tests of nt_jwt. Tokens are minted here with libjwt's encoder (or
 * written by hand where libjwt would refuse, e.g. alg "none"); RSA and EC
 * key pairs are generated with the openssl CLI into a temporary directory
 * once per run, and the odd ones (too small, wrong curve) with libcrypto
 * in the test that needs them, so no key material lives in the
 * repository.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <cmocka.h>

#include <jwt.h>
#include <openssl/bio.h>
#include <openssl/evp.h>
#include <openssl/pem.h>

#include "nt_config.h"
#include "nt_jwt.h"

/* HS256 secrets: at least 32 bytes (RFC 7518 3.2), or nt_jwt refuses them. */
#define SECRET     "s3cret-s3cret-s3cret-s3cret-s3cret"
#define OTHER      "other-other-other-other-other-other"
#define OLD_SECRET "old-old-old-old-old-old-old-old-old"
#define NEW_SECRET "new-new-new-new-new-new-new-new-new"

static char tmpdir[] = "/tmp/nt_jwt_test.XXXXXX";
static time_t now;

/* Key pair files generated in group setup. */
static char rsa_priv[256], rsa_pub[256], ec_priv[256], ec_pub[256];
static char *rsa_priv_pem, *rsa_pub_pem, *ec_priv_pem;

static void
path_in_tmp(char *out, size_t n, const char *name)
{
	snprintf(out, n, "%s/%s", tmpdir, name);
}

static void
write_file(const char *path, const char *data, size_t len)
{
	FILE *f = fopen(path, "wb");

	assert_non_null(f);
	assert_int_equal(fwrite(data, 1, len, f), len);
	assert_int_equal(fclose(f), 0);
}

static char *
read_file(const char *path)
{
	char err[256];
	char *s = nt_file_read(path, 65536, NULL, err, sizeof(err));

	if (s == NULL)
		fprintf(stderr, "%s\n", err);
	return s;
}

static int
sh(const char *fmt, ...)
{
	char cmd[1024];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(cmd, sizeof(cmd), fmt, ap);
	va_end(ap);
	return system(cmd);
}

static int
group_setup(void **state)
{
	if (mkdtemp(tmpdir) == NULL)
		return -1;
	path_in_tmp(rsa_priv, sizeof(rsa_priv), "test-rsa-private.pem");
	path_in_tmp(rsa_pub, sizeof(rsa_pub), "test-rsa-public.pem");
	path_in_tmp(ec_priv, sizeof(ec_priv), "test-ec-private.pem");
	path_in_tmp(ec_pub, sizeof(ec_pub), "test-ec-public.pem");
	if (sh("openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 "
	    "-out %s 2>/dev/null && openssl pkey -in %s -pubout -out %s "
	    "2>/dev/null", rsa_priv, rsa_priv, rsa_pub) != 0)
		return -1;
	if (sh("openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 "
	    "-out %s 2>/dev/null && openssl pkey -in %s -pubout -out %s "
	    "2>/dev/null", ec_priv, ec_priv, ec_pub) != 0)
		return -1;
	rsa_priv_pem = read_file(rsa_priv);
	rsa_pub_pem = read_file(rsa_pub);
	ec_priv_pem = read_file(ec_priv);
	now = time(NULL);
	return rsa_priv_pem && rsa_pub_pem && ec_priv_pem ? 0 : -1;
}

static int
group_teardown(void **state)
{
	free(rsa_priv_pem);
	free(rsa_pub_pem);
	free(ec_priv_pem);
	sh("rm -rf %s", tmpdir);
	return 0;
}

/* A token with the given claims (a JSON object) signed by alg/key. */
static char *
mint(jwt_alg_t alg, const char *key, size_t keylen, const char *claims)
{
	jwt_t *jwt = NULL;
	char *tok;

	assert_int_equal(jwt_new(&jwt), 0);
	if (claims != NULL)
		assert_int_equal(jwt_add_grants_json(jwt, claims), 0);
	assert_int_equal(jwt_set_alg(jwt, alg, (const unsigned char *)key,
	    (int)keylen), 0);
	tok = jwt_encode_str(jwt);
	assert_non_null(tok);
	jwt_free(jwt);
	return tok;
}

static char *
mint_hs(const char *secret, const char *claims)
{
	return mint(JWT_ALG_HS256, secret, strlen(secret), claims);
}

/* An HS256 verifier from a secret written to a file. */
static struct nt_jwt_verifier *
hs_verifier(const char *secret, long leeway, const char *iss, const char *aud)
{
	struct nt_jwt_config cfg = { "HS256", NULL, iss, aud, leeway, 0, 0 };
	struct nt_jwt_verifier *v = NULL;
	char path[256], err[256];

	path_in_tmp(path, sizeof(path), "secret");
	write_file(path, secret, strlen(secret));
	cfg.key_file = path;
	if (nt_jwt_verifier_new(&cfg, &v, err, sizeof(err)) != 0)
		fail_msg("verifier_new: %s", err);
	return v;
}

/*
 * Verify and check the outcome; on failure, check that the reason says
 * why (want_reason substring) and quotes no part of the token.
 */
static void
expect(const struct nt_jwt_verifier *v, const char *tok, const char *user,
    const char *want_reason)
{
	char got[NT_USER_MAX + 1] = "", err[256] = "";
	int r = nt_jwt_verify(v, tok, now, got, err, sizeof(err));

	if (user != NULL) {
		if (r != 0)
			fail_msg("refused: %s", err);
		assert_string_equal(got, user);
		return;
	}
	assert_int_equal(r, -1);
	assert_true(err[0] != '\0');
	if (want_reason != NULL && strstr(err, want_reason) == NULL)
		fail_msg("reason \"%s\" lacks \"%s\"", err, want_reason);
	/* No piece of the token (header, claims, signature) in the error. */
	if (tok != NULL) {
		char *copy = strdup(tok), *part, *save = NULL;

		for (part = strtok_r(copy, ".", &save); part != NULL;
		    part = strtok_r(NULL, ".", &save))
			if (strlen(part) >= 8 && strstr(err, part) != NULL)
				fail_msg("error quotes the token: %s", err);
		free(copy);
	}
}

static char *
claims(const char *fmt, ...)
{
	static char buf[1024];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	return buf;
}

static void
valid_hs256_gives_sub(void **state)
{
	struct nt_jwt_verifier *v = hs_verifier(SECRET, 30, NULL, NULL);
	char *tok = mint_hs(SECRET, claims("{\"sub\":\"alice@example.com\","
	    "\"exp\":%ld}", (long)now + 600));

	expect(v, tok, "alice@example.com", NULL);
	free(tok);
	/* exp is optional (RFC 7519) when require_exp is off. */
	tok = mint_hs(SECRET, "{\"sub\":\"bob\"}");
	expect(v, tok, "bob", NULL);
	free(tok);
	nt_jwt_verifier_free(v);
}

/* The claims variant hands back the verified payload, and only then. */
static void
claims_returned_only_when_valid(void **state)
{
	struct nt_jwt_verifier *v = hs_verifier(SECRET, 30, NULL, NULL);
	char *tok = mint_hs(SECRET, "{\"sub\":\"carol\",\"scope\":\"a b\"}");
	char user[NT_USER_MAX + 1], err[256];
	json_t *c = NULL;

	assert_int_equal(nt_jwt_verify_claims(v, tok, now, user, &c, err,
	    sizeof(err)), 0);
	assert_non_null(c);
	assert_string_equal(json_string_value(json_object_get(c, "scope")), "a b");
	json_decref(c);
	free(tok);
	c = NULL;
	tok = mint_hs(OTHER, "{\"sub\":\"carol\"}");
	assert_int_equal(nt_jwt_verify_claims(v, tok, now, user, &c, err,
	    sizeof(err)), -1);
	assert_null(c);
	free(tok);
	nt_jwt_verifier_free(v);
}

static void
wrong_secret_refused(void **state)
{
	struct nt_jwt_verifier *v = hs_verifier(SECRET, 30, NULL, NULL);
	char *tok = mint_hs(OTHER, "{\"sub\":\"alice\"}");

	expect(v, tok, NULL, "signature");
	free(tok);
	nt_jwt_verifier_free(v);
}

static void
tampered_claims_refused(void **state)
{
	struct nt_jwt_verifier *v = hs_verifier(SECRET, 30, NULL, NULL);
	char *tok = mint_hs(SECRET, "{\"sub\":\"alice\"}");
	char *evil = mint_hs(OTHER, "{\"sub\":\"admin\"}");
	char buf[2048];
	char *p1 = strchr(tok, '.'), *p2 = strrchr(tok, '.');
	char *e1 = strchr(evil, '.'), *e2 = strrchr(evil, '.');

	/* alice's header and signature around admin's claims */
	snprintf(buf, sizeof(buf), "%.*s%.*s%s", (int)(p1 - tok), tok,
	    (int)(e2 - e1), e1, p2);
	expect(v, buf, NULL, "signature");
	free(tok);
	free(evil);
	nt_jwt_verifier_free(v);
}

static void
alg_none_refused(void **state)
{
	struct nt_jwt_verifier *v = hs_verifier(SECRET, 30, NULL, NULL);
	/* {"alg":"none","typ":"JWT"} . {"sub":"alice"} . (empty) */
	const char *none1 = "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0."
	    "eyJzdWIiOiJhbGljZSJ9.";
	/* {"alg":"None"} and a bogus signature */
	const char *none2 = "eyJhbGciOiJOb25lIn0.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJl";
	/* no alg at all */
	const char *none3 = "eyJ0eXAiOiJKV1QifQ.eyJzdWIiOiJhbGljZSJ9.";

	expect(v, none1, NULL, "none");
	expect(v, none2, NULL, "none");
	expect(v, none3, NULL, "algorithm");
	nt_jwt_verifier_free(v);
}

static void
other_hs_alg_refused(void **state)
{
	struct nt_jwt_verifier *v = hs_verifier(SECRET, 30, NULL, NULL);
	char *tok = mint(JWT_ALG_HS512, SECRET, strlen(SECRET), "{\"sub\":\"alice\"}");

	/* Same secret, right signature, but not the configured HS256. */
	expect(v, tok, NULL, "algorithm");
	free(tok);
	nt_jwt_verifier_free(v);
}

static void
critical_header_refused(void **state)
{
	struct nt_jwt_verifier *v = hs_verifier(SECRET, 30, NULL, NULL);
	jwt_t *jwt = NULL;
	char *tok;

	assert_int_equal(jwt_new(&jwt), 0);
	assert_int_equal(jwt_add_grant(jwt, "sub", "alice"), 0);
	assert_int_equal(jwt_add_headers_json(jwt,
	    "{\"crit\":[\"exp-ext\"],\"exp-ext\":1}"), 0);
	assert_int_equal(jwt_set_alg(jwt, JWT_ALG_HS256,
	    (const unsigned char *)SECRET, strlen(SECRET)), 0);
	tok = jwt_encode_str(jwt);
	assert_non_null(tok);
	jwt_free(jwt);
	/* Correctly signed, but asks for an extension nobody here knows. */
	expect(v, tok, NULL, "critical");
	free(tok);
	nt_jwt_verifier_free(v);
}

static struct nt_jwt_verifier *
pk_verifier(const char *alg, const char *path)
{
	struct nt_jwt_config cfg = { alg, path, NULL, NULL, 30, 0, 0 };
	struct nt_jwt_verifier *v = NULL;
	char err[256];

	if (nt_jwt_verifier_new(&cfg, &v, err, sizeof(err)) != 0)
		fail_msg("verifier_new %s: %s", alg, err);
	return v;
}

static void
rs256_key_confusion_refused(void **state)
{
	struct nt_jwt_verifier *v = pk_verifier("RS256", rsa_pub);
	/* The attack: HMAC with the (public) PEM text as the secret. */
	char *tok = mint(JWT_ALG_HS256, rsa_pub_pem, strlen(rsa_pub_pem),
	    "{\"sub\":\"admin\"}");
	jwt_t *jwt = NULL;

	/* libjwt alone accepts it, so only nt_jwt's pinning stops it. */
	assert_int_equal(jwt_decode(&jwt, tok, (const unsigned char *)
	    rsa_pub_pem, (int)strlen(rsa_pub_pem)), 0);
	jwt_free(jwt);
	expect(v, tok, NULL, "algorithm");
	free(tok);
	nt_jwt_verifier_free(v);
}

static void
rs256_valid_and_wrong_key(void **state)
{
	struct nt_jwt_verifier *v = pk_verifier("RS256", rsa_pub);
	char other_priv[256], *other_pem, *tok;

	tok = mint(JWT_ALG_RS256, rsa_priv_pem, strlen(rsa_priv_pem),
	    claims("{\"sub\":\"carol\",\"exp\":%ld}", (long)now + 60));
	expect(v, tok, "carol", NULL);
	free(tok);

	path_in_tmp(other_priv, sizeof(other_priv), "test-rsa-other.pem");
	assert_int_equal(sh("openssl genpkey -algorithm RSA -pkeyopt "
	    "rsa_keygen_bits:2048 -out %s 2>/dev/null", other_priv), 0);
	other_pem = read_file(other_priv);
	assert_non_null(other_pem);
	tok = mint(JWT_ALG_RS256, other_pem, strlen(other_pem),
	    "{\"sub\":\"carol\"}");
	expect(v, tok, NULL, "signature");
	free(tok);
	free(other_pem);
	nt_jwt_verifier_free(v);
}

static void
es256_valid_and_rs_token_refused(void **state)
{
	struct nt_jwt_verifier *v = pk_verifier("ES256", ec_pub);
	char *tok;

	tok = mint(JWT_ALG_ES256, ec_priv_pem, strlen(ec_priv_pem),
	    "{\"sub\":\"dave\"}");
	expect(v, tok, "dave", NULL);
	free(tok);
	tok = mint(JWT_ALG_RS256, rsa_priv_pem, strlen(rsa_priv_pem),
	    "{\"sub\":\"dave\"}");
	expect(v, tok, NULL, "algorithm");
	free(tok);
	nt_jwt_verifier_free(v);
}

static void
expired_refused_within_leeway_accepted(void **state)
{
	struct nt_jwt_verifier *v = hs_verifier(SECRET, 30, NULL, NULL);
	struct nt_jwt_verifier *strict = hs_verifier(SECRET, 0, NULL, NULL);
	char *old = mint_hs(SECRET, claims("{\"sub\":\"a\",\"exp\":%ld}",
	    (long)now - 100));
	char *recent = mint_hs(SECRET, claims("{\"sub\":\"a\",\"exp\":%ld}",
	    (long)now - 10));
	char *at_now = mint_hs(SECRET, claims("{\"sub\":\"a\",\"exp\":%ld}",
	    (long)now));
	char *frac = mint_hs(SECRET, claims("{\"sub\":\"a\",\"exp\":%ld.5}",
	    (long)now + 100));

	expect(v, old, NULL, "expired");
	expect(v, recent, "a", NULL);        /* 10 s late, 30 s leeway */
	expect(strict, recent, NULL, "expired");
	expect(strict, at_now, NULL, "expired");  /* exp is exclusive */
	expect(strict, frac, "a", NULL);     /* a fractional NumericDate */
	free(old);
	free(recent);
	free(at_now);
	free(frac);
	nt_jwt_verifier_free(v);
	nt_jwt_verifier_free(strict);
}

static void
nbf_in_future_refused_within_leeway_accepted(void **state)
{
	struct nt_jwt_verifier *v = hs_verifier(SECRET, 30, NULL, NULL);
	struct nt_jwt_verifier *strict = hs_verifier(SECRET, 0, NULL, NULL);
	char *later = mint_hs(SECRET, claims("{\"sub\":\"a\",\"nbf\":%ld}",
	    (long)now + 100));
	char *soon = mint_hs(SECRET, claims("{\"sub\":\"a\",\"nbf\":%ld}",
	    (long)now + 10));

	expect(v, later, NULL, "nbf");
	expect(v, soon, "a", NULL);
	expect(strict, soon, NULL, "nbf");
	free(later);
	free(soon);
	nt_jwt_verifier_free(v);
	nt_jwt_verifier_free(strict);
}

static void
non_numeric_dates_refused(void **state)
{
	struct nt_jwt_verifier *v = hs_verifier(SECRET, 30, NULL, NULL);
	char *e = mint_hs(SECRET, "{\"sub\":\"a\",\"exp\":\"9999999999\"}");
	char *n = mint_hs(SECRET, "{\"sub\":\"a\",\"nbf\":null}");

	expect(v, e, NULL, "exp");
	expect(v, n, NULL, "nbf");
	free(e);
	free(n);
	nt_jwt_verifier_free(v);
}

static void
bad_sub_refused(void **state)
{
	struct nt_jwt_verifier *v = hs_verifier(SECRET, 30, NULL, NULL);
	static const char *bad[] = {
		"{\"name\":\"alice\"}",          /* missing */
		"{\"sub\":42}",                  /* not a string */
		"{\"sub\":[\"alice\"]}",
		"{\"sub\":\"\"}",                /* empty */
		"{\"sub\":\"al ice\"}",          /* invalid characters */
		"{\"sub\":\"a/b\"}",
		"{\"sub\":\"\\u00e9l\\u00e8ve\"}",
	};
	char longsub[300], *tok;
	size_t i;

	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		tok = mint_hs(SECRET, bad[i]);
		expect(v, tok, NULL, "sub");
		free(tok);
	}
	memset(longsub, 'x', sizeof(longsub));
	longsub[NT_USER_MAX + 1] = '\0';  /* one byte over */
	tok = mint_hs(SECRET, claims("{\"sub\":\"%s\"}", longsub));
	expect(v, tok, NULL, "sub");
	free(tok);
	longsub[NT_USER_MAX] = '\0';      /* exactly the maximum */
	tok = mint_hs(SECRET, claims("{\"sub\":\"%s\"}", longsub));
	expect(v, tok, longsub, NULL);
	free(tok);
	nt_jwt_verifier_free(v);
}

static void
issuer_and_audience_checked(void **state)
{
	struct nt_jwt_verifier *v = hs_verifier(SECRET, 30, "https://auth.example",
	    "notifyd");
	struct nt_jwt_verifier *open = hs_verifier(SECRET, 30, NULL, NULL);
	struct { const char *claims; const char *user; const char *why; } c[] = {
		{ "{\"sub\":\"a\",\"iss\":\"https://auth.example\","
		  "\"aud\":\"notifyd\"}", "a", NULL },
		{ "{\"sub\":\"a\",\"iss\":\"https://auth.example\","
		  "\"aud\":[\"other\",\"notifyd\"]}", "a", NULL },
		{ "{\"sub\":\"a\",\"iss\":\"https://evil.example\","
		  "\"aud\":\"notifyd\"}", NULL, "issuer" },
		{ "{\"sub\":\"a\",\"aud\":\"notifyd\"}", NULL, "issuer" },
		{ "{\"sub\":\"a\",\"iss\":\"https://auth.example\","
		  "\"aud\":\"other\"}", NULL, "audience" },
		{ "{\"sub\":\"a\",\"iss\":\"https://auth.example\","
		  "\"aud\":[\"other\"]}", NULL, "audience" },
		{ "{\"sub\":\"a\",\"iss\":\"https://auth.example\"}", NULL,
		  "audience" },
		{ "{\"sub\":\"a\",\"iss\":\"https://auth.example\","
		  "\"aud\":7}", NULL, "audience" },
	};
	size_t i;
	char *tok;

	for (i = 0; i < sizeof(c) / sizeof(c[0]); i++) {
		tok = mint_hs(SECRET, c[i].claims);
		expect(v, tok, c[i].user, c[i].why);
		/* Unconfigured iss/aud are not checked. */
		expect(open, tok, "a", NULL);
		free(tok);
	}
	nt_jwt_verifier_free(v);
	nt_jwt_verifier_free(open);
}

static void
garbage_tokens_refused(void **state)
{
	struct nt_jwt_verifier *v = hs_verifier(SECRET, 30, NULL, NULL);
	static const char *bad[] = {
		"", "garbage", "a.b.c", "...", ".eyJzdWIiOiJhIn0.",
		"eyJhbGciOiJIUzI1NiJ9",                 /* header only */
		"eyJhbGciOiJIUzI1NiJ9.",
		"eyJhbGciOiJIUzI1NiJ9.!!!.abc",
		"bm90IGpzb24.eyJzdWIiOiJhIn0.abc",      /* header not JSON */
		"WyJIUzI1NiJd.eyJzdWIiOiJhIn0.abc",     /* header an array */
		"eyJhbGciOiJIUzI1NiJ9.bm90IGpzb24.abc",
	};
	char *huge;
	size_t i;

	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		expect(v, bad[i], NULL, NULL);
	expect(v, NULL, NULL, "no token");
	huge = malloc(100001);
	assert_non_null(huge);
	memset(huge, 'A', 100000);
	huge[100000] = '\0';
	huge[30] = '.';
	huge[60] = '.';
	expect(v, huge, NULL, "too long");
	free(huge);
	nt_jwt_verifier_free(v);
}

static int
try_new(const char *alg, const char *path, char *err, size_t errlen)
{
	struct nt_jwt_config cfg = { alg, path, NULL, NULL, 30, 0, 0 };
	struct nt_jwt_verifier *v = NULL;
	int r = nt_jwt_verifier_new(&cfg, &v, err, errlen);

	assert_true(r == 0 ? v != NULL : v == NULL);
	nt_jwt_verifier_free(v);
	return r;
}

static void
bad_configs_refused(void **state)
{
	char path[256], err[256];

	path_in_tmp(path, sizeof(path), "empty");
	write_file(path, "", 0);
	assert_int_equal(try_new("HS256", path, err, sizeof(err)), -1);
	assert_non_null(strstr(err, "empty"));
	assert_int_equal(try_new("RS256", path, err, sizeof(err)), -1);
	/* A lone newline is stripped, leaving an empty secret. */
	write_file(path, "\n", 1);
	assert_int_equal(try_new("HS256", path, err, sizeof(err)), -1);
	assert_non_null(strstr(err, "empty"));

	path_in_tmp(path, sizeof(path), "missing-file");
	assert_int_equal(try_new("HS256", path, err, sizeof(err)), -1);
	assert_int_equal(try_new("HS256", NULL, err, sizeof(err)), -1);
	assert_int_equal(try_new("HS256", "", err, sizeof(err)), -1);

	assert_int_equal(try_new("none", rsa_pub, err, sizeof(err)), -1);
	assert_int_equal(try_new("PS256", rsa_pub, err, sizeof(err)), -1);
	assert_int_equal(try_new(NULL, rsa_pub, err, sizeof(err)), -1);

	/* Keys that do not suit the algorithm. */
	assert_int_equal(try_new("RS256", ec_pub, err, sizeof(err)), -1);
	assert_int_equal(try_new("ES256", rsa_pub, err, sizeof(err)), -1);
	assert_int_equal(try_new("ES384", ec_pub, err, sizeof(err)), -1);
	assert_int_equal(try_new("RS256", rsa_priv, err, sizeof(err)), -1);
	assert_non_null(strstr(err, "private"));
	assert_int_equal(try_new("HS256", rsa_pub, err, sizeof(err)), -1);
	path_in_tmp(path, sizeof(path), "secret-as-pem");
	write_file(path, "not a pem", 9);
	assert_int_equal(try_new("RS256", path, err, sizeof(err)), -1);

	/* The suitable ones load. */
	assert_int_equal(try_new("RS256", rsa_pub, err, sizeof(err)), 0);
	assert_int_equal(try_new("rs512", rsa_pub, err, sizeof(err)), 0);
	assert_int_equal(try_new("ES256", ec_pub, err, sizeof(err)), 0);
}

static void
secret_file_trailing_newline_stripped(void **state)
{
	struct nt_jwt_verifier *v = hs_verifier(SECRET "\n", 30, NULL, NULL);
	struct nt_jwt_verifier *crlf = hs_verifier(SECRET "\r\n", 30, NULL, NULL);
	struct nt_jwt_verifier *two = hs_verifier(SECRET "\n\n", 30, NULL, NULL);
	char *tok = mint_hs(SECRET, "{\"sub\":\"a\"}");
	char *tok_nl = mint_hs(SECRET "\n", "{\"sub\":\"a\"}");

	expect(v, tok, "a", NULL);
	expect(crlf, tok, "a", NULL);
	/* Only one line ending goes: the rest is part of the secret. */
	expect(two, tok, NULL, "signature");
	expect(two, tok_nl, "a", NULL);
	free(tok);
	free(tok_nl);
	nt_jwt_verifier_free(v);
	nt_jwt_verifier_free(crlf);
	nt_jwt_verifier_free(two);
}

static void
reload_switches_key_and_keeps_old_on_failure(void **state)
{
	struct nt_jwt_verifier *v = hs_verifier(OLD_SECRET, 30, NULL, NULL);
	char path[256], err[256];
	char *tok_old = mint_hs(OLD_SECRET, "{\"sub\":\"a\"}");
	char *tok_new = mint_hs(NEW_SECRET, "{\"sub\":\"a\"}");

	path_in_tmp(path, sizeof(path), "secret");
	write_file(path, NEW_SECRET "\n", strlen(NEW_SECRET) + 1);
	assert_int_equal(nt_jwt_verifier_reload(v, err, sizeof(err)), 0);
	expect(v, tok_new, "a", NULL);
	expect(v, tok_old, NULL, "signature");

	write_file(path, "", 0);
	assert_int_equal(nt_jwt_verifier_reload(v, err, sizeof(err)), -1);
	expect(v, tok_new, "a", NULL);
	unlink(path);
	assert_int_equal(nt_jwt_verifier_reload(v, err, sizeof(err)), -1);
	expect(v, tok_new, "a", NULL);
	free(tok_old);
	free(tok_new);
	nt_jwt_verifier_free(v);
}

/*
 * A token minted with the verifier's own secret (read from a file with a
 * trailing newline, as `echo secret > file` leaves) carries sub, iat,
 * exp = iat + ttl, iss and aud, and passes the verifier until exp.
 */
static void
issued_token_round_trips(void **state)
{
	struct nt_jwt_verifier *v = hs_verifier(SECRET "\n", 0, "me", "them");
	struct nt_jwt_verifier *bare = hs_verifier(SECRET, 0, "me", "them");
	struct nt_jwt_verifier *other = hs_verifier(OTHER "\n", 0, "me", "them");
	char user[NT_USER_MAX + 1], err[256], *tok = NULL;
	json_t *c = NULL;

	if (nt_jwt_issue_hs(v, "alice@example.com", now, 3600, &tok, err,
	    sizeof(err)) != 0)
		fail_msg("issue: %s", err);
	assert_int_equal(nt_jwt_verify_claims(v, tok, now, user, &c, err,
	    sizeof(err)), 0);
	assert_string_equal(user, "alice@example.com");
	assert_int_equal(json_integer_value(json_object_get(c, "iat")), now);
	assert_int_equal(json_integer_value(json_object_get(c, "exp")),
	    now + 3600);
	assert_string_equal(json_string_value(json_object_get(c, "iss")), "me");
	assert_string_equal(json_string_value(json_object_get(c, "aud")), "them");
	json_decref(c);
	/* The newline was not signed with: a verifier of the bare secret agrees. */
	expect(bare, tok, "alice@example.com", NULL);
	expect(other, tok, NULL, "signature");
	assert_int_equal(nt_jwt_verify(v, tok, now + 3599, user, err,
	    sizeof(err)), 0);
	assert_int_equal(nt_jwt_verify(v, tok, now + 3600, user, err,
	    sizeof(err)), -1);
	assert_non_null(strstr(err, "expired"));
	free(tok);
	nt_jwt_verifier_free(v);
	nt_jwt_verifier_free(bare);
	nt_jwt_verifier_free(other);
}

/* Only an HMAC secret signs; a bad user id or lifetime mints nothing. */
static void
issue_refuses_public_keys_and_bad_input(void **state)
{
	struct nt_jwt_config cfg = { "RS256", rsa_pub, NULL, NULL, 30, 0, 0 };
	struct nt_jwt_verifier *rs = NULL, *v = hs_verifier(SECRET, 30,
	    NULL, NULL);
	char err[256], *tok = NULL;

	assert_int_equal(nt_jwt_verifier_new(&cfg, &rs, err, sizeof(err)), 0);
	assert_int_equal(nt_jwt_issue_hs(rs, "alice", now, 60, &tok, err,
	    sizeof(err)), -1);
	assert_null(tok);
	assert_non_null(strstr(err, "private key"));
	assert_int_equal(nt_jwt_issue_hs(v, "bad user", now, 60, &tok, err,
	    sizeof(err)), -1);
	assert_null(tok);
	assert_int_equal(nt_jwt_issue_hs(v, "alice", now, 0, &tok, err,
	    sizeof(err)), -1);
	assert_null(tok);
	nt_jwt_verifier_free(rs);
	nt_jwt_verifier_free(v);
}

/* ---- token lifetime ---------------------------------------------------- */

static struct nt_jwt_verifier *
life_verifier(long leeway, int require_exp, long max_age)
{
	struct nt_jwt_config cfg = { "HS256", NULL, NULL, NULL, leeway,
	    require_exp, max_age };
	struct nt_jwt_verifier *v = NULL;
	char path[256], err[512];

	path_in_tmp(path, sizeof(path), "life-secret");
	write_file(path, SECRET, strlen(SECRET));
	cfg.key_file = path;
	if (nt_jwt_verifier_new(&cfg, &v, err, sizeof(err)) != 0)
		fail_msg("verifier_new: %s", err);
	return v;
}

static void
no_exp_refused_when_required(void **state)
{
	struct nt_jwt_verifier *req = life_verifier(30, 1, 0);
	struct nt_jwt_verifier *opt = life_verifier(30, 0, 0);
	char *bare = mint_hs(SECRET, "{\"sub\":\"a\"}");
	char *with = mint_hs(SECRET, claims("{\"sub\":\"a\",\"exp\":%ld}",
	    (long)now + 60));

	expect(req, bare, NULL, "token has no exp claim");
	expect(req, with, "a", NULL);
	expect(opt, bare, "a", NULL);
	expect(opt, with, "a", NULL);
	free(bare);
	free(with);
	nt_jwt_verifier_free(req);
	nt_jwt_verifier_free(opt);
}

#define NO_EXP LONG_MIN

/*
 * --max-token-age 1h with a 30 s leeway, exp not required: iat is
 * now - age, exp now + left (NO_EXP: none).
 */
static void
max_age_checks_age_and_lifetime(void **state)
{
	struct nt_jwt_verifier *v = life_verifier(30, 0, 3600);
	struct nt_jwt_verifier *off = life_verifier(30, 0, 0);
	struct { long age, left; const char *why; } c[] = {
		{ 100, 600, NULL },
		{ 3600, NO_EXP, NULL },
		{ 3600 + 20, NO_EXP, NULL },    /* old, within the leeway */
		{ 3600 + 31, NO_EXP, "older" },
		{ 7200, NO_EXP, "older" },
		{ 7200, -1, "older" },          /* minted for 2 h: too old */
		{ 0, 3600, NULL },              /* exactly the maximum life */
		{ 0, 3601, "lifetime" },
		{ 0, 7200, "lifetime" },        /* minted to live 2 h */
		{ -20, 600, NULL },             /* future iat within leeway */
		{ -100, NO_EXP, "future" },
	};
	char *tok;
	size_t i;

	for (i = 0; i < sizeof(c) / sizeof(c[0]); i++) {
		if (c[i].left == NO_EXP)
			tok = mint_hs(SECRET, claims("{\"sub\":\"a\","
			    "\"iat\":%ld}", (long)now - c[i].age));
		else
			tok = mint_hs(SECRET, claims("{\"sub\":\"a\","
			    "\"iat\":%ld,\"exp\":%ld}", (long)now - c[i].age,
			    (long)now + c[i].left));
		expect(v, tok, c[i].why == NULL ? "a" : NULL, c[i].why);
		/* With the maximum age off, only exp matters. */
		expect(off, tok, "a", NULL);
		free(tok);
	}
	nt_jwt_verifier_free(v);
	nt_jwt_verifier_free(off);
}

static void
max_age_needs_iat(void **state)
{
	struct nt_jwt_verifier *v = life_verifier(30, 1, 3600);
	struct nt_jwt_verifier *no_exp = life_verifier(30, 0, 3600);
	char *none = mint_hs(SECRET, claims("{\"sub\":\"a\",\"exp\":%ld}",
	    (long)now + 60));
	char *str = mint_hs(SECRET, claims("{\"sub\":\"a\",\"iat\":\"%ld\","
	    "\"exp\":%ld}", (long)now, (long)now + 60));
	char *iat_only = mint_hs(SECRET, claims("{\"sub\":\"a\",\"iat\":%ld}",
	    (long)now - 60));
	char *stale = mint_hs(SECRET, claims("{\"sub\":\"a\",\"iat\":%ld}",
	    (long)now - 7200));

	expect(v, none, NULL, "no iat");
	expect(v, str, NULL, "iat");
	/* Without exp required, the age alone bounds the token. */
	expect(no_exp, iat_only, "a", NULL);
	expect(no_exp, stale, NULL, "older");
	expect(v, iat_only, NULL, "no exp");
	free(none);
	free(str);
	free(iat_only);
	free(stale);
	nt_jwt_verifier_free(v);
	nt_jwt_verifier_free(no_exp);
}

static void
issue_refuses_ttl_beyond_max_age(void **state)
{
	struct nt_jwt_verifier *v = life_verifier(0, 1, 3600);
	char err[256], *tok = NULL;

	assert_int_equal(nt_jwt_issue_hs(v, "a", now, 3601, &tok, err,
	    sizeof(err)), -1);
	assert_null(tok);
	assert_non_null(strstr(err, "maximum token age"));
	assert_int_equal(nt_jwt_issue_hs(v, "a", now, 3600, &tok, err,
	    sizeof(err)), 0);
	expect(v, tok, "a", NULL);
	free(tok);
	nt_jwt_verifier_free(v);
}

static void
claims_exp_reads_exp(void **state)
{
	struct { const char *json; int rc; time_t exp; } c[] = {
		{ "{\"exp\":1700000000}", 0, 1700000000 },
		{ "{\"exp\":1700000000.9}", 0, 1700000000 },
		{ "{\"exp\":-1.5}", 0, -2 },
		{ "{\"sub\":\"a\"}", -1, 0 },
		{ "{\"exp\":\"1700000000\"}", -1, 0 },
		{ "{\"exp\":1e300}", -1, 0 },
	};
	json_t *j;
	time_t exp;
	size_t i;

	for (i = 0; i < sizeof(c) / sizeof(c[0]); i++) {
		j = json_loads(c[i].json, 0, NULL);
		assert_non_null(j);
		exp = 12345;
		assert_int_equal(nt_jwt_claims_exp(j, &exp), c[i].rc);
		assert_int_equal(exp, c[i].rc == 0 ? c[i].exp : 12345);
		json_decref(j);
	}
}

/* ---- key checks -------------------------------------------------------- */

/* A secret of n bytes ("n\n" when nl) for alg: try_new's verdict. */
static int
try_secret(const char *alg, size_t n, int nl, char *err, size_t errlen)
{
	char path[256], buf[128];

	assert_true(n + 1 < sizeof(buf));
	memset(buf, 'z', n);
	buf[n] = '\n';
	path_in_tmp(path, sizeof(path), "len-secret");
	write_file(path, buf, n + (nl ? 1 : 0));
	return try_new(alg, path, err, errlen);
}

static void
hs_secret_shorter_than_hash_refused(void **state)
{
	struct { const char *alg; size_t need; } c[] = {
		{ "HS256", 32 }, { "HS384", 48 }, { "HS512", 64 },
	};
	char err[512], want[64], path[256];
	size_t i;

	for (i = 0; i < sizeof(c) / sizeof(c[0]); i++) {
		assert_int_equal(try_secret(c[i].alg, c[i].need - 1, 0, err,
		    sizeof(err)), -1);
		snprintf(want, sizeof(want), "%zu bytes, needs at least %zu",
		    c[i].need - 1, c[i].need);
		if (strstr(err, want) == NULL)
			fail_msg("\"%s\" lacks \"%s\"", err, want);
		assert_non_null(strstr(err, "/dev/urandom"));
		/* The stripped newline is not part of the secret. */
		assert_int_equal(try_secret(c[i].alg, c[i].need - 1, 1, err,
		    sizeof(err)), -1);
		assert_int_equal(try_secret(c[i].alg, c[i].need, 0, err,
		    sizeof(err)), 0);
		assert_int_equal(try_secret(c[i].alg, c[i].need, 1, err,
		    sizeof(err)), 0);
	}
	/* The command the reason gives makes a file that passes. */
	path_in_tmp(path, sizeof(path), "hint-secret");
	assert_int_equal(sh("head -c 64 /dev/urandom | base64 -w0 > %s",
	    path), 0);
	assert_int_equal(try_new("HS512", path, err, sizeof(err)), 0);
}

static void
reload_refuses_short_secret(void **state)
{
	struct nt_jwt_verifier *v = hs_verifier(SECRET, 30, NULL, NULL);
	char path[256], err[512], *tok = mint_hs(SECRET, "{\"sub\":\"a\"}");

	path_in_tmp(path, sizeof(path), "secret");
	write_file(path, "short\n", 6);
	assert_int_equal(nt_jwt_verifier_reload(v, err, sizeof(err)), -1);
	assert_non_null(strstr(err, "5 bytes"));
	expect(v, tok, "a", NULL);
	free(tok);
	nt_jwt_verifier_free(v);
}

/* Write pk's public (or private) half as PEM to tmpdir/name. */
static void
write_pem(EVP_PKEY *pk, int private, const char *name, char *path,
    size_t n)
{
	FILE *f;

	path_in_tmp(path, n, name);
	f = fopen(path, "w");
	assert_non_null(f);
	if (private)
		assert_int_equal(PEM_write_PrivateKey(f, pk, NULL, NULL, 0,
		    NULL, NULL), 1);
	else
		assert_int_equal(PEM_write_PUBKEY(f, pk), 1);
	assert_int_equal(fclose(f), 0);
}

static void
expect_refused(const char *alg, const char *path, const char *want)
{
	char err[512];

	assert_int_equal(try_new(alg, path, err, sizeof(err)), -1);
	if (strstr(err, want) == NULL)
		fail_msg("%s: \"%s\" lacks \"%s\"", alg, err, want);
}

static void
rsa_key_under_2048_bits_refused(void **state)
{
	EVP_PKEY *small = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)1024);
	char path[256], err[512];

	assert_non_null(small);
	write_pem(small, 0, "rsa1024.pem", path, sizeof(path));
	expect_refused("RS256", path, "1024 bits");
	expect_refused("RS512", path, "at least 2048");
	assert_int_equal(try_new("RS256", rsa_pub, err, sizeof(err)), 0);
	EVP_PKEY_free(small);
}

static void
ec_key_must_be_on_the_algorithms_curve(void **state)
{
	EVP_PKEY *p384 = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-384");
	EVP_PKEY *ed = EVP_PKEY_Q_keygen(NULL, NULL, "ED25519");
	char path[256], priv[256], err[512], *priv_pem, *tok;
	struct nt_jwt_verifier *v;

	assert_non_null(p384);
	assert_non_null(ed);
	write_pem(p384, 0, "p384.pem", path, sizeof(path));
	expect_refused("ES256", path, "P-256");
	expect_refused("ES512", path, "secp384r1");
	expect_refused("RS256", path, "RSA");
	/* On its own curve it loads and verifies. */
	v = pk_verifier("ES384", path);
	write_pem(p384, 1, "p384-private.pem", priv, sizeof(priv));
	priv_pem = read_file(priv);
	assert_non_null(priv_pem);
	tok = mint(JWT_ALG_ES384, priv_pem, strlen(priv_pem),
	    "{\"sub\":\"eve\"}");
	expect(v, tok, "eve", NULL);
	free(tok);
	free(priv_pem);
	nt_jwt_verifier_free(v);

	write_pem(ed, 0, "ed25519.pem", path, sizeof(path));
	expect_refused("ES256", path, "EC public key");
	expect_refused("RS256", path, "RSA");
	expect_refused("ES256", rsa_pub, "EC public key");
	assert_int_equal(try_new("ES256", ec_pub, err, sizeof(err)), 0);
	EVP_PKEY_free(p384);
	EVP_PKEY_free(ed);
}

static void
private_key_pem_refused(void **state)
{
	expect_refused("RS256", rsa_priv, "this is a private key; give the "
	    "public key (openssl pkey -pubout)");
	expect_refused("ES256", ec_priv, "this is a private key");
}

static void
garbage_pem_refused(void **state)
{
	char path[256];
	static const struct { const char *text, *why; } c[] = {
		{ "not a pem at all\n", "not a PEM public key" },
		{ "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n",
		  "unreadable" },
		{ "-----BEGIN PUBLIC KEY-----\n!!!!\n-----END PUBLIC KEY-----\n",
		  "not a PEM public key" },
		{ "-----BEGIN PUBLIC KEY-----\nMIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8A\n",
		  "not a PEM public key" },  /* cut short */
		{ "-----BEGIN FOO-----\nAAAA\n-----END FOO-----\n", "PEM FOO" },
	};
	size_t i;

	path_in_tmp(path, sizeof(path), "garbage.pem");
	for (i = 0; i < sizeof(c) / sizeof(c[0]); i++) {
		write_file(path, c[i].text, strlen(c[i].text));
		expect_refused("RS256", path, c[i].why);
		expect_refused("ES256", path, c[i].why);
	}
}

/* A PKCS#1 "RSA PUBLIC KEY" is parsed too, and verifies as the SPKI one. */
static void
pkcs1_rsa_public_key_accepted(void **state)
{
	char path[256], *tok;
	struct nt_jwt_verifier *v;

	path_in_tmp(path, sizeof(path), "rsa-pkcs1.pem");
	assert_int_equal(sh("openssl rsa -pubin -in %s -RSAPublicKey_out "
	    "-out %s 2>/dev/null", rsa_pub, path), 0);
	v = pk_verifier("RS256", path);
	tok = mint(JWT_ALG_RS256, rsa_priv_pem, strlen(rsa_priv_pem),
	    "{\"sub\":\"frank\"}");
	expect(v, tok, "frank", NULL);
	free(tok);
	nt_jwt_verifier_free(v);
}

/* ---- base64url --------------------------------------------------------- */

static void
b64url_known_answers(void **state)
{
	/* RFC 4648 10, plus bytes that use the url alphabet's - and _. */
	static const struct { const char *in; const char *out; size_t n; } c[] = {
		{ "", "", 0 },
		{ "Zg==", "f", 1 }, { "Zg", "f", 1 },
		{ "Zm8=", "fo", 2 }, { "Zm8", "fo", 2 },
		{ "Zm9v", "foo", 3 },
		{ "Zm9vYg==", "foob", 4 }, { "Zm9vYg", "foob", 4 },
		{ "Zm9vYmE=", "fooba", 5 }, { "Zm9vYmE", "fooba", 5 },
		{ "Zm9vYmFy", "foobar", 6 },
		{ "-_8", "\xfb\xff", 2 }, { "-_8=", "\xfb\xff", 2 },
		{ "___-", "\xff\xff\xfe", 3 },
		{ "AA", "\0", 1 },
	};
	static const char *bad[] = {
		"Z", "Zm9vY", "Zg=", "Zg===", "Z===", "====", "Zm9v====",
		"Zm=v", "+/8=", "Zm 9v", "Zm9v\n", "Zg=\n",
	};
	unsigned char *out;
	size_t i, n;

	for (i = 0; i < sizeof(c) / sizeof(c[0]); i++) {
		out = nt_jwt_b64url_decode(c[i].in, strlen(c[i].in), &n);
		if (out == NULL)
			fail_msg("\"%s\" refused", c[i].in);
		assert_int_equal(n, c[i].n);
		assert_memory_equal(out, c[i].out, n);
		assert_int_equal(out[n], '\0');
		free(out);
	}
	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		if ((out = nt_jwt_b64url_decode(bad[i], strlen(bad[i]),
		    &n)) != NULL)
			fail_msg("\"%s\" decoded", bad[i]);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(valid_hs256_gives_sub),
		cmocka_unit_test(claims_returned_only_when_valid),
		cmocka_unit_test(wrong_secret_refused),
		cmocka_unit_test(tampered_claims_refused),
		cmocka_unit_test(alg_none_refused),
		cmocka_unit_test(other_hs_alg_refused),
		cmocka_unit_test(critical_header_refused),
		cmocka_unit_test(rs256_key_confusion_refused),
		cmocka_unit_test(rs256_valid_and_wrong_key),
		cmocka_unit_test(es256_valid_and_rs_token_refused),
		cmocka_unit_test(expired_refused_within_leeway_accepted),
		cmocka_unit_test(nbf_in_future_refused_within_leeway_accepted),
		cmocka_unit_test(non_numeric_dates_refused),
		cmocka_unit_test(bad_sub_refused),
		cmocka_unit_test(issuer_and_audience_checked),
		cmocka_unit_test(garbage_tokens_refused),
		cmocka_unit_test(bad_configs_refused),
		cmocka_unit_test(secret_file_trailing_newline_stripped),
		cmocka_unit_test(reload_switches_key_and_keeps_old_on_failure),
		cmocka_unit_test(issued_token_round_trips),
		cmocka_unit_test(issue_refuses_public_keys_and_bad_input),
		cmocka_unit_test(no_exp_refused_when_required),
		cmocka_unit_test(max_age_checks_age_and_lifetime),
		cmocka_unit_test(max_age_needs_iat),
		cmocka_unit_test(issue_refuses_ttl_beyond_max_age),
		cmocka_unit_test(claims_exp_reads_exp),
		cmocka_unit_test(hs_secret_shorter_than_hash_refused),
		cmocka_unit_test(reload_refuses_short_secret),
		cmocka_unit_test(rsa_key_under_2048_bits_refused),
		cmocka_unit_test(ec_key_must_be_on_the_algorithms_curve),
		cmocka_unit_test(private_key_pem_refused),
		cmocka_unit_test(garbage_pem_refused),
		cmocka_unit_test(pkcs1_rsa_public_key_accepted),
		cmocka_unit_test(b64url_known_answers),
	};

	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
