/**
 * Reconnection delays: exponential backoff with jitter.
 *
 * @module
 */

/** How reconnection waits. */
export interface BackoffOptions {
  /** The first delay's upper bound, ms (default 500). */
  initialMs?: number;
  /** The largest delay, ms (default 30 000). */
  maxMs?: number;
  /** Growth per failed attempt (default 2). */
  factor?: number;
}

/**
 * The delay before reconnection attempt `attempt` (0 for the first): the
 * exponential bound `min(maxMs, initialMs * factor^attempt)` times a
 * random factor in [0.5, 1) ("equal jitter"), so clients that lost the
 * same server spread their returns while none retries at once.
 */
export function backoffDelay(
  attempt: number,
  options: BackoffOptions = {},
  random: () => number = Math.random,
): number {
  const initial = options.initialMs ?? 500;
  const max = options.maxMs ?? 30_000;
  const factor = options.factor ?? 2;
  const bound = Math.min(max, initial * factor ** Math.min(attempt, 64));
  return Math.round(bound / 2 + (random() * bound) / 2);
}
