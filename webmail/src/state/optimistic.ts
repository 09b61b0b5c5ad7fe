// Optimistic changes: the cache shows the change at once; the server's answer replaces it, and an
// error puts back exactly the items as they were before (other items, changed meanwhile by live
// events, are left alone).

import type { MailboxItem } from '../api/types';
import { type MailState, removeItems, upsertItems } from './cache';
import type { Store } from './store';

export type ServerOutcome = { updated: MailboxItem[] } | { deleted: string[] };

export async function optimistic(
  store: Store<MailState>,
  ids: string[],
  local: ((item: MailboxItem) => MailboxItem) | 'remove',
  server: () => Promise<ServerOutcome>,
): Promise<void> {
  const before = ids.map((id) => store.get().items[id]).filter((i): i is MailboxItem => i !== undefined);
  if (local === 'remove') store.set(removeItems(store.get(), ids));
  else store.set(upsertItems(store.get(), before.map(local)));
  let outcome: ServerOutcome;
  try {
    outcome = await server();
  } catch (error) {
    store.set(rollback(store.get(), before));
    throw error;
  }
  if ('updated' in outcome) store.set(upsertItems(store.get(), outcome.updated));
  else store.set(removeItems(store.get(), outcome.deleted));
}

/** The items as they were: restored in the cache and, by membership, in every loaded list. */
export function rollback(state: MailState, before: MailboxItem[]): MailState {
  return upsertItems(state, before);
}
