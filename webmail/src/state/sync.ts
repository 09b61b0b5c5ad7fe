// Catching up after the websocket was down: `changes(since:)` names the items created, updated
// and deleted meanwhile; the created/updated ones are read again, the deleted ones dropped. A
// state too old for the server's change log (CannotCalculateChanges), or more changes than are
// worth reading one by one, means: reload the open lists.

import { CHANGES, ITEMS_PER_REQUEST, itemsByIdQuery } from '../api/operations';
import type { ChangesResult, MailboxItem } from '../api/types';
import { type MailState, removeItems, upsertItems } from './cache';
import type { Store } from './store';

export const MAX_ITEMS_TO_REFETCH = 500;

export interface CatchUpPlan {
  refetch: string[];
  remove: string[];
  reload: boolean;
  newState: string;
}

export function planCatchUp(result: ChangesResult): CatchUpPlan {
  if (result.__typename === 'CannotCalculateChanges') {
    return { refetch: [], remove: [], reload: true, newState: result.newState };
  }
  const deleted = new Set(result.deleted);
  const refetch = [...new Set([...result.created, ...result.updated])].filter((id) => !deleted.has(id));
  if (refetch.length > MAX_ITEMS_TO_REFETCH) {
    return { refetch: [], remove: result.deleted, reload: true, newState: result.newState };
  }
  return { refetch, remove: result.deleted, reload: false, newState: result.newState };
}

export function chunk<T>(values: T[], size: number): T[][] {
  const out: T[][] = [];
  for (let i = 0; i < values.length; i += size) out.push(values.slice(i, i + size));
  return out;
}

type Request = <T>(query: string, variables?: Record<string, unknown>) => Promise<T>;

/** Reads items by id (aliased `message(id:)`, 25 a request); missing ones come back as gone. */
export async function fetchItems(request: Request, ids: string[]): Promise<{ found: MailboxItem[]; gone: string[] }> {
  const found: MailboxItem[] = [];
  const gone: string[] = [];
  for (const part of chunk(ids, ITEMS_PER_REQUEST)) {
    const variables: Record<string, string> = {};
    part.forEach((id, i) => (variables[`i${i}`] = id));
    const data = await request<Record<string, MailboxItem | null>>(itemsByIdQuery(part.length), variables);
    part.forEach((id, i) => {
      const item = data[`m${i}`];
      if (item) found.push(item);
      else gone.push(id);
    });
  }
  return { found, gone };
}

/**
 * Brings the cache up to date from `since`; returns the new sync state and whether the open
 * lists must be reloaded from their first page.
 */
export async function catchUp(
  request: Request,
  store: Store<MailState>,
  since: string,
): Promise<{ newState: string; reload: boolean }> {
  const data = await request<{ changes: ChangesResult }>(CHANGES, { since });
  const plan = planCatchUp(data.changes);
  let state = removeItems(store.get(), plan.remove);
  store.set(state);
  if (plan.refetch.length) {
    const { found, gone } = await fetchItems(request, plan.refetch);
    state = upsertItems(removeItems(store.get(), gone), found);
    store.set(state);
  }
  return { newState: plan.newState, reload: plan.reload };
}
