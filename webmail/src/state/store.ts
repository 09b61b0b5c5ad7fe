// A minimal observable value: the state modules are plain TypeScript, React reads them through
// useStore (useSyncExternalStore), and unit tests drive them without React.

export class Store<T> {
  private listeners = new Set<() => void>();
  constructor(private value: T) {}

  get = (): T => this.value;

  set = (value: T): void => {
    if (Object.is(value, this.value)) return;
    this.value = value;
    for (const l of [...this.listeners]) l();
  };

  update = (fn: (value: T) => T): void => this.set(fn(this.value));

  subscribe = (listener: () => void): (() => void) => {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  };
}
