// The address bar: #/inbox, #/inbox/<item id>, #/label/<name>[/<item id>], #/search/<query>[/<item id>].
// Hash routes need nothing from the server but index.html at /.

import type { Folder } from '../api/types';
import { type ListSpec, listKey } from '../state/cache';
import { folderFromSlug } from './format';

export interface Route {
  list: ListSpec;
  itemId: string | null;
}

export const DEFAULT_ROUTE: Route = { list: { kind: 'folder', folder: 'INBOX' }, itemId: null };

export function parseRoute(hash: string): Route {
  const parts = hash.replace(/^#\/?/, '').split('/').map((p) => {
    try {
      return decodeURIComponent(p);
    } catch {
      return p;
    }
  });
  const [first, second, third] = parts;
  if (first === 'label' && second) return { list: { kind: 'label', label: second }, itemId: third || null };
  if (first === 'search' && second !== undefined) return { list: { kind: 'search', query: second }, itemId: third || null };
  const folder = first ? folderFromSlug(first) : null;
  if (folder) return { list: { kind: 'folder', folder }, itemId: second || null };
  return DEFAULT_ROUTE;
}

export function listHref(list: ListSpec): string {
  switch (list.kind) {
    case 'folder':
      return `#/${list.folder.toLowerCase()}`;
    case 'label':
      return `#/label/${encodeURIComponent(list.label)}`;
    case 'search':
      return `#/search/${encodeURIComponent(list.query)}`;
  }
}

export function itemHref(list: ListSpec, itemId: string): string {
  return `${listHref(list)}/${encodeURIComponent(itemId)}`;
}

export function folderHref(folder: Folder): string {
  return listHref({ kind: 'folder', folder });
}

export function routeKey(route: Route): string {
  return listKey(route.list);
}
