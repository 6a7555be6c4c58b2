// The pure parts of src/auth: which issuers are accepted, --proxy parsing, and the token store's
// decision between keychain and file against keychains that misbehave the ways real ones do
// (a locked keyring answers a read with nothing). The real keychain is in keychain.test.ts.
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { readFileSync, statSync } from 'node:fs';
import { ScalpleError } from '../../src/errors.ts';
import { isLoopbackHost, parseIssuer } from '../../src/auth/oidc.ts';
import { parseHostPort, profileName } from '../../src/auth/profile.ts';
import { credentialsFilePath, readTokens, storeTokens, type Keychain, type StoredTokens } from '../../src/auth/token-store.ts';
import { sandbox, type Sandbox } from './harness.ts';

describe('issuer URLs', () => {
  it('accepts http:// only on loopback addresses', () => {
    for (const ok of ['http://127.0.0.1:8080', 'http://127.12.0.9', 'http://[::1]:9000/realms/x', 'http://localhost:3000', 'https://login.example.com']) {
      expect(() => parseIssuer(ok)).not.toThrow();
    }
    expect(parseIssuer('http://127.0.0.1:1').insecure).toBe(true);
    expect(parseIssuer('https://login.example.com').insecure).toBe(false);
    for (const bad of ['http://10.0.0.1', 'http://127.example.com', 'http://localhost.example.com', 'http://[::2]', 'http://0.0.0.0', 'http://128.0.0.1']) {
      expect(() => parseIssuer(bad), bad).toThrow(/plain http: use its https:\/\/ URL/);
    }
    expect(() => parseIssuer('ftp://x')).toThrow(/only https:\/\/ URLs/);
    expect(() => parseIssuer('not a url')).toThrow(/Invalid --issuer/);
    try {
      parseIssuer('http://example.com');
    } catch (err) {
      expect(err).toBeInstanceOf(ScalpleError);
      expect((err as ScalpleError).code).toBe('USAGE');
    }
  });

  it('knows the loopback hosts', () => {
    expect(isLoopbackHost('127.0.0.1')).toBe(true);
    expect(isLoopbackHost('[::1]')).toBe(true);
    expect(isLoopbackHost('LOCALHOST')).toBe(true);
    expect(isLoopbackHost('192.168.1.1')).toBe(false);
  });
});

describe('profile helpers', () => {
  it('parses --proxy HOST:PORT', () => {
    expect(parseHostPort('127.0.0.1:6432')).toEqual({ host: '127.0.0.1', port: 6432 });
    expect(parseHostPort('db.example.com:5432')).toEqual({ host: 'db.example.com', port: 5432 });
    expect(parseHostPort('[::1]:6432')).toEqual({ host: '::1', port: 6432 });
    for (const bad of ['db', 'db:', 'db:0', 'db:70000', '::1:6432', 'a b:1']) expect(() => parseHostPort(bad), bad).toThrow(/expected HOST:PORT/);
  });

  it('takes the profile from --profile, then $SCALPLE_PROFILE', () => {
    expect(profileName(undefined, {})).toBe('default');
    expect(profileName(undefined, { SCALPLE_PROFILE: 'ops' })).toBe('ops');
    expect(profileName('dev', { SCALPLE_PROFILE: 'ops' })).toBe('dev');
    expect(() => profileName('../etc', {})).toThrow(/Invalid profile name/);
  });
});

/** An in-memory keychain that can be told to misbehave. */
class MemoryKeychain implements Keychain {
  readonly description = 'test keychain';
  readonly entries = new Map<string, string>();
  deleted: string[] = [];
  constructor(private readonly mode: 'ok' | 'locked' | 'garbled' | 'refuses' = 'ok') {}
  async set(account: string, secret: string) {
    if (this.mode === 'refuses') throw new Error('Secret Service: no result found');
    this.entries.set(account, secret);
  }
  async get(account: string) {
    if (this.mode === 'locked') return null;
    const v = this.entries.get(account);
    return v === undefined ? null : this.mode === 'garbled' ? v.slice(1) : v;
  }
  async delete(account: string) {
    this.deleted.push(account);
    return this.entries.delete(account);
  }
}

const TOKENS: StoredTokens = { accessToken: 'eyJ.a.b', refreshToken: 'r1', idToken: 'eyJ.i.d', proxyToken: 'access', issuer: 'https://login.example.com', clientId: 'scalple-cli', obtainedAt: 1 };

describe('token store: keychain or file', () => {
  let box: Sandbox;
  beforeEach(() => {
    box = sandbox();
  });
  afterEach(() => box.remove());

  it('uses the keychain when the test write reads back, and removes a stale file copy', async () => {
    await storeTokens('default', TOKENS, { env: box.env, insecureStorage: true });
    await storeTokens('other', TOKENS, { env: box.env, insecureStorage: true });
    const kc = new MemoryKeychain('ok');
    const r = await storeTokens('default', TOKENS, { env: box.env, keychain: kc });
    expect(r).toEqual({ storage: 'keychain', location: 'test keychain' });
    expect(JSON.parse(kc.entries.get('default')!)).toEqual(TOKENS);
    expect(Object.keys(JSON.parse(readFileSync(credentialsFilePath(box.env), 'utf8')).profiles)).toEqual(['other']);
    expect(await readTokens('default', 'keychain', { env: box.env, keychain: kc })).toEqual(TOKENS);
  });

  for (const [mode, reason] of [
    ['locked', 'the keychain accepted the token but gave nothing back (is it locked?)'],
    ['garbled', 'the keychain gave back different data'],
    ['refuses', 'Secret Service: no result found'],
  ] as const) {
    it(`falls back to the 0600 file when the keychain ${mode === 'locked' ? 'reads back nothing' : mode === 'garbled' ? 'reads back other data' : 'refuses the write'}`, async () => {
      const kc = new MemoryKeychain(mode);
      const r = await storeTokens('default', TOKENS, { env: box.env, keychain: kc });
      expect(r).toEqual({ storage: 'file', location: credentialsFilePath(box.env), fallbackReason: reason });
      expect(statSync(credentialsFilePath(box.env)).mode & 0o777).toBe(0o600);
      expect(kc.entries.size).toBe(0); // what the keychain took was taken back
      expect(await readTokens('default', 'file', { env: box.env })).toEqual(TOKENS);
    });
  }

  it('says how to get going again when the keychain cannot be read', async () => {
    const broken: Keychain = {
      description: 'test keychain',
      set: async () => {},
      get: async () => {
        throw new Error('the keychain did not answer a read within 3 s');
      },
      delete: async () => false,
    };
    const err = await readTokens('default', 'keychain', { env: box.env, keychain: broken }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ScalpleError);
    expect((err as ScalpleError).code).toBe('AUTH_REQUIRED');
    expect((err as ScalpleError).message).toBe('Cannot read the token from the test keychain: the keychain did not answer a read within 3 s. Unlock the keychain, or Run `scalple login --insecure-storage`');
  });
});
