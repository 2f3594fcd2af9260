// The project's operations, newest first (refreshed every 2 s): kind, state, step, error.
import { useMemo } from 'react';
import { Link } from 'react-router-dom';
import { api, listAll, type Operation } from '../api/client';
import { Badge } from '../components/Badge';
import { PageHeader } from '../components/PageHeader';
import { LoadState } from '../components/States';
import { Table } from '../components/Table';
import { shortTime, time, words } from '../lib/format';
import { useLoad } from '../lib/useLoad';
import { useProjectPage } from '../lib/project';
import { listInstances } from '../lib/resources';

export function Operations() {
  const { project } = useProjectPage();
  const operations = useLoad(
    () =>
      listAll(
        (cursor) => api.GET('/v1/projects/{project}/operations', { params: { path: { project }, query: { cursor, limit: 100 } } }),
        1,
      ),
    [project],
    2000,
  );
  const instances = useLoad(() => listInstances(project), [project], 10000);
  const names = useMemo(() => new Map((instances.data ?? []).map((i) => [i.id, i.name])), [instances.data]);
  return (
    <>
      <PageHeader title="Operations" sub="Durable changes to the project's resources, newest first (the latest 100)" />
      <LoadState what="operations" {...operations} empty="No operations yet.">
        {(ops) => <OperationsTable operations={ops} project={project} instanceNames={names} />}
      </LoadState>
    </>
  );
}

interface OperationsTableProps {
  operations: Operation[];
  project: string;
  instanceNames?: Map<string, string>;
  hideTarget?: boolean;
}

const COLUMNS = ['Kind', 'State', 'Target', 'Step', 'Started', 'Finished', 'Error'];

export function OperationsTable({ operations, project, instanceNames, hideTarget }: OperationsTableProps) {
  return (
    <Table label="Operations" columns={hideTarget ? COLUMNS.filter((c) => c !== 'Target') : COLUMNS}>
      {operations.map((op) => (
        <tr key={op.id}>
          <td>
            <span title={op.id}>{words(op.kind)}</span>
            {op.attempts > 1 && <span className="muted"> ({op.attempts} attempts)</span>}
          </td>
          <td>
            <Badge state={op.state} kind="operation" />
          </td>
          {!hideTarget && (
            <td>
              <Target op={op} project={project} instanceNames={instanceNames} />
            </td>
          )}
          <td>{op.current_step ? words(op.current_step) : '—'}</td>
          <td className="nowrap" title={time(op.created_at)}>
            {shortTime(op.created_at)}
          </td>
          <td className="nowrap" title={time(op.finished_at)}>
            {shortTime(op.finished_at)}
          </td>
          <td className="error-cell">{op.error_message ? `${op.error_message}${op.error_code ? ` (${op.error_code})` : ''}` : ''}</td>
        </tr>
      ))}
    </Table>
  );
}

function Target({ op, project, instanceNames }: { op: Operation; project: string; instanceNames?: Map<string, string> }) {
  if (!op.target_id) return <>{op.target_kind}</>;
  if (op.target_kind === 'instance') {
    const name = instanceNames?.get(op.target_id);
    // A deleted instance is no longer listed: its id is all there is.
    if (!name)
      return (
        <span className="mono muted" title={op.target_id}>
          instance {op.target_id.slice(0, 8)}
        </span>
      );
    return <Link to={`/projects/${encodeURIComponent(project)}/instances/${encodeURIComponent(name)}`}>{name}</Link>;
  }
  return (
    <span className="mono" title={op.target_id}>
      {op.target_kind} {op.target_id.slice(0, 8)}
    </span>
  );
}
