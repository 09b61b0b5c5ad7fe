// The client-side mail cache: items by id and the lists the user has open (a folder, a label,
// a search), kept as immutable values so every change is a new state React can compare.
//
// Lists are newest first. When an item changes (optimistic update, server answer, live event,
// catch-up) every folder/label list recomputes membership from the item itself: an item moved to
// Archive leaves the Inbox list and enters a loaded Archive list at its place. Search lists
// keep their members (only the server knows what matches) but see the items' new state.

import type { Connection, Folder, MailboxEvent, MailboxItem, MessageStateInput } from '../api/types';

export type ListKey = string;

export interface ListState {
  key: ListKey;
  ids: string[];
  endCursor: string | null;
  hasNextPage: boolean;
  loaded: boolean;
  loading: boolean;
  error: string | null;
  totalCount: number | null;
  highlights: Record<string, string[]>;
}

export interface MailState {
  items: Record<string, MailboxItem>;
  lists: Record<ListKey, ListState>;
}

export const emptyState: MailState = { items: {}, lists: {} };

export type ListSpec =
  | { kind: 'folder'; folder: Folder }
  | { kind: 'label'; label: string }
  | { kind: 'search'; query: string };

export function listKey(spec: ListSpec): ListKey {
  switch (spec.kind) {
    case 'folder':
      return `folder:${spec.folder}`;
    case 'label':
      return `label:${spec.label}`;
    case 'search':
      return `search:${spec.query}`;
  }
}

export function parseListKey(key: ListKey): ListSpec {
  const colon = key.indexOf(':');
  const kind = key.slice(0, colon);
  const rest = key.slice(colon + 1);
  if (kind === 'folder') return { kind, folder: rest as Folder };
  if (kind === 'label') return { kind, label: rest };
  return { kind: 'search', query: rest };
}

export function newList(key: ListKey): ListState {
  return {
    key,
    ids: [],
    endCursor: null,
    hasNextPage: true,
    loaded: false,
    loading: false,
    error: null,
    totalCount: null,
    highlights: {},
  };
}

/** Whether the item belongs in the list; null when only the server can say (search). */
export function belongsTo(item: MailboxItem, key: ListKey): boolean | null {
  const spec = parseListKey(key);
  if (spec.kind === 'folder') return item.folder === spec.folder;
  if (spec.kind === 'label') return item.labels.includes(spec.label);
  return null;
}

/** Newest first; equal times by id, descending, so the order is total and stable. */
export function compareItems(a: MailboxItem, b: MailboxItem): number {
  const ta = Date.parse(a.receivedAt);
  const tb = Date.parse(b.receivedAt);
  if (ta !== tb) return tb - ta;
  return a.id < b.id ? 1 : a.id > b.id ? -1 : 0;
}

function withList(state: MailState, list: ListState): MailState {
  return { ...state, lists: { ...state.lists, [list.key]: list } };
}

export function setListFlags(state: MailState, key: ListKey, flags: Partial<ListState>): MailState {
  const list = state.lists[key] ?? newList(key);
  return withList(state, { ...list, ...flags });
}

/**
 * Merges one page of a keyset-paged list. A first page (`reset`) replaces the list; later pages
 * append, skipping ids already present (an item that arrived live while paging, or moved up).
 */
export function mergePage(
  state: MailState,
  key: ListKey,
  page: Connection<MailboxItem>,
  options: { reset: boolean; highlights?: Record<string, string[]> },
): MailState {
  const items = { ...state.items };
  for (const edge of page.edges) items[edge.node.id] = edge.node;
  const previous = state.lists[key] ?? newList(key);
  const base = options.reset ? [] : previous.ids;
  const seen = new Set(base);
  const ids = [...base];
  for (const edge of page.edges) {
    if (!seen.has(edge.node.id)) {
      seen.add(edge.node.id);
      ids.push(edge.node.id);
    }
  }
  const list: ListState = {
    ...previous,
    ids,
    endCursor: page.pageInfo.endCursor ?? previous.endCursor,
    hasNextPage: page.pageInfo.hasNextPage,
    loaded: true,
    loading: false,
    error: null,
    totalCount: page.totalCount ?? previous.totalCount,
    highlights: { ...(options.reset ? {} : previous.highlights), ...(options.highlights ?? {}) },
  };
  return withList({ ...state, items }, list);
}

/** Inserts `id` into sorted `ids` (newest first). */
function insertSorted(ids: string[], item: MailboxItem, items: Record<string, MailboxItem>): string[] {
  let lo = 0;
  let hi = ids.length;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    const other = items[ids[mid] as string];
    if (other && compareItems(other, item) < 0) lo = mid + 1;
    else hi = mid;
  }
  return [...ids.slice(0, lo), item.id, ...ids.slice(lo)];
}

/**
 * Puts items (new or changed) into the cache and every loaded folder/label list. An item joins a
 * list only inside the range already loaded (newer than its last row, or the list is complete):
 * older rows come with the next page, in the server's order.
 */
export function upsertItems(state: MailState, changed: MailboxItem[]): MailState {
  if (changed.length === 0) return state;
  const items = { ...state.items };
  for (const item of changed) items[item.id] = item;
  const lists = { ...state.lists };
  for (const [key, list] of Object.entries(state.lists)) {
    let ids = list.ids;
    for (const item of changed) {
      const member = belongsTo(item, key);
      if (member === null) continue;
      const present = ids.includes(item.id);
      if (!member && present) {
        ids = ids.filter((i) => i !== item.id);
      } else if (member && !present && list.loaded) {
        const lastId = ids[ids.length - 1];
        const last = lastId ? items[lastId] : undefined;
        if (!list.hasNextPage || !last || compareItems(item, last) < 0) ids = insertSorted(ids, item, items);
      } else if (member && present) {
        // receivedAt never changes; the position stays
      }
    }
    if (ids !== list.ids) {
      const delta = ids.length - list.ids.length;
      lists[key] = { ...list, ids, totalCount: list.totalCount === null ? null : Math.max(0, list.totalCount + delta) };
    }
  }
  return { items, lists };
}

/** Removes items from the cache and from every list (search lists included). */
export function removeItems(state: MailState, ids: string[]): MailState {
  if (ids.length === 0) return state;
  const gone = new Set(ids);
  const items = { ...state.items };
  for (const id of ids) delete items[id];
  const lists: Record<ListKey, ListState> = {};
  for (const [key, list] of Object.entries(state.lists)) {
    const kept = list.ids.filter((i) => !gone.has(i));
    const removed = list.ids.length - kept.length;
    lists[key] =
      removed === 0
        ? list
        : { ...list, ids: kept, totalCount: list.totalCount === null ? null : Math.max(0, list.totalCount - removed) };
  }
  return { items, lists };
}

/** What `updateMessages(set:)` will do to an item, applied locally before the server answers. */
export function applyStateInput(item: MailboxItem, set: MessageStateInput): MailboxItem {
  let labels = item.labels;
  if (set.addLabels?.length) labels = [...labels, ...set.addLabels.filter((l) => !labels.includes(l))];
  if (set.removeLabels?.length) labels = labels.filter((l) => !set.removeLabels?.includes(l));
  return {
    ...item,
    read: set.read ?? item.read,
    starred: set.starred ?? item.starred,
    folder: set.folder ?? item.folder,
    labels,
  };
}

/** A live mailbox event (mailboxEvents subscription). */
export function applyEvent(state: MailState, event: MailboxEvent): MailState {
  if (event.type === 'deleted' || event.item === null) return removeItems(state, [event.itemId]);
  return upsertItems(state, [event.item]);
}

/** The items of a list that are in the cache, in list order. */
export function listItems(state: MailState, key: ListKey): MailboxItem[] {
  const list = state.lists[key];
  if (!list) return [];
  const out: MailboxItem[] = [];
  for (const id of list.ids) {
    const item = state.items[id];
    if (item) out.push(item);
  }
  return out;
}
