// What reply, reply-all and forward put in a new message.

import type { Address, MailboxItemFull } from '../api/types';
import type { ComposerInit } from '../state/composer';
import { addressFull, longDate, prefixSubject, quote } from './format';

export type ReplyMode = 'reply' | 'replyAll' | 'forward';

function unique(addresses: Address[], exclude: string[]): string[] {
  const seen = new Set(exclude.map((e) => e.toLowerCase()));
  const out: string[] = [];
  for (const a of addresses) {
    const key = a.email.toLowerCase();
    if (!seen.has(key)) {
      seen.add(key);
      out.push(a.email);
    }
  }
  return out;
}

export function buildReply(item: MailboxItemFull, myAddresses: string[], mode: ReplyMode): ComposerInit {
  const body = item.textBody ?? item.snippet;
  if (mode === 'forward') {
    const header = [
      '---------- Forwarded message ---------',
      `From: ${addressFull(item.from)}`,
      `Date: ${longDate(item.receivedAt)}`,
      `Subject: ${item.subject}`,
      `To: ${item.to.map(addressFull).join(', ')}`,
      ...(item.cc.length ? [`Cc: ${item.cc.map(addressFull).join(', ')}`] : []),
    ].join('\n');
    return { title: 'Forward', subject: prefixSubject('Fwd', item.subject), text: `\n\n${header}\n\n${body}` };
  }
  const sentByMe = myAddresses.some((a) => a.toLowerCase() === item.from.email.toLowerCase());
  // Replying to my own message goes to its recipients, as mail clients do.
  const primary = sentByMe ? item.to : item.replyTo.length ? item.replyTo : [item.from];
  const to = unique(primary, sentByMe ? [] : myAddresses);
  const cc = mode === 'replyAll' ? unique([...(sentByMe ? [] : item.to), ...item.cc], [...myAddresses, ...to]) : [];
  const intro = `On ${longDate(item.receivedAt)}, ${addressFull(item.from)} wrote:`;
  return {
    title: mode === 'reply' ? 'Reply' : 'Reply all',
    to: to.join(', '),
    cc: cc.join(', '),
    subject: prefixSubject('Re', item.subject),
    text: `\n\n${intro}\n${quote(body)}`,
    inReplyTo: item.id,
  };
}
