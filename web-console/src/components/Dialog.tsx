// A modal dialog on the native <dialog>: showModal() makes the rest of the page inert (focus
// stays inside), Escape closes it, focus returns to what opened it.
import { useEffect, useId, useRef, type ReactNode } from 'react';

interface DialogProps {
  title: string;
  open: boolean;
  onClose: () => void;
  children: ReactNode;
  /** Buttons; the first focusable field or button gets focus. */
  actions?: ReactNode;
  wide?: boolean;
}

export function Dialog({ title, open, onClose, children, actions, wide }: DialogProps) {
  const ref = useRef<HTMLDialogElement>(null);
  const titleId = useId();
  useEffect(() => {
    const dialog = ref.current;
    if (!dialog || !open) return undefined;
    const opener = document.activeElement instanceof HTMLElement ? document.activeElement : null;
    if (!dialog.open) dialog.showModal();
    dialog.querySelector<HTMLElement>('input, textarea, select, [data-autofocus]')?.focus();
    return () => {
      if (dialog.open) dialog.close();
      opener?.focus();
    };
  }, [open]);
  if (!open) return null;
  return (
    <dialog
      ref={ref}
      className={wide ? 'dialog dialog-wide' : 'dialog'}
      aria-labelledby={titleId}
      onCancel={(e) => {
        e.preventDefault();
        onClose();
      }}
    >
      <h2 id={titleId}>{title}</h2>
      <div className="dialog-body">{children}</div>
      {actions && <div className="dialog-actions">{actions}</div>}
    </dialog>
  );
}

interface ConfirmProps {
  title: string;
  open: boolean;
  onCancel: () => void;
  onConfirm: () => void | Promise<void>;
  confirmLabel: string;
  /** The confirm button's words while busy (default "Working…"). */
  busyLabel?: string;
  danger?: boolean;
  busy?: boolean;
  /** The confirm button only (a field of the dialog is not filled in yet). */
  disabled?: boolean;
  error?: string | null;
  children: ReactNode;
}

/** "Are you sure?" with the action named on its button; or a few fields and the one button that uses them. */
export function ConfirmDialog(props: ConfirmProps) {
  const { title, open, onCancel, onConfirm, confirmLabel, busyLabel = 'Working…', danger, busy, disabled, error, children } = props;
  return (
    <Dialog
      title={title}
      open={open}
      onClose={onCancel}
      actions={
        <>
          {/* Cancel has the focus (when no field comes first): Enter on a destructive dialog changes nothing. */}
          <button type="button" className="btn" onClick={onCancel} disabled={busy} data-autofocus>
            Cancel
          </button>
          <button
            type="button"
            className={danger ? 'btn btn-danger' : 'btn btn-primary'}
            onClick={() => void onConfirm()}
            disabled={busy || disabled}
          >
            {busy ? busyLabel : confirmLabel}
          </button>
        </>
      }
    >
      {children}
      {error && <ErrorBanner message={error} />}
    </Dialog>
  );
}

export function ErrorBanner({ message }: { message: string }) {
  return (
    <div className="banner banner-error" role="alert">
      {message}
    </div>
  );
}
