import { useEffect, useId, useRef, useState, type ReactNode } from 'react';

interface DialogProps {
  title: string;
  children?: ReactNode;
  confirmLabel: string;
  cancelLabel?: string;
  danger?: boolean;
  busy?: boolean;
  onConfirm: () => void;
  onCancel: () => void;
}

function useDialogFocus(onCancel: () => void) {
  const ref = useRef<HTMLDivElement>(null);
  const cancelRef = useRef(onCancel);
  useEffect(() => {
    cancelRef.current = onCancel;
  });
  useEffect(() => {
    const before = document.activeElement instanceof HTMLElement ? document.activeElement : null;
    const root = ref.current;
    const first = root?.querySelector<HTMLElement>('[data-autofocus]') ?? root?.querySelector<HTMLElement>('button');
    first?.focus();
    const onKey = (e: KeyboardEvent) => {
      if (e.key === 'Escape') {
        e.preventDefault();
        cancelRef.current();
      } else if (e.key === 'Tab' && root) {
        // Keep focus inside the dialog.
        const items = Array.from(
          root.querySelectorAll<HTMLElement>('button:not([disabled]), textarea, input, select, [tabindex="0"]'),
        );
        const firstItem = items[0];
        const lastItem = items[items.length - 1];
        if (!firstItem || !lastItem) return;
        if (e.shiftKey && document.activeElement === firstItem) {
          e.preventDefault();
          lastItem.focus();
        } else if (!e.shiftKey && document.activeElement === lastItem) {
          e.preventDefault();
          firstItem.focus();
        }
      }
    };
    document.addEventListener('keydown', onKey);
    return () => {
      document.removeEventListener('keydown', onKey);
      before?.focus();
    };
  }, []);
  return ref;
}

/** A modal confirmation: nothing happens until the operator presses the confirm button. */
export function ConfirmDialog({
  title,
  children,
  confirmLabel,
  cancelLabel = 'Cancel',
  danger,
  busy,
  onConfirm,
  onCancel,
}: DialogProps) {
  const titleId = useId();
  const bodyId = useId();
  const ref = useDialogFocus(onCancel);
  return (
    <div className="overlay">
      <div ref={ref} role="dialog" aria-modal="true" aria-labelledby={titleId} aria-describedby={bodyId} className="dialog">
        <h2 id={titleId}>{title}</h2>
        <div id={bodyId} className="dialog-body">
          {children}
        </div>
        <div className="dialog-actions">
          <button type="button" onClick={onCancel} data-autofocus>
            {cancelLabel}
          </button>
          <button type="button" className={danger ? 'danger' : 'primary'} onClick={onConfirm} disabled={busy}>
            {confirmLabel}
          </button>
        </div>
      </div>
    </div>
  );
}

/** A modal asking for a line of text (a reason) before the verb runs. */
export function PromptDialog({
  title,
  children,
  label,
  confirmLabel,
  cancelLabel = 'Cancel',
  danger,
  busy,
  onConfirm,
  onCancel,
}: Omit<DialogProps, 'onConfirm'> & { label: string; onConfirm: (text: string) => void }) {
  const titleId = useId();
  const inputId = useId();
  const [text, setText] = useState('');
  const ref = useDialogFocus(onCancel);
  return (
    <div className="overlay">
      <div ref={ref} role="dialog" aria-modal="true" aria-labelledby={titleId} className="dialog">
        <form
          onSubmit={(e) => {
            e.preventDefault();
            onConfirm(text.trim());
          }}
        >
          <h2 id={titleId}>{title}</h2>
          <div className="dialog-body">{children}</div>
          <label htmlFor={inputId}>{label}</label>
          <textarea id={inputId} rows={3} value={text} onChange={(e) => setText(e.target.value)} data-autofocus />
          <div className="dialog-actions">
            <button type="button" onClick={onCancel}>
              {cancelLabel}
            </button>
            <button type="submit" className={danger ? 'danger' : 'primary'} disabled={busy}>
              {confirmLabel}
            </button>
          </div>
        </form>
      </div>
    </div>
  );
}
