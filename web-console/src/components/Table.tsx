// A list as a table: its accessible name, the column heads, and the rows the page writes.
import type { ReactNode } from 'react';

/** A column head: its text, or its text and a class (`num` right-aligns numbers). */
export type Column = string | { label: string; className: string };

interface TableProps {
  /** The table's accessible name. */
  label: string;
  columns: Column[];
  /** A last column of row buttons, its head read out as "Actions". */
  actions?: boolean;
  /** The `<tr>`s. */
  children: ReactNode;
}

export function Table({ label, columns, actions, children }: TableProps) {
  return (
    <div className="table-wrap">
      <table className="table" aria-label={label}>
        <thead>
          <tr>
            {columns.map((c) =>
              typeof c === 'string' ? (
                <th scope="col" key={c}>
                  {c}
                </th>
              ) : (
                <th scope="col" key={c.label} className={c.className}>
                  {c.label}
                </th>
              ),
            )}
            {actions && (
              <th scope="col">
                <span className="visually-hidden">Actions</span>
              </th>
            )}
          </tr>
        </thead>
        <tbody>{children}</tbody>
      </table>
    </div>
  );
}
