// The loading, error and empty states every page shows the same way.
import type { ReactNode } from 'react';
import { ErrorBanner } from './Dialog';

export function Loading({ what }: { what: string }) {
  return (
    <div className="state-box" role="status" aria-live="polite">
      <span className="spinner" aria-hidden="true" /> Loading {what}…
    </div>
  );
}

export function Empty({ children }: { children: ReactNode }) {
  return <div className="state-box state-empty">{children}</div>;
}

interface LoadStateProps<T> {
  what: string;
  data: T | undefined;
  error: string | null;
  loading: boolean;
  reload: () => void;
  /** For a list: what to say when it is empty (the children then see at least one item). */
  empty?: ReactNode;
  children: (data: T) => ReactNode;
}

/**
 * Loading until the first data; an error with a retry when there is none; the data after (or
 * `empty` for an empty list). Takes what useLoad returns: `<LoadState what="…" {...loaded}>`.
 */
export function LoadState<T>({ what, data, error, loading, reload, empty, children }: LoadStateProps<T>) {
  if (data === undefined) {
    if (error !== null) {
      return (
        <div className="state-box">
          <ErrorBanner message={`Cannot load ${what}: ${error}`} />
          <button type="button" className="btn" onClick={reload}>
            Try again
          </button>
        </div>
      );
    }
    if (loading) return <Loading what={what} />;
    return null;
  }
  return (
    <>
      {error !== null && <ErrorBanner message={`Cannot refresh ${what}: ${error}`} />}
      {empty !== undefined && Array.isArray(data) && data.length === 0 ? <Empty>{empty}</Empty> : children(data)}
    </>
  );
}
