// One message being written: its fields, its uploads, autosave as a draft (only the changed
// fields, see drafts.ts), and sending (now, or at a scheduled time).

import type { MailhubClient } from '../api/client';
import { CANCEL_SEND, DELETE_DRAFT, SAVE_DRAFT, SEND_DRAFT, SEND_EMAIL } from '../api/operations';
import type { MailboxItem, MailboxItemFull, MutationError } from '../api/types';
import type { UploadedAttachment } from '../api/rest';
import { type DraftFields, draftDiff, emptyDraft, isEmptyDraft, parseAddressList } from './drafts';
import { MutationFailed } from './mail';
import { Store } from './store';

export const AUTOSAVE_DELAY_MS = 1200;

export interface ComposerAttachment {
  key: string;
  filename: string;
  size: number;
  progress: number;
  id: string | null;
  error: string | null;
}

export interface ComposerInit {
  title: string;
  draftId?: string | null;
  to?: string;
  cc?: string;
  bcc?: string;
  subject?: string;
  text?: string;
  inReplyTo?: string | null;
  /** Attachments already on the server (a reopened draft). */
  attachments?: { id: string; filename: string; size: number }[];
  /** Files to upload at once (forwarded attachments). */
  files?: { blob: Blob; filename: string }[];
  /** The fields as the server has them (a reopened draft): only changes are saved. */
  savedFromServer?: boolean;
}

export interface ComposerState {
  title: string;
  to: string;
  cc: string;
  bcc: string;
  subject: string;
  text: string;
  inReplyTo: string | null;
  attachments: ComposerAttachment[];
  draftId: string | null;
  sendAt: string;
  saving: boolean;
  savedAt: number | null;
  error: string | null;
  fieldErrors: Record<string, string>;
  sending: boolean;
}

type Field = 'to' | 'cc' | 'bcc' | 'subject' | 'text' | 'sendAt';

type DraftResult = { __typename: 'DraftSuccess'; item: MailboxItem } | MutationError;
type SendResult = { __typename: 'SendEmailSuccess'; item: MailboxItemFull } | MutationError;

export interface Uploader {
  (file: Blob, filename: string, onProgress: (f: number) => void): Promise<UploadedAttachment>;
}

let keys = 0;
let composers = 0;

export function draftFields(s: ComposerState): DraftFields {
  return {
    to: parseAddressList(s.to),
    cc: parseAddressList(s.cc),
    bcc: parseAddressList(s.bcc),
    subject: s.subject,
    text: s.text,
    attachmentIds: s.attachments.flatMap((a) => (a.id ? [a.id] : [])),
    inReplyTo: s.inReplyTo,
  };
}

/** "attachmentIds[0]" → "attachments", "to[2]" → "to": where a field error is shown. */
export function formField(field: string): string {
  const base = field.replace(/^input\./, '').replace(/\[\d+\]$/, '');
  return base === 'attachmentIds' ? 'attachments' : base;
}

export class Composer {
  /** Stable for the composer's life (a React key). */
  readonly id = ++composers;
  readonly store: Store<ComposerState>;
  private saved: DraftFields | null;
  private timer: ReturnType<typeof setTimeout> | null = null;
  private inFlight: Promise<void> | null = null;
  private closed = false;

  constructor(
    init: ComposerInit,
    private readonly client: MailhubClient,
    private readonly upload: Uploader,
  ) {
    const state: ComposerState = {
      title: init.title,
      to: init.to ?? '',
      cc: init.cc ?? '',
      bcc: init.bcc ?? '',
      subject: init.subject ?? '',
      text: init.text ?? '',
      inReplyTo: init.inReplyTo ?? null,
      attachments: (init.attachments ?? []).map((a) => ({
        key: `a${++keys}`,
        filename: a.filename,
        size: a.size,
        progress: 1,
        id: a.id,
        error: null,
      })),
      draftId: init.draftId ?? null,
      sendAt: '',
      saving: false,
      savedAt: null,
      error: null,
      fieldErrors: {},
      sending: false,
    };
    this.store = new Store(state);
    this.saved = init.savedFromServer ? draftFields(state) : null;
    for (const f of init.files ?? []) void this.attach(f.blob, f.filename);
  }

  get state(): ComposerState {
    return this.store.get();
  }

  set(field: Field, value: string): void {
    this.store.update((s) => ({ ...s, [field]: value, fieldErrors: { ...s.fieldErrors, [field]: '' } }));
    if (field !== 'sendAt') this.scheduleSave();
  }

  private scheduleSave(): void {
    if (this.closed) return;
    if (this.timer) clearTimeout(this.timer);
    this.timer = setTimeout(() => {
      this.timer = null;
      void this.save().catch(() => {});
    }, AUTOSAVE_DELAY_MS);
  }

  /** Saves what changed since the last save (one save at a time, in order). */
  async save(options: { keepalive?: boolean } = {}): Promise<void> {
    if (this.timer) {
      clearTimeout(this.timer);
      this.timer = null;
    }
    while (this.inFlight) await this.inFlight;
    const current = draftFields(this.state);
    const diff = draftDiff(this.saved, current);
    if (!diff) return;
    if (!this.state.draftId && isEmptyDraft(current)) return;
    const run = async () => {
      this.store.update((s) => ({ ...s, saving: true }));
      try {
        const id = this.state.draftId;
        const input = id ? { id, ...diff } : diff;
        const data = await this.client.request<{ saveDraft: DraftResult }>(SAVE_DRAFT, { input }, options);
        const r = data.saveDraft;
        if (r.__typename !== 'DraftSuccess') throw new MutationFailed(r);
        this.saved = current;
        this.store.update((s) => ({ ...s, draftId: r.item.id, saving: false, savedAt: Date.now(), error: null }));
      } catch (e) {
        this.store.update((s) => ({ ...s, saving: false, ...this.errorState(e, 'The draft was not saved') }));
        throw e;
      }
    };
    this.inFlight = run().finally(() => {
      this.inFlight = null;
    });
    await this.inFlight;
  }

  async attach(blob: Blob, filename: string): Promise<void> {
    const key = `a${++keys}`;
    const patch = (p: Partial<ComposerAttachment>) =>
      this.store.update((s) => ({ ...s, attachments: s.attachments.map((a) => (a.key === key ? { ...a, ...p } : a)) }));
    this.store.update((s) => ({
      ...s,
      attachments: [...s.attachments, { key, filename, size: blob.size, progress: 0, id: null, error: null }],
    }));
    try {
      const uploaded = await this.upload(blob, filename, (progress) => patch({ progress }));
      patch({ id: uploaded.id, progress: 1 });
      this.scheduleSave();
    } catch (e) {
      patch({ error: e instanceof Error ? e.message : 'Upload failed' });
    }
  }

  removeAttachment(key: string): void {
    this.store.update((s) => ({ ...s, attachments: s.attachments.filter((a) => a.key !== key) }));
    this.scheduleSave();
  }

  get uploading(): boolean {
    return this.state.attachments.some((a) => a.id === null && a.error === null);
  }

  /**
   * Sends. Now: the draft (saved first) becomes the message, or a new message when nothing was
   * saved yet. Scheduled (`sendAt`): sendEmail with the time, then the draft is deleted.
   */
  async send(): Promise<MailboxItemFull> {
    const s = this.state;
    const fields = draftFields(s);
    if (fields.to.length + fields.cc.length + fields.bcc.length === 0) {
      this.store.update((x) => ({ ...x, fieldErrors: { ...x.fieldErrors, to: 'Add at least one recipient.' } }));
      throw new Error('Add at least one recipient.');
    }
    if (this.uploading) {
      this.store.update((x) => ({ ...x, error: 'Wait for the attachments to finish uploading.' }));
      throw new Error('uploading');
    }
    const sendAt = s.sendAt ? new Date(s.sendAt) : null;
    if (sendAt && Number.isNaN(sendAt.getTime())) {
      this.store.update((x) => ({ ...x, fieldErrors: { ...x.fieldErrors, sendAt: 'Not a valid time.' } }));
      throw new Error('bad time');
    }
    this.store.update((x) => ({ ...x, sending: true, error: null }));
    try {
      if (this.timer) clearTimeout(this.timer);
      this.timer = null;
      let result: SendResult;
      if (!sendAt && (s.draftId || this.inFlight)) {
        await this.save();
        const data = await this.client.request<{ sendDraft: SendResult }>(SEND_DRAFT, { id: this.state.draftId });
        result = data.sendDraft;
      } else {
        while (this.inFlight) await this.inFlight.catch(() => {});
        const data = await this.client.request<{ sendEmail: SendResult }>(SEND_EMAIL, {
          input: {
            to: fields.to,
            cc: fields.cc,
            bcc: fields.bcc,
            subject: fields.subject,
            text: fields.text || null,
            attachmentIds: fields.attachmentIds,
            inReplyTo: fields.inReplyTo,
            idempotencyKey: `webmail-${crypto.randomUUID()}`,
            sendAt: sendAt ? sendAt.toISOString() : null,
          },
        });
        result = data.sendEmail;
        if (result.__typename === 'SendEmailSuccess' && this.state.draftId) {
          await this.client.request(DELETE_DRAFT, { id: this.state.draftId }).catch(() => {});
        }
      }
      if (result.__typename !== 'SendEmailSuccess') throw new MutationFailed(result);
      this.closed = true;
      this.store.update((x) => ({ ...x, sending: false }));
      return result.item;
    } catch (e) {
      this.store.update((x) => ({ ...x, sending: false, ...this.errorState(e, 'Not sent') }));
      throw e;
    }
  }

  /** Closes the composer, keeping the draft (saved now). */
  async close(): Promise<void> {
    this.closed = true;
    await this.save().catch(() => {});
  }

  /** Closes the composer and deletes its draft. */
  async discard(): Promise<void> {
    this.closed = true;
    if (this.timer) clearTimeout(this.timer);
    while (this.inFlight) await this.inFlight.catch(() => {});
    const id = this.state.draftId;
    if (id) await this.client.request(DELETE_DRAFT, { id });
  }

  private errorState(e: unknown, prefix: string): Partial<ComposerState> {
    if (e instanceof MutationFailed && e.error.__typename === 'ValidationError') {
      const fieldErrors: Record<string, string> = {};
      for (const f of e.error.fields) fieldErrors[formField(f.field)] = f.message;
      return { error: `${prefix}: ${e.error.message}`, fieldErrors };
    }
    return { error: `${prefix}: ${e instanceof Error ? e.message : String(e)}` };
  }
}

/** Undo send: the message goes back to Drafts; the answer is that draft. */
export async function cancelSend(client: MailhubClient, id: string): Promise<MailboxItemFull> {
  const data = await client.request<{ cancelSend: SendResult }>(CANCEL_SEND, { id });
  const r = data.cancelSend;
  if (r.__typename !== 'SendEmailSuccess') throw new MutationFailed(r);
  return r.item;
}

export function initFromDraft(item: MailboxItemFull): ComposerInit {
  const list = (xs: { email: string }[]) => xs.map((a) => a.email).join(', ');
  return {
    title: 'Draft',
    draftId: item.id,
    to: list(item.to),
    cc: list(item.cc),
    bcc: list(item.bcc),
    subject: item.subject,
    text: item.textBody ?? '',
    attachments: item.attachments.map((a) => ({ id: a.id, filename: a.filename, size: a.size })),
    savedFromServer: true,
  };
}

export { emptyDraft };
