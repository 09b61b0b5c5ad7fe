import { describe, expect, it } from 'vitest';
import type { RecipientStatus } from '../api/types';
import { mergeStatus } from '../state/delivery';

const status = (address: string, s: string, at: string, type = 'to'): RecipientStatus => ({
  address,
  type,
  status: s,
  attempts: 1,
  lastReply: null,
  bounceClass: null,
  nextAttemptAt: null,
  updatedAt: at,
});

describe('delivery status updates', () => {
  it('replaces the recipient with a newer status and adds unknown ones', () => {
    let list = [status('a@x.test', 'queued', '2026-01-01T00:00:00Z')];
    list = mergeStatus(list, status('A@x.test', 'sent', '2026-01-01T00:00:05Z'));
    list = mergeStatus(list, status('b@x.test', 'deferred', '2026-01-01T00:00:06Z', 'cc'));
    expect(list.map((r) => `${r.address.toLowerCase()}:${r.status}`)).toEqual(['a@x.test:sent', 'b@x.test:deferred']);
  });

  it('ignores an older status that arrives late', () => {
    const list = [status('a@x.test', 'sent', '2026-01-01T00:00:05Z')];
    expect(mergeStatus(list, status('a@x.test', 'sending', '2026-01-01T00:00:01Z'))).toBe(list);
  });
});
