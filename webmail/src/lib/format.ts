import type { Address, Folder } from '../api/types';

export const FOLDER_NAMES: Record<Folder, string> = {
  INBOX: 'Inbox',
  SENT: 'Sent',
  DRAFTS: 'Drafts',
  TRASH: 'Trash',
  SPAM: 'Spam',
  ARCHIVE: 'Archive',
};

export function folderFromSlug(slug: string): Folder | null {
  const upper = slug.toUpperCase();
  return upper in FOLDER_NAMES ? (upper as Folder) : null;
}

export function addressLabel(a: Address): string {
  return a.name ? a.name : a.email;
}

export function addressFull(a: Address): string {
  return a.name ? `${a.name} <${a.email}>` : a.email;
}

// Formatters are built once: a list row formats its date on every render while scrolling.
const TIME = new Intl.DateTimeFormat(undefined, { hour: '2-digit', minute: '2-digit' });
const DAY = new Intl.DateTimeFormat(undefined, { month: 'short', day: 'numeric' });
const DATE = new Intl.DateTimeFormat(undefined, { year: 'numeric', month: 'numeric', day: 'numeric' });

/** Today: the time; this year: day and month; else the date. */
export function shortDate(iso: string, now: Date = new Date()): string {
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return '';
  if (d.getFullYear() === now.getFullYear() && d.getMonth() === now.getMonth() && d.getDate() === now.getDate()) return TIME.format(d);
  if (d.getFullYear() === now.getFullYear()) return DAY.format(d);
  return DATE.format(d);
}

export function longDate(iso: string): string {
  const d = new Date(iso);
  return Number.isNaN(d.getTime()) ? '' : d.toLocaleString();
}

export function fileSize(bytes: number): string {
  if (bytes < 1024) return `${bytes} B`;
  if (bytes < 1024 * 1024) return `${(bytes / 1024).toFixed(1)} KB`;
  return `${(bytes / 1024 / 1024).toFixed(1)} MB`;
}

export function prefixSubject(prefix: 'Re' | 'Fwd', subject: string): string {
  const re = new RegExp(`^\\s*${prefix}\\s*:`, 'i');
  return re.test(subject) ? subject : `${prefix}: ${subject}`;
}

export function quote(text: string): string {
  return text
    .split('\n')
    .map((l) => `> ${l}`)
    .join('\n');
}
