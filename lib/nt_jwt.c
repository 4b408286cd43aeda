/*
 * nt_jwt: JWT verification on top of libjwt 1.10, which checks the
 * signature and nothing else. Everything a verifier must also refuse
 * is refused here, before or after jwt_decode:
 *
 *   - the token's "alg" header must be exactly the configured one (and
 *     a "crit" header is refused: no extension is understood here). This
 *     is checked on the raw header before any key is used, so an HS256
 *     token can never be verified with an RSA/EC public key as the HMAC
 *     secret, and "none" never gets as far as libjwt;
 *   - exp/nbf (seconds, integer or fraction) with a leeway; exp is
 *     optional as in RFC 7519, but when present it must be a number;
 *   - iss and aud when configured (aud: a string or an array of them);
 *   - sub must be a string that is a valid user id (nt_user_valid).
 *
 * Key files: an HS* secret is the file's bytes minus one trailing line
 * ending ("\n" or "\r\n"), so `echo secret > file` works; RS and ES keys
 * are PEM public keys whose algorithm (and curve) must suit the
 * configured alg. A zero-length key is refused at load, never passed on.
 *
 * No error message ever quotes the token or any part of it.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <jansson.h>
#include <jwt.h>

#include "nt_config.h"
#include "nt_jwt.h"
#include "nt_opt.h"
#include "nt_msg.h"

#define NT_JWT_KEY_MAX    (64 * 1024)  /* bytes of a key file */
#define NT_JWT_TOKEN_MAX  (8 * 1024)   /* bytes of a token we look at */
#define NT_JWT_HEADER_MAX 1024         /* bytes of a decoded JOSE header */

#define SET_ERR(...) do { \
	if (err != NULL && errlen > 0) \
		snprintf(err, errlen, __VA_ARGS__); \
} while (0)

enum key_kind { KEY_HMAC, KEY_RSA, KEY_EC };

struct alg_info {
	const char   *name;
	jwt_alg_t     alg;
	enum key_kind kind;
	/* DER of the EC curve OID for ES*, which the key must name. */
	const unsigned char *curve_oid;
	size_t        curve_oid_len;
};

/* 1.2.840.10045.3.1.7, 1.3.132.0.34, 1.3.132.0.35 */
static const unsigned char oid_p256[] = {
	0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07 };
static const unsigned char oid_p384[] = {
	0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x22 };
static const unsigned char oid_p521[] = {
	0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x23 };
/* rsaEncryption 1.2.840.113549.1.1.1, id-ecPublicKey 1.2.840.10045.2.1 */
static const unsigned char oid_rsa[] = {
	0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01 };
static const unsigned char oid_ec[] = {
	0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01 };

static const struct alg_info algs[] = {
	{ "HS256", JWT_ALG_HS256, KEY_HMAC, NULL, 0 },
	{ "HS384", JWT_ALG_HS384, KEY_HMAC, NULL, 0 },
	{ "HS512", JWT_ALG_HS512, KEY_HMAC, NULL, 0 },
	{ "RS256", JWT_ALG_RS256, KEY_RSA, NULL, 0 },
	{ "RS384", JWT_ALG_RS384, KEY_RSA, NULL, 0 },
	{ "RS512", JWT_ALG_RS512, KEY_RSA, NULL, 0 },
	{ "ES256", JWT_ALG_ES256, KEY_EC, oid_p256, sizeof(oid_p256) },
	{ "ES384", JWT_ALG_ES384, KEY_EC, oid_p384, sizeof(oid_p384) },
	{ "ES512", JWT_ALG_ES512, KEY_EC, oid_p521, sizeof(oid_p521) },
};

struct nt_jwt_verifier {
	const struct alg_info *alg;
	char          *key_file;
	char          *issuer;    /* NULL: not checked */
	char          *audience;  /* NULL: not checked */
	long           leeway_s;
	unsigned char *key;
	size_t         key_len;
};

static const struct alg_info *
alg_lookup(const char *name)
{
	size_t i;

	for (i = 0; i < sizeof(algs) / sizeof(algs[0]); i++)
		if (strcasecmp(algs[i].name, name) == 0)
			return &algs[i];
	return NULL;
}

static int
b64_value(unsigned char c, int url)
{
	if (c >= 'A' && c <= 'Z')
		return c - 'A';
	if (c >= 'a' && c <= 'z')
		return c - 'a' + 26;
	if (c >= '0' && c <= '9')
		return c - '0' + 52;
	if (c == (url ? '-' : '+'))
		return 62;
	if (c == (url ? '_' : '/'))
		return 63;
	return -1;
}

/*
 * Decode n bytes of base64 (url: the unpadded URL alphabet; else the
 * standard one, where '=' padding and white space are skipped) into out
 * (at most outmax bytes). Returns the decoded length or -1.
 */
static long
b64_decode(const char *in, size_t n, int url, unsigned char *out,
    size_t outmax)
{
	uint32_t acc = 0;
	size_t i, len = 0;
	int bits = 0, v;

	for (i = 0; i < n; i++) {
		unsigned char c = (unsigned char)in[i];

		if (!url && (c == '=' || c == '\n' || c == '\r' ||
		    c == ' ' || c == '\t'))
			continue;
		if ((v = b64_value(c, url)) < 0)
			return -1;
		acc = (acc << 6) | (uint32_t)v;
		bits += 6;
		if (bits >= 8) {
			bits -= 8;
			if (len == outmax)
				return -1;
			out[len++] = (unsigned char)(acc >> bits);
			acc &= (1u << bits) - 1;
		}
	}
	/* A lone sixth bit group cannot come from whole bytes. */
	if (bits >= 6)
		return -1;
	return (long)len;
}

static int
mem_contains(const unsigned char *hay, size_t haylen,
    const unsigned char *needle, size_t nlen)
{
	size_t i;

	for (i = 0; i + nlen <= haylen; i++)
		if (memcmp(hay + i, needle, nlen) == 0)
			return 1;
	return 0;
}

/*
 * Check that a PEM public key suits the algorithm: its SubjectPublicKeyInfo
 * names RSA for RS*, or EC with the right curve for ES*. Signature checks
 * later would fail anyway; this turns a misconfiguration into a clear
 * refusal at startup instead of every client failing with 4001.
 */
static int
pem_key_suits(const struct alg_info *a, const char *pem, size_t pemlen,
    const char *path, char *err, size_t errlen)
{
	static const char begin_spki[] = "-----BEGIN PUBLIC KEY-----";
	static const char begin_rsa[] = "-----BEGIN RSA PUBLIC KEY-----";
	const char *body, *end;
	unsigned char *der;
	long derlen;
	int ok;

	if (memmem(pem, pemlen, "PRIVATE KEY-----", 16) != NULL) {
		SET_ERR("%s: a private key; give the public key", path);
		return -1;
	}
	if (a->kind == KEY_RSA && memmem(pem, pemlen, begin_rsa,
	    sizeof(begin_rsa) - 1) != NULL)
		return 0;  /* PKCS#1 RSA public key: RSA by definition */
	body = memmem(pem, pemlen, begin_spki, sizeof(begin_spki) - 1);
	if (body == NULL) {
		SET_ERR("%s: not a PEM public key (BEGIN PUBLIC KEY)", path);
		return -1;
	}
	body += sizeof(begin_spki) - 1;
	end = memmem(body, pemlen - (size_t)(body - pem), "-----END", 8);
	if (end == NULL) {
		SET_ERR("%s: unterminated PEM public key", path);
		return -1;
	}
	der = malloc((size_t)(end - body));
	if (der == NULL) {
		SET_ERR("%s: out of memory", path);
		return -1;
	}
	derlen = b64_decode(body, (size_t)(end - body), 0, der,
	    (size_t)(end - body));
	if (derlen <= 0) {
		free(der);
		SET_ERR("%s: bad base64 in PEM public key", path);
		return -1;
	}
	if (a->kind == KEY_RSA)
		ok = mem_contains(der, (size_t)derlen, oid_rsa, sizeof(oid_rsa));
	else
		ok = mem_contains(der, (size_t)derlen, oid_ec, sizeof(oid_ec)) &&
		    mem_contains(der, (size_t)derlen, a->curve_oid,
		    a->curve_oid_len);
	free(der);
	if (!ok) {
		SET_ERR("%s: public key does not suit %s", path, a->name);
		return -1;
	}
	return 0;
}

/* Read and check the key for alg from path into key and key_len. */
static int
key_load(const struct alg_info *a, const char *path, unsigned char **key,
    size_t *key_len, char *err, size_t errlen)
{
	char *buf;
	size_t len;

	buf = nt_file_read(path, NT_JWT_KEY_MAX, &len, err, errlen);
	if (buf == NULL)
		return -1;
	if (a->kind == KEY_HMAC) {
		/* One line ending is an editor's, not the secret's. */
		if (len > 0 && buf[len - 1] == '\n')
			buf[--len] = '\0';
		if (len > 0 && buf[len - 1] == '\r')
			buf[--len] = '\0';
		if (len > 0 && strncmp(buf, "-----BEGIN", 10) == 0) {
			SET_ERR("%s: a PEM key cannot be an %s secret", path,
			    a->name);
			goto fail;
		}
	} else if (len > 0 && pem_key_suits(a, buf, len, path, err,
	    errlen) < 0) {
		goto fail;
	}
	if (len == 0) {
		SET_ERR("%s: empty key", path);
		goto fail;
	}
	if (len > INT32_MAX) {
		SET_ERR("%s: key too large", path);
		goto fail;
	}
	*key = (unsigned char *)buf;
	*key_len = len;
	return 0;
fail:
	/* A secret should not linger in freed memory. */
	explicit_bzero(buf, len);
	free(buf);
	return -1;
}

static char *
strdup_or_null(const char *s, int *failed)
{
	char *d;

	if (s == NULL)
		return NULL;
	if ((d = strdup(s)) == NULL)
		*failed = 1;
	return d;
}

int
nt_jwt_verifier_new(const struct nt_jwt_config *cfg,
    struct nt_jwt_verifier **out, char *err, size_t errlen)
{
	struct nt_jwt_verifier *v;
	const struct alg_info *a;
	int failed = 0;

	*out = NULL;
	if (cfg->alg == NULL || (a = alg_lookup(cfg->alg)) == NULL) {
		SET_ERR("unsupported JWT algorithm (use HS256/384/512, "
		    "RS256/384/512 or ES256/384/512)");
		return -1;
	}
	if (cfg->key_file == NULL || cfg->key_file[0] == '\0') {
		SET_ERR("no JWT key file for %s (%s)", a->name,
		    a->kind == KEY_HMAC ? "secret file" : "public key");
		return -1;
	}
	if (cfg->leeway_s < 0 || cfg->leeway_s > 86400) {
		SET_ERR("JWT leeway must be 0..86400 seconds");
		return -1;
	}
	if ((v = calloc(1, sizeof(*v))) == NULL) {
		SET_ERR("out of memory");
		return -1;
	}
	v->alg = a;
	v->leeway_s = cfg->leeway_s;
	v->key_file = strdup_or_null(cfg->key_file, &failed);
	v->issuer = strdup_or_null(cfg->issuer, &failed);
	v->audience = strdup_or_null(cfg->audience, &failed);
	if (failed) {
		SET_ERR("out of memory");
		nt_jwt_verifier_free(v);
		return -1;
	}
	if (key_load(a, v->key_file, &v->key, &v->key_len, err, errlen) < 0) {
		nt_jwt_verifier_free(v);
		return -1;
	}
	*out = v;
	return 0;
}

int
nt_jwt_verifier_reload(struct nt_jwt_verifier *v, char *err, size_t errlen)
{
	unsigned char *key;
	size_t key_len;

	if (key_load(v->alg, v->key_file, &key, &key_len, err, errlen) < 0)
		return -1;
	explicit_bzero(v->key, v->key_len);
	free(v->key);
	v->key = key;
	v->key_len = key_len;
	return 0;
}

void
nt_jwt_verifier_free(struct nt_jwt_verifier *v)
{
	if (v == NULL)
		return;
	if (v->key != NULL) {
		explicit_bzero(v->key, v->key_len);
		free(v->key);
	}
	free(v->key_file);
	free(v->issuer);
	free(v->audience);
	free(v);
}

/*
 * The "alg" of the JOSE header must be exactly the configured name. This
 * runs before libjwt sees the key, so the key is never used with another
 * algorithm than the one it is meant for.
 */
static int
header_alg_ok(const struct nt_jwt_verifier *v, const char *token,
    char *err, size_t errlen)
{
	unsigned char buf[NT_JWT_HEADER_MAX];
	const char *dot, *alg;
	json_t *hdr;
	long n;
	int ok;

	dot = strchr(token, '.');
	if (dot == NULL || dot == token) {
		SET_ERR("malformed token");
		return -1;
	}
	n = b64_decode(token, (size_t)(dot - token), 1, buf, sizeof(buf));
	if (n <= 0) {
		SET_ERR("malformed token header");
		return -1;
	}
	hdr = json_loadb((const char *)buf, (size_t)n, 0, NULL);
	if (!json_is_object(hdr)) {
		json_decref(hdr);
		SET_ERR("malformed token header");
		return -1;
	}
	alg = json_string_value(json_object_get(hdr, "alg"));
	ok = alg != NULL && strcmp(alg, v->alg->name) == 0;
	if (ok && json_object_get(hdr, "crit") != NULL) {
		/* RFC 7515 4.1.11: we understand no extension, so none is met. */
		json_decref(hdr);
		SET_ERR("token has critical header extensions");
		return -1;
	}
	if (!ok) {
		if (alg != NULL && strcasecmp(alg, "none") == 0)
			SET_ERR("unsigned token (alg none) refused");
		else
			SET_ERR("token algorithm is not the configured %s",
			    v->alg->name);
	}
	json_decref(hdr);
	return ok ? 0 : -1;
}

/* A NumericDate claim: absent (0), a number (1), or anything else (-1). */
static int
numeric_date(const json_t *claims, const char *name, double *out)
{
	const json_t *j = json_object_get(claims, name);

	if (j == NULL)
		return 0;
	if (!json_is_number(j))
		return -1;
	*out = json_number_value(j);
	return 1;
}

static int
audience_ok(const json_t *aud, const char *want)
{
	size_t i;
	json_t *el;

	if (json_is_string(aud))
		return strcmp(json_string_value(aud), want) == 0;
	if (!json_is_array(aud))
		return 0;
	json_array_foreach(aud, i, el)
		if (json_is_string(el) && strcmp(json_string_value(el), want) == 0)
			return 1;
	return 0;
}

static int
claims_ok(const struct nt_jwt_verifier *v, const json_t *claims,
    time_t now, char user[NT_USER_MAX + 1], char *err, size_t errlen)
{
	double t = 0, tnow = (double)now, leeway = (double)v->leeway_s;
	const char *sub, *iss;
	char why[128];
	int r;

	if ((r = numeric_date(claims, "exp", &t)) < 0) {
		SET_ERR("exp claim is not a number");
		return -1;
	}
	/* RFC 7519 4.1.4: valid only while now is before exp. */
	if (r == 1 && tnow >= t + leeway) {
		SET_ERR("token expired");
		return -1;
	}
	if ((r = numeric_date(claims, "nbf", &t)) < 0) {
		SET_ERR("nbf claim is not a number");
		return -1;
	}
	if (r == 1 && tnow + leeway < t) {
		SET_ERR("token not valid yet (nbf)");
		return -1;
	}
	if (v->issuer != NULL) {
		iss = json_string_value(json_object_get(claims, "iss"));
		if (iss == NULL || strcmp(iss, v->issuer) != 0) {
			SET_ERR("issuer mismatch");
			return -1;
		}
	}
	if (v->audience != NULL &&
	    !audience_ok(json_object_get(claims, "aud"), v->audience)) {
		SET_ERR("audience mismatch");
		return -1;
	}
	sub = json_string_value(json_object_get(claims, "sub"));
	if (sub == NULL) {
		SET_ERR("sub claim missing or not a string");
		return -1;
	}
	/* The validator's reason could quote sub: keep it out of err. */
	if (strlen(sub) > NT_USER_MAX ||
	    nt_user_valid(sub, why, sizeof(why)) < 0) {
		SET_ERR("sub claim is not a valid user id");
		return -1;
	}
	memcpy(user, sub, strlen(sub) + 1);
	return 0;
}

int
nt_jwt_verify(const struct nt_jwt_verifier *v, const char *token,
    time_t now, char user[NT_USER_MAX + 1], char *err, size_t errlen)
{
	return nt_jwt_verify_claims(v, token, now, user, NULL, err, errlen);
}

int
nt_jwt_verify_claims(const struct nt_jwt_verifier *v, const char *token,
    time_t now, char user[NT_USER_MAX + 1], json_t **claims_out, char *err,
    size_t errlen)
{
	jwt_t *jwt = NULL;
	json_t *claims;
	char *json;
	int r;

	if (token == NULL || token[0] == '\0') {
		SET_ERR("no token");
		return -1;
	}
	if (strlen(token) > NT_JWT_TOKEN_MAX) {
		SET_ERR("token too long");
		return -1;
	}
	if (header_alg_ok(v, token, err, errlen) < 0)
		return -1;
	/* key_len > 0 always: key_load refuses empty keys. */
	if (jwt_decode(&jwt, token, v->key, (int)v->key_len) != 0 ||
	    jwt == NULL) {
		SET_ERR("bad signature or malformed token");
		return -1;
	}
	/* Belt and braces: libjwt must have verified with our algorithm. */
	if (jwt_get_alg(jwt) != v->alg->alg) {
		jwt_free(jwt);
		SET_ERR("token algorithm is not the configured %s",
		    v->alg->name);
		return -1;
	}
	json = jwt_get_grants_json(jwt, NULL);
	jwt_free(jwt);
	if (json == NULL) {
		SET_ERR("malformed token claims");
		return -1;
	}
	claims = json_loads(json, 0, NULL);
	free(json);
	if (!json_is_object(claims)) {
		json_decref(claims);
		SET_ERR("malformed token claims");
		return -1;
	}
	r = claims_ok(v, claims, now, user, err, errlen);
	if (r == 0 && claims_out != NULL)
		*claims_out = claims;
	else
		json_decref(claims);
	return r;
}

int
nt_jwt_issue_hs(const struct nt_jwt_verifier *v, const char *user,
    time_t now, long ttl_s, char **token, char *err, size_t errlen)
{
	jwt_t *jwt = NULL;
	char why[128], *out;
	int failed;

	*token = NULL;
	if (v->alg->kind != KEY_HMAC) {
		SET_ERR("%s tokens are signed with the private key, which only "
		    "the issuer holds (this key is the public one): sign them "
		    "there", v->alg->name);
		return -1;
	}
	if (user == NULL || strlen(user) > NT_USER_MAX ||
	    nt_user_valid(user, why, sizeof(why)) < 0) {
		SET_ERR("not a valid user id");
		return -1;
	}
	if (ttl_s <= 0) {
		SET_ERR("the lifetime must be at least one second");
		return -1;
	}
	if (jwt_new(&jwt) != 0) {
		SET_ERR("out of memory");
		return -1;
	}
	failed = jwt_add_grant(jwt, "sub", user) != 0 ||
	    jwt_add_grant_int(jwt, "iat", (long)now) != 0 ||
	    jwt_add_grant_int(jwt, "exp", (long)now + ttl_s) != 0 ||
	    (v->issuer != NULL && jwt_add_grant(jwt, "iss", v->issuer) != 0) ||
	    (v->audience != NULL &&
	    jwt_add_grant(jwt, "aud", v->audience) != 0) ||
	    jwt_set_alg(jwt, v->alg->alg, v->key, (int)v->key_len) != 0;
	out = failed ? NULL : jwt_encode_str(jwt);
	/* jwt_free() wipes libjwt's copy of the key. */
	jwt_free(jwt);
	if (out == NULL) {
		SET_ERR("cannot encode the token");
		return -1;
	}
	/* libjwt's string is malloc'd; the caller free()s it. */
	*token = out;
	return 0;
}

int
nt_jwt_opt_alg(const struct nt_opt *o, const char *value, char *err,
    size_t errlen)
{
	size_t i;

	/* The same table the verifier pins its algorithm from. */
	for (i = 0; i < sizeof(algs) / sizeof(algs[0]); i++)
		if (strcasecmp(value, algs[i].name) == 0) {
			*(const char **)o->dst = algs[i].name;
			return 0;
		}
	snprintf(err, errlen, "want HS256/384/512, RS256/384/512 or "
	    "ES256/384/512");
	return -1;
}
