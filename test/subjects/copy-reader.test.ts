// CopyKeyReader on its own: COPY TO rows printed as PostgreSQL prints them (CopyAttributeOutText,
// CopyAttributeOutCSV), cut into CopyData messages and chunks at every possible place, with values
// built to look like keys in the wrong column, embedded delimiters, quotes, escapes, newlines and
// NULL strings. The keys read must be exactly the key column's non-null values.
import { describe, expect, it } from 'vitest';
import { CopyKeyReader, type CopyCapture, type SubjectSink } from '../../src/proxy/subject-plan.ts';

type Value = string | null;

/** CopyAttributeOutText. */
function outText(v: string, delim: string): string {
  let o = '';
  for (const ch of v) {
    const map: Record<string, string> = { '\b': 'b', '\f': 'f', '\n': 'n', '\r': 'r', '\t': 't', '\v': 'v' };
    if (map[ch] !== undefined) o += '\\' + map[ch];
    else if (ch === '\\' || ch === delim) o += '\\' + ch;
    else o += ch;
  }
  return o;
}

/** CopyAttributeOutCSV. */
function outCsv(v: string, o: { delim: string; quote: string; escape: string; null: string }, force: boolean, single: boolean): string {
  let use = force || v === o.null;
  if (!use) use = single && v === '\\.' ? true : [...v].some((c) => c === o.delim || c === o.quote || c === '\n' || c === '\r');
  if (!use) return v;
  let r = o.quote;
  for (const c of v) r += c === o.quote || c === o.escape ? o.escape + c : c;
  return r + o.quote;
}

interface Opts {
  format: 'text' | 'csv';
  delim: string;
  quote: string;
  escape: string;
  null: string;
  header: boolean;
  forceQuote?: boolean;
  nullAmbiguous?: boolean;
}

function print(rows: Value[][], names: string[], o: Opts): Buffer[] {
  const line = (vals: Value[]) =>
    vals.map((v) => (v === null ? o.null : o.format === 'text' ? outText(v, o.delim) : outCsv(v, o, !!o.forceQuote, vals.length === 1))).join(o.delim) + '\n';
  const out = o.header ? [line(names)] : [];
  for (const r of rows) out.push(line(r));
  return out.map((s) => Buffer.from(s, 'utf8'));
}

function capture(o: Opts, columns: number): CopyCapture {
  return {
    format: o.format,
    delimiter: o.delim.charCodeAt(0),
    quote: o.quote.charCodeAt(0),
    escape: o.escape.charCodeAt(0),
    null: Buffer.from(o.null),
    nullAmbiguous: o.nullAmbiguous ?? false,
    header: o.header,
    columns,
  };
}

/** A small deterministic PRNG. */
function rng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s * 1664525 + 1013904223) >>> 0;
    return s / 2 ** 32;
  };
}

const TRICKY = ['42', ' 42', '42\n', '\n42', '42\t42', '4\\2', '"42"', "'42'", '42,42', '42;42', '42|42', '\\N', 'NULL', 'nil', '', '\\.', '\r\n42', '\\', '"', 'x"42"\n42\ty', 'ü42€'];

function randomValue(r: () => number): Value {
  const x = r();
  if (x < 0.1) return null;
  if (x < 0.6) return TRICKY[Math.floor(r() * TRICKY.length)]!;
  let s = '';
  const n = Math.floor(r() * 12);
  for (let i = 0; i < n; i++) s += TRICKY[Math.floor(r() * TRICKY.length)]!.slice(0, 2) + String.fromCharCode(32 + Math.floor(r() * 90));
  return s;
}

/** Reads `messages` (CopyData payloads) cut into chunks of random sizes. */
function read(o: Opts, columns: number, keyAt: number, messages: Buffer[], r: () => number, maxPiece: number): SubjectSink {
  const reader = new CopyKeyReader(capture(o, columns), new Map([[keyAt, 'customer']]));
  for (const m of messages) {
    let off = 0;
    while (off < m.length) {
      const n = 1 + Math.floor(r() * maxPiece);
      reader.push(m.subarray(off, off + n));
      off += n;
    }
  }
  const sink: SubjectSink = { subjectKeys: new Set() };
  reader.finish(sink);
  return sink;
}

const FORMATS: Opts[] = [
  { format: 'text', delim: '\t', quote: '"', escape: '"', null: '\\N', header: false },
  { format: 'text', delim: '|', quote: '"', escape: '"', null: '\\N', header: true },
  { format: 'text', delim: ',', quote: '"', escape: '"', null: '<null>', header: false, nullAmbiguous: true },
  { format: 'csv', delim: ',', quote: '"', escape: '"', null: '', header: true },
  { format: 'csv', delim: ';', quote: "'", escape: '\\', null: 'NULL', header: false, forceQuote: true },
  { format: 'csv', delim: '|', quote: '"', escape: '\\', null: 'nil', header: true },
  { format: 'csv', delim: '\t', quote: '`', escape: '`', null: '\\N', header: false },
];

describe('CopyKeyReader', () => {
  for (const [fi, o] of FORMATS.entries()) {
    it(`reads exactly the key column (${o.format}, delimiter ${JSON.stringify(o.delim)}, null ${JSON.stringify(o.null)}, header ${o.header})`, () => {
      const r = rng(1000 + fi);
      for (let round = 0; round < 40; round++) {
        const columns = 1 + Math.floor(r() * 4);
        const keyAt = Math.floor(r() * columns);
        const rows: Value[][] = [];
        const expected = new Set<string>();
        for (let i = 0; i < 30; i++) {
          const row = Array.from({ length: columns }, () => randomValue(r));
          // Keys are mostly numbers; decoys that look like 42 live in the other columns.
          if (r() < 0.7) row[keyAt] = String(Math.floor(r() * 100));
          if (o.nullAmbiguous && row[keyAt] === o.null) row[keyAt] = '7';
          rows.push(row);
          if (row[keyAt] !== null) expected.add(`customer:${row[keyAt]}`);
        }
        const names = Array.from({ length: columns }, (_, i) => (i === keyAt ? 'id' : `c${i}\t"42"`));
        const lines = print(rows, names, o);
        // One row per CopyData (what PostgreSQL sends), or the whole stream cut anywhere.
        const whole = Buffer.concat(lines);
        const cuts: Buffer[] = [];
        for (let off = 0; off < whole.length; ) {
          const n = 1 + Math.floor(r() * 40);
          cuts.push(whole.subarray(off, off + n));
          off += n;
        }
        for (const [messages, piece] of [[lines, 1_000_000], [lines, 3], [cuts, 7], [[whole], 1]] as const) {
          const got = read(o, columns, keyAt, [...messages], r, piece);
          // A NULL key under a NULL string that some value also prints as cannot be told apart.
          const ambiguous = o.nullAmbiguous && rows.some((x) => x[keyAt] === null);
          expect(got.subjectsPossible, `round ${round}`).toEqual(ambiguous ? { customer: expect.stringMatching(/NULL string/) } : undefined);
          expect([...got.subjectKeys!].sort(), `round ${round}`).toEqual([...expected].sort());
        }
      }
    });
  }

  it('decodes text escapes in the key (octal, hex, control letters) as PostgreSQL would', () => {
    const o = FORMATS[0]!;
    const rows = [Buffer.from('\\x34\\062\tx\n'), Buffer.from('4\\\\2\ty\n'), Buffer.from('\\N\t42\n'), Buffer.from('\\t1\\n\t\n')];
    const got = read(o, 2, 0, rows, rng(1), 1000);
    expect([...got.subjectKeys!].sort()).toEqual(['customer:42', 'customer:4\\2', 'customer:\t1\n'].sort());
  });

  it('makes the access possible, with no keys, when rows do not have the expected fields', () => {
    const o = FORMATS[0]!;
    const got = read(o, 2, 0, [Buffer.from('42\tx\n'), Buffer.from('43\tx\textra\n')], rng(1), 1000);
    expect(got.subjectKeys!.size).toBe(0);
    expect(got.subjectsPossible).toEqual({ customer: expect.stringMatching(/3 fields where 2/) });
    const csv = read(FORMATS[3]!, 2, 0, [Buffer.from('id,x\n'), Buffer.from('42,"open\n')], rng(1), 1000);
    expect(csv.subjectKeys!.size).toBe(0);
    expect(csv.subjectsPossible).toEqual({ customer: expect.stringMatching(/ended inside a row/) });
  });

  it('keeps complete rows and makes the rest possible when the data stops inside a row', () => {
    const got = read(FORMATS[0]!, 2, 0, [Buffer.from('42\tx\n4')], rng(1), 1000);
    expect([...got.subjectKeys!]).toEqual(['customer:42']);
    expect(got.subjectsPossible).toEqual({ customer: expect.stringMatching(/ended inside a row/) });
  });

  it('says a key equal to an ambiguous text NULL string may be a value', () => {
    const o: Opts = { format: 'text', delim: '\t', quote: '"', escape: '"', null: '42', header: false, nullAmbiguous: true };
    const got = read(o, 1, 0, [Buffer.from('42\n'), Buffer.from('7\n')], rng(1), 1000);
    expect([...got.subjectKeys!]).toEqual(['customer:7']);
    expect(got.subjectsPossible).toEqual({ customer: expect.stringMatching(/NULL string "42"/) });
  });
});
