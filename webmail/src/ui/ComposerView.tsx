import { useEffect, useRef, useState } from 'react';
import type { MailboxItemFull } from '../api/types';
import { fileSize } from '../lib/format';
import type { Composer } from '../state/composer';
import { showToast } from '../state/toasts';
import { useStore } from './hooks';

/**
 * The composer: To, Cc, (Bcc), Subject, Message, Attach, Send, scheduled send. A visually hidden
 * `<input type="file" data-testid="attach-input">` behind the Attach button takes the files.
 */
export function ComposerView({
  composer,
  onClosed,
  onSent,
}: {
  composer: Composer;
  onClosed: () => void;
  onSent: (item: MailboxItemFull, scheduled: string | null) => void;
}) {
  const s = useStore(composer.store);
  const fileRef = useRef<HTMLInputElement>(null);
  const toRef = useRef<HTMLInputElement>(null);
  const textRef = useRef<HTMLTextAreaElement>(null);
  const titleId = `composer-title-${composer.id}`;
  const [showBcc, setShowBcc] = useState(s.bcc !== '');

  useEffect(() => {
    if (s.to) textRef.current?.focus();
    else toRef.current?.focus();
    if (textRef.current) textRef.current.setSelectionRange(0, 0);
    // eslint-disable-next-line react-hooks/exhaustive-deps -- on open only
  }, []);

  // Leaving the page with unsaved changes: save now.
  useEffect(() => {
    const flush = () => void composer.save({ keepalive: true }).catch(() => {});
    window.addEventListener('pagehide', flush);
    return () => window.removeEventListener('pagehide', flush);
  }, [composer]);

  async function send() {
    const scheduled = s.sendAt ? new Date(s.sendAt).toISOString() : null;
    try {
      const item = await composer.send();
      onSent(item, scheduled);
    } catch {
      // the composer shows the error
    }
  }

  const err = (name: string) =>
    s.fieldErrors[name] ? (
      <span id={`${titleId}-${name}-err`} className="field-error">
        {s.fieldErrors[name]}
      </span>
    ) : null;
  const described = (name: string) => (s.fieldErrors[name] ? `${titleId}-${name}-err` : undefined);

  return (
    <section className="composer" role="dialog" aria-modal="false" aria-label="Composer">
      <div className="composer-head">
        <h2 id={titleId}>{s.title}</h2>
        <span className="muted save-state" role="status" aria-live="polite">
          {s.saving ? 'Saving…' : s.savedAt ? 'Draft saved' : ''}
        </span>
        <button
          type="button"
          className="ghost"
          onClick={() => {
            void composer.close();
            onClosed();
          }}
        >
          Close
        </button>
      </div>
      <form
        className="composer-form"
        onSubmit={(e) => {
          e.preventDefault();
          void send();
        }}
        onKeyDown={(e) => {
          if (e.key === 'Enter' && (e.ctrlKey || e.metaKey)) {
            e.preventDefault();
            void send();
          }
        }}
      >
        <label htmlFor={`${titleId}-to`}>To</label>
        <input id={`${titleId}-to`} ref={toRef} type="text" autoComplete="off" value={s.to} aria-invalid={!!s.fieldErrors.to} aria-describedby={described('to')} onChange={(e) => composer.set('to', e.target.value)} />
        {err('to')}
        <label htmlFor={`${titleId}-cc`}>Cc</label>
        <input id={`${titleId}-cc`} type="text" autoComplete="off" value={s.cc} aria-invalid={!!s.fieldErrors.cc} aria-describedby={described('cc')} onChange={(e) => composer.set('cc', e.target.value)} />
        {err('cc')}
        {showBcc ? (
          <>
            <label htmlFor={`${titleId}-bcc`}>Bcc</label>
            <input id={`${titleId}-bcc`} type="text" autoComplete="off" value={s.bcc} aria-invalid={!!s.fieldErrors.bcc} aria-describedby={described('bcc')} onChange={(e) => composer.set('bcc', e.target.value)} />
            {err('bcc')}
          </>
        ) : (
          <button type="button" className="ghost add-bcc" onClick={() => setShowBcc(true)}>
            Add Bcc
          </button>
        )}
        <label htmlFor={`${titleId}-subject`}>Subject</label>
        <input id={`${titleId}-subject`} type="text" value={s.subject} aria-invalid={!!s.fieldErrors.subject} aria-describedby={described('subject')} onChange={(e) => composer.set('subject', e.target.value)} />
        {err('subject')}
        <label htmlFor={`${titleId}-text`}>Message</label>
        <textarea id={`${titleId}-text`} ref={textRef} rows={10} value={s.text} aria-invalid={!!s.fieldErrors.text} aria-describedby={described('text')} onChange={(e) => composer.set('text', e.target.value)} />
        {err('text')}
        {s.attachments.length > 0 && (
          <ul className="uploads" aria-label="Files">
            {s.attachments.map((a) => (
              <li key={a.key}>
                <span className="att-name">{a.filename}</span> <span className="muted">{fileSize(a.size)}</span>
                {a.id === null && a.error === null && <progress max={1} value={a.progress} aria-label={`Uploading ${a.filename}`} />}
                {a.error && <span className="field-error"> {a.error}</span>}
                {a.id && <span className="muted"> uploaded</span>}
                <button type="button" className="ghost" aria-label={`Remove ${a.filename}`} onClick={() => composer.removeAttachment(a.key)}>
                  ×
                </button>
              </li>
            ))}
          </ul>
        )}
        {err('attachments')}
        <details className="schedule">
          <summary>Schedule send</summary>
          <label htmlFor={`${titleId}-sendat`}>Send at</label>
          <input id={`${titleId}-sendat`} type="datetime-local" value={s.sendAt} onChange={(e) => composer.set('sendAt', e.target.value)} />
          {err('sendAt')}
        </details>
        {s.error && (
          <p className="error" role="alert">
            {s.error}
          </p>
        )}
        <div className="composer-actions">
          <button type="submit" className="primary" disabled={s.sending}>
            Send
          </button>
          {s.sendAt && <span className="muted">Scheduled: sends at {new Date(s.sendAt).toLocaleString()}</span>}
          <button type="button" onClick={() => fileRef.current?.click()}>
            Attach
          </button>
          <input
            ref={fileRef}
            type="file"
            multiple
            className="visually-hidden-file"
            tabIndex={-1}
            aria-hidden="true"
            data-testid="attach-input"
            onChange={(e) => {
              for (const f of Array.from(e.target.files ?? [])) void composer.attach(f, f.name);
              e.target.value = '';
            }}
          />
          <button
            type="button"
            className="ghost"
            onClick={() => {
              composer
                .discard()
                .then(() => showToast('Draft discarded.'))
                .catch(() => showToast('Could not delete the draft.'));
              onClosed();
            }}
          >
            Discard
          </button>
        </div>
      </form>
    </section>
  );
}
