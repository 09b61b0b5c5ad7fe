import { describe, expect, it, vi } from 'vitest';
import type { MailhubClient } from '../api/client';
import { DELETE_FOREVER, MARK_SPAM, MESSAGES, SEARCH, UPDATE_MESSAGES } from '../api/operations';
import type { MailboxItem } from '../api/types';
import { listKey } from '../state/cache';
import { laterState, MailController, MutationFailed } from '../state/mail';
import { newestFirst, page } from './fixtures';

const INBOX = listKey({ kind: 'folder', folder: 'INBOX' });

/** A fake server holding one Inbox, answering the list, search and mutation documents. */
function fakeServer(inbox: MailboxItem[], answers: Partial<Record<string, (v: Record<string, unknown>) => unknown>> = {}) {
  const calls: { query: string; variables: Record<string, unknown> }[] = [];
  const request = vi.fn(async (query: string, variables: Record<string, unknown> = {}) => {
    calls.push({ query, variables });
    const custom = answers[query];
    if (custom) return custom(variables);
    if (query === MESSAGES) {
      const start = variables.after ? inbox.findIndex((i) => `c-${i.id}` === variables.after) + 1 : 0;
      const part = inbox.slice(start, start + (variables.first as number));
      return { messages: page(part, start + part.length < inbox.length, inbox.length) };
    }
    throw new Error(`unexpected ${query.slice(0, 30)}`);
  });
  return { client: { request } as unknown as MailhubClient, calls };
}

describe('mail controller', () => {
  it('pages a folder through its cursors until the end', async () => {
    const inbox = newestFirst(250);
    const { client, calls } = fakeServer(inbox);
    const c = new MailController(client);
    await c.loadList(INBOX, true);
    await c.loadList(INBOX, false);
    await c.loadList(INBOX, false);
    await c.loadList(INBOX, false); // nothing left: no request
    expect(calls).toHaveLength(3);
    expect(calls[1]?.variables).toMatchObject({ folder: 'INBOX', label: null, first: 100, after: `c-${inbox[99]?.id}` });
    expect(c.mail.get().lists[INBOX]?.ids).toEqual(inbox.map((i) => i.id));
    expect(c.mail.get().lists[INBOX]?.hasNextPage).toBe(false);
  });

  it('search pages keep the highlights', async () => {
    const hits = newestFirst(2);
    const { client } = fakeServer([], {
      [SEARCH]: () => ({
        search: {
          edges: hits.map((item) => ({ cursor: `c-${item.id}`, node: { item, highlights: ['<mark>hi</mark>'] } })),
          pageInfo: { hasNextPage: false, endCursor: null },
          totalCount: 2,
        },
      }),
    });
    const c = new MailController(client);
    const key = listKey({ kind: 'search', query: 'hi' });
    await c.loadList(key, true);
    expect(c.mail.get().lists[key]?.highlights[hits[0]!.id]).toEqual(['<mark>hi</mark>']);
  });

  it('a failed load is shown on the list, not thrown', async () => {
    const { client } = fakeServer([], { [MESSAGES]: () => Promise.reject(new Error('The server cannot be reached.')) });
    const c = new MailController(client);
    await c.loadList(INBOX, true);
    expect(c.mail.get().lists[INBOX]).toMatchObject({ loading: false, error: 'The server cannot be reached.' });
  });

  it('archive rolls back when the server answers a ValidationError', async () => {
    const inbox = newestFirst(3);
    const { client } = fakeServer(inbox, {
      [UPDATE_MESSAGES]: () => ({ updateMessages: { __typename: 'ValidationError', message: 'no', fields: [{ field: 'set.folder', message: 'no' }] } }),
    });
    const c = new MailController(client);
    await c.loadList(INBOX, true);
    const done = c.move([inbox[1]!.id], 'ARCHIVE');
    expect(c.mail.get().lists[INBOX]?.ids).not.toContain(inbox[1]!.id); // at once
    await expect(done).rejects.toBeInstanceOf(MutationFailed);
    expect(c.mail.get().lists[INBOX]?.ids).toEqual(inbox.map((i) => i.id));
  });

  it('star keeps the server answer', async () => {
    const inbox = newestFirst(2);
    const { client, calls } = fakeServer(inbox, {
      [UPDATE_MESSAGES]: (v) => ({ updateMessages: { __typename: 'UpdateMessagesSuccess', items: [{ ...inbox[0]!, starred: true, labels: ['x'] }] }, v }),
    });
    const c = new MailController(client);
    await c.loadList(INBOX, true);
    await c.update([inbox[0]!.id], { starred: true });
    expect(calls[1]?.variables).toEqual({ ids: [inbox[0]!.id], set: { starred: true } });
    expect(c.mail.get().items[inbox[0]!.id]).toMatchObject({ starred: true, labels: ['x'] });
  });

  it('mark as spam moves the item; delete forever removes it; errors restore', async () => {
    const inbox = newestFirst(2);
    const spamKey = listKey({ kind: 'folder', folder: 'SPAM' });
    const { client } = fakeServer(inbox, {
      [MARK_SPAM]: () => ({ markSpam: { __typename: 'UpdateMessagesSuccess', items: [{ ...inbox[0]!, folder: 'SPAM' }] } }),
      [DELETE_FOREVER]: () => ({ deleteForever: { __typename: 'NotFound', message: 'not in Trash or Spam' } }),
    });
    const c = new MailController(client);
    await c.loadList(INBOX, true);
    c.mail.set({ ...c.mail.get(), lists: { ...c.mail.get().lists, [spamKey]: { ...c.mail.get().lists[INBOX]!, key: spamKey, ids: [] } } });
    await c.markSpam([inbox[0]!.id], true);
    expect(c.mail.get().lists[spamKey]?.ids).toEqual([inbox[0]!.id]);
    expect(c.mail.get().lists[INBOX]?.ids).toEqual([inbox[1]!.id]);
    await expect(c.deleteForever([inbox[1]!.id])).rejects.toThrow('not in Trash or Spam');
    expect(c.mail.get().lists[INBOX]?.ids).toEqual([inbox[1]!.id]);
  });

  it('live events keep the latest sync state', () => {
    const { client } = fakeServer([]);
    const c = new MailController(client);
    const [a] = newestFirst(1);
    c.onEvent({ type: 'created', item: a!, itemId: a!.id, state: '9' });
    c.onEvent({ type: 'updated', item: a!, itemId: a!.id, state: '10' });
    expect(c.syncState).toBe('10');
    expect(laterState('10', '9')).toBe('10');
    expect(laterState(null, '3')).toBe('3');
  });
});
