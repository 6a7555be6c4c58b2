// The CLI's side of OpenID Connect that login, refresh and logout share: which issuers we talk to
// (https, or http on loopback only), discovery through openid-client, which token goes to the
// proxy, and who the tokens say the person is. Translates openid-client failures into one-line
// messages that name the fix.
import { isIP } from 'node:net';
import * as oidc from 'openid-client';
import { decodeJwt, type JWTPayload } from 'jose';
import { ScalpleError, errorMessage } from '../errors.ts';
import type { StoredTokens } from './token-store.ts';

/** Scopes the CLI asks for: identity claims for the proxy, and a refresh token. */
export const LOGIN_SCOPE = 'openid email profile groups offline_access';

/** True for 127.0.0.0/8, ::1 and localhost: the only hosts an http:// issuer may use. */
export function isLoopbackHost(hostname: string): boolean {
  const host = hostname.replace(/^\[|\]$/g, '').toLowerCase();
  if (host === 'localhost') return true;
  if (isIP(host) === 4) return host.split('.')[0] === '127';
  if (isIP(host) === 6) return host === '::1' || host === '0:0:0:0:0:0:0:1';
  return false;
}

/** Parses an issuer URL; http:// only on loopback addresses (development and tests). */
export function parseIssuer(value: string): { url: URL; insecure: boolean } {
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    throw new ScalpleError('USAGE', `Invalid --issuer "${value}": expected a URL such as https://login.example.com/realms/acme.`);
  }
  if (url.protocol === 'https:') return { url, insecure: false };
  if (url.protocol === 'http:') {
    if (isLoopbackHost(url.hostname)) return { url, insecure: true };
    throw new ScalpleError('USAGE', `Issuer ${value} uses plain http: use its https:// URL (http:// is accepted only on loopback addresses such as 127.0.0.1, for development).`);
  }
  throw new ScalpleError('USAGE', `Invalid --issuer "${value}": only https:// URLs are accepted.`);
}

/**
 * Discovers the issuer's metadata; the CLI is a public client (no secret). `timeoutSeconds`
 * bounds each HTTP request made with the returned configuration (openid-client's default: 30 s).
 */
export async function discoverIssuer(issuer: string, clientId: string, timeoutSeconds = 30): Promise<oidc.Configuration> {
  const { url, insecure } = parseIssuer(issuer);
  try {
    return await oidc.discovery(url, clientId, undefined, oidc.None(), { timeout: timeoutSeconds, ...(insecure ? { execute: [oidc.allowInsecureRequests] } : {}) });
  } catch (err) {
    throw new ScalpleError('AUTH_FAILED', `Cannot reach the OpenID issuer ${issuer} (${describeOidcError(err)}): check --issuer.`, { cause: err });
  }
}

/** A short reason for an openid-client / network failure. */
export function describeOidcError(err: unknown): string {
  if (err instanceof oidc.ResponseBodyError) return err.error_description ? `${err.error}: ${err.error_description}` : err.error;
  if (err instanceof TypeError && err.message === 'fetch failed') {
    const cause = (err as { cause?: { code?: string; message?: string } }).cause;
    return `unreachable: ${cause?.code ?? cause?.message ?? 'fetch failed'}`;
  }
  if (err instanceof oidc.ClientError && err.code === 'OAUTH_RESPONSE_IS_NOT_CONFORM') return 'unexpected HTTP response';
  return errorMessage(err);
}

/** The OAuth error code of a failed token request (`invalid_grant`, …), if the server sent one. */
export function oauthErrorCode(err: unknown): string | undefined {
  return err instanceof oidc.ResponseBodyError ? err.error : undefined;
}

export function tryDecodeJwt(token: string | undefined): JWTPayload | undefined {
  if (!token) return undefined;
  try {
    return decodeJwt(token);
  } catch {
    return undefined;
  }
}

function audiences(aud: JWTPayload['aud']): string[] {
  return aud === undefined ? [] : Array.isArray(aud) ? aud : [aud];
}

/**
 * The token the proxy receives: the access token when it is a JWT whose `aud` includes the
 * proxy's audience, else the ID token (the proxy's identity.audience is then the CLI's client id,
 * as Kubernetes does with OIDC ID tokens).
 */
export function chooseProxyToken(accessToken: string, idToken: string | undefined, audience: string): 'access' | 'id' {
  const claims = tryDecodeJwt(accessToken);
  if (claims && audiences(claims.aud).includes(audience)) return 'access';
  if (idToken) return 'id';
  throw new ScalpleError('AUTH_FAILED', `The issuer gave neither a JWT access token for audience "${audience}" nor an ID token: check --audience (the proxy's identity.audience).`);
}

/** The token to send to the proxy and when it expires (seconds since the epoch), from stored tokens. */
export function proxyTokenOf(tokens: StoredTokens): { token: string; kind: 'access' | 'id'; expiresAt: number | undefined } {
  if (tokens.proxyToken === 'id' && tokens.idToken) {
    return { token: tokens.idToken, kind: 'id', expiresAt: tryDecodeJwt(tokens.idToken)?.exp };
  }
  return { token: tokens.accessToken, kind: 'access', expiresAt: tryDecodeJwt(tokens.accessToken)?.exp ?? tokens.accessTokenExpiresAt };
}

export interface Identity {
  subject?: string;
  email?: string;
  name?: string;
  groups: string[];
}

/** Who the tokens say the person is: ID token claims first, then the access token's. */
export function identityOf(tokens: Pick<StoredTokens, 'accessToken' | 'idToken'>): Identity {
  const id = tryDecodeJwt(tokens.idToken) ?? {};
  const at = tryDecodeJwt(tokens.accessToken) ?? {};
  const pick = (k: string): string | undefined => {
    const v = id[k] ?? at[k];
    return typeof v === 'string' ? v : undefined;
  };
  const groupsRaw = id.groups ?? at.groups;
  const groups = Array.isArray(groupsRaw) ? groupsRaw.filter((g): g is string => typeof g === 'string') : [];
  const identity: Identity = { groups };
  const subject = pick('sub');
  const email = pick('email');
  const name = pick('name');
  if (subject) identity.subject = subject;
  if (email) identity.email = email;
  if (name) identity.name = name;
  return identity;
}

/** What `✓ Logged in as …` shows: the email, else a username, else the subject. */
export function displayNameOf(identity: Identity, tokens: Pick<StoredTokens, 'accessToken' | 'idToken'>): string {
  if (identity.email) return identity.email;
  const claims = tryDecodeJwt(tokens.idToken) ?? tryDecodeJwt(tokens.accessToken) ?? {};
  const preferred = claims.preferred_username;
  return typeof preferred === 'string' ? preferred : (identity.subject ?? 'unknown');
}

/** Builds what we store from a token endpoint response (device grant or refresh). */
export function toStoredTokens(
  response: oidc.TokenEndpointResponse,
  previous: Pick<StoredTokens, 'refreshToken' | 'idToken'> | undefined,
  settings: { issuer: string; clientId: string; audience: string },
  now: number,
): StoredTokens {
  const accessToken = response.access_token;
  const idToken = response.id_token ?? previous?.idToken;
  const refreshToken = response.refresh_token ?? previous?.refreshToken;
  const exp = tryDecodeJwt(accessToken)?.exp ?? (typeof response.expires_in === 'number' ? now + response.expires_in : undefined);
  const stored: StoredTokens = {
    accessToken,
    proxyToken: chooseProxyToken(accessToken, idToken, settings.audience),
    issuer: settings.issuer,
    clientId: settings.clientId,
    obtainedAt: now,
  };
  if (refreshToken) stored.refreshToken = refreshToken;
  if (idToken) stored.idToken = idToken;
  if (exp !== undefined) stored.accessTokenExpiresAt = exp;
  return stored;
}

/** Best-effort revocation of the refresh token at logout; returns a reason when it did not happen. */
export async function revokeRefreshToken(tokens: StoredTokens, timeoutSeconds = 3): Promise<string | undefined> {
  if (!tokens.refreshToken) return undefined;
  try {
    const config = await discoverIssuer(tokens.issuer, tokens.clientId, timeoutSeconds);
    if (!config.serverMetadata().revocation_endpoint) return 'the issuer has no revocation endpoint';
    await oidc.tokenRevocation(config, tokens.refreshToken, { token_type_hint: 'refresh_token' });
    return undefined;
  } catch (err) {
    return err instanceof ScalpleError ? err.message : describeOidcError(err);
  }
}
