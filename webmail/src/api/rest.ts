// The REST endpoints the webmail needs besides GraphQL: attachment upload (multipart, with
// progress) and download, and the raw RFC 822 source. Same bearer token as GraphQL.

import { client } from './client';

export interface UploadedAttachment {
  id: string;
  filename: string;
  contentType: string;
  size: number;
  sha256: string;
}

export class RestError extends Error {
  constructor(
    message: string,
    readonly status: number,
  ) {
    super(message);
    this.name = 'RestError';
  }
}

/**
 * The path and query of an API URL. Download URLs carry the server's configured base URL,
 * which may name another host than the one the page came from; the app only talks to its own.
 */
export function sameOriginPath(url: string): string {
  const parsed = new URL(url, 'http://same-origin.invalid/');
  return `${parsed.pathname}${parsed.search}`;
}

/** The path of "Show original" for an item (GET /api/emails/{id}/raw, message/rfc822). */
export function rawPath(itemId: string, rawUrl?: string | null): string {
  return rawUrl ? sameOriginPath(rawUrl) : `/api/emails/${encodeURIComponent(itemId)}/raw`;
}

function errorMessage(status: number, body: string): string {
  try {
    const parsed = JSON.parse(body) as { error?: { message?: string } };
    if (parsed.error?.message) return parsed.error.message;
  } catch {
    // not JSON: fall through
  }
  if (status === 413) return 'The file is larger than 25 MB.';
  if (status === 404) return 'Not found (it may have been deleted).';
  return `The server answered ${status}.`;
}

function authHeaders(): Record<string, string> {
  const token = client.getToken();
  return token ? { Authorization: `Bearer ${token}` } : {};
}

/** POST /api/attachments (field `file`); `onProgress` gets 0..1 as the bytes go out. */
export function uploadAttachment(
  file: Blob,
  filename: string,
  onProgress: (fraction: number) => void,
  signal?: AbortSignal,
): Promise<UploadedAttachment> {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open('POST', '/api/attachments');
    for (const [k, v] of Object.entries(authHeaders())) xhr.setRequestHeader(k, v);
    xhr.upload.onprogress = (e) => {
      if (e.lengthComputable) onProgress(e.loaded / e.total);
    };
    xhr.onload = () => {
      if (xhr.status === 401) client.onUnauthenticated();
      if (xhr.status >= 200 && xhr.status < 300) {
        onProgress(1);
        resolve(JSON.parse(xhr.responseText) as UploadedAttachment);
      } else {
        reject(new RestError(errorMessage(xhr.status, xhr.responseText), xhr.status));
      }
    };
    xhr.onerror = () => reject(new RestError('The upload failed: the server cannot be reached.', 0));
    xhr.onabort = () => reject(new RestError('The upload was canceled.', 0));
    signal?.addEventListener('abort', () => xhr.abort());
    const form = new FormData();
    form.append('file', file, filename);
    xhr.send(form);
  });
}

async function get(path: string): Promise<Response> {
  const response = await fetch(path, { headers: authHeaders() });
  if (response.status === 401) client.onUnauthenticated();
  if (!response.ok) throw new RestError(errorMessage(response.status, await response.text()), response.status);
  return response;
}

export async function fetchBlob(url: string): Promise<Blob> {
  return (await get(sameOriginPath(url))).blob();
}

/** Saves a blob under a name through a temporary object URL. */
export function saveBlob(blob: Blob, filename: string): void {
  const href = URL.createObjectURL(blob);
  const a = document.createElement('a');
  a.href = href;
  a.download = filename;
  a.rel = 'noopener';
  document.body.appendChild(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(href), 60_000);
}
