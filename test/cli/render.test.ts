// Rendering of query results: pure functions, tested directly.
import { describe, expect, it } from 'vitest';
import { PgType, formatCsv, formatExpanded, formatJson, formatNdjson, formatTable, renderResult, type QueryResult } from '../../src/cli/render.ts';

const T = { text: 25 };

function customers(): QueryResult {
  return {
    fields: [
      { name: 'id', typeOid: PgType.int4 },
      { name: 'email', typeOid: T.text },
      { name: 'iban', typeOid: T.text },
      { name: 'note', typeOid: T.text },
      { name: 'total', typeOid: PgType.numeric },
    ],
    rows: [
      ['1', 'a***@example.com', 'FR76****', null, '10.50'],
      ['22', null, '****', '', '3.00'],
      ['333', 'c***@example.com', '****', 'two\nlines', '100.00'],
    ],
    masked: new Set(['email', 'iban']),
  };
}

class Capture {
  text = '';
  constructor(
    readonly isTTY: boolean,
    readonly columns?: number,
  ) {}
  write(s: string) {
    this.text += s;
    return true;
  }
}

const ESC = '\u001b[';

describe('table', () => {
  it('marks masked cells, shows NULL apart from the empty string, right-aligns numbers, and ends with a footer', () => {
    expect(formatTable(customers())).toBe(
      [
        '┌─────┬────────────────────┬────────────┬────────┬────────┐',
        '│  id │ email ⊘            │ iban ⊘     │ note   │  total │',
        '├─────┼────────────────────┼────────────┼────────┼────────┤',
        '│   1 │ ⊘ a***@example.com │ ⊘ FR76**** │ [NULL] │  10.50 │',
        '│  22 │ ⊘ [NULL]           │ ⊘ ****     │        │   3.00 │',
        '│ 333 │ ⊘ c***@example.com │ ⊘ ****     │ two    │ 100.00 │',
        '│     │                    │            │ lines  │        │',
        '└─────┴────────────────────┴────────────┴────────┴────────┘',
        '(3 rows · masked: email, iban)',
        '',
      ].join('\n'),
    );
  });

  it('says "1 row" and "0 rows", and names no masked column when none is', () => {
    const one: QueryResult = { fields: [{ name: 'n', typeOid: PgType.int8 }], rows: [['7']], masked: new Set() };
    expect(formatTable(one).endsWith('\n(1 row)\n')).toBe(true);
    expect(formatTable({ ...one, rows: [] })).toBe('┌───┐\n│ n │\n└───┘\n(0 rows)\n');
    expect(formatTable({ fields: [], rows: [], masked: new Set() })).toBe('(0 rows)\n');
  });

  it('shows control characters escaped, so data cannot drive the terminal', () => {
    const r: QueryResult = { fields: [{ name: 'x', typeOid: T.text }], rows: [['a\u001b[31mred\tb\r']], masked: new Set() };
    const out = formatTable(r);
    expect(out).toContain('a\\x1b[31mred\\tb\\r');
    expect(out).not.toContain('\u001b');
  });
});

describe('expanded layout', () => {
  it('prints one block per record (-x)', () => {
    expect(formatExpanded(customers())).toBe(
      [
        '-[ RECORD 1 ]+-------------------',
        'id      | 1',
        'email ⊘ | ⊘ a***@example.com',
        'iban ⊘  | ⊘ FR76****',
        'note    | [NULL]',
        'total   | 10.50',
        '-[ RECORD 2 ]+---------',
        'id      | 22',
        'email ⊘ | ⊘ [NULL]',
        'iban ⊘  | ⊘ ****',
        'note    | ',
        'total   | 3.00',
        '-[ RECORD 3 ]+-------------------',
        'id      | 333',
        'email ⊘ | ⊘ c***@example.com',
        'iban ⊘  | ⊘ ****',
        'note    | two',
        '        | lines',
        'total   | 100.00',
        '(3 rows · masked: email, iban)',
        '',
      ].join('\n'),
    );
  });

  it('is chosen automatically when the table is wider than the terminal', () => {
    const narrow = new Capture(true, 40);
    renderResult(customers(), narrow, { env: { NO_COLOR: '1' } });
    expect(narrow.text).toBe(formatExpanded(customers()));
    const wide = new Capture(true, 200);
    renderResult(customers(), wide, { env: { NO_COLOR: '1' } });
    expect(wide.text).toBe(formatTable(customers()));
    // Not a terminal: no width to fit, the table stays a table.
    const pipe = new Capture(false);
    renderResult(customers(), pipe, { env: {} });
    expect(pipe.text).toBe(formatTable(customers()));
    expect(formatTable(customers(), { width: 59 })).toBe(formatTable(customers()));
    expect(formatTable(customers(), { width: 58 })).toBe(formatExpanded(customers()));
  });
});

describe('colour', () => {
  it('colours only on a TTY without NO_COLOR', () => {
    const tty = new Capture(true, 200);
    renderResult(customers(), tty, { env: {} });
    expect(tty.text).toContain(ESC);
    expect(tty.text).toContain(`${ESC}33m⊘ `); // masked cells in yellow
    expect(tty.text.replace(/\u001b\[[0-9;]*m/g, '')).toBe(formatTable(customers()));

    const noColor = new Capture(true, 200);
    renderResult(customers(), noColor, { env: { NO_COLOR: '1' } });
    expect(noColor.text).not.toContain(ESC);

    const pipe = new Capture(false);
    renderResult(customers(), pipe, { env: {} });
    expect(pipe.text).not.toContain(ESC);
  });

  it('never colours json, csv or ndjson', () => {
    for (const format of ['json', 'csv', 'ndjson'] as const) {
      const tty = new Capture(true, 200);
      renderResult(customers(), tty, { format, env: {} });
      expect(tty.text).not.toContain(ESC);
    }
  });
});

describe('json', () => {
  it('is an array of objects; numbers only when lossless, nulls as null', () => {
    expect(JSON.parse(formatJson(customers()))).toEqual([
      { id: 1, email: 'a***@example.com', iban: 'FR76****', note: null, total: '10.50' },
      { id: 22, email: null, iban: '****', note: '', total: '3.00' },
      { id: 333, email: 'c***@example.com', iban: '****', note: 'two\nlines', total: '100.00' },
    ]);
  });

  it('decides per column, so a column never mixes numbers and strings', () => {
    const r: QueryResult = {
      fields: [
        { name: 'small', typeOid: PgType.int8 },
        { name: 'big', typeOid: PgType.int8 },
        { name: 'f', typeOid: PgType.float8 },
        { name: 'nan', typeOid: PgType.float8 },
        { name: 'n', typeOid: PgType.numeric },
        { name: 'b', typeOid: PgType.bool },
        { name: 'masked_id', typeOid: PgType.int4 },
        { name: 'money', typeOid: PgType.money },
      ],
      rows: [
        ['9007199254740991', '9007199254740993', '1.5e-07', 'NaN', '12.5', 't', '42', '$1.00'],
        ['-3', '1', '0.1', '1', '-7', 'f', '43', '$2.00'],
        [null, null, null, null, null, null, null, null],
      ],
      masked: new Set(['masked_id']),
    };
    expect(JSON.parse(formatJson(r))).toEqual([
      { small: 9007199254740991, big: '9007199254740993', f: 1.5e-7, nan: 'NaN', n: 12.5, b: true, masked_id: '42', money: '$1.00' },
      { small: -3, big: '1', f: 0.1, nan: '1', n: -7, b: false, masked_id: '43', money: '$2.00' },
      { small: null, big: null, f: null, nan: null, n: null, b: null, masked_id: null, money: null },
    ]);
    expect(formatJson(r)).toContain('"big": "9007199254740993"');
  });

  it('keeps every column when names repeat, and prints [] for no rows', () => {
    const r: QueryResult = {
      fields: [
        { name: 'a', typeOid: PgType.int4 },
        { name: 'a', typeOid: PgType.int4 },
        { name: 'a_2', typeOid: PgType.int4 },
      ],
      rows: [['1', '2', '3']],
      masked: new Set(),
    };
    expect(JSON.parse(formatJson(r))).toEqual([{ a: 1, a_2: 2, a_2_2: 3 }]);
    expect(formatJson({ ...r, rows: [] })).toBe('[]\n');
  });
});

describe('ndjson', () => {
  it('prints one object per line with the json conversions', () => {
    expect(formatNdjson(customers())).toBe(
      [
        '{"id":1,"email":"a***@example.com","iban":"FR76****","note":null,"total":"10.50"}',
        '{"id":22,"email":null,"iban":"****","note":"","total":"3.00"}',
        '{"id":333,"email":"c***@example.com","iban":"****","note":"two\\nlines","total":"100.00"}',
        '',
      ].join('\n'),
    );
    expect(formatNdjson({ ...customers(), rows: [] })).toBe('');
  });
});

describe('csv (RFC 4180)', () => {
  it('quotes what needs quoting, ends lines with CRLF, and tells NULL from the empty string', () => {
    const r: QueryResult = {
      fields: [
        { name: 'id', typeOid: PgType.int4 },
        { name: 'text, with comma', typeOid: T.text },
      ],
      rows: [
        ['1', 'plain'],
        ['2', 'say "hi"'],
        ['3', 'two\r\nlines'],
        ['4', ''],
        ['5', null],
        ['6', ' spaced '],
      ],
      masked: new Set(),
    };
    expect(formatCsv(r)).toBe('id,"text, with comma"\r\n1,plain\r\n2,"say ""hi"""\r\n3,"two\r\nlines"\r\n4,""\r\n5,\r\n6, spaced \r\n');
  });

  it('writes the header alone for no rows', () => {
    expect(formatCsv({ ...customers(), rows: [] })).toBe('id,email,iban,note,total\r\n');
  });

  it('renders through renderResult exactly as formatCsv', () => {
    const out = new Capture(false);
    renderResult(customers(), out, { format: 'csv' });
    expect(out.text).toBe(formatCsv(customers()));
  });
});
