import { createContext, useContext } from 'react';
import type { Folder, MailboxItem, MailboxItemFull, User } from '../api/types';
import type { ReplyMode } from '../lib/reply';
import type { Route } from '../lib/route';
import type { ComposerInit } from '../state/composer';
import type { MailController } from '../state/mail';

export interface Actions {
  archive(item: MailboxItem): void;
  trash(item: MailboxItem): void;
  deleteForever(item: MailboxItem): void;
  spam(item: MailboxItem, isSpam: boolean): void;
  star(item: MailboxItem): void;
  setRead(item: MailboxItem, read: boolean): void;
  move(item: MailboxItem, folder: Folder): void;
  addLabel(item: MailboxItem, label: string): void;
  removeLabel(item: MailboxItem, label: string): void;
  reply(item: MailboxItemFull, mode: ReplyMode): void;
}

export interface MailApi {
  controller: MailController;
  user: User;
  route: Route;
  navigate(hash: string): void;
  openComposer(init: ComposerInit): void;
  actions: Actions;
}

export const MailContext = createContext<MailApi | null>(null);

export function useMail(): MailApi {
  const api = useContext(MailContext);
  if (!api) throw new Error('useMail outside <Mail>');
  return api;
}
