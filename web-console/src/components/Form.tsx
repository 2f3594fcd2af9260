// The pieces every form of the console is made of: a form card (heading, fields, error, buttons),
// a labelled field, a checkbox with its label, and a submit button that says when it is busy.
import { useId, type ReactNode } from 'react';
import { ErrorBanner } from './Dialog';

interface FormCardProps {
  /** The form's accessible name. */
  label?: string;
  /** Its heading. */
  title?: string;
  /** Another class next to `form card` (`narrow`). */
  className?: string;
  onSubmit: () => void | Promise<void>;
  error: string | null;
  /** The row of buttons under the error. */
  actions?: ReactNode;
  children: ReactNode;
}

export function FormCard({ label, title, className, onSubmit, error, actions, children }: FormCardProps) {
  return (
    <form
      className={className ? `form card ${className}` : 'form card'}
      onSubmit={(e) => {
        e.preventDefault();
        void onSubmit();
      }}
      aria-label={label}
    >
      {title && <h2>{title}</h2>}
      {children}
      {error && <ErrorBanner message={error} />}
      {actions && <div className="form-actions">{actions}</div>}
    </form>
  );
}

interface FieldProps {
  label: ReactNode;
  /** Under the control. */
  hint?: ReactNode;
  /** Label beside the control, in a row of fields. */
  inline?: boolean;
  /** Another class (`grow`). */
  className?: string;
  /** The control, given the id its label points at. */
  children: (id: string) => ReactNode;
}

export function Field({ label, hint, inline, className, children }: FieldProps) {
  const id = useId();
  const classes = ['field', inline && 'field-inline', className].filter(Boolean).join(' ');
  return (
    <div className={classes}>
      <label htmlFor={id}>{label}</label>
      {children(id)}
      {hint && <p className="hint">{hint}</p>}
    </div>
  );
}

interface CheckboxProps {
  checked: boolean;
  onChange: (checked: boolean) => void;
  disabled?: boolean;
  children: ReactNode;
}

/** A checkbox and its label (the label is its accessible name). */
export function Checkbox({ checked, onChange, disabled, children }: CheckboxProps) {
  const id = useId();
  return (
    <div className="check">
      <input id={id} type="checkbox" checked={checked} onChange={(e) => onChange(e.target.checked)} disabled={disabled} />
      <label htmlFor={id}>{children}</label>
    </div>
  );
}

interface SubmitButtonProps {
  busy: boolean;
  /** While busy: "Adding…". */
  busyLabel: string;
  disabled?: boolean;
  children: string;
}

export function SubmitButton({ busy, busyLabel, disabled, children }: SubmitButtonProps) {
  return (
    <button type="submit" className="btn btn-primary" disabled={busy || disabled}>
      {busy ? busyLabel : children}
    </button>
  );
}
