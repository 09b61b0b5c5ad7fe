import { useVirtualizer } from '@tanstack/react-virtual';
import { useEffect, useRef } from 'react';
import { addressLabel, FOLDER_NAMES, shortDate } from '../lib/format';
import { itemHref } from '../lib/route';
import type { ListKey } from '../state/cache';
import type { ThreadRow } from '../state/threads';
import { useMail } from './context';
import { useStore } from './hooks';
import { ROW_HEIGHT } from './MessageList';

/** The conversation view of a folder or label: one row per thread, virtualised like the list. */
export function ThreadListView({ listKey, onToggle }: { listKey: ListKey; onToggle: () => void }) {
  const { controller, route } = useMail();
  const all = useStore(controller.threadLists);
  const list = all[listKey];
  const rows = list?.rows ?? [];
  const scrollRef = useRef<HTMLDivElement>(null);
  const hasMore = list ? list.hasNextPage : true;

  useEffect(() => {
    void controller.loadThreads(listKey, true);
  }, [controller, listKey]);

  const virtualizer = useVirtualizer({
    count: rows.length + (hasMore && list?.loaded ? 1 : 0),
    getScrollElement: () => scrollRef.current,
    estimateSize: () => ROW_HEIGHT,
    overscan: 12,
  });
  const visible = virtualizer.getVirtualItems();
  const lastIndex = visible.length ? visible[visible.length - 1]!.index : -1;
  useEffect(() => {
    if (list?.loaded && list.hasNextPage && !list.loading && !list.error && lastIndex >= rows.length - 20) {
      void controller.loadThreads(listKey, false);
    }
  }, [controller, listKey, list, lastIndex, rows.length]);

  const openIndex = route.itemId ? rows.findIndex((r) => r.itemIds.includes(route.itemId as string)) : -1;
  useEffect(() => {
    if (openIndex >= 0) virtualizer.scrollToIndex(openIndex, { align: 'auto' });
  }, [openIndex, virtualizer]);

  const title = route.list.kind === 'folder' ? FOLDER_NAMES[route.list.folder] : route.list.kind === 'label' ? route.list.label : '';

  return (
    <section className="list-pane" aria-label="Mailbox">
      <div className="list-head">
        <h1 id="list-title">{title}</h1>
        <span className="muted">{list?.loaded ? `${rows.length}${list.hasNextPage ? '+' : ''} conversations` : ''}</span>
        <button type="button" className="ghost" aria-pressed="true" onClick={onToggle}>
          Conversations
        </button>
        <button type="button" className="ghost refresh" onClick={() => void controller.loadThreads(listKey, true)}>
          Refresh
        </button>
      </div>
      {list?.error && (
        <p className="error" role="alert">
          {list.error}
        </p>
      )}
      <div ref={scrollRef} className="list-scroll" data-testid="message-list-scroll">
        {list?.loaded && rows.length === 0 ? (
          <p className="empty">No conversations here.</p>
        ) : (
          <div role="list" aria-label="Mail" aria-busy={list?.loading ?? true} className="list" style={{ height: virtualizer.getTotalSize() }}>
            {visible.map((v) => {
              const row = rows[v.index];
              const style = { transform: `translateY(${v.start}px)`, height: ROW_HEIGHT };
              if (!row) {
                return (
                  <div key={`more-${v.index}`} role="listitem" className="row loading-row" style={style}>
                    Loading more…
                  </div>
                );
              }
              return <Thread key={row.id} row={row} style={style} index={v.index} setSize={hasMore ? -1 : rows.length} open={openIndex === v.index} href={itemHref(route.list, row.openId)} />;
            })}
          </div>
        )}
      </div>
    </section>
  );
}

function Thread({ row, style, index, setSize, open, href }: { row: ThreadRow; style: React.CSSProperties; index: number; setSize: number; open: boolean; href: string }) {
  const unread = row.unreadCount > 0;
  return (
    <div role="listitem" className={`row${unread ? ' unread' : ''}${open ? ' open' : ''}`} style={style} aria-posinset={index + 1} aria-setsize={setSize} aria-current={open ? 'true' : undefined}>
      <a className="row-link thread-link" href={href}>
        <span className="row-top">
          <span className="from">
            {unread && <span className="sr-only">{`${row.unreadCount} unread, `}</span>}
            {row.participants.map(addressLabel).join(', ')}
            {row.messageCount > 1 && <span className="count-badge"> {row.messageCount}</span>}
          </span>
          <span className="date">{shortDate(row.latestAt)}</span>
        </span>
        <span className="subject">{row.subject || '(no subject)'}</span>
      </a>
    </div>
  );
}
