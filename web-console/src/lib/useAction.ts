// What a button or a form that calls the API shares: busy while the call runs (its button is
// disabled and says so), the failure's message after; and the "are you sure?" flow on top of it,
// where the thing to act on waits in a confirmation dialog.
import { useCallback, useState } from 'react';
import { messageOf } from '../api/client';

export interface Action {
  busy: boolean;
  error: string | null;
  setError: (error: string | null) => void;
  /** Runs `work`: busy meanwhile, its failure's message in `error` (cleared at the start). */
  run: (work: () => Promise<void>) => Promise<void>;
}

export function useAction(): Action {
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<string | null>(null);
  const run = useCallback(async (work: () => Promise<void>) => {
    setBusy(true);
    setError(null);
    try {
      await work();
    } catch (err) {
      setError(messageOf(err));
    } finally {
      setBusy(false);
    }
  }, []);
  return { busy, error, setError, run };
}

export interface ConfirmedAction<T> {
  /** What waits for confirmation; null: the dialog is closed. */
  target: T | null;
  /** Opens the dialog for `target`. */
  ask: (target: T) => void;
  /** The props of its ConfirmDialog but the words. */
  dialog: {
    open: boolean;
    busy: boolean;
    error: string | null;
    onCancel: () => void;
    onConfirm: () => Promise<void>;
  };
}

/**
 * `act` on a target once the user confirms: the dialog stays open (with the error) when it
 * fails, closes when it worked, then `after` runs (still busy; its failure is shown too).
 */
export function useConfirmedAction<T>(act: (target: T) => Promise<unknown>, after?: (target: T) => unknown): ConfirmedAction<T> {
  const [target, setTarget] = useState<T | null>(null);
  const { busy, error, setError, run } = useAction();
  const ask = (t: T) => {
    setError(null);
    setTarget(t);
  };
  const onCancel = () => {
    setTarget(null);
    setError(null);
  };
  const onConfirm = async () => {
    if (target === null) return;
    await run(async () => {
      await act(target);
      setTarget(null);
      await after?.(target);
    });
  };
  return { target, ask, dialog: { open: target !== null, busy, error, onCancel, onConfirm } };
}
