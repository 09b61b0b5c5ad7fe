// Every GraphQL document the webmail sends. Fields are those of shared/CONTRACT.md
// (plus `state`/`changes` of docs/realtime.md); nothing else is assumed to exist.

const ROW = `
  id messageId threadId folder labels read starred receivedAt
  from { name email } to { name email } cc { name email }
  subject snippet hasAttachments size`;

const FULL = `${ROW}
  bcc { name email } replyTo { name email }
  textBody htmlBody rfc822MessageId inReplyTo references
  attachments { id filename contentType size sha256 downloadUrl }
  recipients { address type status attempts lastReply bounceClass nextAttemptAt updatedAt }
  spam { isSpam score modelVersion reasons }
  authResults`;

export const ROW_FRAGMENT = `fragment Row on MailboxItem {${ROW} }`;
export const FULL_FRAGMENT = `fragment Full on MailboxItem {${FULL} }`;

const ERRORS = `
  ... on ValidationError { message fields { field message } }
  ... on NotFound { message }`;

export const LOGIN = `mutation Login($email: String!, $password: String!) {
  login(email: $email, password: $password) {
    __typename
    ... on LoginSuccess { token user { id email name } }
    ... on AuthError { message }
  }
}`;

export const ME = `query Me { me { id email name addresses } state mailboxes { id name folder isLabel total unread } }`;

export const MAILBOXES = `query Mailboxes { mailboxes { id name folder isLabel total unread } }`;

export const MESSAGES = `query Messages($folder: Folder, $label: String, $first: Int!, $after: String) {
  messages(folder: $folder, label: $label, first: $first, after: $after) {
    edges { cursor node { ...Row } }
    pageInfo { hasNextPage endCursor }
    totalCount
  }
}
${ROW_FRAGMENT}`;

export const SEARCH = `query Search($query: String!, $first: Int!, $after: String) {
  search(query: $query, first: $first, after: $after) {
    edges { cursor node { highlights item { ...Row } } }
    pageInfo { hasNextPage endCursor }
    totalCount
  }
}
${ROW_FRAGMENT}`;

export const MESSAGE = `query Message($id: ID!) { message(id: $id) { ...Full } }
${FULL_FRAGMENT}`;

export const THREAD = `query Thread($id: ID!) {
  thread(id: $id) { id subject messageCount unreadCount latestAt messages { ...Full } }
}
${FULL_FRAGMENT}`;

/** Several rows by id in one request (aliases; the server allows 30 per document). */
export function itemsByIdQuery(count: number): string {
  const vars = Array.from({ length: count }, (_, i) => `$i${i}: ID!`).join(', ');
  const fields = Array.from({ length: count }, (_, i) => `m${i}: message(id: $i${i}) { ...Row }`).join('\n  ');
  return `query Items(${vars}) {\n  ${fields}\n}\n${ROW_FRAGMENT}`;
}
export const ITEMS_PER_REQUEST = 25;

export const CHANGES = `query Changes($since: String!) {
  changes(since: $since) {
    __typename
    ... on Changes { created updated deleted newState }
    ... on CannotCalculateChanges { message newState }
  }
}`;

export const UPDATE_MESSAGES = `mutation Update($ids: [ID!]!, $set: MessageStateInput!) {
  updateMessages(ids: $ids, set: $set) {
    __typename
    ... on UpdateMessagesSuccess { items { ...Row } }
    ${ERRORS}
  }
}
${ROW_FRAGMENT}`;

export const MARK_SPAM = `mutation MarkSpam($ids: [ID!]!) {
  markSpam(ids: $ids) { __typename ... on UpdateMessagesSuccess { items { ...Row } } ${ERRORS} }
}
${ROW_FRAGMENT}`;

export const MARK_NOT_SPAM = `mutation MarkNotSpam($ids: [ID!]!) {
  markNotSpam(ids: $ids) { __typename ... on UpdateMessagesSuccess { items { ...Row } } ${ERRORS} }
}
${ROW_FRAGMENT}`;

export const DELETE_FOREVER = `mutation DeleteForever($ids: [ID!]!) {
  deleteForever(ids: $ids) { __typename ... on DeleteSuccess { ids } ... on NotFound { message } }
}`;

export const SAVE_DRAFT = `mutation SaveDraft($input: DraftInput!) {
  saveDraft(input: $input) { __typename ... on DraftSuccess { item { ...Row } } ${ERRORS} }
}
${ROW_FRAGMENT}`;

export const DELETE_DRAFT = `mutation DeleteDraft($id: ID!) {
  deleteDraft(id: $id) { __typename ... on DeleteSuccess { ids } ... on NotFound { message } }
}`;

const SEND_RESULT = `__typename
    ... on SendEmailSuccess { item { ...Full } }
    ... on RateLimited { message retryAfterSeconds }
    ${ERRORS}`;

export const SEND_EMAIL = `mutation Send($input: SendEmailInput!) {
  sendEmail(input: $input) { ${SEND_RESULT} }
}
${FULL_FRAGMENT}`;

export const SEND_DRAFT = `mutation SendDraft($id: ID!) {
  sendDraft(id: $id) { ${SEND_RESULT} }
}
${FULL_FRAGMENT}`;

export const CANCEL_SEND = `mutation CancelSend($id: ID!) {
  cancelSend(id: $id) { ${SEND_RESULT} }
}
${FULL_FRAGMENT}`;

export const SUB_MAILBOX_EVENTS = `subscription MailboxEvents {
  mailboxEvents { type itemId state item { ...Row } }
}
${ROW_FRAGMENT}`;

export const SUB_UNREAD_COUNTS = `subscription UnreadCounts {
  unreadCounts { id name folder isLabel total unread }
}`;

export const SUB_DELIVERY_STATUS = `subscription DeliveryStatus($messageId: ID!) {
  deliveryStatus(messageId: $messageId) {
    address type status attempts lastReply bounceClass nextAttemptAt updatedAt
  }
}`;

export const THREADS = `query Threads($folder: Folder, $label: String, $first: Int!, $after: String) {
  threads(folder: $folder, label: $label, first: $first, after: $after) {
    edges { cursor node {
      id subject participants { name email } messageCount unreadCount latestAt messages { id folder }
    } }
    pageInfo { hasNextPage endCursor }
  }
}`;
