import { StrictMode } from 'react';
import { createRoot } from 'react-dom/client';
import { App } from './ui/App';
import './ui/styles.css';

// graphql-ws leaves one promise of a socket closed before its acknowledgement (a rejected token,
// 4403) without a handler; the close itself is handled (sign-in), so that rejection is not news.
window.addEventListener('unhandledrejection', (event) => {
  const reason: unknown = event.reason;
  if (typeof CloseEvent !== 'undefined' && reason instanceof CloseEvent) event.preventDefault();
});

const root = document.getElementById('root');
if (root) {
  createRoot(root).render(
    <StrictMode>
      <App />
    </StrictMode>,
  );
}
