// Draft autosave sends only what changed since the last save (saveDraft's partial-update rule:
// an absent field keeps its value, null clears it).

import type { DraftInput } from '../api/types';

export interface DraftFields {
  to: string[];
  cc: string[];
  bcc: string[];
  subject: string;
  text: string;
  attachmentIds: string[];
  inReplyTo: string | null;
}

export const emptyDraft: DraftFields = {
  to: [],
  cc: [],
  bcc: [],
  subject: '',
  text: '',
  attachmentIds: [],
  inReplyTo: null,
};

function sameList(a: string[], b: string[]): boolean {
  return a.length === b.length && a.every((v, i) => v === b[i]);
}

export function isEmptyDraft(d: DraftFields): boolean {
  return !d.to.length && !d.cc.length && !d.bcc.length && !d.subject && !d.text && !d.attachmentIds.length;
}

/**
 * The saveDraft input that turns `saved` into `current`, without `id`; null when nothing changed.
 * With nothing saved yet (a new draft) it holds every field that has a value. A field emptied
 * since the last save is sent as null, which clears it.
 */
export function draftDiff(saved: DraftFields | null, current: DraftFields): Omit<DraftInput, 'id'> | null {
  const out: Omit<DraftInput, 'id'> = {};
  const base = saved ?? emptyDraft;
  for (const key of ['to', 'cc', 'bcc', 'attachmentIds'] as const) {
    if (!sameList(base[key], current[key])) out[key] = current[key].length ? current[key] : null;
  }
  for (const key of ['subject', 'text'] as const) {
    if (base[key] !== current[key]) out[key] = current[key] === '' ? null : current[key];
  }
  if (base.inReplyTo !== current.inReplyTo) out.inReplyTo = current.inReplyTo;
  if (saved === null) {
    // A new draft: absent and null mean the same, so leave out the empty fields.
    for (const key of Object.keys(out) as (keyof typeof out)[]) if (out[key] === null) delete out[key];
  }
  return Object.keys(out).length ? out : null;
}

/** "a@x, Bob <b@y>; c@z" → ["a@x", "Bob <b@y>", "c@z"] (commas inside quotes kept). */
export function parseAddressList(value: string): string[] {
  const out: string[] = [];
  let current = '';
  let quoted = false;
  for (const ch of value) {
    if (ch === '"') quoted = !quoted;
    if ((ch === ',' || ch === ';' || ch === '\n') && !quoted) {
      if (current.trim()) out.push(current.trim());
      current = '';
    } else {
      current += ch;
    }
  }
  if (current.trim()) out.push(current.trim());
  return out;
}

export function formatAddressList(values: string[]): string {
  return values.join(', ');
}
