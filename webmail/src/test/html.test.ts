// @vitest-environment jsdom
import { describe, expect, it } from 'vitest';
import { contentSecurityPolicy, prepareBody, textDocument } from '../lib/html';

describe('reader document', () => {
  it('blocks remote images until allowed, keeps inline ones', () => {
    const html = '<p>Hi</p><img src="https://tracker.example/p.gif" data-remote-image="true"><img src="data:image/png;base64,AAAA">';
    const blocked = prepareBody(html, false);
    expect(blocked.blockedImages).toBe(1);
    expect(blocked.srcdoc).not.toMatch(/ src="https:\/\/tracker/);
    expect(blocked.srcdoc).toContain('data-blocked-src="https://tracker.example/p.gif"');
    expect(blocked.srcdoc).toContain('src="data:image/png;base64,AAAA"');
    expect(blocked.srcdoc).toContain("img-src data: cid:;");
    const shown = prepareBody(html, true);
    expect(shown.blockedImages).toBe(0);
    expect(shown.srcdoc).toContain('src="https://tracker.example/p.gif"');
    expect(shown.srcdoc).toContain('img-src data: cid: https: http:');
  });

  it('drops scripts, handlers, javascript: URLs, SVG, srcdoc and meta refresh even if the server missed them', () => {
    const html = [
      '<script>window.pwned=1</script>',
      '<img src="x" onerror="window.pwned=2">',
      '<a href="javascript:window.pwned=3">click</a>',
      '<svg><script>window.pwned=4</script></svg>',
      '<iframe srcdoc="<script>window.pwned=5</script>"></iframe>',
      '<meta http-equiv="refresh" content="0;url=https://evil.example">',
      '<div style="background:url(https://evil.example/x)">styled</div>',
    ].join('');
    const { srcdoc } = prepareBody(html, true);
    const body = srcdoc.slice(srcdoc.indexOf('<body>'));
    expect(body).not.toMatch(/<script|onerror|javascript:|<svg|<iframe|srcdoc|http-equiv|url\(/i);
    expect(body).toContain('click');
    expect(body).toContain('styled');
  });

  it('every document forbids scripts by CSP and links open outside', () => {
    expect(contentSecurityPolicy(false)).toContain("script-src 'none'");
    expect(contentSecurityPolicy(false)).toContain("default-src 'none'");
    const { srcdoc } = prepareBody('<a href="https://example.org">x</a>', false);
    expect(srcdoc).toContain('target="_blank"');
    expect(srcdoc).toContain('rel="noopener noreferrer nofollow"');
  });

  it('plain text is escaped', () => {
    expect(textDocument('<b>not bold</b> & more')).toContain('&lt;b&gt;not bold&lt;/b&gt; &amp; more');
  });
});
