/**
 * A small typed event emitter: `on` returns the function that removes the
 * listener. A listener that throws is logged and does not stop the others.
 *
 * @module
 */

/** A listener of events of type `T`. */
export type Listener<T> = (event: T) => void;

/** Emits the events of `Events`, a map from event name to event type. */
export class Emitter<Events extends { [K in keyof Events]: unknown }> {
  private listeners = new Map<keyof Events, Set<Listener<any>>>();

  constructor(private readonly onListenerError: (name: string, error: unknown) => void) {}

  /** Calls `listener` for every `name` event; returns the unsubscriber. */
  on<K extends keyof Events>(name: K, listener: Listener<Events[K]>): () => void {
    let set = this.listeners.get(name);
    if (!set) {
      set = new Set();
      this.listeners.set(name, set);
    }
    set.add(listener);
    return () => this.off(name, listener);
  }

  /** Calls `listener` for the next `name` event only. */
  once<K extends keyof Events>(name: K, listener: Listener<Events[K]>): () => void {
    const off = this.on(name, (event) => {
      off();
      listener(event);
    });
    return off;
  }

  /** Removes a listener. */
  off<K extends keyof Events>(name: K, listener: Listener<Events[K]>): void {
    this.listeners.get(name)?.delete(listener);
  }

  /** Calls every listener of `name` with `event`. */
  protected emit<K extends keyof Events>(name: K, event: Events[K]): void {
    const set = this.listeners.get(name);
    if (!set) return;
    for (const listener of [...set]) {
      try {
        listener(event);
      } catch (error) {
        this.onListenerError(String(name), error);
      }
    }
  }
}
