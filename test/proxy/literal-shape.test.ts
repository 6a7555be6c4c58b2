// The literal shape is only a cache key: equal shapes must mean equal statements but for literal
// values, and anything unusual must give up rather than guess.
import { describe, expect, it } from 'vitest';
import { literalShape } from '../../src/proxy/literal-shape.ts';

describe('literalShape', () => {
  it('takes numbers and strings out, keeps identifiers, parameters, comments and quoted names', () => {
    expect(literalShape("SELECT abalance FROM pgbench_accounts WHERE aid = 42")).toBe('SELECT abalance FROM pgbench_accounts WHERE aid = ?');
    expect(literalShape("SELECT * FROM t1 WHERE a = 'it''s' AND b > -1.5e-3 AND c = $2 -- 7\n")).toBe('SELECT * FROM t1 WHERE a = ? AND b > -? AND c = $2 -- 7\n');
    expect(literalShape('SELECT "col 1" FROM "T2" WHERE x = 3')).toBe('SELECT "col 1" FROM "T2" WHERE x = ?');
    expect(literalShape("SELECT date '2020-01-01'")).toBe('SELECT date ?');
  });

  it('is undefined when there is no literal, or when the text uses a form it does not handle', () => {
    expect(literalShape('SELECT a FROM t')).toBeUndefined();
    for (const sql of ["SELECT E'a\\\\'' ", 'SELECT $$x$$', "SELECT B'101'", 'SELECT /* 1 */ 2', "SELECT 'unterminated", 'SELECT 1abc']) {
      expect(literalShape(sql), sql).toBeUndefined();
    }
  });

  it('never gives two structurally different statements the same shape', () => {
    const texts = ["SELECT a FROM t WHERE a = 'x'", 'SELECT a FROM t WHERE a = 1', "SELECT a FROM t WHERE a = 'x' OR true", 'SELECT a FROM t2 WHERE a = 1', 'SELECT "a" FROM t WHERE a = 1'];
    const shapes = texts.map(literalShape);
    expect(shapes[0]).toBe(shapes[1]);
    expect(new Set(shapes.slice(1)).size).toBe(4);
  });
});
