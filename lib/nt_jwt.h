/*
 * nt_jwt: verification of the JWTs that WebSocket clients present, and
 * the minting of HS* tokens with the same key (notifyd-ws --issue-token).
 *
 * libjwt 1.10 checks signatures only. This module pins the algorithm to
 * the configured one (no "none", no HS256 signed with an RSA public key),
 * checks exp/nbf with a leeway, optional iss/aud, and requires "sub" to
 * be a valid user id (nt_user_valid).
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
	long        leeway_s;  /* allowed clock skew for exp/nbf */
};

struct nt_jwt_verifier;

/*
 * Read the key and make a verifier. Refuses an empty key, an unknown
 * algorithm, or a key that does not suit it. Returns 0 or -1 with err.
 * The config's strings are copied.
 */
int nt_jwt_verifier_new(const struct nt_jwt_config *cfg,
    struct nt_jwt_verifier **out, char *err, size_t errlen);

/* Re-read the key file (SIGHUP). On failure the old key stays. */
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
 * On success *token is a new NUL-terminated string the caller free()s;
 * else -1 with a reason in err (the key never appears in it).
 */
int nt_jwt_issue_hs(const struct nt_jwt_verifier *v, const char *user,
    time_t now, long ttl_s, char **token, char *err, size_t errlen);

struct nt_opt;

/*
 * nt_opt parser of --jwt-alg: one of HS256/384/512, RS256/384/512,
 * ES256/384/512 in any case; dst (a const char **) gets the canonical
 * upper-case name, a static string.
 */
int nt_jwt_opt_alg(const struct nt_opt *o, const char *value, char *err,
    size_t errlen);

#endif
