import { FOLDERS, type Mailbox } from '../api/types';
import { FOLDER_NAMES } from '../lib/format';
import { folderHref, listHref } from '../lib/route';
import { useMail } from './context';
import { useStore } from './hooks';

/**
 * Folders and labels. Each link's accessible name is exactly the folder (or label) name; the
 * unread count is its accessible description (aria-describedby), so "Inbox" stays "Inbox".
 */
export function Sidebar() {
  const { controller, route, openComposer } = useMail();
  const mailboxes = useStore(controller.mailboxes);
  const byFolder = new Map<string, Mailbox>();
  for (const m of mailboxes) if (m.folder && !m.isLabel) byFolder.set(m.folder, m);
  const labels = mailboxes.filter((m) => m.isLabel).sort((a, b) => a.name.localeCompare(b.name));

  return (
    <aside className="sidebar">
      <button type="button" className="primary compose" onClick={() => openComposer({ title: 'New message' })}>
        Compose
      </button>
      <nav aria-label="Folders">
        <ul>
          {FOLDERS.map((folder) => {
            const box = byFolder.get(folder);
            const current = route.list.kind === 'folder' && route.list.folder === folder;
            // Drafts show how many there are; the other folders how many are unread.
            const count = folder === 'DRAFTS' ? (box?.total ?? 0) : (box?.unread ?? 0);
            const describe = folder === 'DRAFTS' ? `${count} drafts` : `${count} unread`;
            const id = `count-${folder.toLowerCase()}`;
            return (
              <li key={folder}>
                <a href={folderHref(folder)} aria-current={current ? 'page' : undefined} aria-describedby={id} className={count && folder !== 'DRAFTS' ? 'has-unread' : ''}>
                  {FOLDER_NAMES[folder]}
                </a>
                <span id={id} className="count" data-count={count}>
                  <span aria-hidden="true">{count > 0 ? count : ''}</span>
                  <span className="sr-only">{describe}</span>
                </span>
              </li>
            );
          })}
        </ul>
      </nav>
      {labels.length > 0 && (
        <nav aria-label="Labels">
          <h2 className="nav-title">Labels</h2>
          <ul>
            {labels.map((m) => {
              const id = `count-label-${m.id.replace(/[^\w-]/g, "_")}`;
              const current = route.list.kind === 'label' && route.list.label === m.name;
              return (
                <li key={m.id}>
                  <a href={listHref({ kind: 'label', label: m.name })} aria-current={current ? 'page' : undefined} aria-describedby={id} className={m.unread ? 'has-unread' : ''}>
                    {m.name}
                  </a>
                  <span id={id} className="count" data-count={m.unread}>
                    <span aria-hidden="true">{m.unread > 0 ? m.unread : ''}</span>
                    <span className="sr-only">{`${m.unread} unread`}</span>
                  </span>
                </li>
              );
            })}
          </ul>
        </nav>
      )}
    </aside>
  );
}
