import type { RecipientStatus } from '../api/types';

/**
 * One recipient's new status into the list; an update older than what is shown (a re-read that
 * crossed a live event) is ignored.
 */
export function mergeStatus(list: RecipientStatus[], s: RecipientStatus): RecipientStatus[] {
  const same = (r: RecipientStatus) => r.address.toLowerCase() === s.address.toLowerCase() && r.type === s.type;
  const i = list.findIndex(same);
  if (i < 0) return [...list, s];
  const shown = list[i] as RecipientStatus;
  if (Date.parse(s.updatedAt) < Date.parse(shown.updatedAt)) return list;
  return list.map((r, j) => (j === i ? s : r));
}
