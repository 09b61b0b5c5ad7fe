import { describe, expect, it } from 'vitest';
import { draftDiff, emptyDraft, isEmptyDraft, parseAddressList } from '../state/drafts';

describe('draft diffing', () => {
  it('a new draft sends the fields that have a value, no nulls', () => {
    expect(draftDiff(null, { ...emptyDraft, to: ['bob@x.test'], subject: 'Hi' })).toEqual({ to: ['bob@x.test'], subject: 'Hi' });
  });

  it('nothing changed: nothing to send', () => {
    const d = { ...emptyDraft, to: ['a@x.test'], text: 'body' };
    expect(draftDiff(d, { ...d, to: [...d.to] })).toBeNull();
    expect(draftDiff(null, emptyDraft)).toBeNull();
  });

  it('only the changed fields are sent', () => {
    const saved = { ...emptyDraft, to: ['a@x.test'], subject: 'Hi', text: 'one' };
    expect(draftDiff(saved, { ...saved, text: 'one two' })).toEqual({ text: 'one two' });
    expect(draftDiff(saved, { ...saved, to: ['a@x.test', 'b@x.test'], attachmentIds: ['att1'] })).toEqual({
      to: ['a@x.test', 'b@x.test'],
      attachmentIds: ['att1'],
    });
  });

  it('a field emptied since the last save is sent as null (clears it)', () => {
    const saved = { ...emptyDraft, cc: ['c@x.test'], subject: 'Hi', attachmentIds: ['a1'] };
    expect(draftDiff(saved, { ...saved, cc: [], subject: '', attachmentIds: [] })).toEqual({ cc: null, subject: null, attachmentIds: null });
  });

  it('order of recipients matters', () => {
    const saved = { ...emptyDraft, to: ['a@x.test', 'b@x.test'] };
    expect(draftDiff(saved, { ...saved, to: ['b@x.test', 'a@x.test'] })).toEqual({ to: ['b@x.test', 'a@x.test'] });
  });

  it('isEmptyDraft', () => {
    expect(isEmptyDraft(emptyDraft)).toBe(true);
    expect(isEmptyDraft({ ...emptyDraft, inReplyTo: 'x' })).toBe(true);
    expect(isEmptyDraft({ ...emptyDraft, text: 'x' })).toBe(false);
  });
});

describe('address lists', () => {
  it('splits on commas and semicolons, keeps quoted commas', () => {
    expect(parseAddressList(' a@x.test, "Smith, Bob" <b@x.test>; c@x.test ,, ')).toEqual([
      'a@x.test',
      '"Smith, Bob" <b@x.test>',
      'c@x.test',
    ]);
    expect(parseAddressList('')).toEqual([]);
  });
});
