import { describe, expect, it } from 'vitest';
import type { ChangesResult, MailboxItem } from '../api/types';
import { CHANGES } from '../api/operations';
import { applyStateInput, emptyState, listKey, mergePage, type MailState } from '../state/cache';
import { Store } from '../state/store';
import { catchUp, chunk, MAX_ITEMS_TO_REFETCH, planCatchUp } from '../state/sync';
import { item, newestFirst, page } from './fixtures';

const INBOX = listKey({ kind: 'folder', folder: 'INBOX' });

/** A fake of the server's two answers: changes(since:) and aliased message(id:) lookups. */
function fakeServer(changes: ChangesResult, items: Record<string, MailboxItem>) {
  const calls: { query: string; variables: Record<string, unknown> }[] = [];
  const request = async <T,>(query: string, variables: Record<string, unknown> = {}): Promise<T> => {
    calls.push({ query, variables });
    if (query === CHANGES) return { changes } as T;
    const out: Record<string, MailboxItem | null> = {};
    for (const [name, id] of Object.entries(variables)) out[`m${name.slice(1)}`] = items[id as string] ?? null;
    return out as T;
  };
  return { request, calls };
}

describe('reconnect catch-up via changes(since:)', () => {
  it('adds created items, refreshes updated ones and drops deleted ones', async () => {
    const all = newestFirst(3);
    const store = new Store<MailState>(mergePage(emptyState, INBOX, page(all, false), { reset: true }));
    const arrived = item();
    const readElsewhere = applyStateInput(all[0]!, { read: true });
    const server = fakeServer(
      { __typename: 'Changes', created: [arrived.id], updated: [readElsewhere.id], deleted: [all[2]!.id], newState: '42' },
      { [arrived.id]: arrived, [readElsewhere.id]: readElsewhere },
    );
    const result = await catchUp(server.request, store, '17');
    expect(result).toEqual({ newState: '42', reload: false });
    expect(server.calls[0]?.variables).toEqual({ since: '17' });
    expect(store.get().lists[INBOX]?.ids).toEqual([arrived.id, all[0]!.id, all[1]!.id]);
    expect(store.get().items[all[0]!.id]?.read).toBe(true);
  });

  it('an item that is gone by the time it is read is removed', async () => {
    const all = newestFirst(2);
    const store = new Store<MailState>(mergePage(emptyState, INBOX, page(all, false), { reset: true }));
    const server = fakeServer({ __typename: 'Changes', created: [], updated: [all[0]!.id], deleted: [], newState: '3' }, {});
    await catchUp(server.request, store, '2');
    expect(store.get().lists[INBOX]?.ids).toEqual([all[1]!.id]);
  });

  it('reads items 25 per request', async () => {
    const many = newestFirst(60);
    const store = new Store<MailState>(mergePage(emptyState, INBOX, page([], false), { reset: true }));
    const server = fakeServer(
      { __typename: 'Changes', created: many.map((i) => i.id), updated: [], deleted: [], newState: '9' },
      Object.fromEntries(many.map((i) => [i.id, i])),
    );
    await catchUp(server.request, store, '1');
    expect(server.calls).toHaveLength(1 + 3);
    expect(store.get().lists[INBOX]?.ids).toHaveLength(60);
  });

  it('asks for a reload when the state is too old for the change log', () => {
    expect(planCatchUp({ __typename: 'CannotCalculateChanges', message: 'too old', newState: '50' })).toEqual({
      refetch: [],
      remove: [],
      reload: true,
      newState: '50',
    });
  });

  it('asks for a reload when there are too many changes to read one by one', () => {
    const created = Array.from({ length: MAX_ITEMS_TO_REFETCH + 1 }, (_, i) => `n${i}`);
    const plan = planCatchUp({ __typename: 'Changes', created, updated: [], deleted: ['d'], newState: '8' });
    expect(plan.reload).toBe(true);
    expect(plan.remove).toEqual(['d']);
  });

  it('does not read an item that was created and deleted again', () => {
    const plan = planCatchUp({ __typename: 'Changes', created: ['a', 'b'], updated: ['b'], deleted: ['a'], newState: '2' });
    expect(plan.refetch).toEqual(['b']);
  });

  it('chunk', () => {
    expect(chunk([1, 2, 3, 4, 5], 2)).toEqual([[1, 2], [3, 4], [5]]);
  });
});
