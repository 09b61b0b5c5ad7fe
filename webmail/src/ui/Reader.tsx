import { useEffect, useMemo, useState } from 'react';
import { fetchBlob, rawPath, saveBlob } from '../api/rest';
import type { Folder, MailboxItem, MailboxItemFull, RecipientStatus, Thread } from '../api/types';
import { addressFull, fileSize, FOLDER_NAMES, longDate } from '../lib/format';
import { IFRAME_SANDBOX, prepareBody, textDocument } from '../lib/html';
import { listHref } from '../lib/route';
import { initFromDraft } from '../state/composer';
import { mergeStatus } from '../state/delivery';
import type { Store } from '../state/store';
import { showToast } from '../state/toasts';
import { useMail } from './context';
import { useStore } from './hooks';

const MOVE_TARGETS: Folder[] = ['INBOX', 'ARCHIVE', 'TRASH'];

/** The open message and its conversation (thread), oldest first. */
export function Reader({ itemId, openItem }: { itemId: string | null; openItem: Store<MailboxItemFull | null> }) {
  const { controller, actions, openComposer, route, navigate } = useMail();
  const mail = useStore(controller.mail);
  const [full, setFull] = useState<MailboxItemFull | null>(null);
  const [thread, setThread] = useState<Thread | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [draftOpened, setDraftOpened] = useState(false);

  useEffect(() => {
    openItem.set(null);
    if (!itemId) return;
    let live = true;
    controller
      .message(itemId)
      .then(async (m) => {
        if (!live) return;
        if (!m) {
          setError('This message does not exist any more.');
          return;
        }
        if (m.folder === 'DRAFTS') {
          openComposer(initFromDraft(m));
          setDraftOpened(true);
          return;
        }
        setFull(m);
        openItem.set(m);
        if (!m.read) actions.setRead(m, true);
        const t = await controller.thread(m.threadId);
        if (live) setThread(t);
      })
      .catch((e: unknown) => live && setError(e instanceof Error ? e.message : String(e)));
    return () => {
      live = false;
    };
    // eslint-disable-next-line react-hooks/exhaustive-deps -- load once per opened item
  }, [itemId]);

  // A new message in this conversation (a reply arrived live): read the thread again.
  const threadId = full?.threadId;
  const cachedInThread = useMemo(() => {
    if (!threadId) return '';
    return Object.values(mail.items)
      .filter((i) => i.threadId === threadId)
      .map((i) => i.id)
      .sort()
      .join(',');
  }, [mail.items, threadId]);
  useEffect(() => {
    if (!threadId || !thread) return;
    const known = new Set(thread.messages.map((m) => m.id));
    if (cachedInThread.split(',').some((id) => id && !known.has(id))) {
      void controller.thread(threadId).then((t) => t && setThread(t));
    }
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [cachedInThread]);

  if (!itemId) {
    return (
      <section className="reader empty-reader" aria-label="Reading pane">
        <p className="muted">Select a message to read it. Press ? for keyboard shortcuts.</p>
      </section>
    );
  }
  if (error) {
    return (
      <section className="reader" aria-label="Reading pane">
        <p className="error" role="alert">
          {error}
        </p>
      </section>
    );
  }
  if (draftOpened) {
    return (
      <section className="reader" aria-label="Reading pane">
        <p className="muted">This draft is open in the composer.</p>
      </section>
    );
  }
  if (!full) {
    return (
      <section className="reader" aria-label="Reading pane" aria-busy="true">
        <p className="muted">Loading…</p>
      </section>
    );
  }
  // The row in the cache carries the latest state (optimistic changes, live events).
  const row: MailboxItem = { ...full, ...(mail.items[full.id] ?? {}) };
  const messages = thread?.messages ?? [full];

  return (
    <section className="reader" aria-label="Reading pane">
      <Toolbar item={row} full={full} />
      <div className="reader-scroll">
        <h2 id="reader-subject" className="reader-subject">
          {full.subject || '(no subject)'}
        </h2>
        <p className="muted thread-meta">
          {FOLDER_NAMES[row.folder]}
          {messages.length > 1 ? ` · ${messages.length} messages in this conversation` : ''}
        </p>
        <Labels item={row} />
        <ol className="thread" aria-label="Conversation">
          {messages.map((m) => (
            <li key={m.id}>
              <MessageView message={m.id === full.id ? { ...m, ...row } : m} initiallyOpen={m.id === full.id || !m.read || messages.length === 1} focused={m.id === full.id} />
            </li>
          ))}
        </ol>
        <button type="button" className="ghost" onClick={() => navigate(listHref(route.list))}>
          Back to the list
        </button>
      </div>
    </section>
  );
}

function Toolbar({ item, full }: { item: MailboxItem; full: MailboxItemFull }) {
  const { actions } = useMail();
  const [confirming, setConfirming] = useState(false);
  const inTrashOrSpam = item.folder === 'TRASH' || item.folder === 'SPAM';
  return (
    <div className="toolbar" role="toolbar" aria-label="Actions">
      <button type="button" onClick={() => actions.reply(full, 'reply')}>
        Reply
      </button>
      <button type="button" onClick={() => actions.reply(full, 'replyAll')}>
        Reply all
      </button>
      <button type="button" onClick={() => actions.reply(full, 'forward')}>
        Forward
      </button>
      <span className="sep" />
      {item.folder !== 'ARCHIVE' && (
        <button type="button" onClick={() => actions.archive(item)}>
          Archive
        </button>
      )}
      {item.folder !== 'TRASH' && (
        <button type="button" onClick={() => actions.trash(item)}>
          Delete
        </button>
      )}
      {inTrashOrSpam && (
        <button type="button" className="danger" aria-expanded={confirming} onClick={() => setConfirming(true)}>
          Delete forever
        </button>
      )}
      {confirming && (
        <div role="alertdialog" aria-labelledby="confirm-delete" className="confirm">
          <span id="confirm-delete">Delete this message forever? This cannot be undone.</span>
          <button
            type="button"
            className="danger"
            autoFocus
            onClick={() => {
              setConfirming(false);
              actions.deleteForever(item);
            }}
          >
            Yes, delete forever
          </button>
          <button type="button" onClick={() => setConfirming(false)}>
            Cancel
          </button>
        </div>
      )}
      {item.folder === 'SPAM' ? (
        <button type="button" onClick={() => actions.spam(item, false)}>
          Not spam
        </button>
      ) : (
        item.folder !== 'SENT' &&
        item.folder !== 'DRAFTS' && (
          <button type="button" onClick={() => actions.spam(item, true)}>
            Mark as spam
          </button>
        )
      )}
      <button type="button" onClick={() => actions.setRead(item, !item.read)}>
        {item.read ? 'Mark as unread' : 'Mark as read'}
      </button>
      <button type="button" aria-pressed={item.starred} onClick={() => actions.star(item)}>
        {item.starred ? 'Unstar' : 'Star'}
      </button>
      <label className="inline">
                <select
          aria-label="Move"
          value=""
          onChange={(e) => {
            const folder = e.target.value as Folder;
            if (folder) actions.move(item, folder);
          }}
        >
          <option value="">Move to…</option>
          {MOVE_TARGETS.filter((f) => f !== item.folder).map((f) => (
            <option key={f} value={f}>
              {FOLDER_NAMES[f]}
            </option>
          ))}
        </select>
      </label>
    </div>
  );
}

function Labels({ item }: { item: MailboxItem }) {
  const { actions, controller } = useMail();
  const known = useStore(controller.mailboxes).filter((m) => m.isLabel).map((m) => m.name);
  const [value, setValue] = useState('');
  return (
    <div className="labels">
      <ul aria-label="Current labels" className="chips">
        {item.labels.map((l) => (
          <li key={l} className="chip">
            {l}
            <button type="button" className="chip-x" aria-label={`Remove label ${l}`} onClick={() => actions.removeLabel(item, l)}>
              ×
            </button>
          </li>
        ))}
      </ul>
      <form
        className="add-label"
        onSubmit={(e) => {
          e.preventDefault();
          const label = value.trim();
          if (label) actions.addLabel(item, label);
          setValue('');
        }}
      >
        <input aria-label="New label" placeholder="Add a label" list="known-labels" value={value} onChange={(e) => setValue(e.target.value)} />
        <datalist id="known-labels">
          {known.map((l) => (
            <option key={l} value={l} />
          ))}
        </datalist>
        <button type="submit">Add label</button>
      </form>
    </div>
  );
}

function MessageView({ message, initiallyOpen, focused }: { message: MailboxItemFull; initiallyOpen: boolean; focused: boolean }) {
  const [open, setOpen] = useState(initiallyOpen && message.folder !== 'DRAFTS');
  const { actions, openComposer } = useMail();
  if (message.folder === 'DRAFTS') {
    return (
      <button type="button" className="collapsed draft" onClick={() => openComposer(initFromDraft(message))}>
        <strong>Draft</strong> <span className="muted">{longDate(message.receivedAt)}</span>
        <span className="snippet">{message.snippet || '(empty)'}</span>
      </button>
    );
  }
  if (!open) {
    return (
      <button type="button" className="collapsed" onClick={() => setOpen(true)} aria-expanded="false">
        <strong>{addressFull(message.from)}</strong> <span className="muted">{longDate(message.receivedAt)}</span>
        <span className="snippet">{message.snippet}</span>
      </button>
    );
  }
  return (
    <article className={`message${focused ? ' focused' : ''}`} aria-label={`From ${addressFull(message.from)}`}>
      <header className="message-head">
        <h3 className="from-line">{addressFull(message.from)}</h3>
        <dl className="addr">
          <dt>To</dt>
          <dd>{message.to.map(addressFull).join(', ') || '—'}</dd>
          {message.cc.length > 0 && (
            <>
              <dt>Cc</dt>
              <dd>{message.cc.map(addressFull).join(', ')}</dd>
            </>
          )}
          {message.bcc.length > 0 && (
            <>
              <dt>Bcc</dt>
              <dd>{message.bcc.map(addressFull).join(', ')}</dd>
            </>
          )}
          <dt>Date</dt>
          <dd>
            <time dateTime={message.receivedAt}>{longDate(message.receivedAt)}</time>
          </dd>
        </dl>
        {!focused && (
          <div className="message-actions">
            <button type="button" className="ghost" onClick={() => actions.reply(message, 'reply')}>
              Reply to this message
            </button>
          </div>
        )}
      </header>
      <Verdicts message={message} />
      <Body message={message} />
      <Attachments message={message} />
      {message.recipients.length > 0 && <DeliveryStatus message={message} />}
      <ShowOriginal message={message} />
    </article>
  );
}

function Verdicts({ message }: { message: MailboxItemFull }) {
  const spam = message.spam;
  if (!spam && !message.authResults) return null;
  return (
    <div className="verdicts">
      {spam && (
        <div className={`spam-verdict${spam.isSpam ? ' is-spam' : ''}`}>
          <strong>{spam.isSpam ? 'Spam' : 'Not spam'}</strong>
          <span className="muted">
            {' '}
            score {spam.score.toFixed(2)} · model {spam.modelVersion}
          </span>
          {spam.reasons.length > 0 && (
            <ul aria-label="Spam verdict reasons">
              {spam.reasons.map((r) => (
                <li key={r}>{r}</li>
              ))}
            </ul>
          )}
        </div>
      )}
      {message.authResults && (
        <details className="auth-results">
          <summary>Authentication-Results</summary>
          <pre>{message.authResults}</pre>
        </details>
      )}
    </div>
  );
}

/**
 * The sandbox has no allow-same-origin, so the page cannot measure the document inside; a plain
 * text body is sized from its lines, an HTML body gets most of the pane (it scrolls inside).
 */
function frameHeight(message: MailboxItemFull): string {
  if (message.htmlBody) return '60vh';
  const text = message.textBody ?? message.snippet ?? '';
  const lines = text.split('\n').reduce((n, line) => n + Math.max(1, Math.ceil(line.length / 90)), 0);
  return `min(70vh, ${Math.max(80, lines * 23 + 32)}px)`;
}

function Body({ message }: { message: MailboxItemFull }) {
  const [showImages, setShowImages] = useState(false);
  const doc = useMemo(() => {
    if (message.htmlBody) return prepareBody(message.htmlBody, showImages);
    return { srcdoc: textDocument(message.textBody ?? message.snippet ?? ''), blockedImages: 0 };
  }, [message.htmlBody, message.textBody, message.snippet, showImages]);
  return (
    <div className="body">
      {doc.blockedImages > 0 && !showImages && (
        <p className="images-blocked">
          Remote images are hidden to protect your privacy.{' '}
          <button type="button" onClick={() => setShowImages(true)}>
            Show images
          </button>
        </p>
      )}
      <iframe
        title="Message body"
        className="body-frame"
        sandbox={IFRAME_SANDBOX}
        srcDoc={doc.srcdoc}
        referrerPolicy="no-referrer"
        style={{ height: frameHeight(message) }}
      />
    </div>
  );
}

function Attachments({ message }: { message: MailboxItemFull }) {
  const [busy, setBusy] = useState<string | null>(null);
  if (!message.attachments.length) return null;
  return (
    <ul className="attachments" aria-label="Files">
      {message.attachments.map((a) => (
        <li key={a.id}>
          <span className="att-name">{a.filename}</span> <span className="muted">{fileSize(a.size)}</span>{' '}
          <button
            type="button"
            disabled={busy === a.id}
            aria-label={`Download ${a.filename}`}
            onClick={() => {
              setBusy(a.id);
              fetchBlob(a.downloadUrl)
                .then((blob) => saveBlob(blob, a.filename))
                .catch((e: unknown) => showToast(`Download failed: ${e instanceof Error ? e.message : String(e)}`))
                .finally(() => setBusy(null));
            }}
          >
            Download
          </button>
        </li>
      ))}
    </ul>
  );
}

function DeliveryStatus({ message }: { message: MailboxItemFull }) {
  const { controller } = useMail();
  const [recipients, setRecipients] = useState(message.recipients);
  useEffect(() => {
    const merge = (updates: RecipientStatus[]) => setRecipients((list) => updates.reduce(mergeStatus, list));
    const stop = controller.watchDelivery(message.messageId, (s) => merge([s]));
    // A change between opening the message and the subscription starting is read once more.
    const again = setTimeout(() => {
      controller.message(message.id).then((m) => m && merge(m.recipients), () => {});
    }, 1500);
    return () => {
      stop();
      clearTimeout(again);
    };
  }, [controller, message.id, message.messageId]);
  return (
    <table className="delivery">
      <caption>Delivery status</caption>
      <thead>
        <tr>
          <th scope="col">Recipient</th>
          <th scope="col">Status</th>
          <th scope="col">Attempts</th>
          <th scope="col">Last reply</th>
        </tr>
      </thead>
      <tbody>
        {recipients.map((r) => (
          <tr key={`${r.type}:${r.address}`} data-status={r.status}>
            <th scope="row">
              {r.address} <span className="muted">({r.type})</span>
            </th>
            <td>
              <span className={`status status-${r.status}`}>{r.status}</span>
              {r.nextAttemptAt && <span className="muted"> · next try {longDate(r.nextAttemptAt)}</span>}
            </td>
            <td>{r.attempts}</td>
            <td className="reply">{r.lastReply ?? ''}</td>
          </tr>
        ))}
      </tbody>
    </table>
  );
}

function ShowOriginal({ message }: { message: MailboxItemFull & { rawUrl?: string | null } }) {
  // The bytes are kept as they came (Download original saves them unchanged); the text is for reading.
  const [raw, setRaw] = useState<{ text: string; blob: Blob } | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);
  return (
    <div className="original">
      {raw === null ? (
        <button
          type="button"
          className="ghost"
          disabled={busy}
          onClick={() => {
            setBusy(true);
            setError(null);
            fetchBlob(rawPath(message.id, message.rawUrl))
              .then(async (blob) => setRaw({ blob, text: await blob.text() }))
              .catch((e: unknown) => setError(e instanceof Error ? e.message : String(e)))
              .finally(() => setBusy(false));
          }}
        >
          Show original
        </button>
      ) : (
        <section aria-label="Raw source">
          <div className="original-head">
            <h4>Original message</h4>
            <button type="button" className="ghost" onClick={() => saveBlob(raw.blob, `${message.subject.replace(/[^\w.-]+/g, '_').slice(0, 60) || 'message'}.eml`)}>
              Download original
            </button>
            <button type="button" className="ghost" onClick={() => setRaw(null)}>
              Hide original
            </button>
          </div>
          <pre className="raw" tabIndex={0}>
            {raw.text}
          </pre>
        </section>
      )}
      {error && (
        <p className="error" role="alert">
          {error}
        </p>
      )}
    </div>
  );
}
