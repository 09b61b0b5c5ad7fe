import { useCallback, useEffect, useState, useSyncExternalStore } from 'react';
import { DEFAULT_ROUTE, parseRoute, type Route } from '../lib/route';
import type { Store } from '../state/store';

export function useStore<T>(store: Store<T>): T {
  return useSyncExternalStore(store.subscribe, store.get, store.get);
}

export function useRoute(): [Route, (hash: string) => void] {
  const [route, setRoute] = useState<Route>(() => parseRoute(window.location.hash) ?? DEFAULT_ROUTE);
  useEffect(() => {
    const onHash = () => setRoute(parseRoute(window.location.hash));
    window.addEventListener('hashchange', onHash);
    return () => window.removeEventListener('hashchange', onHash);
  }, []);
  const navigate = useCallback((hash: string) => {
    if (window.location.hash !== hash) window.location.hash = hash;
    else setRoute(parseRoute(hash));
  }, []);
  return [route, navigate];
}
