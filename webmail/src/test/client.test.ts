import { describe, expect, it, vi } from 'vitest';
import { GraphQLRequestError, MailhubClient, responseError, Unauthenticated } from '../api/client';

function answering(body: unknown, status = 200) {
  return vi.fn(async () => new Response(JSON.stringify(body), { status, headers: { 'Content-Type': 'application/json' } }));
}

describe('GraphQL client', () => {
  it('posts the query with the bearer token and returns data', async () => {
    const fetchImpl = answering({ data: { me: { email: 'a@x.test' } } });
    const c = new MailhubClient({ fetchImpl });
    c.setToken('mh_123');
    expect(await c.request<{ me: { email: string } }>('{ me { email } }', { a: 1 })).toEqual({ me: { email: 'a@x.test' } });
    const [url, init] = fetchImpl.mock.calls[0] as unknown as [string, RequestInit];
    expect(url).toBe('/graphql');
    expect(init.method).toBe('POST');
    expect((init.headers as Record<string, string>).Authorization).toBe('Bearer mh_123');
    expect(JSON.parse(init.body as string)).toEqual({ query: '{ me { email } }', variables: { a: 1 } });
  });

  it('UNAUTHENTICATED signs out (once per answer) and throws', async () => {
    const onUnauthenticated = vi.fn();
    const c = new MailhubClient({
      fetchImpl: answering({ data: null, errors: [{ message: 'token expired', extensions: { code: 'UNAUTHENTICATED' } }] }),
      onUnauthenticated,
    });
    await expect(c.request('{ me { id } }')).rejects.toBeInstanceOf(Unauthenticated);
    expect(onUnauthenticated).toHaveBeenCalledTimes(1);
  });

  it('other errors keep their code and extensions', async () => {
    const c = new MailhubClient({
      fetchImpl: answering({ data: null, errors: [{ message: 'bad query', extensions: { code: 'VALIDATION_ERROR', fields: [{ field: 'query' }] } }] }),
    });
    const error = await c.request('{ x }').catch((e: unknown) => e);
    expect(error).toBeInstanceOf(GraphQLRequestError);
    expect((error as GraphQLRequestError).code).toBe('VALIDATION_ERROR');
    expect((error as GraphQLRequestError).extensions.fields).toEqual([{ field: 'query' }]);
  });

  it('a network failure or a non-JSON answer is a readable error', async () => {
    const down = new MailhubClient({ fetchImpl: vi.fn(async () => Promise.reject(new TypeError('fetch failed'))) });
    await expect(down.request('{ x }')).rejects.toMatchObject({ code: 'NETWORK' });
    const html = new MailhubClient({ fetchImpl: vi.fn(async () => new Response('<html>502</html>', { status: 502 })) });
    await expect(html.request('{ x }')).rejects.toMatchObject({ code: 'BAD_RESPONSE', message: 'The server answered 502.' });
  });

  it('responseError: none for no errors', () => {
    expect(responseError(undefined)).toBeNull();
    expect(responseError([])).toBeNull();
  });
});
