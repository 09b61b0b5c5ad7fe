import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import type { MailhubClient } from '../api/client';
import { SAVE_DRAFT, SEND_DRAFT, SEND_EMAIL, DELETE_DRAFT } from '../api/operations';
import { AUTOSAVE_DELAY_MS, Composer, formField } from '../state/composer';
import { item } from './fixtures';

/** Records each request and answers like the server would. */
function fakeClient() {
  const calls: { query: string; variables: Record<string, unknown> }[] = [];
  let drafts = 0;
  const request = vi.fn(async (query: string, variables: Record<string, unknown> = {}) => {
    calls.push({ query, variables });
    if (query === SAVE_DRAFT) {
      const input = variables.input as { id?: string };
      return { saveDraft: { __typename: 'DraftSuccess', item: item({ id: input.id ?? `draft${++drafts}`, folder: 'DRAFTS' }) } };
    }
    if (query === SEND_DRAFT || query === SEND_EMAIL) {
      const key = query === SEND_DRAFT ? 'sendDraft' : 'sendEmail';
      return { [key]: { __typename: 'SendEmailSuccess', item: { ...item({ folder: 'SENT' }), recipients: [] } } };
    }
    if (query === DELETE_DRAFT) return { deleteDraft: { __typename: 'DeleteSuccess', ids: [variables.id] } };
    throw new Error(`unexpected ${query}`);
  });
  return { client: { request } as unknown as MailhubClient, calls };
}

const noUpload = async () => {
  throw new Error('no uploads here');
};

describe('composer autosave', () => {
  beforeEach(() => vi.useFakeTimers());
  afterEach(() => vi.useRealTimers());

  it('creates the draft once, then sends only the changed fields', async () => {
    const { client, calls } = fakeClient();
    const c = new Composer({ title: 'New message' }, client, noUpload);
    c.set('to', 'bob@x.test');
    c.set('subject', 'Hi');
    await vi.advanceTimersByTimeAsync(AUTOSAVE_DELAY_MS + 10);
    expect(calls).toHaveLength(1);
    expect(calls[0]?.variables).toEqual({ input: { to: ['bob@x.test'], subject: 'Hi' } });
    c.set('text', 'Hello Bob');
    await vi.advanceTimersByTimeAsync(AUTOSAVE_DELAY_MS + 10);
    expect(calls[1]?.variables).toEqual({ input: { id: 'draft1', text: 'Hello Bob' } });
    c.set('subject', '');
    await vi.advanceTimersByTimeAsync(AUTOSAVE_DELAY_MS + 10);
    expect(calls[2]?.variables).toEqual({ input: { id: 'draft1', subject: null } });
    expect(c.state.savedAt).not.toBeNull();
  });

  it('an empty composer saves nothing; typing restarts the delay', async () => {
    const { client, calls } = fakeClient();
    const c = new Composer({ title: 'New message' }, client, noUpload);
    c.set('text', 'a');
    await vi.advanceTimersByTimeAsync(AUTOSAVE_DELAY_MS - 100);
    c.set('text', 'ab');
    await vi.advanceTimersByTimeAsync(AUTOSAVE_DELAY_MS - 100);
    expect(calls).toHaveLength(0);
    await vi.advanceTimersByTimeAsync(200);
    expect(calls).toHaveLength(1);
    c.set('text', '');
    c.set('text', 'ab');
    await vi.advanceTimersByTimeAsync(AUTOSAVE_DELAY_MS + 10);
    expect(calls).toHaveLength(1);
  });

  it('a reopened draft saves only what the user changes', async () => {
    const { client, calls } = fakeClient();
    const c = new Composer({ title: 'Draft', draftId: 'd9', to: 'a@x.test', subject: 'S', text: 'T', savedFromServer: true }, client, noUpload);
    c.set('text', 'T2');
    await vi.advanceTimersByTimeAsync(AUTOSAVE_DELAY_MS + 10);
    expect(calls.map((x) => x.variables)).toEqual([{ input: { id: 'd9', text: 'T2' } }]);
  });

  it('sending a saved draft saves the last change first, then sendDraft', async () => {
    const { client, calls } = fakeClient();
    const c = new Composer({ title: 'Draft', draftId: 'd1', to: 'a@x.test', subject: 'S', savedFromServer: true }, client, noUpload);
    c.set('text', 'final words');
    await c.send();
    expect(calls.map((x) => x.query)).toEqual([SAVE_DRAFT, SEND_DRAFT]);
    expect(calls[0]?.variables).toEqual({ input: { id: 'd1', text: 'final words' } });
    // closed: no autosave after sending
    await vi.advanceTimersByTimeAsync(AUTOSAVE_DELAY_MS * 2);
    expect(calls).toHaveLength(2);
  });

  it('a scheduled send uses sendEmail with sendAt and deletes the draft', async () => {
    const { client, calls } = fakeClient();
    const c = new Composer({ title: 'Draft', draftId: 'd1', to: 'a@x.test', subject: 'S', savedFromServer: true }, client, noUpload);
    c.set('sendAt', '2030-01-02T03:04');
    await c.send();
    expect(calls.map((x) => x.query)).toEqual([SEND_EMAIL, DELETE_DRAFT]);
    const input = (calls[0]?.variables.input ?? {}) as Record<string, unknown>;
    expect(input.sendAt).toBe(new Date('2030-01-02T03:04').toISOString());
    expect(input.to).toEqual(['a@x.test']);
  });

  it('refuses to send without recipients', async () => {
    const { client, calls } = fakeClient();
    const c = new Composer({ title: 'New message', subject: 'x' }, client, noUpload);
    await expect(c.send()).rejects.toThrow('recipient');
    expect(c.state.fieldErrors.to).toBeTruthy();
    expect(calls).toHaveLength(0);
  });

  it('shows upload progress and saves the attachment id', async () => {
    const { client, calls } = fakeClient();
    let progress: (f: number) => void = () => {};
    let finish: () => void = () => {};
    const upload = (_b: Blob, filename: string, onProgress: (f: number) => void) =>
      new Promise<{ id: string; filename: string; contentType: string; size: number; sha256: string }>((resolve) => {
        progress = onProgress;
        finish = () => resolve({ id: 'att1', filename, contentType: 'text/plain', size: 3, sha256: '' });
      });
    const c = new Composer({ title: 'New message', to: 'a@x.test' }, client, upload);
    void c.attach(new Blob(['abc']), 'a.txt');
    progress(0.5);
    expect(c.state.attachments[0]).toMatchObject({ filename: 'a.txt', progress: 0.5, id: null });
    expect(c.uploading).toBe(true);
    finish();
    await vi.advanceTimersByTimeAsync(AUTOSAVE_DELAY_MS + 10);
    expect(c.state.attachments[0]?.id).toBe('att1');
    expect(calls[0]?.variables).toEqual({ input: { to: ['a@x.test'], attachmentIds: ['att1'] } });
  });

  it('maps server field errors to form fields', () => {
    expect(formField('to[2]')).toBe('to');
    expect(formField('attachmentIds[0]')).toBe('attachments');
    expect(formField('input.subject')).toBe('subject');
  });
});
