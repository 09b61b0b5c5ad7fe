// TypeScript shapes of the parts of the public GraphQL contract (shared/CONTRACT.md) the
// webmail selects. Field names are the contract's; nothing here is webmail-specific.

export type Folder = 'INBOX' | 'SENT' | 'DRAFTS' | 'TRASH' | 'SPAM' | 'ARCHIVE';

export const FOLDERS: readonly Folder[] = ['INBOX', 'SENT', 'DRAFTS', 'ARCHIVE', 'SPAM', 'TRASH'];

export interface Address {
  name: string | null;
  email: string;
}

export interface User {
  id: string;
  email: string;
  name: string | null;
  /** The viewer's addresses, primary first (docs/api.md); only asked for by `me`. */
  addresses?: string[];
}

export interface Mailbox {
  id: string;
  name: string;
  folder: Folder | null;
  isLabel: boolean;
  total: number;
  unread: number;
}

export interface Attachment {
  id: string;
  filename: string;
  contentType: string;
  size: number;
  sha256: string;
  downloadUrl: string;
}

export interface RecipientStatus {
  address: string;
  type: string;
  status: string;
  attempts: number;
  lastReply: string | null;
  bounceClass: string | null;
  nextAttemptAt: string | null;
  updatedAt: string;
}

export interface SpamVerdict {
  isSpam: boolean;
  score: number;
  modelVersion: string;
  reasons: string[];
}

/** A row of a list: the fields every list query selects. */
export interface MailboxItem {
  id: string;
  messageId: string;
  threadId: string;
  folder: Folder;
  labels: string[];
  read: boolean;
  starred: boolean;
  receivedAt: string;
  from: Address;
  to: Address[];
  cc: Address[];
  subject: string;
  snippet: string;
  hasAttachments: boolean;
  size: number;
}

/** An opened message: the row plus its content. */
export interface MailboxItemFull extends MailboxItem {
  bcc: Address[];
  replyTo: Address[];
  textBody: string | null;
  htmlBody: string | null;
  rfc822MessageId: string | null;
  inReplyTo: string | null;
  references: string[];
  attachments: Attachment[];
  recipients: RecipientStatus[];
  spam: SpamVerdict | null;
  authResults: string | null;
}

export interface PageInfo {
  hasNextPage: boolean;
  endCursor: string | null;
}

export interface Connection<T> {
  edges: { cursor: string; node: T }[];
  pageInfo: PageInfo;
  totalCount?: number;
}

export interface SearchHit {
  item: MailboxItem;
  highlights: string[];
}

export interface Thread {
  id: string;
  subject: string;
  messageCount: number;
  unreadCount: number;
  latestAt: string;
  messages: MailboxItemFull[];
}

export interface FieldError {
  field: string;
  message: string;
}

/** The typed errors of mutation result unions. */
export type MutationError =
  | { __typename: 'ValidationError'; message: string; fields: FieldError[] }
  | { __typename: 'NotFound'; message: string }
  | { __typename: 'RateLimited'; message: string; retryAfterSeconds: number }
  | { __typename: 'AuthError'; message: string };

export interface MailboxEvent {
  type: 'created' | 'updated' | 'deleted';
  item: MailboxItem | null;
  itemId: string;
  state: string;
}

export type ChangesResult =
  | { __typename: 'Changes'; created: string[]; updated: string[]; deleted: string[]; newState: string }
  | { __typename: 'CannotCalculateChanges'; message: string; newState: string };

export interface MessageStateInput {
  read?: boolean;
  starred?: boolean;
  folder?: Folder;
  addLabels?: string[];
  removeLabels?: string[];
}

export interface DraftInput {
  id?: string;
  to?: string[] | null;
  cc?: string[] | null;
  bcc?: string[] | null;
  subject?: string | null;
  text?: string | null;
  attachmentIds?: string[] | null;
  inReplyTo?: string | null;
}

export interface SendEmailInput {
  to: string[];
  cc?: string[];
  bcc?: string[];
  subject: string;
  text?: string | null;
  attachmentIds?: string[];
  inReplyTo?: string | null;
  idempotencyKey?: string;
  sendAt?: string | null;
}
