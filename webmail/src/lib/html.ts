// The document shown in the reader's iframe. The server already sanitized the HTML; here it is
// sanitized again (DOMPurify, defense in depth), remote images are blocked until the reader
// allows them, and the document carries its own Content-Security-Policy. The iframe is
// sandboxed without allow-scripts, so even markup that slipped through cannot run.

import DOMPurify from 'dompurify';

export interface Srcdoc {
  srcdoc: string;
  blockedImages: number;
}

const REMOTE = /^\s*(https?:)?\/\//i;

export function contentSecurityPolicy(showImages: boolean): string {
  const img = showImages ? "img-src data: cid: https: http:" : 'img-src data: cid:';
  return [
    "default-src 'none'",
    img,
    "style-src 'unsafe-inline'",
    "script-src 'none'",
    "object-src 'none'",
    "frame-src 'none'",
    "form-action 'none'",
    "base-uri 'none'",
  ].join('; ');
}

const STYLE = `
  html { color-scheme: light; }
  body { margin: 0; padding: 12px 16px; font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif;
         color: #111827; background: #ffffff; overflow-wrap: anywhere; }
  img { max-width: 100%; height: auto; }
  img[data-blocked-src] { outline: 1px dashed #6b7280; min-width: 16px; min-height: 16px; }
  a { color: #1d4ed8; }
  blockquote { margin: 0 0 0 8px; padding-left: 8px; border-left: 3px solid #d1d5db; color: #374151; }
  pre { white-space: pre-wrap; }
`;

export function escapeHtml(s: string): string {
  return s.replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c] as string);
}

/** Sanitized body HTML with remote images either kept or blocked (src moved aside). */
export function prepareBody(html: string, showImages: boolean): Srcdoc {
  const purify = DOMPurify(window as unknown as Parameters<typeof DOMPurify>[0]);
  const body = purify.sanitize(html, {
    WHOLE_DOCUMENT: false,
    RETURN_DOM: true,
    FORBID_TAGS: ['style', 'form', 'input', 'button', 'textarea', 'select', 'iframe', 'frame', 'object', 'embed', 'meta', 'link', 'base', 'svg', 'math'],
    FORBID_ATTR: ['srcdoc', 'formaction', 'action', 'ping'],
    ALLOW_DATA_ATTR: true,
  }) as HTMLElement;
  let blocked = 0;
  for (const img of Array.from(body.querySelectorAll('img'))) {
    const src = img.getAttribute('src') ?? '';
    const remote = img.hasAttribute('data-remote-image') || REMOTE.test(src);
    img.removeAttribute('srcset');
    if (remote && !showImages) {
      img.setAttribute('data-blocked-src', src);
      img.removeAttribute('src');
      blocked += 1;
    }
  }
  for (const el of Array.from(body.querySelectorAll('[background]'))) {
    if (!showImages) {
      el.removeAttribute('background');
      blocked += 1;
    }
  }
  for (const el of Array.from(body.querySelectorAll('[style]'))) {
    if (/url\s*\(/i.test(el.getAttribute('style') ?? '')) el.removeAttribute('style');
  }
  for (const a of Array.from(body.querySelectorAll('a'))) {
    a.setAttribute('target', '_blank');
    a.setAttribute('rel', 'noopener noreferrer nofollow');
  }
  return { srcdoc: wrap(body.innerHTML, showImages), blockedImages: blocked };
}

/** A plain-text body as a document (for the same iframe). */
export function textDocument(text: string): string {
  return wrap(`<pre style="font: inherit; margin: 0">${escapeHtml(text)}</pre>`, false);
}

function wrap(inner: string, showImages: boolean): string {
  return `<!doctype html><html><head><meta charset="utf-8">`
    + `<meta http-equiv="Content-Security-Policy" content="${contentSecurityPolicy(showImages)}">`
    + `<meta name="referrer" content="no-referrer"><base target="_blank"><style>${STYLE}</style></head>`
    + `<body>${inner}</body></html>`;
}

/** The sandbox of the reader iframe: no scripts, no same-origin; links open in a new tab. */
export const IFRAME_SANDBOX = 'allow-popups allow-popups-to-escape-sandbox';
