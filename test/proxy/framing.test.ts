// Framing and startup-parameter handling, fed the way TCP delivers bytes: split anywhere, coalesced.
import { describe, expect, it } from 'vitest';
import { MessageFramer } from '../../src/proxy/framing.ts';
import { parseMessage, queryMessage, syncMessage, Front } from '../../src/proxy/protocol.ts';
import { takeScalpleSettings } from '../../src/proxy/client-startup.ts';
import { encodeTagValue, tagFor } from '../../src/proxy/tag.ts';

describe('MessageFramer', () => {
  const stream = Buffer.concat([queryMessage('select 1'), parseMessage('s1', 'select $1::int', Buffer.from([0, 0])), syncMessage, queryMessage('x'.repeat(70_000))]);

  it('yields the same messages whatever the chunk boundaries', () => {
    for (const size of [1, 2, 3, 5, 7, 64, 1000, stream.length]) {
      const f = new MessageFramer();
      const got: number[] = [];
      const bodies: string[] = [];
      for (let i = 0; i < stream.length; i += size) {
        for (const m of f.push(stream.subarray(i, i + size))) {
          got.push(m.type);
          bodies.push(m.raw.toString('hex').slice(0, 40));
        }
      }
      expect(got).toEqual([Front.Query, Front.Parse, Front.Sync, Front.Query]);
      expect(f.pendingBytes).toBe(0);
    }
  });

  it('rejects a negative or absurd length', () => {
    const bad = Buffer.from([0x51, 0xff, 0xff, 0xff, 0xff]);
    expect(() => new MessageFramer().push(bad)).toThrow(/invalid message length/);
  });
});

describe('takeScalpleSettings', () => {
  it('takes the identity from its own startup parameter', () => {
    const p: Record<string, string> = { user: 'x', 'scalple.identity': 'tok' };
    expect(takeScalpleSettings(p)).toEqual({ 'scalple.identity': 'tok' });
    expect(p).toEqual({ user: 'x' });
  });

  it('takes -c scalple.identity=… out of options and keeps the other options', () => {
    const p: Record<string, string> = { options: '-c statement_timeout=5s -c scalple.identity=a.b.c --scalple.reason=ticket\\ 42 -cwork_mem=64MB' };
    expect(takeScalpleSettings(p)).toEqual({ 'scalple.identity': 'a.b.c', 'scalple.reason': 'ticket 42' });
    expect(p.options).toBe('-c statement_timeout=5s -cwork_mem=64MB');
  });

  it('drops options entirely when only scalple settings were in it', () => {
    const p: Record<string, string> = { options: '-c scalple.identity=a.b.c' };
    takeScalpleSettings(p);
    expect(p.options).toBeUndefined();
  });
});

describe('tag', () => {
  it('never lets a value open or close a comment, or break the line', () => {
    const nasty = 'ev/*il*/x\n--@example.com';
    const tag = tagFor('id-1', encodeTagValue(nasty));
    const inner = tag.slice(2, -3);
    expect(inner).not.toContain('/*');
    expect(inner).not.toContain('*/');
    expect(tag).not.toContain('\n');
    expect(tag.startsWith('/* scalple log_id=id-1 user=')).toBe(true);
    expect(decodeURIComponent(encodeTagValue(nasty))).toBe(nasty);
  });
});
