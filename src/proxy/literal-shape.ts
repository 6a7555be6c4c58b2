// The shape of a statement text with its literal values taken out: `SELECT * FROM t WHERE id = 42`
// and `… id = 43` share the shape `SELECT * FROM t WHERE id = ?`. The proxy uses it to reuse one
// analysis for texts that differ only in literals (psql users, the simple query protocol), without
// parsing each. It is a cache key only: when the scan meets anything it does not fully understand
// it gives up (undefined) and the text is analysed on its own.

const IDENT = /[A-Za-z0-9_$\u0080-\uffff]/;

export function literalShape(sql: string): string | undefined {
  let out = '';
  let i = 0;
  const n = sql.length;
  let changed = false;
  while (i < n) {
    const c = sql[i]!;
    // Comments are kept as they are (they are not literals).
    if (c === '-' && sql[i + 1] === '-') {
      const end = sql.indexOf('\n', i);
      const stop = end < 0 ? n : end;
      out += sql.slice(i, stop);
      i = stop;
      continue;
    }
    if (c === '/' && sql[i + 1] === '*') return undefined; // nesting rules: not worth the risk
    if (c === '"') {
      const end = sql.indexOf('"', i + 1);
      if (end < 0) return undefined;
      out += sql.slice(i, end + 1);
      i = end + 1;
      continue;
    }
    if (c === "'") {
      // E'…' strings (backslash escapes) and U&'…' are left alone: give up.
      const prev = sql[i - 1];
      if (prev && /[EeUuBbXxNn&]/.test(prev) && (i < 2 || !IDENT.test(sql[i - 2]!))) return undefined;
      let j = i + 1;
      for (;;) {
        const q = sql.indexOf("'", j);
        if (q < 0) return undefined;
        if (sql[q + 1] === "'") {
          j = q + 2;
          continue;
        }
        j = q + 1;
        break;
      }
      out += '?';
      i = j;
      changed = true;
      continue;
    }
    if (c === '$') {
      if (/[0-9]/.test(sql[i + 1] ?? '')) {
        // $1 parameter: part of the shape.
        let j = i + 1;
        while (j < n && /[0-9]/.test(sql[j]!)) j++;
        out += sql.slice(i, j);
        i = j;
        continue;
      }
      return undefined; // dollar quoting
    }
    if (/[0-9]/.test(c) && (i === 0 || !IDENT.test(sql[i - 1]!))) {
      let j = i;
      while (j < n && /[0-9.eE]/.test(sql[j]!)) {
        if ((sql[j] === 'e' || sql[j] === 'E') && (sql[j + 1] === '+' || sql[j + 1] === '-')) j++;
        j++;
      }
      if (j < n && IDENT.test(sql[j]!)) return undefined; // 1abc: not a plain number
      out += '?';
      i = j;
      changed = true;
      continue;
    }
    if (IDENT.test(c)) {
      let j = i;
      while (j < n && IDENT.test(sql[j]!)) j++;
      out += sql.slice(i, j);
      i = j;
      continue;
    }
    out += c;
    i++;
  }
  return changed ? out : undefined;
}
