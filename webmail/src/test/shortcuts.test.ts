import { describe, expect, it } from 'vitest';
import { shortcutFor } from '../lib/shortcuts';

const key = (k: string, target: unknown = null, mods: Partial<{ ctrlKey: boolean; metaKey: boolean; altKey: boolean }> = {}) => ({
  key: k,
  ctrlKey: false,
  metaKey: false,
  altKey: false,
  target: target as EventTarget | null,
  ...mods,
});

const field = (tagName: string, type = 'text') => ({ tagName, type, isContentEditable: false, closest: () => null });

describe('keyboard shortcuts', () => {
  it('maps Gmail letters', () => {
    expect(['j', 'k', 'c', 'r', 'e', '#', '/'].map((k) => shortcutFor(key(k)))).toEqual([
      'next',
      'previous',
      'compose',
      'reply',
      'archive',
      'delete',
      'search',
    ]);
  });

  it('ignores keys typed into fields and keys with modifiers', () => {
    expect(shortcutFor(key('j', field('INPUT')))).toBeNull();
    expect(shortcutFor(key('c', field('TEXTAREA')))).toBeNull();
    expect(shortcutFor(key('c', null, { ctrlKey: true }))).toBeNull();
    expect(shortcutFor(key('j', field('INPUT', 'checkbox')))).toBe('next');
  });

  it('Escape works everywhere', () => {
    expect(shortcutFor(key('Escape', field('TEXTAREA')))).toBe('close');
  });
});
