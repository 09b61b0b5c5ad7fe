import { useCallback, useEffect, useMemo, useRef, useState } from 'react';
import { client } from '../api/client';
import { uploadAttachment, fetchBlob } from '../api/rest';
import type { Folder, MailboxItem, MailboxItemFull, User } from '../api/types';
import { FOLDER_NAMES, longDate } from '../lib/format';
import { buildReply, type ReplyMode } from '../lib/reply';
import { itemHref, listHref } from '../lib/route';
import { shortcutFor } from '../lib/shortcuts';
import { listKey } from '../state/cache';
import { cancelSend, Composer, type ComposerInit, initFromDraft } from '../state/composer';
import { MailController } from '../state/mail';
import { signOut } from '../state/session';
import { Store } from '../state/store';
import { showToast } from '../state/toasts';
import { ComposerView } from './ComposerView';
import { type Actions, type MailApi, MailContext } from './context';
import { useRoute, useStore } from './hooks';
import { MessageList } from './MessageList';
import { ThreadListView } from './ThreadListView';
import { Reader } from './Reader';
import { ShortcutsDialog } from './ShortcutsDialog';
import { Sidebar } from './Sidebar';
import { Toasts } from './Toasts';

function describe(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}

export function Mail({ user }: { user: User }) {
  const controller = useMemo(() => new MailController(client), []);
  const openItem = useMemo(() => new Store<MailboxItemFull | null>(null), []);
  const [route, navigate] = useRoute();
  const [composer, setComposer] = useState<Composer | null>(null);
  const [showShortcuts, setShowShortcuts] = useState(false);
  const [conversations, setConversations] = useState(() => localStorage.getItem('mailhub.conversations') === '1');
  const toggleConversations = useCallback(() => {
    setConversations((on) => {
      localStorage.setItem('mailhub.conversations', on ? '0' : '1');
      return !on;
    });
  }, []);
  const threadMode = conversations && route.list.kind !== 'search';
  const conversationsRef = useRef(threadMode);
  conversationsRef.current = threadMode;
  const [startError, setStartError] = useState<string | null>(null);
  const searchRef = useRef<HTMLInputElement>(null);
  const status = useStore(controller.status);
  const me = useStore(controller.me);
  const key = listKey(route.list);

  useEffect(() => {
    controller.start().catch((e: unknown) => setStartError(describe(e)));
    return () => controller.stop();
  }, [controller]);

  const myAddresses = useMemo(() => me?.addresses ?? [user.email], [me, user.email]);

  // The open composer also lives in a ref so opening another one can close it without side
  // effects inside a state updater (StrictMode runs those twice).
  const composerRef = useRef<Composer | null>(null);
  const showComposer = useCallback((next: Composer | null) => {
    composerRef.current = next;
    setComposer(next);
  }, []);
  const openComposer = useCallback(
    (init: ComposerInit) => {
      const current = composerRef.current;
      if (current) void current.close();
      showComposer(new Composer(init, client, uploadAttachment));
    },
    [showComposer],
  );

  /**
   * Runs an action that takes the open message out of this list, then shows the next one (as j
   * would). The next one is chosen before the action: an optimistic move removes the row at once.
   */
  const leaving = useCallback(
    (item: MailboxItem, run: () => void) => {
      if (route.itemId !== item.id) {
        run();
        return;
      }
      const threadRows = conversationsRef.current ? controller.threadLists.get()[key]?.rows : undefined;
      const ids = threadRows ? threadRows.map((r) => r.openId) : (controller.mail.get().lists[key]?.ids ?? []);
      const index = threadRows ? threadRows.findIndex((r) => r.itemIds.includes(item.id)) : ids.indexOf(item.id);
      const next = index >= 0 ? (ids[index + 1] ?? ids[index - 1]) : undefined;
      run();
      navigate(next && next !== item.id ? itemHref(route.list, next) : listHref(route.list));
    },
    [controller, key, navigate, route],
  );

  const actions: Actions = useMemo(() => {
    const moveWithUndo = (item: MailboxItem, folder: Folder, done: string) => {
      const from = item.folder;
      leaving(item, () =>
        controller
          .move([item.id], folder)
          .then(() =>
            showToast(done, {
              label: 'Undo',
              run: () => void controller.move([item.id], from).catch((e: unknown) => showToast(`Could not undo: ${describe(e)}`)),
            }),
          )
          .catch((e: unknown) => showToast(`Could not move the message: ${describe(e)}`)),
      );
    };
    return {
      archive: (item) => (item.folder === 'ARCHIVE' ? undefined : moveWithUndo(item, 'ARCHIVE', 'Archived.')),
      trash: (item) => (item.folder === 'TRASH' ? undefined : moveWithUndo(item, 'TRASH', 'Moved to Trash.')),
      move: (item, folder) => moveWithUndo(item, folder, `Moved to ${FOLDER_NAMES[folder]}.`),
      deleteForever: (item) =>
        leaving(item, () =>
          controller
            .deleteForever([item.id])
            .then(() => showToast('Deleted forever.'))
            .catch((e: unknown) => showToast(`Could not delete: ${describe(e)}`)),
        ),
      spam: (item, isSpam) =>
        leaving(item, () =>
          controller
            .markSpam([item.id], isSpam)
            .then(() =>
              showToast(isSpam ? 'Marked as spam.' : 'Not spam: moved to Inbox.', {
                label: 'Undo',
                run: () => void controller.markSpam([item.id], !isSpam).catch((e: unknown) => showToast(`Could not undo: ${describe(e)}`)),
              }),
            )
            .catch((e: unknown) => showToast(`Could not change spam status: ${describe(e)}`)),
        ),
      star: (item) =>
        void controller.update([item.id], { starred: !item.starred }).catch((e: unknown) => showToast(`Could not star: ${describe(e)}`)),
      setRead: (item, read) =>
        void controller.update([item.id], { read }).catch((e: unknown) => showToast(`Could not mark as ${read ? 'read' : 'unread'}: ${describe(e)}`)),
      addLabel: (item, label) =>
        void controller.update([item.id], { addLabels: [label] }).catch((e: unknown) => showToast(`Could not add the label: ${describe(e)}`)),
      removeLabel: (item, label) =>
        void controller.update([item.id], { removeLabels: [label] }).catch((e: unknown) => showToast(`Could not remove the label: ${describe(e)}`)),
      reply: (item: MailboxItemFull, mode: ReplyMode) => {
        const init = buildReply(item, myAddresses, mode);
        if (mode === 'forward' && item.attachments.length) {
          // Attachments are the uploader's: forwarding uploads a copy of each as this user's.
          Promise.all(item.attachments.map(async (a) => ({ blob: await fetchBlob(a.downloadUrl), filename: a.filename })))
            .then((files) => openComposer({ ...init, files }))
            .catch((e: unknown) => {
              showToast(`Could not fetch the attachments: ${describe(e)}`);
              openComposer(init);
            });
        } else {
          openComposer(init);
        }
      },
    };
  }, [controller, leaving, myAddresses, openComposer]);

  const onSent = useCallback(
    (item: MailboxItemFull, scheduled: string | null) => {
      showComposer(null);
      const cancellable = item.recipients.some((r) => r.status === 'scheduled');
      const undo = async () => {
        try {
          const draft = await cancelSend(client, item.id);
          openComposer(initFromDraft(draft));
          showToast(scheduled ? 'Scheduled send canceled: back in Drafts.' : 'Sending undone: back in Drafts.');
        } catch (e) {
          showToast(`Too late to undo: ${describe(e)}`);
        }
      };
      if (scheduled) showToast(`Scheduled for ${longDate(scheduled)}.`, { label: 'Undo', run: () => void undo() }, 15000);
      else if (cancellable) showToast('Message sent.', { label: 'Undo', run: () => void undo() }, 10000);
      else showToast('Message sent.');
    },
    [openComposer, showComposer],
  );

  // Keyboard shortcuts
  useEffect(() => {
    const onKey = (e: KeyboardEvent) => {
      if (e.key === '?' && !(e.target instanceof HTMLInputElement) && !(e.target instanceof HTMLTextAreaElement)) {
        setShowShortcuts(true);
        return;
      }
      const action = shortcutFor(e);
      if (!action) return;
      const current = openItem.get();
      // In the conversation view j/k step through threads (opening each one's latest message).
      const threadRows = threadMode ? (controller.threadLists.get()[key]?.rows ?? []) : null;
      const ids = threadRows ? threadRows.map((r) => r.openId) : (controller.mail.get().lists[key]?.ids ?? []);
      const index = !route.itemId ? -1 : threadRows ? threadRows.findIndex((r) => r.itemIds.includes(route.itemId as string)) : ids.indexOf(route.itemId);
      const item = route.itemId ? controller.mail.get().items[route.itemId] : undefined;
      switch (action) {
        case 'next':
        case 'previous': {
          const to = action === 'next' ? index + 1 : Math.max(0, index - 1);
          const id = ids[to];
          if (id) navigate(itemHref(route.list, id));
          if (action === 'next' && to >= ids.length - 5) void (threadMode ? controller.loadThreads(key, false) : controller.loadList(key, false));
          break;
        }
        case 'compose':
          openComposer({ title: 'New message' });
          break;
        case 'reply':
        case 'replyAll':
        case 'forward':
          if (current) actions.reply(current, action);
          break;
        case 'archive':
          if (item) actions.archive(item);
          break;
        case 'delete':
          if (item) actions.trash(item);
          break;
        case 'star':
          if (item) actions.star(item);
          break;
        case 'search':
          searchRef.current?.focus();
          searchRef.current?.select();
          break;
        case 'close':
          if (composer && e.target instanceof Element && e.target.closest('.composer')) {
            void composer.close();
            showComposer(null);
          } else if (showShortcuts) setShowShortcuts(false);
          else if (route.itemId) navigate(listHref(route.list));
          else return;
          break;
      }
      e.preventDefault();
    };
    window.addEventListener('keydown', onKey);
    return () => window.removeEventListener('keydown', onKey);
  }, [actions, composer, controller, key, navigate, openComposer, openItem, route, showComposer, showShortcuts, threadMode]);

  // The tab title shows the Inbox's unread count.
  const mailboxes = useStore(controller.mailboxes);
  const inboxUnread = mailboxes.find((m) => m.folder === 'INBOX' && !m.isLabel)?.unread ?? 0;
  useEffect(() => {
    document.title = inboxUnread ? `Inbox (${inboxUnread}) – mailhub` : 'mailhub';
    return () => {
      document.title = 'mailhub';
    };
  }, [inboxUnread]);

  const api: MailApi = { controller, user: me ?? user, route, navigate, openComposer, actions };
  const query = route.list.kind === 'search' ? route.list.query : '';

  return (
    <MailContext.Provider value={api}>
      <div className="shell">
        <header className="topbar">
          <a className="brand" href="#/inbox">
            mailhub
          </a>
          <SearchBox key={query} initial={query} inputRef={searchRef} onSearch={(q) => navigate(listHref({ kind: 'search', query: q }))} />
          <span className={`conn conn-${status}`} role="status" aria-live="polite">
            {status === 'connected' ? 'Live' : status === 'reconnecting' ? 'Reconnecting…' : status === 'connecting' ? 'Connecting…' : 'Offline'}
          </span>
          <button type="button" className="ghost" onClick={() => setShowShortcuts(true)} aria-haspopup="dialog">
            Keyboard shortcuts
          </button>
          <span className="whoami" title={user.email}>
            {user.email}
          </span>
          <button type="button" onClick={() => signOut()}>
            Sign out
          </button>
        </header>
        <Sidebar />
        <main className="panes">
          {startError && (
            <p className="error" role="alert">
              {startError}
            </p>
          )}
          {threadMode ? (
            <ThreadListView key={`t:${key}`} listKey={key} onToggle={toggleConversations} />
          ) : (
            <MessageList key={key} listKey={key} conversations={false} onToggleConversations={route.list.kind === 'search' ? null : toggleConversations} />
          )}
          <Reader key={route.itemId ?? 'none'} itemId={route.itemId} openItem={openItem} />
        </main>
        {composer && (
          <ComposerView
            key={composer.id}
            composer={composer}
            onClosed={() => showComposer(null)}
            onSent={onSent}
          />
        )}
        <Toasts />
        {showShortcuts && <ShortcutsDialog onClose={() => setShowShortcuts(false)} />}
      </div>
    </MailContext.Provider>
  );
}

function SearchBox({
  initial,
  onSearch,
  inputRef,
}: {
  initial: string;
  onSearch: (q: string) => void;
  inputRef: React.RefObject<HTMLInputElement | null>;
}) {
  const [value, setValue] = useState(initial);
  return (
    <form
      role="search"
      className="search"
      onSubmit={(e) => {
        e.preventDefault();
        onSearch(value.trim());
      }}
    >
      <input
        ref={inputRef}
        type="search"
        aria-label="Search mail"
        placeholder="Search mail (from: to: subject: has:attachment is:unread …)"
        value={value}
        onChange={(e) => setValue(e.target.value)}
        onKeyDown={(e) => {
          if (e.key === 'Escape') e.currentTarget.blur();
        }}
      />
    </form>
  );
}
