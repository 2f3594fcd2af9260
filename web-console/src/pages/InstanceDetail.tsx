// One instance: its state (refreshed every 2 s), facts, operations, lifecycle buttons (each
// confirmed), a snapshot and its DR policy.
import { useState, type ReactNode } from 'react';
import { Link, useLocation, useNavigate, useParams } from 'react-router-dom';
import { api, unwrap, type Instance } from '../api/client';
import { Badge } from '../components/Badge';
import { ConfirmDialog, ErrorBanner } from '../components/Dialog';
import { Checkbox, Field } from '../components/Form';
import { PageHeader } from '../components/PageHeader';
import { Empty, LoadState } from '../components/States';
import { OperationsTable } from './Operations';
import { bytes, time } from '../lib/format';
import { useLoad } from '../lib/useLoad';
import { useAction, useConfirmedAction } from '../lib/useAction';
import { useProjectPage } from '../lib/project';
import { listImages, takeSnapshot } from '../lib/resources';

type Action = 'start' | 'stop' | 'reboot' | 'suspend' | 'delete';

interface ActionButton {
  action: Action;
  label: string;
  /** In which states it is offered. */
  when: (s: Instance['state']) => boolean;
  /** What it does, for its confirmation. */
  explain: string;
}

const ACTIONS: ActionButton[] = [
  {
    action: 'start',
    label: 'Start',
    when: (s) => s === 'stopped' || s === 'suspended' || s === 'failed',
    explain: 'boots it (a suspended instance resumes where it was).',
  },
  { action: 'stop', label: 'Stop', when: (s) => s === 'running', explain: 'shuts its VM down; its disks are kept.' },
  { action: 'reboot', label: 'Reboot', when: (s) => s === 'running', explain: 'restarts its VM.' },
  {
    action: 'suspend',
    label: 'Suspend',
    when: (s) => s === 'running',
    explain: 'saves its memory and disks and frees its vCPUs and memory.',
  },
  {
    action: 'delete',
    label: 'Delete',
    when: (s) => s !== 'deleting' && s !== 'deleted',
    explain: 'destroys its VM and disks. This cannot be undone.',
  },
];

/** The API's path of each action but delete (a DELETE of the instance itself). */
const ACTION_PATHS = {
  start: '/v1/projects/{project}/instances/{instance}/start',
  stop: '/v1/projects/{project}/instances/{instance}/stop',
  reboot: '/v1/projects/{project}/instances/{instance}/reboot',
  suspend: '/v1/projects/{project}/instances/{instance}/suspend',
} as const;

async function runAction(project: string, instance: string, action: Action): Promise<void> {
  const params = { params: { path: { project, instance } } };
  if (action === 'delete') await unwrap(api.DELETE('/v1/projects/{project}/instances/{instance}', params));
  else await unwrap(api.POST(ACTION_PATHS[action], params));
}

export function InstanceDetail() {
  const { project, whoami, writable, base } = useProjectPage();
  const { instance: instanceParam = '' } = useParams();
  const navigate = useNavigate();
  const notice = noticeOf(useLocation().state);
  const instance = useLoad(
    () => unwrap(api.GET('/v1/projects/{project}/instances/{instance}', { params: { path: { project, instance: instanceParam } } })),
    [project, instanceParam],
    2000,
  );
  const images = useLoad(() => listImages(project), [project]);
  const hosts = useLoad(() => (whoami.is_operator ? unwrap(api.GET('/v1/hosts')) : Promise.resolve([])), [whoami.is_operator]);
  const instanceId = instance.data?.id;
  const operations = useLoad(
    async () => {
      if (!instanceId) return [];
      // The API lists the project's operations (newest first) without a filter by target.
      const page = await unwrap(api.GET('/v1/projects/{project}/operations', { params: { path: { project }, query: { limit: 200 } } }));
      return page.items.filter((op) => op.target_id === instanceId);
    },
    [project, instanceId],
    2000,
  );
  const pending = useConfirmedAction(
    ({ action, id }: { action: ActionButton; id: string }) => runAction(project, id, action.action),
    ({ action }) => (action.action === 'delete' ? navigate(`${base}/instances`) : instance.reload()),
  );
  const [snapshotOpen, setSnapshotOpen] = useState(false);

  if (instance.errorStatus === 404) {
    return (
      <>
        <PageHeader title={instanceParam} />
        <Empty>
          No instance {instanceParam} in project {project}: it was deleted, or never was.{' '}
          <Link to={`${base}/instances`}>All instances</Link>
        </Empty>
      </>
    );
  }

  const data = instance.data;
  const action = pending.target?.action;
  return (
    <>
      <nav className="breadcrumbs" aria-label="Breadcrumbs">
        <Link to={`${base}/instances`}>Instances</Link> <span aria-hidden="true">/</span> {data?.name ?? instanceParam}
      </nav>
      <PageHeader
        title={
          <>
            {data?.name ?? instanceParam} {data && <Badge state={data.state} />}
          </>
        }
        sub={data?.state_reason ?? undefined}
      >
        {data && (
          <>
            <Link className="btn" to={`${base}/instances/${encodeURIComponent(data.name)}/console`}>
              Serial console
            </Link>
            {writable && (
              <button
                type="button"
                className="btn"
                onClick={() => setSnapshotOpen(true)}
                disabled={data.state !== 'running' && data.state !== 'stopped'}
              >
                Snapshot
              </button>
            )}
            {writable &&
              ACTIONS.map((a) => (
                <button
                  key={a.action}
                  type="button"
                  className={a.action === 'delete' ? 'btn btn-danger' : 'btn'}
                  disabled={!a.when(data.state)}
                  onClick={() => pending.ask({ action: a, id: data.id })}
                >
                  {a.label}
                </button>
              ))}
          </>
        )}
      </PageHeader>
      {notice && <ErrorBanner message={notice} />}
      <LoadState what="the instance" {...instance}>
        {(i) => (
          <>
            <section className="card" aria-labelledby="facts">
              <h2 id="facts">Details</h2>
              <dl className="facts">
                <Fact label="State">
                  <Badge state={i.state} />
                  {i.state_reason && <span className="muted"> {i.state_reason}</span>}
                </Fact>
                <Fact label="Address">
                  <span className="mono">{i.address ?? '—'}</span>
                </Fact>
                <Fact label="Image">{(i.image_id && images.data?.find((im) => im.id === i.image_id)?.name) ?? i.image_id ?? '—'}</Fact>
                <Fact label="Size">
                  {i.vcpus} vCPU{i.vcpus === 1 ? '' : 's'}, {bytes(i.memory_bytes)} memory, {bytes(i.disk_bytes)} disk
                </Fact>
                {whoami.is_operator && i.host_id && (
                  <Fact label="Host">
                    <span className="mono">{hosts.data?.find((h) => h.id === i.host_id)?.hostname ?? i.host_id}</span>
                  </Fact>
                )}
                <Fact label="Created">{time(i.created_at)}</Fact>
                <Fact label="Ready">{i.ready_at ? time(i.ready_at) : i.state === 'running' ? 'booting…' : '—'}</Fact>
                <Fact label="DR policy">
                  {i.dr_priority === null || i.dr_priority === undefined ? 'none' : `priority ${i.dr_priority}`}
                </Fact>
                {i.anti_affinity_group && <Fact label="Anti-affinity group">{i.anti_affinity_group}</Fact>}
                <Fact label="ID">
                  <span className="mono">{i.id}</span>
                </Fact>
              </dl>
            </section>
            {writable && <DrPolicy project={project} instance={i} onChange={instance.reload} />}
            <section className="card" aria-labelledby="hostkeys">
              <h2 id="hostkeys">SSH host keys</h2>
              {i.ssh_host_keys.length === 0 ? (
                <p className="muted">None published yet: the guest prints them on its serial console when it boots.</p>
              ) : (
                <ul className="plain-list">
                  {i.ssh_host_keys.map((k) => (
                    <li key={k.public_key}>
                      <span className="mono">{k.key_type}</span> <span className="mono muted">{k.fingerprint}</span>
                    </li>
                  ))}
                </ul>
              )}
            </section>
            <section aria-labelledby="ops">
              <h2 id="ops">Operations</h2>
              <LoadState what="operations" {...operations} empty="No operations among the project's latest 200.">
                {(ops) => <OperationsTable operations={ops} project={project} hideTarget />}
              </LoadState>
            </section>
          </>
        )}
      </LoadState>
      {action && data && (
        <ConfirmDialog
          {...pending.dialog}
          title={`${action.label} ${data.name}?`}
          confirmLabel={action.label}
          danger={action.action === 'delete' || action.action === 'stop'}
        >
          <p>
            {action.label} <strong>{data.name}</strong>: {action.explain}
          </p>
        </ConfirmDialog>
      )}
      {data && snapshotOpen && (
        <SnapshotDialog
          project={project}
          instance={data}
          onClose={() => setSnapshotOpen(false)}
          onDone={() => navigate(`${base}/snapshots`)}
        />
      )}
    </>
  );
}

/** A message the page that navigated here left (the create form's, when half of it failed). */
function noticeOf(state: unknown): string | null {
  if (typeof state !== 'object' || state === null || !('notice' in state)) return null;
  const notice = (state as { notice: unknown }).notice;
  return typeof notice === 'string' ? notice : null;
}

function Fact({ label, children }: { label: string; children: ReactNode }) {
  return (
    <div className="fact">
      <dt>{label}</dt>
      <dd>{children}</dd>
    </div>
  );
}

function SnapshotDialog({
  project,
  instance,
  onClose,
  onDone,
}: {
  project: string;
  instance: Instance;
  onClose: () => void;
  onDone: () => void;
}) {
  const [name, setName] = useState('');
  const [memory, setMemory] = useState(false);
  const { busy, error, run } = useAction();
  const submit = () =>
    run(async () => {
      await takeSnapshot(project, instance.id, name, memory);
      onDone();
    });
  return (
    <ConfirmDialog
      title={`Snapshot ${instance.name}`}
      open
      onCancel={onClose}
      onConfirm={submit}
      confirmLabel="Take snapshot"
      busyLabel="Taking…"
      busy={busy}
      error={error}
    >
      <Field label="Name (optional)">
        {(id) => <input id={id} value={name} onChange={(e) => setName(e.target.value)} placeholder={`${instance.name}-<time>`} />}
      </Field>
      <Checkbox checked={memory} onChange={setMemory} disabled={instance.state !== 'running'}>
        Also save memory (the instance must be running; a restore resumes where it was)
      </Checkbox>
    </ConfirmDialog>
  );
}

function DrPolicy({ project, instance, onChange }: { project: string; instance: Instance; onChange: () => void }) {
  const enabled = instance.dr_priority !== null && instance.dr_priority !== undefined;
  const [priority, setPriority] = useState(String(instance.dr_priority ?? 100));
  const { busy, error, run } = useAction();
  const path = { params: { path: { project, instance: instance.id } } };
  const set = () =>
    run(async () => {
      await unwrap(api.PUT('/v1/projects/{project}/instances/{instance}/dr-policy', { ...path, body: { priority: Number(priority) } }));
      onChange();
    });
  const clear = () =>
    run(async () => {
      await unwrap(api.DELETE('/v1/projects/{project}/instances/{instance}/dr-policy', path));
      onChange();
    });
  return (
    <section className="card" aria-labelledby="dr">
      <h2 id="dr">Disaster recovery</h2>
      <p className="muted">
        When its host dies, an instance with a DR policy comes back on a healthy host from its latest snapshot, highest priority first.
      </p>
      <div className="inline-form">
        <Field label="Priority (0–1000)" inline>
          {(id) => <input id={id} type="number" min={0} max={1000} value={priority} onChange={(e) => setPriority(e.target.value)} />}
        </Field>
        <button type="button" className="btn" onClick={() => void set()} disabled={busy}>
          {enabled ? 'Update policy' : 'Enable DR'}
        </button>
        {enabled && (
          <button type="button" className="btn" onClick={() => void clear()} disabled={busy}>
            Disable DR
          </button>
        )}
      </div>
      {error && <ErrorBanner message={error} />}
    </section>
  );
}
