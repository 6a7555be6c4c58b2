// What a person does in a browser, and nothing more: GET the page the CLI printed, read its form,
// fill the fields a person would fill, POST it, follow redirects with the cookies the site set.
// No back door into the provider.

export interface PersonAtBrowser {
  login: string;
  password: string;
}

interface Form {
  action: string;
  fields: Map<string, string>;
  inputs: Set<string>;
}

const MAX_STEPS = 12;

export async function completeDeviceSignIn(verificationUri: string, userCode: string, person: PersonAtBrowser): Promise<string> {
  const jar = new Map<string, string>();
  let res = await request(verificationUri, jar);
  for (let step = 0; step < MAX_STEPS; step++) {
    const html = await res.text();
    if (/Sign-in Success/i.test(html)) return html;
    if (/Sign-in failed|<title>Error<\/title>|code you entered is incorrect/i.test(html)) throw new Error(`sign-in refused: ${stripTags(html).slice(0, 200)}`);
    const form = firstForm(html, res.url);
    if (process.env.DEBUG_BROWSER) console.error(step, res.url, form, [...jar.keys()]);
    if (!form) throw new Error(`no form on ${res.url}: ${stripTags(html).slice(0, 200)}`);
    if (form.inputs.has('user_code')) form.fields.set('user_code', userCode);
    if (form.inputs.has('login')) {
      form.fields.set('login', person.login);
      form.fields.set('password', person.password);
    }
    if (form.fields.has('confirm') === false && /op\.deviceConfirmForm/.test(html)) form.fields.set('confirm', 'yes');
    res = await request(form.action, jar, new URLSearchParams([...form.fields]));
  }
  throw new Error('sign-in did not finish');
}

async function request(url: string, jar: Map<string, string>, body?: URLSearchParams): Promise<Response> {
  let current = url;
  let method = body ? 'POST' : 'GET';
  let payload: URLSearchParams | undefined = body;
  for (let i = 0; i < 10; i++) {
    const headers: Record<string, string> = {};
    const cookie = [...jar].map(([k, v]) => `${k}=${v}`).join('; ');
    if (cookie) headers.cookie = cookie;
    if (payload) headers['content-type'] = 'application/x-www-form-urlencoded';
    const res = await fetch(current, { method, headers, ...(payload ? { body: payload.toString() } : {}), redirect: 'manual' });
    for (const sc of res.headers.getSetCookie()) {
      const [pair] = sc.split(';');
      const eq = pair!.indexOf('=');
      const name = pair!.slice(0, eq).trim();
      const value = pair!.slice(eq + 1).trim();
      if (/expires=Thu, 01 Jan 1970/i.test(sc) || value === '') jar.delete(name);
      else jar.set(name, value);
    }
    const loc = res.headers.get('location');
    if (res.status >= 300 && res.status < 400 && loc) {
      current = new URL(loc, current).toString();
      method = 'GET';
      payload = undefined;
      continue;
    }
    Object.defineProperty(res, 'url', { value: current });
    return res;
  }
  throw new Error('too many redirects');
}

function firstForm(html: string, base: string): Form | undefined {
  const m = /<form\b([^>]*)>([\s\S]*?)<\/form>/i.exec(html);
  if (!m) return undefined;
  const action = attr(m[1]!, 'action') ?? base;
  const fields = new Map<string, string>();
  const inputs = new Set<string>();
  for (const im of m[2]!.matchAll(/<input\b([^>]*)>/gi)) {
    const name = attr(im[1]!, 'name');
    if (!name) continue;
    inputs.add(name);
    fields.set(name, decode(attr(im[1]!, 'value') ?? ''));
  }
  return { action: new URL(decode(action), base).toString(), fields, inputs };
}

function attr(tag: string, name: string): string | undefined {
  const m = new RegExp(`\\b${name}\\s*=\\s*("([^"]*)"|'([^']*)')`, 'i').exec(tag);
  return m ? (m[2] ?? m[3]) : undefined;
}

function decode(s: string): string {
  return s.replace(/&#(\d+);/g, (_, n: string) => String.fromCharCode(Number(n))).replace(/&amp;/g, '&').replace(/&quot;/g, '"').replace(/&lt;/g, '<').replace(/&gt;/g, '>').replace(/&#x([0-9a-f]+);/gi, (_, n: string) => String.fromCharCode(parseInt(n, 16)));
}

function stripTags(s: string): string {
  return s.replace(/<style[\s\S]*?<\/style>/g, '').replace(/<[^>]+>/g, ' ').replace(/\s+/g, ' ').trim();
}
