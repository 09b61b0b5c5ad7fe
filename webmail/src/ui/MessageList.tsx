import { useVirtualizer } from '@tanstack/react-virtual';
import { memo, useCallback, useEffect, useRef } from 'react';
import type { MailboxItem } from '../api/types';
import { addressLabel, FOLDER_NAMES, shortDate } from '../lib/format';
import { parseHighlight } from '../lib/highlight';
import { itemHref } from '../lib/route';
import type { ListKey } from '../state/cache';
import { useMail } from './context';
import { useStore } from './hooks';

export const ROW_HEIGHT = 68;

function listTitle(route: ReturnType<typeof useMail>['route']): string {
  const spec = route.list;
  if (spec.kind === 'folder') return FOLDER_NAMES[spec.folder];
  if (spec.kind === 'label') return spec.label;
  return spec.query ? `Search: ${spec.query}` : 'All mail';
}

/**
 * The open list, virtualised: only the rows in view (plus a few) are in the DOM, so ten thousand
 * rows scroll like ten. Scrolling near the end asks for the next keyset page.
 */
export function MessageList({
  listKey,
  conversations,
  onToggleConversations,
}: {
  listKey: ListKey;
  conversations: boolean;
  onToggleConversations: (() => void) | null;
}) {
  const { controller, route, actions } = useMail();
  const state = useStore(controller.mail);
  const list = state.lists[listKey];
  const ids = list?.ids ?? [];
  const scrollRef = useRef<HTMLDivElement>(null);
  const hasMore = list ? list.hasNextPage : true;

  useEffect(() => {
    void controller.loadList(listKey, true);
  }, [controller, listKey]);

  const virtualizer = useVirtualizer({
    count: ids.length + (hasMore && list?.loaded ? 1 : 0),
    getScrollElement: () => scrollRef.current,
    estimateSize: () => ROW_HEIGHT,
    overscan: 12,
  });
  const rows = virtualizer.getVirtualItems();
  const lastIndex = rows.length ? rows[rows.length - 1]!.index : -1;

  useEffect(() => {
    if (list?.loaded && list.hasNextPage && !list.loading && !list.error && lastIndex >= ids.length - 20) {
      void controller.loadList(listKey, false);
    }
  }, [controller, listKey, list, lastIndex, ids.length]);

  // Keep the open message in view when j/k moves past the edge.
  const openIndex = route.itemId ? ids.indexOf(route.itemId) : -1;
  useEffect(() => {
    if (openIndex >= 0) virtualizer.scrollToIndex(openIndex, { align: 'auto' });
  }, [openIndex, virtualizer]);

  const title = listTitle(route);
  const items = state.items;
  const itemsRef = useRef(items);
  itemsRef.current = items;
  const onStar = useCallback(
    (id: string) => {
      const item = itemsRef.current[id];
      if (item) actions.star(item);
    },
    [actions],
  );
  const total = list?.totalCount ?? ids.length;

  return (
    <section className="list-pane" aria-label="Mailbox">
      <div className="list-head">
        <h1 id="list-title">{title}</h1>
        <span className="muted">{list?.loaded ? `${total} ${total === 1 ? 'message' : 'messages'}` : ''}</span>
        {onToggleConversations && (
          <button type="button" className="ghost" aria-pressed={conversations} onClick={onToggleConversations}>
            Conversations
          </button>
        )}
        <button type="button" className="ghost refresh" onClick={() => void controller.loadList(listKey, true)}>
          Refresh
        </button>
      </div>
      {list?.error && (
        <p className="error" role="alert">
          {list.error}{' '}
          <button type="button" onClick={() => void controller.loadList(listKey, !list.loaded)}>
            Try again
          </button>
        </p>
      )}
      <div ref={scrollRef} className="list-scroll" data-testid="message-list-scroll">
        {list?.loaded && ids.length === 0 && !list.loading ? (
          <p className="empty">{route.list.kind === 'search' ? 'No messages match your search.' : 'No messages here.'}</p>
        ) : (
          <div role="list" aria-label="Mail" aria-busy={list?.loading ?? true} className="list" style={{ height: virtualizer.getTotalSize() }}>
            {rows.map((row) => {
              const id = ids[row.index];
              const item = id ? state.items[id] : undefined;
              if (!item) {
                const style = { transform: `translateY(${row.start}px)`, height: ROW_HEIGHT };
                return (
                  <div key={`more-${row.index}`} role="listitem" className="row loading-row" style={style} aria-setsize={-1}>
                    Loading more…
                  </div>
                );
              }
              return (
                <Row
                  key={item.id}
                  item={item}
                  start={row.start}
                  index={row.index}
                  setSize={hasMore ? -1 : ids.length}
                  open={item.id === route.itemId}
                  href={itemHref(route.list, item.id)}
                  highlight={list?.highlights[item.id]?.[0]}
                  onStar={onStar}
                />
              );
            })}
          </div>
        )}
      </div>
    </section>
  );
}

/** One row; memoised on plain props so scrolling renders only the rows that enter the view. */
const Row = memo(function Row({
  item,
  start,
  index,
  setSize,
  open,
  href,
  highlight,
  onStar,
}: {
  item: MailboxItem;
  start: number;
  index: number;
  setSize: number;
  open: boolean;
  href: string;
  highlight: string | undefined;
  onStar: (id: string) => void;
}) {
  const style = { transform: `translateY(${start}px)`, height: ROW_HEIGHT };
  const who = item.folder === 'SENT' || item.folder === 'DRAFTS' ? `To: ${item.to.map(addressLabel).join(', ') || '(no recipients)'}` : addressLabel(item.from);
  return (
    <div
      role="listitem"
      className={`row${item.read ? '' : ' unread'}${open ? ' open' : ''}`}
      style={style}
      aria-posinset={index + 1}
      aria-setsize={setSize}
      aria-current={open ? 'true' : undefined}
      data-item-id={item.id}
    >
      {/* A mouse shortcut only: the reader's Star button and the s key do the same for everyone,
          and one "Star" button per row would make that name ambiguous. */}
      <button type="button" className={`star${item.starred ? ' on' : ''}`} aria-hidden="true" tabIndex={-1} title={item.starred ? 'Unstar' : 'Star'} onClick={() => onStar(item.id)}>
        {item.starred ? '★' : '☆'}
      </button>
      <a className="row-link" href={href}>
        <span className="row-top">
          <span className="from">
            {!item.read && <span className="sr-only">Unread, </span>}
            {item.starred && <span className="sr-only">Starred, </span>}
            {who}
          </span>
          <span className="date">{shortDate(item.receivedAt)}</span>
        </span>
        <span className="subject">
          {item.subject || '(no subject)'}
          {item.hasAttachments && (
            <span className="clip" title="Has attachments">
              <svg aria-hidden="true" viewBox="0 0 24 24" width="14" height="14">
                <path d="M16.5 6.5v10a4.5 4.5 0 0 1-9 0V5a3 3 0 0 1 6 0v10.5a1.5 1.5 0 0 1-3 0V6.5" fill="none" stroke="currentColor" strokeWidth="2" strokeLinecap="round" />
              </svg>
              <span className="sr-only">Has attachments</span>
            </span>
          )}
          {item.labels.map((l) => (
            <span key={l} className="chip">
              {l}
            </span>
          ))}
        </span>
        <span className="snippet">
          {highlight
            ? parseHighlight(highlight).map((r, i) => (r.mark ? <mark key={i}>{r.text}</mark> : <span key={i}>{r.text}</span>))
            : item.snippet}
        </span>
      </a>
    </div>
  );
});
