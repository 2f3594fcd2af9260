import { useState } from 'react';

/** Copies `text` to the clipboard; says so for two seconds. */
export function CopyButton({ text, label = 'Copy' }: { text: string; label?: string }) {
  const [copied, setCopied] = useState<'yes' | 'no' | null>(null);
  const copy = async () => {
    try {
      await navigator.clipboard.writeText(text);
      setCopied('yes');
    } catch {
      setCopied('no');
    }
    window.setTimeout(() => setCopied(null), 2000);
  };
  return (
    <button type="button" className="btn btn-small" onClick={() => void copy()}>
      <span aria-live="polite">{copied === 'yes' ? 'Copied' : copied === 'no' ? 'Select and copy' : label}</span>
    </button>
  );
}
