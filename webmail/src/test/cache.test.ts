import { describe, expect, it } from 'vitest';
import {
  applyEvent,
  applyStateInput,
  emptyState,
  listItems,
  listKey,
  mergePage,
  parseListKey,
  removeItems,
  upsertItems,
} from '../state/cache';
import { item, newestFirst, page } from './fixtures';

const INBOX = listKey({ kind: 'folder', folder: 'INBOX' });
const ARCHIVE = listKey({ kind: 'folder', folder: 'ARCHIVE' });

describe('cursor paging merge', () => {
  it('appends later pages in order and keeps the last cursor', () => {
    const all = newestFirst(6);
    let s = mergePage(emptyState, INBOX, page(all.slice(0, 3), true, 6), { reset: true });
    expect(s.lists[INBOX]?.endCursor).toBe(`c-${all[2]?.id}`);
    s = mergePage(s, INBOX, page(all.slice(3), false), { reset: false });
    expect(s.lists[INBOX]?.ids).toEqual(all.map((i) => i.id));
    expect(s.lists[INBOX]?.hasNextPage).toBe(false);
    expect(s.lists[INBOX]?.endCursor).toBe(`c-${all[5]?.id}`);
    expect(s.lists[INBOX]?.totalCount).toBe(6);
  });

  it('skips an item that is already listed (it arrived live while paging)', () => {
    const all = newestFirst(4);
    let s = mergePage(emptyState, INBOX, page(all.slice(0, 2), true), { reset: true });
    s = mergePage(s, INBOX, page(all.slice(1), false), { reset: false });
    expect(s.lists[INBOX]?.ids).toEqual(all.map((i) => i.id));
  });

  it('a first page replaces what was there', () => {
    const old = newestFirst(3);
    const fresh = newestFirst(2);
    let s = mergePage(emptyState, INBOX, page(old, false), { reset: true });
    s = mergePage(s, INBOX, page(fresh, true), { reset: true });
    expect(s.lists[INBOX]?.ids).toEqual(fresh.map((i) => i.id));
    expect(s.lists[INBOX]?.hasNextPage).toBe(true);
  });

  it('keeps search highlights of every page', () => {
    const all = newestFirst(2);
    const key = listKey({ kind: 'search', query: 'from:alice' });
    let s = mergePage(emptyState, key, page(all.slice(0, 1), true), { reset: true, highlights: { [all[0]!.id]: ['<mark>a</mark>'] } });
    s = mergePage(s, key, page(all.slice(1), false), { reset: false, highlights: { [all[1]!.id]: ['b'] } });
    expect(Object.keys(s.lists[key]?.highlights ?? {})).toHaveLength(2);
  });

  it('list keys round-trip, labels and queries with colons included', () => {
    for (const spec of [
      { kind: 'folder', folder: 'SPAM' },
      { kind: 'label', label: 'Work: urgent' },
      { kind: 'search', query: 'from:a subject:"x:y"' },
    ] as const) {
      expect(parseListKey(listKey(spec))).toEqual(spec);
    }
  });
});

describe('cache updates', () => {
  it('a new item enters the loaded list at its place, newest first', () => {
    const all = newestFirst(3);
    let s = mergePage(emptyState, INBOX, page(all, false), { reset: true });
    const newest = item();
    s = upsertItems(s, [newest]);
    expect(s.lists[INBOX]?.ids[0]).toBe(newest.id);
    expect(s.lists[INBOX]?.ids).toHaveLength(4);
  });

  it('an item older than the loaded range waits for its page', () => {
    const older = item({ receivedAt: '2020-01-01T00:00:00Z' });
    const all = newestFirst(3);
    let s = mergePage(emptyState, INBOX, page(all, true), { reset: true });
    s = upsertItems(s, [older]);
    expect(s.lists[INBOX]?.ids).not.toContain(older.id);
    expect(s.items[older.id]).toBeDefined();
  });

  it('moving an item takes it out of one folder list and into another', () => {
    const inbox = newestFirst(3);
    const archived = newestFirst(2, { folder: 'ARCHIVE' });
    let s = mergePage(emptyState, INBOX, page(inbox, false), { reset: true });
    s = mergePage(s, ARCHIVE, page(archived, false), { reset: true });
    const moved = applyStateInput(inbox[1]!, { folder: 'ARCHIVE' });
    s = upsertItems(s, [moved]);
    expect(s.lists[INBOX]?.ids).toEqual([inbox[0]!.id, inbox[2]!.id]);
    expect(s.lists[ARCHIVE]?.ids).toContain(moved.id);
    expect(listItems(s, ARCHIVE).map((i) => i.id)).toEqual(
      [...archived, moved].sort((a, b) => Date.parse(b.receivedAt) - Date.parse(a.receivedAt)).map((i) => i.id),
    );
  });

  it('labels: adding puts the item in the label list, removing takes it out', () => {
    const key = listKey({ kind: 'label', label: 'Work' });
    const all = newestFirst(2);
    let s = mergePage(emptyState, INBOX, page(all, false), { reset: true });
    s = mergePage(s, key, page([], false), { reset: true });
    s = upsertItems(s, [applyStateInput(all[0]!, { addLabels: ['Work'] })]);
    expect(s.lists[key]?.ids).toEqual([all[0]!.id]);
    expect(s.items[all[0]!.id]?.labels).toEqual(['Work']);
    s = upsertItems(s, [applyStateInput(s.items[all[0]!.id]!, { removeLabels: ['Work'] })]);
    expect(s.lists[key]?.ids).toEqual([]);
  });

  it('search lists keep their members but show the new state', () => {
    const key = listKey({ kind: 'search', query: 'hello' });
    const all = newestFirst(2);
    let s = mergePage(emptyState, key, page(all, false), { reset: true });
    s = upsertItems(s, [applyStateInput(all[0]!, { folder: 'ARCHIVE', read: true })]);
    expect(s.lists[key]?.ids).toHaveLength(2);
    expect(s.items[all[0]!.id]?.read).toBe(true);
  });

  it('live events: created, updated, deleted', () => {
    const all = newestFirst(2);
    let s = mergePage(emptyState, INBOX, page(all, false, 2), { reset: true });
    const created = item();
    s = applyEvent(s, { type: 'created', item: created, itemId: created.id, state: '5' });
    expect(s.lists[INBOX]?.ids[0]).toBe(created.id);
    expect(s.lists[INBOX]?.totalCount).toBe(3);
    s = applyEvent(s, { type: 'updated', item: { ...created, read: true }, itemId: created.id, state: '6' });
    expect(s.items[created.id]?.read).toBe(true);
    s = applyEvent(s, { type: 'deleted', item: null, itemId: all[0]!.id, state: '7' });
    expect(s.lists[INBOX]?.ids).toEqual([created.id, all[1]!.id]);
    expect(s.items[all[0]!.id]).toBeUndefined();
    expect(s.lists[INBOX]?.totalCount).toBe(2);
  });

  it('removeItems drops the ids from every list', () => {
    const all = newestFirst(3);
    const key = listKey({ kind: 'search', query: 'x' });
    let s = mergePage(emptyState, INBOX, page(all, false), { reset: true });
    s = mergePage(s, key, page(all, false), { reset: true });
    s = removeItems(s, [all[1]!.id]);
    expect(s.lists[INBOX]?.ids).not.toContain(all[1]!.id);
    expect(s.lists[key]?.ids).not.toContain(all[1]!.id);
  });

  it('applyStateInput leaves fields that are not set', () => {
    const i = item({ read: true, starred: false, labels: ['A'] });
    expect(applyStateInput(i, { starred: true })).toMatchObject({ read: true, starred: true, labels: ['A'], folder: 'INBOX' });
    expect(applyStateInput(i, { addLabels: ['A', 'B'] }).labels).toEqual(['A', 'B']);
  });
});
