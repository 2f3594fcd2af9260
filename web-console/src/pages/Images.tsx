// Images the project sees (its own and public ones); operators register files of the control
// plane host as new images.
import { useId, useState, type FormEvent } from 'react';
import { api, messageOf, unwrap, type Image, type Schemas } from '../api/client';
import { useWhoami } from '../auth';
import { Badge } from '../components/Badge';
import { ConfirmDialog, ErrorBanner } from '../components/Dialog';
import { PageHeader } from '../components/PageHeader';
import { Empty, LoadState } from '../components/States';
import { bytes, time } from '../lib/format';
import { useLoad } from '../lib/useLoad';
import { useProject } from '../lib/project';
import { listImages } from '../lib/resources';

export function Images() {
  const project = useProject();
  const whoami = useWhoami();
  const images = useLoad(() => listImages(project), [project]);
  const [deleting, setDeleting] = useState<Image | null>(null);
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<string | null>(null);
  const [registering, setRegistering] = useState(false);
  const remove = async () => {
    if (!deleting) return;
    setBusy(true);
    setError(null);
    try {
      await unwrap(api.DELETE('/v1/projects/{project}/images/{image}', { params: { path: { project, image: deleting.id } } }));
      setDeleting(null);
      images.reload();
    } catch (err) {
      setError(messageOf(err));
    } finally {
      setBusy(false);
    }
  };
  return (
    <>
      <PageHeader title="Images" sub="What instances boot from: the project's own images and the public ones">
        {whoami.is_operator && (
          <button type="button" className="btn btn-primary" onClick={() => setRegistering((r) => !r)} aria-expanded={registering}>
            Register image
          </button>
        )}
      </PageHeader>
      {registering && (
        <RegisterImage
          project={project}
          onDone={() => {
            setRegistering(false);
            images.reload();
          }}
        />
      )}
      <LoadState what="images" {...images} retry={images.reload}>
        {(all) =>
          all.length === 0 ? (
            <Empty>No images. An operator registers them (cloudctl image create), or make one from a snapshot.</Empty>
          ) : (
            <div className="table-wrap">
              <table className="table" aria-label="Images">
                <thead>
                  <tr>
                    <th scope="col">Name</th>
                    <th scope="col">State</th>
                    <th scope="col">Boots</th>
                    <th scope="col" className="num">
                      Disk
                    </th>
                    <th scope="col">Visibility</th>
                    <th scope="col">Created</th>
                    <th scope="col">
                      <span className="visually-hidden">Actions</span>
                    </th>
                  </tr>
                </thead>
                <tbody>
                  {all.map((i) => (
                    <tr key={i.id}>
                      <td>{i.name}</td>
                      <td>
                        <Badge state={i.state} />
                      </td>
                      <td>{i.boot_mode === 'firmware' ? `whole disk (${i.firmware ?? 'uefi'})` : 'kernel'}</td>
                      <td className="num">{bytes(i.disk_virtual_bytes)}</td>
                      <td>{i.public ? 'public' : 'project'}</td>
                      <td>{time(i.created_at)}</td>
                      <td className="actions">
                        {(!i.public || whoami.is_operator) && (
                          <button
                            type="button"
                            className="btn btn-small btn-danger"
                            onClick={() => setDeleting(i)}
                            aria-label={`Delete image ${i.name}`}
                          >
                            Delete
                          </button>
                        )}
                      </td>
                    </tr>
                  ))}
                </tbody>
              </table>
            </div>
          )
        }
      </LoadState>
      <ConfirmDialog
        open={deleting !== null}
        title={`Delete image ${deleting?.name ?? ''}?`}
        confirmLabel="Delete"
        danger
        busy={busy}
        error={error}
        onCancel={() => {
          setDeleting(null);
          setError(null);
        }}
        onConfirm={remove}
      >
        <p>New instances can no longer boot from it.</p>
      </ConfirmDialog>
    </>
  );
}

function RegisterImage({ project, onDone }: { project: string; onDone: () => void }) {
  const [name, setName] = useState('');
  const [bootMode, setBootMode] = useState<Schemas['BootMode']>('direct_kernel');
  const [kernel, setKernel] = useState('');
  const [initrd, setInitrd] = useState('');
  const [disk, setDisk] = useState('');
  const [cmdline, setCmdline] = useState('');
  const [firmware, setFirmware] = useState<Schemas['Firmware']>('uefi');
  const [isPublic, setPublic] = useState(true);
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<string | null>(null);
  const id = { name: useId(), mode: useId(), kernel: useId(), initrd: useId(), disk: useId(), cmdline: useId(), fw: useId(), pub: useId() };
  const kernelImage = bootMode === 'direct_kernel';
  const submit = async (e: FormEvent) => {
    e.preventDefault();
    setBusy(true);
    setError(null);
    const orNull = (v: string) => (v.trim() === '' ? null : v.trim());
    try {
      await unwrap(
        api.POST('/v1/projects/{project}/images', {
          params: { path: { project } },
          body: {
            name: name.trim(),
            boot_mode: bootMode,
            kernel_path: kernelImage ? orNull(kernel) : null,
            initrd_path: kernelImage ? orNull(initrd) : null,
            disk_path: orNull(disk),
            kernel_cmdline: kernelImage ? cmdline : '',
            firmware: kernelImage ? null : firmware,
            public: isPublic,
          },
        }),
      );
      onDone();
    } catch (err) {
      setError(messageOf(err));
      setBusy(false);
    }
  };
  return (
    <form className="form card" onSubmit={(e) => void submit(e)} aria-label="Register image">
      <h2>Register an image</h2>
      <p className="hint">Paths are files on the control plane's host; it copies them into its store.</p>
      <div className="form-grid">
        <div className="field">
          <label htmlFor={id.name}>Name</label>
          <input id={id.name} value={name} onChange={(e) => setName(e.target.value)} required />
        </div>
        <div className="field">
          <label htmlFor={id.mode}>Boot mode</label>
          <select id={id.mode} value={bootMode} onChange={(e) => setBootMode(e.target.value === 'firmware' ? 'firmware' : 'direct_kernel')}>
            <option value="direct_kernel">Kernel (direct boot)</option>
            <option value="firmware">Whole disk (firmware)</option>
          </select>
        </div>
        {kernelImage ? (
          <>
            <div className="field">
              <label htmlFor={id.kernel}>Kernel path</label>
              <input id={id.kernel} value={kernel} onChange={(e) => setKernel(e.target.value)} required className="mono" />
            </div>
            <div className="field">
              <label htmlFor={id.initrd}>Initrd path (optional)</label>
              <input id={id.initrd} value={initrd} onChange={(e) => setInitrd(e.target.value)} className="mono" />
            </div>
            <div className="field">
              <label htmlFor={id.disk}>Disk path (optional)</label>
              <input id={id.disk} value={disk} onChange={(e) => setDisk(e.target.value)} className="mono" />
            </div>
            <div className="field">
              <label htmlFor={id.cmdline}>Kernel command line</label>
              <input id={id.cmdline} value={cmdline} onChange={(e) => setCmdline(e.target.value)} className="mono" />
            </div>
          </>
        ) : (
          <>
            <div className="field">
              <label htmlFor={id.disk}>Disk path</label>
              <input id={id.disk} value={disk} onChange={(e) => setDisk(e.target.value)} required className="mono" />
            </div>
            <div className="field">
              <label htmlFor={id.fw}>Firmware</label>
              <select id={id.fw} value={firmware} onChange={(e) => setFirmware(e.target.value === 'bios' ? 'bios' : 'uefi')}>
                <option value="uefi">UEFI</option>
                <option value="bios">BIOS</option>
              </select>
            </div>
          </>
        )}
      </div>
      <div className="check">
        <input id={id.pub} type="checkbox" checked={isPublic} onChange={(e) => setPublic(e.target.checked)} />
        <label htmlFor={id.pub}>Public: every project sees it</label>
      </div>
      {error && <ErrorBanner message={error} />}
      <div className="form-actions">
        <button type="submit" className="btn btn-primary" disabled={busy}>
          {busy ? 'Registering…' : 'Register'}
        </button>
      </div>
    </form>
  );
}
