// The mailbox as the signed-in user sees it: lists loaded page by page, live events applied as
// they come, a catch-up through changes(since:) after every (re)connect, and the message actions
// (optimistic, rolled back on error).

import { type ConnectionStatus, GraphQLRequestError, type MailhubClient } from '../api/client';
import {
  DELETE_FOREVER,
  MAILBOXES,
  MARK_NOT_SPAM,
  MARK_SPAM,
  ME,
  MESSAGE,
  MESSAGES,
  SEARCH,
  SUB_DELIVERY_STATUS,
  SUB_MAILBOX_EVENTS,
  SUB_UNREAD_COUNTS,
  THREAD,
  THREADS,
  UPDATE_MESSAGES,
} from '../api/operations';
import type {
  Connection,
  Folder,
  MailboxEvent,
  MailboxItem,
  MailboxItemFull,
  Mailbox,
  MessageStateInput,
  MutationError,
  RecipientStatus,
  SearchHit,
  Thread,
  User,
} from '../api/types';
import {
  applyEvent,
  applyStateInput,
  emptyState,
  type ListKey,
  type MailState,
  mergePage,
  parseListKey,
  setListFlags,
  upsertItems,
} from './cache';
import { optimistic } from './optimistic';
import { Store } from './store';
import { catchUp } from './sync';
import { appendThreadPage, mergeFirstPage, newThreadList, type ThreadList } from './threads';

export const PAGE_SIZE = 100;

/** The later of two sync states (they are increasing integers, sent as strings). */
export function laterState(a: string | null, b: string): string {
  if (a === null) return b;
  const [x, y] = [Number(a), Number(b)];
  if (Number.isFinite(x) && Number.isFinite(y)) return y >= x ? b : a;
  return b;
}

export class MutationFailed extends Error {
  constructor(readonly error: MutationError) {
    super(error.message);
    this.name = 'MutationFailed';
  }
}

type UpdateResult = { __typename: 'UpdateMessagesSuccess'; items: MailboxItem[] } | MutationError;
type DeleteResult = { __typename: 'DeleteSuccess'; ids: string[] } | MutationError;

export class MailController {
  readonly mail = new Store<MailState>(emptyState);
  readonly mailboxes = new Store<Mailbox[]>([]);
  readonly status = new Store<ConnectionStatus>('closed');
  readonly me = new Store<User | null>(null);
  /** The sync state of the last change this client has seen. */
  syncState: string | null = null;
  private stops: (() => void)[] = [];
  private loadingKeys = new Set<ListKey>();
  /** Conversation view: one list of threads per folder/label key. */
  readonly threadLists = new Store<Record<ListKey, ThreadList>>({});
  private threadRefresh: ReturnType<typeof setTimeout> | null = null;

  constructor(private readonly client: MailhubClient) {}

  private generation = 0;

  async start(): Promise<void> {
    const generation = ++this.generation;
    this.status.set(this.client.status);
    this.stops.push(this.client.onStatus((s) => this.status.set(s)));
    this.stops.push(this.client.onConnected(() => void this.afterConnect()));
    const data = await this.client.request<{ me: User; state: string; mailboxes: Mailbox[] }>(ME);
    if (generation !== this.generation) return; // stopped meanwhile
    this.me.set(data.me);
    this.syncState = laterState(this.syncState, data.state);
    this.mailboxes.set(data.mailboxes);
    this.stops.push(
      this.client.subscribe<{ mailboxEvents: MailboxEvent }>(SUB_MAILBOX_EVENTS, {}, (d) => this.onEvent(d.mailboxEvents)),
      this.client.subscribe<{ unreadCounts: Mailbox[] }>(SUB_UNREAD_COUNTS, {}, (d) => this.mailboxes.set(d.unreadCounts)),
    );
    const online = () => this.client.reconnect();
    window.addEventListener('online', online);
    this.stops.push(() => window.removeEventListener('online', online));
  }

  stop(): void {
    this.generation += 1;
    for (const s of this.stops.splice(0)) s();
    if (this.threadRefresh) clearTimeout(this.threadRefresh);
  }

  onEvent(event: MailboxEvent): void {
    this.mail.set(applyEvent(this.mail.get(), event));
    if (event.state) this.syncState = laterState(this.syncState, event.state);
    this.refreshThreadsSoon();
  }

  /** Live changes re-read the first page of each loaded conversation list (coalesced). */
  private refreshThreadsSoon(): void {
    if (this.threadRefresh || Object.keys(this.threadLists.get()).length === 0) return;
    this.threadRefresh = setTimeout(() => {
      this.threadRefresh = null;
      for (const key of Object.keys(this.threadLists.get())) void this.loadThreads(key, true);
    }, 250);
  }

  /** Loads the first page (merged in front of what is listed) or the next page of threads. */
  async loadThreads(key: ListKey, first: boolean): Promise<void> {
    const loadingKey = `threads:${key}`;
    const list = this.threadLists.get()[key] ?? newThreadList(key);
    if (this.loadingKeys.has(loadingKey)) return;
    if (!first && (!list.loaded || !list.hasNextPage)) return;
    this.loadingKeys.add(loadingKey);
    const put = (l: ThreadList) => this.threadLists.update((all) => ({ ...all, [key]: l }));
    put({ ...(this.threadLists.get()[key] ?? list), loading: true, error: null });
    try {
      const spec = parseListKey(key);
      const data = await this.client.request<{ threads: Parameters<typeof mergeFirstPage>[1] }>(THREADS, {
        folder: spec.kind === 'folder' ? spec.folder : null,
        label: spec.kind === 'label' ? spec.label : null,
        first: PAGE_SIZE,
        after: first ? null : list.endCursor,
      });
      const current = this.threadLists.get()[key] ?? list;
      put(first ? mergeFirstPage(current, data.threads) : appendThreadPage(current, data.threads));
    } catch (e) {
      put({ ...(this.threadLists.get()[key] ?? list), loading: false, error: e instanceof Error ? e.message : 'Loading failed.' });
    } finally {
      this.loadingKeys.delete(loadingKey);
    }
  }

  /** After every (re)connect: whatever happened while no socket was listening. */
  private async afterConnect(): Promise<void> {
    const since = this.syncState;
    if (since === null) return;
    try {
      const { newState, reload } = await catchUp((q, v) => this.client.request(q, v), this.mail, since);
      this.syncState = laterState(this.syncState, newState);
      if (reload) await this.reloadAll();
      else this.refreshThreadsSoon();
      const counts = await this.client.request<{ mailboxes: Mailbox[] }>(MAILBOXES);
      this.mailboxes.set(counts.mailboxes);
    } catch {
      // the next reconnect tries again
    }
  }

  private async reloadAll(): Promise<void> {
    for (const key of Object.keys(this.mail.get().lists)) await this.loadList(key, true);
    for (const key of Object.keys(this.threadLists.get())) await this.loadThreads(key, true);
  }

  /** Loads the first page (reset) or the next page of a list. */
  async loadList(key: ListKey, reset: boolean): Promise<void> {
    const list = this.mail.get().lists[key];
    if (this.loadingKeys.has(key)) return;
    if (!reset && list && (!list.hasNextPage || !list.loaded)) return;
    this.loadingKeys.add(key);
    this.mail.set(setListFlags(this.mail.get(), key, { loading: true, error: null }));
    const after = reset ? null : (list?.endCursor ?? null);
    try {
      const spec = parseListKey(key);
      if (spec.kind === 'search') {
        const data = await this.client.request<{ search: Connection<SearchHit> }>(SEARCH, {
          query: spec.query,
          first: PAGE_SIZE,
          after,
        });
        const highlights: Record<string, string[]> = {};
        for (const e of data.search.edges) highlights[e.node.item.id] = e.node.highlights;
        const page: Connection<MailboxItem> = {
          edges: data.search.edges.map((e) => ({ cursor: e.cursor, node: e.node.item })),
          pageInfo: data.search.pageInfo,
          totalCount: data.search.totalCount,
        };
        this.mail.set(mergePage(this.mail.get(), key, page, { reset, highlights }));
      } else {
        const data = await this.client.request<{ messages: Connection<MailboxItem> }>(MESSAGES, {
          folder: spec.kind === 'folder' ? spec.folder : null,
          label: spec.kind === 'label' ? spec.label : null,
          first: PAGE_SIZE,
          after,
        });
        this.mail.set(mergePage(this.mail.get(), key, data.messages, { reset }));
      }
    } catch (e) {
      const message = e instanceof Error ? e.message : 'Loading failed.';
      this.mail.set(setListFlags(this.mail.get(), key, { loading: false, error: message }));
    } finally {
      this.loadingKeys.delete(key);
    }
  }

  async message(id: string): Promise<MailboxItemFull | null> {
    const data = await this.client.request<{ message: MailboxItemFull | null }>(MESSAGE, { id });
    if (data.message) this.mail.set(upsertItems(this.mail.get(), [data.message]));
    return data.message;
  }

  async thread(id: string): Promise<Thread | null> {
    const data = await this.client.request<{ thread: Thread | null }>(THREAD, { id });
    return data.thread;
  }

  /** read / starred / folder / labels, shown at once and rolled back if the server says no. */
  async update(ids: string[], set: MessageStateInput): Promise<void> {
    await optimistic(this.mail, ids, (i) => applyStateInput(i, set), async () => {
      const data = await this.client.request<{ updateMessages: UpdateResult }>(UPDATE_MESSAGES, { ids, set });
      const r = data.updateMessages;
      if (r.__typename !== 'UpdateMessagesSuccess') throw new MutationFailed(r);
      return { updated: r.items };
    });
  }

  move(ids: string[], folder: Folder): Promise<void> {
    return this.update(ids, { folder });
  }

  async markSpam(ids: string[], spam: boolean): Promise<void> {
    const folder: Folder = spam ? 'SPAM' : 'INBOX';
    await optimistic(this.mail, ids, (i) => ({ ...i, folder }), async () => {
      const key = spam ? 'markSpam' : 'markNotSpam';
      const data = await this.client.request<Record<string, UpdateResult>>(spam ? MARK_SPAM : MARK_NOT_SPAM, { ids });
      const r = data[key] as UpdateResult;
      if (r.__typename !== 'UpdateMessagesSuccess') throw new MutationFailed(r);
      return { updated: r.items };
    });
  }

  async deleteForever(ids: string[]): Promise<void> {
    await optimistic(this.mail, ids, 'remove', async () => {
      const data = await this.client.request<{ deleteForever: DeleteResult }>(DELETE_FOREVER, { ids });
      const r = data.deleteForever;
      if (r.__typename !== 'DeleteSuccess') throw new MutationFailed(r);
      return { deleted: r.ids };
    });
  }

  /** Live per-recipient delivery status of a message the viewer sent. */
  watchDelivery(messageId: string, onStatus: (s: RecipientStatus) => void): () => void {
    return this.client.subscribe<{ deliveryStatus: RecipientStatus }>(
      SUB_DELIVERY_STATUS,
      { messageId },
      (d) => onStatus(d.deliveryStatus),
      (e: GraphQLRequestError) => console.warn('deliveryStatus:', e.message),
    );
  }
}
