// The real OpenID provider in-process on loopback, and people who sign in through it with the
// device flow exactly as the CLI does (openid-client), completing the browser part with forms.
import * as oidc from 'openid-client';
import { SignJWT, importJWK } from 'jose';
import { startDevIdp, DEMO_PEOPLE, type DevIdp, type DevIdpOptions, type DevPerson } from '../../src/devidp/provider.ts';
import { completeDeviceSignIn } from './browser.ts';

export { DEMO_PEOPLE, type DevIdp, type DevPerson };

export const TEST_PEOPLE: DevPerson[] = [
  ...DEMO_PEOPLE,
  { sub: 'u-dave', email: 'dave@example.com', name: 'Dave Auditor', groups: ['auditor'] },
  { sub: 'u-erin', email: 'erin@example.com', name: 'Erin Support', groups: ['support'] },
];

export const TEST_APPS = [{ clientId: 'billing-api', clientSecret: 'billing-api-secret-123', groups: ['service'] }];

export function startTestIdp(opts: Partial<DevIdpOptions> = {}): Promise<DevIdp> {
  return startDevIdp({ people: TEST_PEOPLE, applications: TEST_APPS, ...opts });
}

export interface Tokens {
  accessToken: string;
  idToken?: string;
  refreshToken?: string;
}

/** Device login for one person: what `scalple login` does, with the person's browser steps. */
export async function deviceLogin(idp: DevIdp, email: string, password = 'demo'): Promise<Tokens> {
  const config = await oidc.discovery(new URL(idp.issuer), idp.cliClientId, undefined, oidc.None(), { execute: [oidc.allowInsecureRequests] });
  const da = await oidc.initiateDeviceAuthorization(config, { scope: 'openid email profile groups offline_access' });
  const signIn = completeDeviceSignIn(da.verification_uri, da.user_code, { login: email, password });
  const [tokens] = await Promise.all([oidc.pollDeviceAuthorizationGrant(config, { ...da, interval: 0.05 } as typeof da), signIn]);
  return {
    accessToken: tokens.access_token,
    ...(tokens.id_token ? { idToken: tokens.id_token } : {}),
    ...(tokens.refresh_token ? { refreshToken: tokens.refresh_token } : {}),
  };
}

export async function clientCredentialsToken(idp: DevIdp, clientId: string, clientSecret: string): Promise<string> {
  const config = await oidc.discovery(new URL(idp.issuer), clientId, undefined, oidc.ClientSecretPost(clientSecret), { execute: [oidc.allowInsecureRequests] });
  const t = await oidc.clientCredentialsGrant(config, { scope: 'openid' });
  return t.access_token;
}

/** Signs arbitrary claims with the provider's own key (for expired / not-yet-valid / wrong-aud cases). */
export async function mintWithProviderKey(idp: DevIdp, claims: Record<string, unknown>, header: Record<string, unknown> = {}): Promise<string> {
  const key = await importJWK(idp.signingJwk as Parameters<typeof importJWK>[0], 'RS256');
  return new SignJWT(claims).setProtectedHeader({ alg: 'RS256', kid: idp.signingJwk.kid as string, typ: 'at+jwt', ...header }).sign(key);
}
