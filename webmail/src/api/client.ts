// The one GraphQL client of the webmail: queries and mutations over HTTP POST /graphql with the
// bearer token, subscriptions over one graphql-ws (graphql-transport-ws) socket.
//
// An UNAUTHENTICATED answer (expired, revoked or bad token), or the socket closed with 4403,
// calls `onUnauthenticated` once, which returns the app to sign-in.

import { createClient, type Client as WsClient } from 'graphql-ws';

export class GraphQLRequestError extends Error {
  constructor(
    message: string,
    readonly code: string | null,
    readonly extensions: Record<string, unknown> = {},
  ) {
    super(message);
    this.name = 'GraphQLRequestError';
  }
}

export class Unauthenticated extends GraphQLRequestError {
  constructor(message = 'Your session has ended. Sign in again.') {
    super(message, 'UNAUTHENTICATED');
    this.name = 'Unauthenticated';
  }
}

interface GraphQLErrorShape {
  message: string;
  extensions?: Record<string, unknown>;
}

export interface GraphQLResponse<T> {
  data?: T | null;
  errors?: GraphQLErrorShape[];
}

/** The first error of a response as an exception (UNAUTHENTICATED gets its own class). */
export function responseError(errors: GraphQLErrorShape[] | undefined): GraphQLRequestError | null {
  const first = errors?.[0];
  if (!first) return null;
  const code = typeof first.extensions?.code === 'string' ? first.extensions.code : null;
  if (code === 'UNAUTHENTICATED') return new Unauthenticated();
  return new GraphQLRequestError(first.message, code, first.extensions ?? {});
}

export type ConnectionStatus = 'connecting' | 'connected' | 'reconnecting' | 'closed';

export interface ClientOptions {
  /** Origin-relative endpoint, '/graphql'. */
  endpoint?: string;
  onUnauthenticated?: () => void;
  fetchImpl?: typeof fetch;
}

export class MailhubClient {
  private token: string | null = null;
  private ws: WsClient | null = null;
  private readonly endpoint: string;
  private readonly fetchImpl: typeof fetch;
  private connectedListeners = new Set<(wasRetry: boolean) => void>();
  private statusListeners = new Set<(s: ConnectionStatus) => void>();
  private everConnected = false;
  private wakeRetry: (() => void) | null = null;
  status: ConnectionStatus = 'closed';
  onUnauthenticated: () => void;

  constructor(options: ClientOptions = {}) {
    this.endpoint = options.endpoint ?? '/graphql';
    this.fetchImpl = options.fetchImpl ?? ((input, init) => fetch(input, init));
    this.onUnauthenticated = options.onUnauthenticated ?? (() => {});
  }

  getToken(): string | null {
    return this.token;
  }

  /** Sets (or clears) the token; the socket is rebuilt for the new identity. */
  setToken(token: string | null): void {
    if (token === this.token) return;
    this.token = token;
    void this.ws?.dispose();
    this.ws = null;
    this.everConnected = false;
    this.setStatus('closed');
  }

  /** `keepalive`: the request outlives the page (the last draft save when the tab closes). */
  async request<T>(query: string, variables: Record<string, unknown> = {}, options: { keepalive?: boolean } = {}): Promise<T> {
    const headers: Record<string, string> = { 'Content-Type': 'application/json' };
    if (this.token) headers.Authorization = `Bearer ${this.token}`;
    let response: Response;
    try {
      response = await this.fetchImpl(this.endpoint, {
        method: 'POST',
        headers,
        body: JSON.stringify({ query, variables }),
        keepalive: options.keepalive ?? false,
      });
    } catch {
      throw new GraphQLRequestError('The server cannot be reached. Check your connection.', 'NETWORK');
    }
    let body: GraphQLResponse<T>;
    try {
      body = (await response.json()) as GraphQLResponse<T>;
    } catch {
      throw new GraphQLRequestError(`The server answered ${response.status}.`, 'BAD_RESPONSE');
    }
    const error = responseError(body.errors);
    if (error) {
      if (error instanceof Unauthenticated) this.onUnauthenticated();
      throw error;
    }
    if (!body.data) throw new GraphQLRequestError('The server sent no data.', 'BAD_RESPONSE');
    return body.data;
  }

  /** Subscribes; `onData` gets each payload's data. Returns the unsubscribe function. */
  subscribe<T>(
    query: string,
    variables: Record<string, unknown>,
    onData: (data: T) => void,
    onError: (error: GraphQLRequestError) => void = () => {},
  ): () => void {
    const ws = this.socket();
    return ws.subscribe<T>(
      { query, variables },
      {
        next: (result) => {
          const error = responseError(result.errors as GraphQLErrorShape[] | undefined);
          if (error) {
            if (error instanceof Unauthenticated) this.onUnauthenticated();
            onError(error);
          } else if (result.data) {
            onData(result.data as T);
          }
        },
        error: (err) => onError(asError(err)),
        complete: () => {},
      },
    );
  }

  /** Called each time the socket is (re)connected; `wasRetry` is true after a drop. */
  onConnected(listener: (wasRetry: boolean) => void): () => void {
    this.connectedListeners.add(listener);
    return () => this.connectedListeners.delete(listener);
  }

  onStatus(listener: (s: ConnectionStatus) => void): () => void {
    this.statusListeners.add(listener);
    return () => this.statusListeners.delete(listener);
  }

  /**
   * The browser is back online: retry at once if a reconnect is waiting, else drop the socket
   * (it may be half-dead after a network change) so it reconnects and catches up.
   */
  reconnect(): void {
    if (this.status === 'reconnecting' && this.wakeRetry) {
      this.wakeRetry();
      this.wakeRetry = null;
    } else {
      this.ws?.terminate();
    }
  }

  private setStatus(status: ConnectionStatus): void {
    this.status = status;
    for (const l of this.statusListeners) l(status);
  }

  private socket(): WsClient {
    if (this.ws) return this.ws;
    const url = new URL(this.endpoint, window.location.href);
    url.protocol = url.protocol === 'https:' ? 'wss:' : 'ws:';
    this.setStatus('connecting');
    // Events of a socket that was replaced (new token) or disposed (sign-out) are ignored.
    let socket: WsClient | null = null;
    const current = () => socket !== null && this.ws === socket;
    socket = createClient({
      url: url.toString(),
      // The server reads {"token": ...}; Authorization is sent too for proxies that expect it.
      connectionParams: () => ({ token: this.token, Authorization: `Bearer ${this.token}` }),
      lazy: true,
      keepAlive: 20_000,
      retryAttempts: Number.POSITIVE_INFINITY,
      retryWait: (retries) =>
        new Promise<void>((resolve) => {
          this.wakeRetry = resolve;
          setTimeout(resolve, Math.min(5_000, 500 * 2 ** retries));
        }),
      shouldRetry: (e) => !isForbidden(e),
      on: {
        connected: () => {
          if (!current()) return;
          const wasRetry = this.everConnected;
          this.everConnected = true;
          this.setStatus('connected');
          for (const l of this.connectedListeners) l(wasRetry);
        },
        closed: (event) => {
          if (!current()) return;
          if (isForbidden(event)) {
            this.setStatus('closed');
            this.onUnauthenticated();
          } else {
            this.setStatus('reconnecting');
          }
        },
      },
    });
    this.ws = socket;
    return socket;
  }
}

function isForbidden(e: unknown): boolean {
  return typeof e === 'object' && e !== null && 'code' in e && (e as { code: unknown }).code === 4403;
}

function asError(err: unknown): GraphQLRequestError {
  if (err instanceof GraphQLRequestError) return err;
  if (Array.isArray(err)) return responseError(err as GraphQLErrorShape[]) ?? new GraphQLRequestError('Subscription failed', null);
  if (err instanceof Error) return new GraphQLRequestError(err.message, null);
  return new GraphQLRequestError('The live connection closed.', 'NETWORK');
}

/** The app's client (one per page). */
export const client = new MailhubClient();
