// The conversation view of a folder or label: one row per thread, most recent activity first,
// paged on the server's keyset cursors. Live changes re-read the first page and merge it in front
// (threads move up when a message arrives), keeping the older pages already loaded.

import type { Address, Connection, Folder } from '../api/types';

export interface ThreadRow {
  id: string;
  subject: string;
  participants: Address[];
  messageCount: number;
  unreadCount: number;
  latestAt: string;
  /** The thread's message ids, oldest first. */
  itemIds: string[];
  /** What opening the row shows: the latest message in the listed folder, else the latest that is not a draft. */
  openId: string;
}

export interface ThreadList {
  key: string;
  rows: ThreadRow[];
  endCursor: string | null;
  hasNextPage: boolean;
  loaded: boolean;
  loading: boolean;
  error: string | null;
}

export function newThreadList(key: string): ThreadList {
  return { key, rows: [], endCursor: null, hasNextPage: true, loaded: false, loading: false, error: null };
}

interface ThreadNode {
  id: string;
  subject: string;
  participants: Address[];
  messageCount: number;
  unreadCount: number;
  latestAt: string;
  messages: { id: string; folder: Folder }[];
}

export function toRow(node: ThreadNode, folder: Folder | null = null): ThreadRow {
  const { messages, ...rest } = node;
  const newest = [...messages].reverse();
  const open = (folder && newest.find((m) => m.folder === folder)) || newest.find((m) => m.folder !== 'DRAFTS') || newest[0];
  return { ...rest, itemIds: messages.map((m) => m.id), openId: open?.id ?? node.id };
}

function folderOf(key: string): Folder | null {
  return key.startsWith('folder:') ? (key.slice(7) as Folder) : null;
}

/** Appends a later page (skipping threads already listed). */
export function appendThreadPage(list: ThreadList, page: Connection<ThreadNode>): ThreadList {
  const seen = new Set(list.rows.map((r) => r.id));
  const rows = [...list.rows];
  for (const e of page.edges) if (!seen.has(e.node.id)) rows.push(toRow(e.node, folderOf(list.key)));
  return {
    ...list,
    rows,
    endCursor: page.pageInfo.endCursor ?? list.endCursor,
    hasNextPage: page.pageInfo.hasNextPage,
    loaded: true,
    loading: false,
    error: null,
  };
}

/**
 * Merges a fresh first page in front. Rows as recent as the fresh page's oldest row are what the
 * server says now (a thread no longer in the folder drops out); older rows, from later pages, stay.
 * A first load (nothing listed yet) takes the page's cursor.
 */
export function mergeFirstPage(list: ThreadList, page: Connection<ThreadNode>): ThreadList {
  const fresh = page.edges.map((e) => toRow(e.node, folderOf(list.key)));
  if (!list.loaded || !page.pageInfo.hasNextPage) {
    return { ...list, rows: fresh, endCursor: page.pageInfo.endCursor, hasNextPage: page.pageInfo.hasNextPage, loaded: true, loading: false, error: null };
  }
  const oldest = fresh.length ? Date.parse(fresh[fresh.length - 1]!.latestAt) : Number.POSITIVE_INFINITY;
  const ids = new Set(fresh.map((r) => r.id));
  const older = list.rows.filter((r) => !ids.has(r.id) && Date.parse(r.latestAt) < oldest);
  const keepCursor = older.length > 0;
  return {
    ...list,
    rows: [...fresh, ...older],
    endCursor: keepCursor ? list.endCursor : page.pageInfo.endCursor,
    hasNextPage: keepCursor ? list.hasNextPage : page.pageInfo.hasNextPage,
    loaded: true,
    loading: false,
    error: null,
  };
}
