// The project's instances, refreshed every 2 s, filtered by name and state.
import { useId, useMemo, useState } from 'react';
import { Link } from 'react-router-dom';
import { Badge } from '../components/Badge';
import { PageHeader } from '../components/PageHeader';
import { Empty, LoadState } from '../components/States';
import { bytes, time } from '../lib/format';
import { useLoad } from '../lib/useLoad';
import { canChange, useProject } from '../lib/project';
import { useWhoami } from '../auth';
import { INSTANCE_STATES, listImages, listInstances } from '../lib/resources';

export function Instances() {
  const project = useProject();
  const writable = canChange(useWhoami(), project);
  const instances = useLoad(() => listInstances(project), [project], 2000);
  const images = useLoad(() => listImages(project), [project]);
  const [name, setName] = useState('');
  const [state, setState] = useState('');
  const nameId = useId();
  const stateId = useId();
  const imageNames = useMemo(() => new Map((images.data ?? []).map((i) => [i.id, i.name])), [images.data]);
  const base = `/projects/${encodeURIComponent(project)}`;

  return (
    <>
      <PageHeader title="Instances" sub={`Virtual machines of project ${project}`}>
        {writable && (
          <Link className="btn btn-primary" to={`${base}/instances/new`}>
            Create instance
          </Link>
        )}
      </PageHeader>
      <div className="filters" role="search">
        <div className="field field-inline">
          <label htmlFor={nameId}>Name</label>
          <input id={nameId} type="search" value={name} onChange={(e) => setName(e.target.value)} placeholder="Filter by name" />
        </div>
        <div className="field field-inline">
          <label htmlFor={stateId}>State</label>
          <select id={stateId} value={state} onChange={(e) => setState(e.target.value)}>
            <option value="">Any</option>
            {INSTANCE_STATES.map((s) => (
              <option key={s} value={s}>
                {s}
              </option>
            ))}
          </select>
        </div>
      </div>
      <LoadState what="instances" {...instances} retry={instances.reload}>
        {(all) => {
          const shown = all.filter((i) => i.name.includes(name.trim().toLowerCase()) && (state === '' || i.state === state));
          if (all.length === 0) {
            return (
              <Empty>
                No instances yet.
                {writable && (
                  <>
                    {' '}
                    <Link to={`${base}/instances/new`}>Create the first one</Link>.
                  </>
                )}
              </Empty>
            );
          }
          if (shown.length === 0) return <Empty>No instance matches these filters.</Empty>;
          return (
            <div className="table-wrap">
              <table className="table" aria-label="Instances">
                <thead>
                  <tr>
                    <th scope="col">Name</th>
                    <th scope="col">State</th>
                    <th scope="col">Address</th>
                    <th scope="col">Image</th>
                    <th scope="col" className="num">
                      vCPUs
                    </th>
                    <th scope="col" className="num">
                      Memory
                    </th>
                    <th scope="col">Created</th>
                  </tr>
                </thead>
                <tbody>
                  {shown.map((i) => (
                    <tr key={i.id} data-instance={i.name}>
                      <td>
                        <Link to={`${base}/instances/${encodeURIComponent(i.name)}`}>{i.name}</Link>
                      </td>
                      <td>
                        <Badge state={i.state} />
                      </td>
                      <td className="mono">{i.address ?? '—'}</td>
                      <td>{(i.image_id && imageNames.get(i.image_id)) ?? '—'}</td>
                      <td className="num">{i.vcpus}</td>
                      <td className="num">{bytes(i.memory_bytes)}</td>
                      <td>{time(i.created_at)}</td>
                    </tr>
                  ))}
                </tbody>
              </table>
            </div>
          );
        }}
      </LoadState>
    </>
  );
}
