/*
 * nt_jwt: verification of the JWTs that WebSocket clients present, and
 * the minting of HS* tokens with the same key (notifyd-ws --issue-token).
 *
 * libjwt 1.10 checks signatures only. This module pins the algorithm to
 * the configured one (no "none", no HS256 signed with an RSA public key),
 * checks exp/nbf with a leeway, the token's lifetime (exp required, a
 * maximum age), optional iss/aud, and requires "sub" to be a valid user
 * id (nt_user_valid). Keys are checked when loaded: HS secrets as long as
 * the hash, RSA of 2048 bits or more, EC on the algorithm's curve.
 */
#ifndef NT_JWT_H
#define NT_JWT_H

#include <stddef.h>
#include <time.h>
#include "nt_msg.h"

struct nt_jwt_config {
	const char *alg;       /* "HS256", "HS384", "HS512", "RS256", "ES256" ... */
	const char *key_file;  /* HS: shared secret; RS, ES: PEM public key */
	const char *issuer;    /* NULL: not checked */
	const char *audience;  /* NULL: not checked */
	long        leeway_s;  /* allowed clock skew for exp/nbf/iat */
	/*
	 * Lifetime policy. require_exp: a token without "exp" is refused
	 * (RFC 7519 makes exp optional; a token without it would be valid
	 * forever). max_age_s, 0 = off: a token must carry "iat", must not
	 * be older than max_age_s (now - iat > max_age_s + leeway_s is
	 * refused), and, when it has an exp, must not have been minted to
	 * live longer (exp - iat > max_age_s is refused, no leeway: both
	 * come from the issuer's clock). An iat in the future beyond the
	 * leeway is refused too, or the age check could be dodged.
	 */
	int         require_exp;
	long        max_age_s;
};

struct nt_jwt_verifier;

/*
 * Read the key and make a verifier. Refuses an unknown algorithm, or a
 * key that does not suit it: an HS* secret shorter than the hash output
 * (32, 48, 64 bytes; RFC 7518 3.2), a PEM that is not a public key, an
 * RS* key that is not RSA of at least 2048 bits, an ES* key that is not
 * EC on the algorithm's curve. Returns 0 or -1 with err. The config's
 * strings are copied.
 */
int nt_jwt_verifier_new(const struct nt_jwt_config *cfg,
    struct nt_jwt_verifier **out, char *err, size_t errlen);

/*
 * Re-read the key file (SIGHUP), checked as above; on failure the old
 * key stays.
 */
int nt_jwt_verifier_reload(struct nt_jwt_verifier *v, char *err, size_t errlen);

void nt_jwt_verifier_free(struct nt_jwt_verifier *v);

/*
 * Verify token at time now. On success writes the "sub" claim into user
 * (NT_USER_MAX + 1 bytes) and returns 0; else -1 with a reason in err
 * that never contains the token.
 */
int nt_jwt_verify(const struct nt_jwt_verifier *v, const char *token,
    time_t now, char user[NT_USER_MAX + 1], char *err, size_t errlen);

/*
 * The same, and on success *claims (when not NULL) gets a new reference
 * to the verified payload, for callers that check claims of their own
 * (a scope). The caller json_decref()s it.
 */
int nt_jwt_verify_claims(const struct nt_jwt_verifier *v, const char *token,
    time_t now, char user[NT_USER_MAX + 1], json_t **claims, char *err,
    size_t errlen);

/*
 * Sign a token for user with the verifier's own HMAC secret, so that the
 * key is read exactly as it is for verification and the token passes
 * nt_jwt_verify with the same settings. Claims: sub = user, iat = now,
 * exp = now + ttl_s, plus iss and aud when the verifier checks them.
 * HS* only: an RS* or ES* verifier holds a public key, which cannot sign.
 * A ttl_s longer than the verifier's maximum token age is refused, since
 * the verifier would refuse the token.
 * On success *token is a new NUL-terminated string the caller free()s;
 * else -1 with a reason in err (the key never appears in it).
 */
int nt_jwt_issue_hs(const struct nt_jwt_verifier *v, const char *user,
    time_t now, long ttl_s, char **token, char *err, size_t errlen);

/*
 * The "exp" claim of claims (a payload from nt_jwt_verify_claims, which
 * has already checked that exp, when present, is a number): 0 with *exp
 * set to it in whole seconds (a fraction floored), or -1 when there is
 * no exp or it is not a finite number in time_t's range. claims is
 * borrowed. Callers use it to end a session when its token expires.
 */
int nt_jwt_claims_exp(const json_t *claims, time_t *exp);

/*
 * Decode n bytes of base64url (RFC 4648 5), with or without the '='
 * padding (JWS segments have none, RFC 7515 2; padding, when present,
 * must be exactly what completes the last quad). Any other character,
 * white space included, is refused. Returns a new buffer of *outlen
 * bytes plus a NUL the caller may rely on, which the caller free()s; or
 * NULL for bad input or no memory.
 */
unsigned char *nt_jwt_b64url_decode(const char *in, size_t n,
    size_t *outlen);

struct nt_opt;

/*
 * nt_opt parser of --jwt-alg: one of HS256/384/512, RS256/384/512,
 * ES256/384/512 in any case; dst (a const char **) gets the canonical
 * upper-case name, a static string.
 */
int nt_jwt_opt_alg(const struct nt_opt *o, const char *value, char *err,
    size_t errlen);

#endif
