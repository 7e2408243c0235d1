import { prettyJson } from '../format';

/** A JSON value pretty-printed in a labelled, scrollable block. */
export function JsonBlock({ value, label }: { value: unknown; label: string }) {
  return (
    <pre className="json" aria-label={label} tabIndex={0}>
      <code>{prettyJson(value)}</code>
    </pre>
  );
}
