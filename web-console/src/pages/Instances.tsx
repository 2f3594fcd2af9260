// The project's instances, refreshed every 2 s, filtered by name and state.
import { useMemo, useState } from 'react';
import { Link } from 'react-router-dom';
import { Badge } from '../components/Badge';
import { Field } from '../components/Form';
import { PageHeader } from '../components/PageHeader';
import { Empty, LoadState } from '../components/States';
import { Table } from '../components/Table';
import { bytes, time } from '../lib/format';
import { useLoad } from '../lib/useLoad';
import { useProjectPage } from '../lib/project';
import { INSTANCE_STATES, listImages, listInstances } from '../lib/resources';

export function Instances() {
  const { project, writable, base } = useProjectPage();
  const instances = useLoad(() => listInstances(project), [project], 2000);
  const images = useLoad(() => listImages(project), [project]);
  const [name, setName] = useState('');
  const [state, setState] = useState('');
  const imageNames = useMemo(() => new Map((images.data ?? []).map((i) => [i.id, i.name])), [images.data]);

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
        <Field label="Name" inline>
          {(id) => <input id={id} type="search" value={name} onChange={(e) => setName(e.target.value)} placeholder="Filter by name" />}
        </Field>
        <Field label="State" inline>
          {(id) => (
            <select id={id} value={state} onChange={(e) => setState(e.target.value)}>
              <option value="">Any</option>
              {INSTANCE_STATES.map((s) => (
                <option key={s} value={s}>
                  {s}
                </option>
              ))}
            </select>
          )}
        </Field>
      </div>
      <LoadState
        what="instances"
        {...instances}
        empty={
          <>
            No instances yet.
            {writable && (
              <>
                {' '}
                <Link to={`${base}/instances/new`}>Create the first one</Link>.
              </>
            )}
          </>
        }
      >
        {(all) => {
          const shown = all.filter((i) => i.name.includes(name.trim().toLowerCase()) && (state === '' || i.state === state));
          if (shown.length === 0) return <Empty>No instance matches these filters.</Empty>;
          return (
            <Table
              label="Instances"
              columns={[
                'Name',
                'State',
                'Address',
                'Image',
                { label: 'vCPUs', className: 'num' },
                { label: 'Memory', className: 'num' },
                'Created',
              ]}
            >
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
            </Table>
          );
        }}
      </LoadState>
    </>
  );
}
