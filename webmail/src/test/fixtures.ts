import type { Connection, MailboxItem } from '../api/types';

let seq = 0;

export function item(overrides: Partial<MailboxItem> = {}): MailboxItem {
  seq += 1;
  const id = overrides.id ?? `id${String(seq).padStart(4, '0')}`;
  return {
    id,
    messageId: `m-${id}`,
    threadId: `t-${id}`,
    folder: 'INBOX',
    labels: [],
    read: false,
    starred: false,
    receivedAt: new Date(Date.UTC(2026, 0, 1, 0, 0, seq)).toISOString(),
    from: { name: 'Alice', email: 'alice@example.test' },
    to: [{ name: null, email: 'bob@example.test' }],
    cc: [],
    subject: `Subject ${id}`,
    snippet: '',
    hasAttachments: false,
    size: 100,
    ...overrides,
  };
}

/** Items with strictly decreasing times (newest first), as a list would hold them. */
export function newestFirst(n: number, overrides: Partial<MailboxItem> = {}): MailboxItem[] {
  return Array.from({ length: n }, () => item(overrides)).reverse();
}

export function page(nodes: MailboxItem[], hasNextPage: boolean, totalCount?: number): Connection<MailboxItem> {
  return {
    edges: nodes.map((node) => ({ cursor: `c-${node.id}`, node })),
    pageInfo: { hasNextPage, endCursor: nodes.length ? `c-${nodes[nodes.length - 1]?.id}` : null },
    ...(totalCount === undefined ? {} : { totalCount }),
  };
}
