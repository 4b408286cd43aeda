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
 *     optional in RFC 7519 but required unless the caller turns that
 *     off, and when present it must be a number;
 *   - with a maximum token age: iat required, not too old, not in the
 *     future, and exp - iat not longer than that age;
 *   - iss and aud when configured (aud: a string or an array of them);
 *   - sub must be a string that is a valid user id (nt_user_valid).
 *
 * Key files: an HS* secret is the file's bytes minus one trailing line
 * ending ("\n" or "\r\n"), so `echo secret > file` works, and must be at
 * least as long as the hash output; RS and ES keys are PEM public keys,
 * parsed by libcrypto, whose type, size and curve must suit the
 * configured alg. libjwt is then given the parsed key written back as a
 * SubjectPublicKeyInfo PEM. A key that does not suit is refused at load.
 *
 * No error message ever quotes the token or any part of it.
 */
#include <limits.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <jansson.h>
#include <jwt.h>
#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

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

/* RFC 7518 3.3: RSA keys of 2048 bits or more MUST be used. */
#define NT_JWT_RSA_MIN_BITS 2048

struct alg_info {
	const char   *name;
	jwt_alg_t     alg;
	enum key_kind kind;
	size_t        min_secret;  /* HS*: the hash output, RFC 7518 3.2 */
	const char   *group;       /* ES*: libcrypto's name of the curve */
	const char   *curve;       /* ES*: the curve's name in RFC 7518 */
};

static const struct alg_info algs[] = {
	{ "HS256", JWT_ALG_HS256, KEY_HMAC, 32, NULL, NULL },
	{ "HS384", JWT_ALG_HS384, KEY_HMAC, 48, NULL, NULL },
	{ "HS512", JWT_ALG_HS512, KEY_HMAC, 64, NULL, NULL },
	{ "RS256", JWT_ALG_RS256, KEY_RSA, 0, NULL, NULL },
	{ "RS384", JWT_ALG_RS384, KEY_RSA, 0, NULL, NULL },
	{ "RS512", JWT_ALG_RS512, KEY_RSA, 0, NULL, NULL },
	{ "ES256", JWT_ALG_ES256, KEY_EC, 0, "prime256v1", "P-256" },
	{ "ES384", JWT_ALG_ES384, KEY_EC, 0, "secp384r1", "P-384" },
	{ "ES512", JWT_ALG_ES512, KEY_EC, 0, "secp521r1", "P-521" },
};

struct nt_jwt_verifier {
	const struct alg_info *alg;
	char          *key_file;
	char          *issuer;    /* NULL: not checked */
	char          *audience;  /* NULL: not checked */
	long           leeway_s;
	int            require_exp;
	long           max_age_s; /* 0: off */
	/* HS*: the secret; RS*, ES*: the parsed key written back as PEM. */
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
b64url_char(unsigned char c)
{
	return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
	    (c >= '0' && c <= '9') || c == '-' || c == '_';
}

unsigned char *
nt_jwt_b64url_decode(const char *in, size_t n, size_t *outlen)
{
	size_t i, pad, quads;
	unsigned char *out;
	char *std;
	int len;

	/* Padding, when given, must be exactly what completes the quad. */
	if (n % 4 == 0 && n > 0 && in[n - 1] == '=')
		n -= (n >= 2 && in[n - 2] == '=') ? 2 : 1;
	if (n % 4 == 1 || n > (size_t)INT_MAX / 2)
		return NULL;
	for (i = 0; i < n; i++)
		if (!b64url_char((unsigned char)in[i]))
			return NULL;
	pad = (4 - n % 4) % 4;
	quads = (n + pad) / 4;
	std = malloc(n + pad + 1);
	out = malloc(quads * 3 + 1);
	if (std == NULL || out == NULL)
		goto fail;
	/* EVP_DecodeBlock knows the standard alphabet, padded, only. */
	for (i = 0; i < n; i++)
		std[i] = in[i] == '-' ? '+' : in[i] == '_' ? '/' : in[i];
	memset(std + n, '=', pad);
	std[n + pad] = '\0';
	len = EVP_DecodeBlock(out, (const unsigned char *)std,
	    (int)(n + pad));
	/* It writes a zero byte for each '=': those are not data. */
	if (len < 0 || (size_t)len != quads * 3)
		goto fail;
	free(std);
	*outlen = (size_t)len - pad;
	out[*outlen] = '\0';
	return out;
fail:
	free(std);
	free(out);
	return NULL;
}

/* The HS secret must carry as many bits as the hash gives out. */
static int
secret_suits(const struct alg_info *a, const char *buf, size_t len,
    const char *path, char *err, size_t errlen)
{
	if (len > 0 && strncmp(buf, "-----BEGIN", 10) == 0) {
		SET_ERR("%s: a PEM key cannot be an %s secret", path, a->name);
		return -1;
	}
	if (len > 0 && len < a->min_secret) {
		SET_ERR("%s: %s secret of %zu bytes, needs at least %zu "
		    "(RFC 7518 3.2); make one with: head -c %zu /dev/urandom "
		    "| base64 -w0 > FILE", path, a->name, len, a->min_secret,
		    a->min_secret);
		return -1;
	}
	return 0;
}

/* Is the parsed public key of the kind, size and curve a wants? */
static int
pkey_suits(const struct alg_info *a, EVP_PKEY *pk, const char *path,
    char *err, size_t errlen)
{
	const char *type = EVP_PKEY_get0_type_name(pk);
	char group[64];
	size_t glen = 0;
	int bits;

	if (type == NULL)
		type = "unknown";
	if (a->kind == KEY_RSA) {
		if (EVP_PKEY_get_base_id(pk) != EVP_PKEY_RSA) {
			SET_ERR("%s: an %s key; %s needs an RSA public key",
			    path, type, a->name);
			return -1;
		}
		bits = EVP_PKEY_get_bits(pk);
		if (bits < NT_JWT_RSA_MIN_BITS) {
			SET_ERR("%s: RSA key of %d bits; %s needs at least %d "
			    "(RFC 7518 3.3)", path, bits, a->name,
			    NT_JWT_RSA_MIN_BITS);
			return -1;
		}
		return 0;
	}
	if (EVP_PKEY_get_base_id(pk) != EVP_PKEY_EC) {
		SET_ERR("%s: an %s key; %s needs an EC public key on %s", path,
		    type, a->name, a->curve);
		return -1;
	}
	if (EVP_PKEY_get_group_name(pk, group, sizeof(group), &glen) != 1) {
		SET_ERR("%s: EC key on an unnamed curve; %s needs %s", path,
		    a->name, a->curve);
		return -1;
	}
	if (strcmp(group, a->group) != 0) {
		SET_ERR("%s: EC key on %s; %s needs %s (%s)", path, group,
		    a->name, a->curve, a->group);
		return -1;
	}
	return 0;
}

/*
 * Parse the PEM public key in buf (len bytes): a SubjectPublicKeyInfo
 * ("PUBLIC KEY") or a PKCS#1 "RSA PUBLIC KEY". Returns a new key, or
 * NULL with err. Private keys and certificates are named as such.
 */
static EVP_PKEY *
pem_pubkey(const char *buf, size_t len, const char *path, char *err,
    size_t errlen)
{
	BIO *in;
	char *name = NULL, *header = NULL;
	unsigned char *der = NULL;
	const unsigned char *p;
	long derlen = 0;
	EVP_PKEY *pk = NULL;

	if ((in = BIO_new_mem_buf(buf, (int)len)) == NULL) {
		SET_ERR("%s: out of memory", path);
		return NULL;
	}
	/* openssl ecparam writes the curve's parameters first: skip them. */
	while (PEM_read_bio(in, &name, &header, &der, &derlen) == 1 &&
	    strcmp(name, "EC PARAMETERS") == 0) {
		OPENSSL_free(name);
		OPENSSL_free(header);
		OPENSSL_free(der);
		name = header = NULL;
		der = NULL;
	}
	BIO_free(in);
	/* PEM_read_bio's failures stay in the thread's queue otherwise. */
	ERR_clear_error();
	p = der;
	if (name == NULL)
		SET_ERR("%s: not a PEM public key (no BEGIN PUBLIC KEY block)",
		    path);
	else if (strstr(name, "PRIVATE KEY") != NULL)
		SET_ERR("%s: this is a private key; give the public key "
		    "(openssl pkey -pubout)", path);
	else if (strcmp(name, "CERTIFICATE") == 0)
		SET_ERR("%s: a certificate; give its public key (openssl x509 "
		    "-pubkey -noout)", path);
	else if (strcmp(name, "PUBLIC KEY") != 0 &&
	    strcmp(name, "RSA PUBLIC KEY") != 0)
		SET_ERR("%s: a PEM %.40s, not a public key", path, name);
	else {
		pk = strcmp(name, "PUBLIC KEY") == 0 ?
		    d2i_PUBKEY(NULL, &p, derlen) :
		    d2i_PublicKey(EVP_PKEY_RSA, NULL, &p, derlen);
		/* Bytes after the key would be ignored: refuse them. */
		if (pk != NULL && p != der + derlen) {
			EVP_PKEY_free(pk);
			pk = NULL;
		}
		if (pk == NULL)
			SET_ERR("%s: unreadable PEM %s", path, name);
	}
	ERR_clear_error();
	OPENSSL_free(name);
	OPENSSL_free(header);
	OPENSSL_free(der);
	return pk;
}

/*
 * Check that the key file holds a public key that suits the algorithm,
 * and write it back as a SubjectPublicKeyInfo PEM into *out (a new
 * string), which is what libjwt reads. A misconfiguration is refused at
 * startup instead of every client failing with 4001.
 */
static int
pubkey_load(const struct alg_info *a, const char *buf, size_t len,
    const char *path, char **out, size_t *outlen, char *err, size_t errlen)
{
	EVP_PKEY *pk;
	BIO *mem = NULL;
	char *data;
	long n;
	int rc = -1;

	if ((pk = pem_pubkey(buf, len, path, err, errlen)) == NULL)
		return -1;
	if (pkey_suits(a, pk, path, err, errlen) < 0)
		goto done;
	if ((mem = BIO_new(BIO_s_mem())) == NULL ||
	    PEM_write_bio_PUBKEY(mem, pk) != 1 ||
	    (n = BIO_get_mem_data(mem, &data)) <= 0 ||
	    (*out = malloc((size_t)n + 1)) == NULL) {
		SET_ERR("%s: cannot write the public key back (out of memory?)",
		    path);
		goto done;
	}
	memcpy(*out, data, (size_t)n);
	(*out)[n] = '\0';
	*outlen = (size_t)n;
	rc = 0;
done:
	BIO_free(mem);
	EVP_PKEY_free(pk);
	ERR_clear_error();
	return rc;
}

/* Read and check the key for alg from path into key and key_len. */
static int
key_load(const struct alg_info *a, const char *path, unsigned char **key,
    size_t *key_len, char *err, size_t errlen)
{
	char *buf, *pem;
	size_t len, pemlen;

	buf = nt_file_read(path, NT_JWT_KEY_MAX, &len, err, errlen);
	if (buf == NULL)
		return -1;
	/* One line ending is an editor's, not the secret's. */
	if (a->kind == KEY_HMAC && len > 0 && buf[len - 1] == '\n')
		buf[--len] = '\0';
	if (a->kind == KEY_HMAC && len > 0 && buf[len - 1] == '\r')
		buf[--len] = '\0';
	if (len == 0) {
		SET_ERR("%s: empty key", path);
		goto fail;
	}
	if (a->kind != KEY_HMAC) {
		if (pubkey_load(a, buf, len, path, &pem, &pemlen, err,
		    errlen) < 0)
			goto fail;
		free(buf);
		*key = (unsigned char *)pem;
		*key_len = pemlen;
		return 0;
	}
	if (secret_suits(a, buf, len, path, err, errlen) < 0)
		goto fail;
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
	/* Ten years: past that a maximum age limits nothing. */
	if (cfg->max_age_s < 0 || cfg->max_age_s > 10L * 366 * 86400) {
		SET_ERR("maximum token age must be 0..3660 days");
		return -1;
	}
	if ((v = calloc(1, sizeof(*v))) == NULL) {
		SET_ERR("out of memory");
		return -1;
	}
	v->alg = a;
	v->leeway_s = cfg->leeway_s;
	v->require_exp = cfg->require_exp;
	v->max_age_s = cfg->max_age_s;
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
	const char *dot, *alg;
	unsigned char *buf;
	json_t *hdr;
	size_t n;
	int ok;

	dot = strchr(token, '.');
	if (dot == NULL || dot == token) {
		SET_ERR("malformed token");
		return -1;
	}
	/* A header larger than this is no header of ours: do not decode it. */
	if ((size_t)(dot - token) > NT_JWT_HEADER_MAX / 3 * 4 ||
	    (buf = nt_jwt_b64url_decode(token, (size_t)(dot - token),
	    &n)) == NULL) {
		SET_ERR("malformed token header");
		return -1;
	}
	hdr = n > 0 ? json_loadb((const char *)buf, n, 0, NULL) : NULL;
	free(buf);
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

/*
 * The maximum token age (nt_jwt_config.max_age_s): iat is required, may
 * not lie in the future beyond the leeway, may not be older than the
 * maximum (plus leeway: the two clocks may differ), and exp - iat may not
 * exceed the maximum (no leeway: both come from the issuer's clock).
 */
static int
age_ok(const struct nt_jwt_verifier *v, const json_t *claims, double tnow,
    const double *exp, char *err, size_t errlen)
{
	double iat = 0, max = (double)v->max_age_s;
	double leeway = (double)v->leeway_s;
	int r = numeric_date(claims, "iat", &iat);

	if (r < 0) {
		SET_ERR("iat claim is not a number");
		return -1;
	}
	if (r == 0) {
		SET_ERR("token has no iat claim (needed with a maximum token "
		    "age)");
		return -1;
	}
	if (iat > tnow + leeway) {
		SET_ERR("token issued in the future (iat)");
		return -1;
	}
	if (tnow - iat > max + leeway) {
		SET_ERR("token older than the maximum token age (iat)");
		return -1;
	}
	if (exp != NULL && *exp - iat > max) {
		SET_ERR("token lifetime (exp - iat) longer than the maximum "
		    "token age");
		return -1;
	}
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
	if (r == 0 && v->require_exp) {
		SET_ERR("token has no exp claim");
		return -1;
	}
	/* RFC 7519 4.1.4: valid only while now is before exp. */
	if (r == 1 && tnow >= t + leeway) {
		SET_ERR("token expired");
		return -1;
	}
	if (v->max_age_s > 0 && age_ok(v, claims, tnow, r == 1 ? &t : NULL,
	    err, errlen) < 0)
		return -1;
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
	/* This verifier would refuse the token: do not mint it. */
	if (v->max_age_s > 0 && ttl_s > v->max_age_s) {
		SET_ERR("the lifetime (%lds) is longer than the maximum token "
		    "age (%lds)", ttl_s, v->max_age_s);
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
nt_jwt_claims_exp(const json_t *claims, time_t *exp)
{
	double t;

	if (numeric_date(claims, "exp", &t) != 1 || !isfinite(t))
		return -1;
	t = floor(t);
	/* Beyond 2^62 s nothing expires in practice; refuse, do not overflow. */
	if (t < -4611686018427387904.0 || t > 4611686018427387904.0)
		return -1;
	*exp = (time_t)t;
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
