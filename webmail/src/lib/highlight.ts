// Search highlights come HTML-escaped with matches in <mark>…</mark>. They are split into text
// runs here and rendered as React text (never as HTML), so nothing else in them can become markup.

export interface Run {
  text: string;
  mark: boolean;
}

const ENTITIES: Record<string, string> = { amp: '&', lt: '<', gt: '>', quot: '"', apos: "'", nbsp: '\u00a0' };

export function unescapeHtml(s: string): string {
  return s.replace(/&(#x[0-9a-f]+|#[0-9]+|[a-z]+);/gi, (whole, name: string) => {
    if (name[0] === '#') {
      const code = name[1] === 'x' || name[1] === 'X' ? parseInt(name.slice(2), 16) : parseInt(name.slice(1), 10);
      return Number.isFinite(code) && code > 0 && code <= 0x10ffff ? String.fromCodePoint(code) : whole;
    }
    return ENTITIES[name.toLowerCase()] ?? whole;
  });
}

export function parseHighlight(html: string): Run[] {
  const runs: Run[] = [];
  const re = /<mark>([\s\S]*?)<\/mark>/gi;
  let last = 0;
  for (let m = re.exec(html); m; m = re.exec(html)) {
    if (m.index > last) runs.push({ text: unescapeHtml(stripTags(html.slice(last, m.index))), mark: false });
    runs.push({ text: unescapeHtml(stripTags(m[1] ?? '')), mark: true });
    last = m.index + m[0].length;
  }
  if (last < html.length) runs.push({ text: unescapeHtml(stripTags(html.slice(last))), mark: false });
  return runs.filter((r) => r.text !== '');
}

function stripTags(s: string): string {
  return s.replace(/<[^>]*>/g, '');
}
