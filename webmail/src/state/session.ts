// Who is signed in. The token lives in memory and in sessionStorage (so a reload in the same
// tab stays signed in, and closing the tab forgets it).

import { client } from '../api/client';
import { LOGIN } from '../api/operations';
import type { User } from '../api/types';
import { Store } from './store';

const KEY = 'mailhub.session';

export interface Session {
  token: string;
  user: User;
}

function load(): Session | null {
  try {
    const raw = sessionStorage.getItem(KEY);
    const parsed = raw ? (JSON.parse(raw) as Session) : null;
    return parsed && typeof parsed.token === 'string' ? parsed : null;
  } catch {
    return null;
  }
}

export const session = new Store<Session | null>(load());
/** Why the user is looking at the sign-in form (an expired session), if not by choice. */
export const signInNotice = new Store<string | null>(null);

client.setToken(session.get()?.token ?? null);
client.onUnauthenticated = () => {
  if (session.get()) signOut('Your session has expired. Sign in again.');
};

type LoginResult =
  | { __typename: 'LoginSuccess'; token: string; user: User }
  | { __typename: 'AuthError'; message: string };

/** Signs in; returns an error message for the form, or null on success. */
export async function signIn(email: string, password: string): Promise<string | null> {
  const data = await client.request<{ login: LoginResult }>(LOGIN, { email, password });
  const result = data.login;
  if (result.__typename !== 'LoginSuccess') return result.message;
  const value = { token: result.token, user: result.user };
  sessionStorage.setItem(KEY, JSON.stringify(value));
  client.setToken(value.token);
  signInNotice.set(null);
  session.set(value);
  return null;
}

export function signOut(notice: string | null = null): void {
  sessionStorage.removeItem(KEY);
  client.setToken(null);
  signInNotice.set(notice);
  session.set(null);
}
