import { describe, expect, it } from 'vitest';
import { applyStateInput, emptyState, listKey, mergePage, type MailState } from '../state/cache';
import { optimistic } from '../state/optimistic';
import { Store } from '../state/store';
import { newestFirst, page } from './fixtures';

const INBOX = listKey({ kind: 'folder', folder: 'INBOX' });
const TRASH = listKey({ kind: 'folder', folder: 'TRASH' });

function setup() {
  const all = newestFirst(3);
  let s = mergePage(emptyState, INBOX, page(all, false), { reset: true });
  s = mergePage(s, TRASH, page([], false), { reset: true });
  return { all, store: new Store<MailState>(s) };
}

describe('optimistic updates', () => {
  it('show the change before the server answers, then take the server item', async () => {
    const { all, store } = setup();
    const target = all[0]!;
    let seenDuring: boolean | undefined;
    await optimistic(store, [target.id], (i) => applyStateInput(i, { starred: true }), async () => {
      seenDuring = store.get().items[target.id]?.starred;
      return { updated: [{ ...target, starred: true, snippet: 'from server' }] };
    });
    expect(seenDuring).toBe(true);
    expect(store.get().items[target.id]).toMatchObject({ starred: true, snippet: 'from server' });
  });

  it('roll back a move on error: the item is back in its list, at its place', async () => {
    const { all, store } = setup();
    const target = all[1]!;
    const failing = optimistic(store, [target.id], (i) => applyStateInput(i, { folder: 'TRASH' }), async () => {
      expect(store.get().lists[INBOX]?.ids).not.toContain(target.id);
      expect(store.get().lists[TRASH]?.ids).toContain(target.id);
      throw new Error('boom');
    });
    await expect(failing).rejects.toThrow('boom');
    expect(store.get().lists[INBOX]?.ids).toEqual(all.map((i) => i.id));
    expect(store.get().lists[TRASH]?.ids).toEqual([]);
    expect(store.get().items[target.id]?.folder).toBe('INBOX');
  });

  it('roll back a delete forever on error', async () => {
    const { all, store } = setup();
    const target = all[2]!;
    await expect(
      optimistic(store, [target.id], 'remove', async () => {
        expect(store.get().items[target.id]).toBeUndefined();
        throw new Error('nope');
      }),
    ).rejects.toThrow('nope');
    expect(store.get().lists[INBOX]?.ids).toEqual(all.map((i) => i.id));
  });

  it('a rollback restores only the items it changed', async () => {
    const { all, store } = setup();
    const [a, b] = [all[0]!, all[1]!];
    await expect(
      optimistic(store, [a.id], (i) => applyStateInput(i, { read: true }), async () => {
        // meanwhile a live event changes another item
        store.set({ ...store.get(), items: { ...store.get().items, [b.id]: { ...b, starred: true } } });
        throw new Error('fail');
      }),
    ).rejects.toThrow();
    expect(store.get().items[a.id]?.read).toBe(false);
    expect(store.get().items[b.id]?.starred).toBe(true);
  });

  it('a server deletion removes the items', async () => {
    const { all, store } = setup();
    await optimistic(store, [all[0]!.id], (i) => applyStateInput(i, { folder: 'TRASH' }), async () => ({ deleted: [all[0]!.id] }));
    expect(store.get().items[all[0]!.id]).toBeUndefined();
  });
});
