// GraphiQL as Strawberry renders it (explorer plugin, headers pane, query in the URL), but
// bundled: nothing is fetched from another host. Subscriptions go over graphql-ws with the
// bearer token from the headers pane sent as {"token": ...} in connection_init (CONTRACT.md).
import { explorerPlugin } from "@graphiql/plugin-explorer";
import { createGraphiQLFetcher, type Fetcher, type FetcherOpts } from "@graphiql/toolkit";
import { GraphiQL } from "graphiql";
import { createClient } from "graphql-ws";
import { createElement, useState } from "react";
import { createRoot } from "react-dom/client";

import "graphiql/graphiql.css";
import "@graphiql/plugin-explorer/dist/style.css";
import "./page.css";

const EXAMPLE_QUERY = `# mailhub GraphiQL
#
# 1. Log in (mutation below), copy the token.
# 2. Headers pane:  { "Authorization": "Bearer <token>" }
# 3. Ask:           { me { email } }
#
# Subscriptions use the same token, e.g.
#   subscription { unreadCounts { folder unread } }
#
# Run: Ctrl-Enter.  Complete: Ctrl-Space.

mutation {
  login(email: "alice@demo.mailhub.test", password: "alice-demo-pass") {
    __typename
    ... on LoginSuccess { token }
    ... on AuthError { message }
  }
}
`;

const endpoint = new URL("/graphql", window.location.href);
const httpUrl = endpoint.toString();
const wsUrl = httpUrl.replace(/^http/, "ws");

/** The bearer token of the headers pane, whatever the header's case. */
export function bearerTokenOf(headers: Record<string, unknown> | undefined): string | null {
  for (const [name, value] of Object.entries(headers ?? {})) {
    if (name.toLowerCase() === "authorization" && typeof value === "string") {
      const [scheme, token] = value.trim().split(/\s+/, 2);
      if (scheme?.toLowerCase() === "bearer" && token) return token;
    }
  }
  return null;
}

// One fetcher (and one lazy websocket) per token: changing the token in the headers pane
// opens a socket authenticated as the new user.
const fetchers = new Map<string, Fetcher>();

function fetcherFor(token: string | null): Fetcher {
  const key = token ?? "";
  let fetcher = fetchers.get(key);
  if (!fetcher) {
    const wsClient = createClient({
      url: wsUrl,
      lazy: true,
      connectionParams: token ? { token } : {},
    });
    fetcher = createGraphiQLFetcher({ url: httpUrl, wsClient });
    fetchers.set(key, fetcher);
  }
  return fetcher;
}

const fetcher: Fetcher = (params, opts?: FetcherOpts) =>
  fetcherFor(bearerTokenOf(opts?.headers))(params, opts);

// The editors are kept in the URL (shareable), as ?q= and ?variables=: never ?query=, which
// makes GET /graphql execute the query instead of serving this page.
const parameters = new URLSearchParams(window.location.search);

function remember(name: string, value: string | undefined): void {
  if (value) parameters.set(name, value);
  else parameters.delete(name);
  const search = parameters.toString();
  history.replaceState(null, "", search ? `?${search}` : window.location.pathname);
}

const explorer = explorerPlugin();

function MailhubGraphiQL() {
  const [query, setQuery] = useState(parameters.get("q") ?? EXAMPLE_QUERY);
  const [variables, setVariables] = useState(parameters.get("variables") ?? undefined);
  return createElement(GraphiQL, {
    fetcher,
    plugins: [explorer],
    query,
    variables,
    onEditQuery: (value: string) => {
      setQuery(value);
      remember("q", value);
    },
    onEditVariables: (value: string) => {
      setVariables(value);
      remember("variables", value);
    },
    defaultEditorToolsVisibility: "headers",
    isHeadersEditorEnabled: true,
    // the token stays in this browser's localStorage, never in the URL
    shouldPersistHeaders: true,
    inputValueDeprecation: true,
  });
}

const container = document.getElementById("graphiql");
if (container) createRoot(container).render(createElement(MailhubGraphiQL));
