// Loads data for a page, optionally polling: {data, error, loading, reload}. A poll that fails
// keeps the last data and shows the error; the next success clears it.
import { useCallback, useEffect, useRef, useState } from 'react';
import { ApiFailure, messageOf } from '../api/client';

export interface Loaded<T> {
  data: T | undefined;
  error: string | null;
  /** The HTTP status of the last failure (0: unreachable), null when the last load worked. */
  errorStatus: number | null;
  loading: boolean;
  reload: () => void;
}

export function useLoad<T>(load: () => Promise<T>, deps: unknown[], pollMs?: number): Loaded<T> {
  const [data, setData] = useState<T | undefined>(undefined);
  const [error, setError] = useState<string | null>(null);
  const [errorStatus, setErrorStatus] = useState<number | null>(null);
  const [loading, setLoading] = useState(true);
  const [tick, setTick] = useState(0);
  const loadRef = useRef(load);
  loadRef.current = load;

  // A change of inputs starts from nothing: no stale rows of another project.
  useEffect(() => {
    setData(undefined);
    setError(null);
    setErrorStatus(null);
    setLoading(true);
  }, deps);

  useEffect(() => {
    let cancelled = false;
    let timer: number | undefined;
    let first = true;
    const run = async () => {
      // A hidden tab polls nothing (it catches up when shown again).
      if (!first && document.hidden) {
        timer = window.setTimeout(run, pollMs);
        return;
      }
      first = false;
      try {
        const value = await loadRef.current();
        if (cancelled) return;
        setData(value);
        setError(null);
        setErrorStatus(null);
      } catch (err) {
        if (cancelled) return;
        setError(messageOf(err));
        setErrorStatus(err instanceof ApiFailure ? err.status : null);
      } finally {
        if (!cancelled) {
          setLoading(false);
          if (pollMs !== undefined) timer = window.setTimeout(run, pollMs);
        }
      }
    };
    void run();
    return () => {
      cancelled = true;
      if (timer !== undefined) window.clearTimeout(timer);
    };
  }, [...deps, tick, pollMs]);

  const reload = useCallback(() => setTick((t) => t + 1), []);
  return { data, error, errorStatus, loading, reload };
}
