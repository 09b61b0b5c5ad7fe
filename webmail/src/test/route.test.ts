import { describe, expect, it } from 'vitest';
import { DEFAULT_ROUTE, itemHref, listHref, parseRoute } from '../lib/route';

describe('routes', () => {
  it('round-trips folders, labels and searches with an open item', () => {
    for (const list of [
      { kind: 'folder', folder: 'SPAM' },
      { kind: 'label', label: 'Family & Friends/2026' },
      { kind: 'search', query: 'from:alice "big news" #1' },
    ] as const) {
      expect(parseRoute(listHref(list))).toEqual({ list, itemId: null });
      expect(parseRoute(itemHref(list, 'abc123'))).toEqual({ list, itemId: 'abc123' });
    }
  });

  it('anything unknown is the Inbox', () => {
    expect(parseRoute('')).toEqual(DEFAULT_ROUTE);
    expect(parseRoute('#/nowhere')).toEqual(DEFAULT_ROUTE);
    expect(parseRoute('#/%E0%A4%A')).toEqual(DEFAULT_ROUTE);
  });
});
