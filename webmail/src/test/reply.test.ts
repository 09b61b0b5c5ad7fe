import { describe, expect, it } from 'vitest';
import type { MailboxItemFull } from '../api/types';
import { buildReply } from '../lib/reply';
import { item } from './fixtures';

function full(overrides: Partial<MailboxItemFull> = {}): MailboxItemFull {
  return {
    ...item(),
    bcc: [],
    replyTo: [],
    textBody: 'line one\nline two',
    htmlBody: null,
    rfc822MessageId: '<x@y>',
    inReplyTo: null,
    references: [],
    attachments: [],
    recipients: [],
    spam: null,
    authResults: null,
    subject: 'Plans',
    from: { name: 'Alice', email: 'alice@x.test' },
    to: [{ name: null, email: 'bob@x.test' }, { name: null, email: 'carol@x.test' }],
    cc: [{ name: null, email: 'dave@x.test' }],
    ...overrides,
  };
}

describe('reply, reply all, forward', () => {
  it('reply goes to the sender, threaded, quoted', () => {
    const r = buildReply(full(), ['bob@x.test'], 'reply');
    expect(r).toMatchObject({ to: 'alice@x.test', cc: '', subject: 'Re: Plans' });
    expect(r.inReplyTo).toBeDefined();
    expect(r.text).toContain('> line one\n> line two');
  });

  it('reply honours Reply-To and does not stack Re:', () => {
    const r = buildReply(full({ subject: 'RE: Plans', replyTo: [{ name: null, email: 'list@x.test' }] }), ['bob@x.test'], 'reply');
    expect(r.to).toBe('list@x.test');
    expect(r.subject).toBe('RE: Plans');
  });

  it('reply all copies everyone but me', () => {
    const r = buildReply(full(), ['BOB@x.test'], 'replyAll');
    expect(r.to).toBe('alice@x.test');
    expect(r.cc).toBe('carol@x.test, dave@x.test');
  });

  it('replying to my own sent message goes to its recipients', () => {
    const r = buildReply(full(), ['alice@x.test'], 'reply');
    expect(r.to).toBe('bob@x.test, carol@x.test');
  });

  it('forward has no recipients and carries the original header', () => {
    const r = buildReply(full(), ['bob@x.test'], 'forward');
    expect(r.to).toBeUndefined();
    expect(r.subject).toBe('Fwd: Plans');
    expect(r.text).toContain('From: Alice <alice@x.test>');
  });
});
