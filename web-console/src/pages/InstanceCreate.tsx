// The create form, with the equivalent cloudctl command kept up to date under it.
import { useId, useState, type FormEvent } from 'react';
import { Link, useNavigate } from 'react-router-dom';
import { api, messageOf, newIdempotencyKey, unwrap } from '../api/client';
import { CopyButton } from '../components/CopyButton';
import { ErrorBanner } from '../components/Dialog';
import { PageHeader } from '../components/PageHeader';
import { Loading } from '../components/States';
import { instanceCreateCommand } from '../lib/cloudctl';
import { bytes } from '../lib/format';
import { useLoad } from '../lib/useLoad';
import { useProject } from '../lib/project';
import { listImages, listSshKeys } from '../lib/resources';

const NAME_PATTERN = String.raw`[a-z0-9]([a-z0-9\-]{0,61}[a-z0-9])?`;

export function InstanceCreate() {
  const project = useProject();
  const navigate = useNavigate();
  const base = `/projects/${encodeURIComponent(project)}`;
  const images = useLoad(() => listImages(project), [project]);
  const keys = useLoad(() => listSshKeys(project), [project]);

  const [name, setName] = useState('');
  const [image, setImage] = useState('');
  const [vcpus, setVcpus] = useState(1);
  const [memoryMib, setMemoryMib] = useState(512);
  const [diskGib, setDiskGib] = useState(0);
  const [sshKeys, setSshKeys] = useState<string[]>([]);
  const [userData, setUserData] = useState('');
  const [group, setGroup] = useState('');
  const [drEnabled, setDrEnabled] = useState(false);
  const [drPriority, setDrPriority] = useState(100);
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<string | null>(null);
  const ids = {
    name: useId(),
    image: useId(),
    vcpus: useId(),
    memory: useId(),
    disk: useId(),
    userData: useId(),
    group: useId(),
    dr: useId(),
    priority: useId(),
  };

  const available = (images.data ?? []).filter((i) => i.state === 'available');
  const chosenImage = image || available[0]?.name || '';

  const submit = async (e: FormEvent) => {
    e.preventDefault();
    setBusy(true);
    setError(null);
    try {
      const accepted = await unwrap(
        api.POST('/v1/projects/{project}/instances', {
          params: { path: { project }, header: { 'Idempotency-Key': newIdempotencyKey() } },
          body: {
            name,
            image: chosenImage,
            vcpus,
            memory_mib: memoryMib,
            disk_gib: diskGib,
            ssh_keys: sshKeys,
            user_data: userData === '' ? null : userData,
            anti_affinity_group: group === '' ? null : group,
          },
        }),
      );
      let notice: string | null = null;
      if (drEnabled) {
        try {
          await unwrap(
            api.PUT('/v1/projects/{project}/instances/{instance}/dr-policy', {
              params: { path: { project, instance: accepted.instance.id } },
              body: { priority: drPriority },
            }),
          );
        } catch (err) {
          // The instance exists: go to it, and say what is missing.
          notice = `The instance was created, but its DR policy was not set: ${messageOf(err)}`;
        }
      }
      navigate(`${base}/instances/${encodeURIComponent(accepted.instance.name)}`, { state: { notice } });
    } catch (err) {
      setError(messageOf(err));
      setBusy(false);
    }
  };

  const toggleKey = (key: string, on: boolean) => setSshKeys((ks) => (on ? [...ks, key] : ks.filter((k) => k !== key)));
  const command = instanceCreateCommand({
    project,
    name,
    image: chosenImage,
    vcpus,
    memoryMib,
    diskGib,
    sshKeys,
    userData,
    antiAffinityGroup: group,
    drPriority: drEnabled ? drPriority : null,
  });

  return (
    <>
      <nav className="breadcrumbs" aria-label="Breadcrumbs">
        <Link to={`${base}/instances`}>Instances</Link> <span aria-hidden="true">/</span> New
      </nav>
      <PageHeader title="Create instance" />
      <form className="form card" onSubmit={(e) => void submit(e)} aria-label="Create instance">
        <div className="form-grid">
          <div className="field">
            <label htmlFor={ids.name}>Name</label>
            <input
              id={ids.name}
              value={name}
              onChange={(e) => setName(e.target.value)}
              required
              pattern={NAME_PATTERN}
              autoComplete="off"
            />
            <p className="hint">A DNS label, also the guest's hostname.</p>
          </div>
          <div className="field">
            <label htmlFor={ids.image}>Image</label>
            {images.data === undefined ? (
              images.error ? (
                <ErrorBanner message={`Cannot load images: ${images.error}`} />
              ) : (
                <Loading what="images" />
              )
            ) : available.length === 0 ? (
              <p className="muted">No available image. An operator registers images.</p>
            ) : (
              <select id={ids.image} value={chosenImage} onChange={(e) => setImage(e.target.value)} required>
                {available.map((i) => (
                  <option key={i.id} value={i.name}>
                    {i.name} ({i.boot_mode === 'firmware' ? `whole disk, ${i.firmware ?? 'uefi'}` : 'kernel'}
                    {i.disk_virtual_bytes ? `, ${bytes(i.disk_virtual_bytes)}` : ''}){i.public ? '' : ' — project'}
                  </option>
                ))}
              </select>
            )}
          </div>
          <div className="field">
            <label htmlFor={ids.vcpus}>vCPUs</label>
            <input
              id={ids.vcpus}
              type="number"
              min={1}
              max={64}
              value={vcpus}
              onChange={(e) => setVcpus(Number(e.target.value))}
              required
            />
          </div>
          <div className="field">
            <label htmlFor={ids.memory}>Memory (MiB)</label>
            <input
              id={ids.memory}
              type="number"
              min={64}
              step={64}
              value={memoryMib}
              onChange={(e) => setMemoryMib(Number(e.target.value))}
              required
            />
          </div>
          <div className="field">
            <label htmlFor={ids.disk}>Disk (GiB)</label>
            <input id={ids.disk} type="number" min={0} value={diskGib} onChange={(e) => setDiskGib(Number(e.target.value))} />
            <p className="hint">0: the image's size (a 1 GiB data disk for a kernel image without one).</p>
          </div>
          <div className="field">
            <label htmlFor={ids.group}>Anti-affinity group (optional)</label>
            <input id={ids.group} value={group} onChange={(e) => setGroup(e.target.value)} autoComplete="off" />
            <p className="hint">Instances of one group are placed on different hosts.</p>
          </div>
        </div>
        <fieldset className="field">
          <legend>SSH keys</legend>
          {keys.data === undefined ? (
            keys.error ? (
              <ErrorBanner message={`Cannot load SSH keys: ${keys.error}`} />
            ) : (
              <Loading what="SSH keys" />
            )
          ) : keys.data.length === 0 ? (
            <p className="muted">
              The project has no SSH keys. <Link to={`${base}/ssh-keys`}>Add one</Link>.
            </p>
          ) : (
            <div className="checks">
              {keys.data.map((k) => (
                <div className="check" key={k.id}>
                  <input
                    id={`key-${k.id}`}
                    type="checkbox"
                    checked={sshKeys.includes(k.name)}
                    onChange={(e) => toggleKey(k.name, e.target.checked)}
                  />
                  <label htmlFor={`key-${k.id}`}>
                    {k.name} <span className="mono muted">{k.fingerprint}</span>
                  </label>
                </div>
              ))}
            </div>
          )}
        </fieldset>
        <div className="field">
          <label htmlFor={ids.userData}>User-data (optional)</label>
          <textarea
            id={ids.userData}
            rows={5}
            value={userData}
            onChange={(e) => setUserData(e.target.value)}
            spellCheck={false}
            className="mono"
            placeholder="#cloud-config"
          />
        </div>
        <fieldset className="field">
          <legend>Disaster recovery</legend>
          <div className="inline-form">
            <div className="check">
              <input id={ids.dr} type="checkbox" checked={drEnabled} onChange={(e) => setDrEnabled(e.target.checked)} />
              <label htmlFor={ids.dr}>Restore on a healthy host from its latest snapshot when its host dies</label>
            </div>
            <div className="field field-inline">
              <label htmlFor={ids.priority}>Priority</label>
              <input
                id={ids.priority}
                type="number"
                min={0}
                max={1000}
                value={drPriority}
                onChange={(e) => setDrPriority(Number(e.target.value))}
                disabled={!drEnabled}
              />
            </div>
          </div>
        </fieldset>
        {error && <ErrorBanner message={error} />}
        <div className="form-actions">
          <Link className="btn" to={`${base}/instances`}>
            Cancel
          </Link>
          <button type="submit" className="btn btn-primary" disabled={busy || chosenImage === ''}>
            {busy ? 'Creating…' : 'Create instance'}
          </button>
        </div>
      </form>
      <section className="card command-box" aria-labelledby="cli">
        <div className="command-head">
          <h2 id="cli">Equivalent cloudctl command</h2>
          <CopyButton text={command} />
        </div>
        <pre className="mono" data-testid="cloudctl-command">
          {/* Words never break inside (not at the hyphens of --memory); lines break between them. */}
          {command.split(/( )/).map((part, i) =>
            part === ' ' ? (
              ' '
            ) : (
              <span className="word" key={i}>
                {part}
              </span>
            ),
          )}
        </pre>
      </section>
    </>
  );
}
