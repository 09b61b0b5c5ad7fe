import { Store } from './store';

export interface Toast {
  id: number;
  message: string;
  action?: { label: string; run: () => void };
  /** Dismissed by itself after this many ms (null: stays until dismissed). */
  timeoutMs: number | null;
}

export const toasts = new Store<Toast[]>([]);
let next = 0;

export function showToast(message: string, action?: Toast['action'], timeoutMs: number | null = 8000): number {
  const id = ++next;
  // One at a time, as in Gmail: a new notice (and its Undo) replaces the previous one.
  toasts.set([{ id, message, action, timeoutMs }]);
  if (timeoutMs !== null) setTimeout(() => dismissToast(id), timeoutMs);
  return id;
}

export function dismissToast(id: number): void {
  toasts.update((ts) => ts.filter((t) => t.id !== id));
}
