import { describe, expect, it } from 'vitest';
import { parseHighlight, unescapeHtml } from '../lib/highlight';

describe('search highlights', () => {
  it('splits marked and plain runs and unescapes text', () => {
    expect(parseHighlight('the <mark>quarterly</mark> report &amp; <mark>plan</mark>')).toEqual([
      { text: 'the ', mark: false },
      { text: 'quarterly', mark: true },
      { text: ' report & ', mark: false },
      { text: 'plan', mark: true },
    ]);
  });

  it('escaped markup stays text', () => {
    const runs = parseHighlight('&lt;script&gt;alert(1)&lt;/script&gt; <mark>x</mark>');
    expect(runs[0]?.text).toBe('<script>alert(1)</script> ');
  });

  it('numeric entities', () => {
    expect(unescapeHtml('&#39;&#x41;&bogus;')).toBe("'A&bogus;");
  });
});
