import { describe, expect, it } from 'vitest';
import type { Connection } from '../api/types';
import { appendThreadPage, mergeFirstPage, newThreadList } from '../state/threads';

function node(id: string, minute: number, unread = 0) {
  return {
    id,
    subject: `S ${id}`,
    participants: [{ name: null, email: 'a@x.test' }],
    messageCount: 2,
    unreadCount: unread,
    latestAt: new Date(Date.UTC(2026, 0, 1, 0, minute)).toISOString(),
    messages: [
      { id: `${id}-1`, folder: 'INBOX' as const },
      { id: `${id}-2`, folder: 'SENT' as const },
      { id: `${id}-3`, folder: 'DRAFTS' as const },
    ],
  };
}
type N = ReturnType<typeof node>;
function page(nodes: N[], hasNextPage: boolean): Connection<N> {
  return { edges: nodes.map((n) => ({ cursor: `c-${n.id}`, node: n })), pageInfo: { hasNextPage, endCursor: nodes.length ? `c-${nodes[nodes.length - 1]!.id}` : null } };
}

describe('conversation list', () => {
  it('pages append in order, keeping the last cursor', () => {
    let l = mergeFirstPage(newThreadList('folder:INBOX'), page([node('a', 9), node('b', 8)], true));
    l = appendThreadPage(l, page([node('b', 8), node('c', 7)], false));
    expect(l.rows.map((r) => r.id)).toEqual(['a', 'b', 'c']);
    expect(l.rows[0]?.itemIds).toEqual(['a-1', 'a-2', 'a-3']);
    // opening a thread in the Inbox shows its latest Inbox message, never a draft
    expect(l.rows[0]?.openId).toBe('a-1');
    expect(mergeFirstPage(newThreadList('label:Work'), page([node('z', 1)], false)).rows[0]?.openId).toBe('z-2');
    expect(l.hasNextPage).toBe(false);
    expect(l.endCursor).toBe('c-c');
  });

  it('a refreshed first page moves an active thread up and keeps older pages', () => {
    let l = mergeFirstPage(newThreadList('k'), page([node('a', 9), node('b', 8)], true));
    l = appendThreadPage(l, page([node('c', 7), node('d', 6)], true));
    // a reply arrived in d: it moves to the top; b and c (older than the fresh page) stay
    l = mergeFirstPage(l, page([node('d', 10, 1), node('a', 9)], true));
    expect(l.rows.map((r) => r.id)).toEqual(['d', 'a', 'b', 'c']);
    expect(l.rows[0]?.unreadCount).toBe(1);
    expect(l.endCursor).toBe('c-d');
  });

  it('a thread that left the first page range drops out', () => {
    let l = mergeFirstPage(newThreadList('k'), page([node('a', 9), node('b', 8), node('c', 7)], true));
    l = appendThreadPage(l, page([node('d', 6)], true));
    // b was archived: the fresh first page reaches back to c without it
    l = mergeFirstPage(l, page([node('a', 9), node('c', 7)], true));
    expect(l.rows.map((r) => r.id)).toEqual(['a', 'c', 'd']);
  });

  it('a complete first page replaces everything', () => {
    let l = mergeFirstPage(newThreadList('k'), page([node('a', 9), node('b', 8)], false));
    l = mergeFirstPage(l, page([node('b', 8)], false));
    expect(l.rows.map((r) => r.id)).toEqual(['b']);
  });
});
