// Who is connecting: an OIDC JWT (access or ID token) checked against the issuer's JWKS found by
// discovery, a static application key (stored hashed), or a client certificate (mTLS).
// Every failure is an AuthError whose message a person can act on.
import { createHash, timingSafeEqual } from 'node:crypto';
import type { X509Certificate } from 'node:crypto';
import { createRemoteJWKSet, jwtVerify, errors as joseErrors, decodeJwt, type JWTPayload, type JWTVerifyGetKey } from 'jose';
import { AuthError } from '../errors.ts';
import type { ApplicationConfig, IdentityConfig } from '../policy/config.ts';
import type { Principal } from '../audit/record.ts';

export interface VerifiedIdentity {
  principal: Principal;
  /** Epoch ms after which the session must end; undefined for keys and certificates. */
  expiresAt?: number;
}

const JWT_SHAPE = /^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*$/;

export function looksLikeJwt(s: string): boolean {
  return JWT_SHAPE.test(s);
}

export class IdentityVerifier {
  private jwks: JWTVerifyGetKey | undefined;
  private discovering: Promise<JWTVerifyGetKey> | undefined;

  constructor(
    private readonly cfg: IdentityConfig,
    private readonly apps: ApplicationConfig[],
  ) {}

  /** Discovery is done once, lazily; a failure is retried on the next connection (fail closed). */
  private keys(): Promise<JWTVerifyGetKey> {
    if (this.jwks) return Promise.resolve(this.jwks);
    this.discovering ??= (async () => {
      const url = `${this.cfg.issuer.replace(/\/$/, '')}/.well-known/openid-configuration`;
      let meta: { issuer?: string; jwks_uri?: string };
      try {
        const res = await fetch(url, { signal: AbortSignal.timeout(5000) });
        if (!res.ok) throw new Error(`HTTP ${res.status}`);
        meta = (await res.json()) as typeof meta;
      } catch (err) {
        throw new AuthError(`identity provider unreachable (${url}): try again shortly`, err);
      }
      if (meta.issuer !== this.cfg.issuer || !meta.jwks_uri) {
        throw new AuthError(`identity provider discovery at ${url} does not describe issuer ${this.cfg.issuer}`);
      }
      // jose refetches the key set when a token names an unknown kid (key rotation), rate limited.
      this.jwks = createRemoteJWKSet(new URL(meta.jwks_uri), { cooldownDuration: 10_000, cacheMaxAge: 10 * 60_000 });
      return this.jwks;
    })().finally(() => {
      this.discovering = undefined;
    });
    return this.discovering;
  }

  async verifyToken(token: string): Promise<VerifiedIdentity> {
    if (!looksLikeJwt(token)) throw new AuthError('the identity is not a token: run `scalple login` and pass `scalple token` as the password');
    const keys = await this.keys();
    let payload: JWTPayload;
    try {
      ({ payload } = await jwtVerify(token, keys, {
        issuer: this.cfg.issuer,
        audience: this.cfg.audience,
        algorithms: this.cfg.algorithms,
        clockTolerance: this.cfg.leewaySeconds,
        requiredClaims: ['exp', 'iat'],
      }));
    } catch (err) {
      throw new AuthError(describeTokenFailure(err, token, this.cfg), err);
    }
    return { principal: this.principalFrom(payload), expiresAt: (payload.exp! + this.cfg.leewaySeconds) * 1000 };
  }

  private principalFrom(p: JWTPayload): Principal {
    const clientId = typeof p.client_id === 'string' ? p.client_id : undefined;
    const c = this.cfg.claims;
    const email = typeof p[c.email] === 'string' ? (p[c.email] as string) : undefined;
    const groups = claimList(p[c.groups]);
    // A client-credentials token: its subject is the client itself, no person behind it.
    if (clientId && (p.sub === undefined || p.sub === clientId) && !email) {
      const app = this.apps.find((a) => a.clientId === clientId);
      if (!app) throw new AuthError(`application ${clientId} is not declared under applications in the proxy config`);
      return { kind: 'application', sub: `app:${app.name}`, application: app.name, groups: [...new Set([...app.groups, ...groups])] };
    }
    if (!p.sub) throw new AuthError('token has no subject (sub): it does not identify a person');
    const name = typeof p[c.name] === 'string' ? (p[c.name] as string) : undefined;
    return { kind: 'person', sub: p.sub, ...(email ? { email } : {}), ...(name ? { name } : {}), groups };
  }

  /** A static key presented as the password, compared by hash in constant time. */
  verifyStaticKey(password: string): VerifiedIdentity | undefined {
    const digest = createHash('sha256').update(password).digest();
    for (const app of this.apps) {
      if (!app.keySha256) continue;
      const expected = Buffer.from(app.keySha256, 'hex');
      if (expected.length === digest.length && timingSafeEqual(expected, digest)) {
        return { principal: { kind: 'application', sub: `app:${app.name}`, application: app.name, groups: app.groups } };
      }
    }
    return undefined;
  }

  /**
   * A client certificate (mTLS): issued and signed by one of the tls.client_ca certificates, within
   * its validity, and naming a declared application in its CN.
   */
  verifyCertificate(cert: X509Certificate, cas: readonly X509Certificate[], now = Date.now()): VerifiedIdentity | undefined {
    const issuedByCa = cas.some((ca) => cert.checkIssued(ca) && cert.verify(ca.publicKey));
    if (!issuedByCa || now < Date.parse(cert.validFrom) || now > Date.parse(cert.validTo)) return undefined;
    const name = /(?:^|\n)CN=([^\n]+)/.exec(cert.subject)?.[1];
    const app = name ? this.apps.find((a) => a.certCn === name) : undefined;
    if (!app) return undefined;
    return { principal: { kind: 'application', sub: `app:${app.name}`, application: app.name, groups: app.groups } };
  }
}

function claimList(v: unknown): string[] {
  if (Array.isArray(v)) return v.filter((x): x is string => typeof x === 'string');
  if (typeof v === 'string') return v.split(/[\s,]+/).filter(Boolean);
  return [];
}

function describeTokenFailure(err: unknown, token: string, cfg: IdentityConfig): string {
  if (err instanceof joseErrors.JWTExpired) return 'token expired: run `scalple login`';
  if (err instanceof joseErrors.JWTClaimValidationFailed) {
    switch (err.claim) {
      case 'nbf':
      case 'iat':
        return 'token not yet valid: check this machine\'s clock, then run `scalple login`';
      case 'iss':
        return `token issued by ${safeClaim(token, 'iss')}, not by the configured issuer ${cfg.issuer}: log in with the right issuer (\`scalple login --issuer …\`)`;
      case 'aud':
        return `token audience ${safeClaim(token, 'aud')} is not accepted here (expected ${cfg.audience.join(' or ')}): log in with the proxy's audience`;
      default:
        return `token claim ${err.claim} is invalid: run \`scalple login\``;
    }
  }
  if (err instanceof joseErrors.JOSEAlgNotAllowed) return 'token algorithm is not allowed: only asymmetric signatures from the identity provider are accepted';
  if (err instanceof joseErrors.JWKSNoMatchingKey) return 'token signed by a key the identity provider does not publish: run `scalple login`';
  if (err instanceof joseErrors.JWSSignatureVerificationFailed) return 'token signature is invalid: run `scalple login`';
  if (err instanceof joseErrors.JWKSTimeout || err instanceof AuthError) return err instanceof AuthError ? err.message : 'identity provider keys unreachable: try again shortly';
  return 'token is malformed: run `scalple login`';
}

function safeClaim(token: string, claim: 'iss' | 'aud'): string {
  try {
    const v = decodeJwt(token)[claim];
    return JSON.stringify(v ?? null).slice(0, 120);
  } catch {
    return '(unreadable)';
  }
}
