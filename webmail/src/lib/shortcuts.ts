// Keyboard shortcuts (Gmail's letters). A key typed into a field, or with a modifier, is text.

export type ShortcutAction = 'next' | 'previous' | 'compose' | 'reply' | 'replyAll' | 'forward' | 'archive' | 'delete' | 'search' | 'star' | 'close';

export const SHORTCUTS: { key: string; action: ShortcutAction; description: string }[] = [
  { key: 'j', action: 'next', description: 'Next message' },
  { key: 'k', action: 'previous', description: 'Previous message' },
  { key: 'c', action: 'compose', description: 'Compose' },
  { key: 'r', action: 'reply', description: 'Reply' },
  { key: 'a', action: 'replyAll', description: 'Reply all' },
  { key: 'f', action: 'forward', description: 'Forward' },
  { key: 'e', action: 'archive', description: 'Archive' },
  { key: '#', action: 'delete', description: 'Delete (move to Trash)' },
  { key: 's', action: 'star', description: 'Star / unstar' },
  { key: '/', action: 'search', description: 'Search' },
  { key: 'Escape', action: 'close', description: 'Close the message or the composer' },
];

export interface KeyLike {
  key: string;
  ctrlKey: boolean;
  metaKey: boolean;
  altKey: boolean;
  target: EventTarget | null;
}

function isTyping(target: EventTarget | null): boolean {
  if (!target || typeof (target as Element).closest !== 'function') return false;
  const el = target as HTMLElement;
  if (el.isContentEditable) return true;
  const tag = el.tagName;
  if (tag === 'TEXTAREA' || tag === 'SELECT') return true;
  if (tag === 'INPUT') {
    const type = (el as HTMLInputElement).type;
    return !['checkbox', 'radio', 'button', 'submit'].includes(type);
  }
  return false;
}

export function shortcutFor(e: KeyLike): ShortcutAction | null {
  if (e.ctrlKey || e.metaKey || e.altKey) return null;
  if (e.key === 'Escape') return 'close';
  if (isTyping(e.target)) return null;
  return SHORTCUTS.find((s) => s.key === e.key)?.action ?? null;
}
