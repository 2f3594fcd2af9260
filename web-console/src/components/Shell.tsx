// The frame of every signed-in page: header (project switcher, user menu), left navigation
// (a drawer behind a menu button in a narrow window) and the page.
import { useEffect, useId, useRef, useState } from 'react';
import { NavLink, Outlet, useLocation, useNavigate, useParams } from 'react-router-dom';
import { useAuth, useWhoami } from '../auth';
import { defaultProject, rememberProject } from '../lib/project';

const PROJECT_PAGES = [
  { path: 'instances', label: 'Instances' },
  { path: 'snapshots', label: 'Snapshots' },
  { path: 'images', label: 'Images' },
  { path: 'ssh-keys', label: 'SSH keys' },
  { path: 'operations', label: 'Operations' },
  { path: 'members', label: 'Members' },
];

export function Shell() {
  const whoami = useWhoami();
  const params = useParams();
  const location = useLocation();
  const [navOpen, setNavOpen] = useState(false);
  const project = params.project ?? defaultProject(whoami);

  useEffect(() => {
    if (params.project) rememberProject(params.project);
  }, [params.project]);
  // A followed link closes the drawer.
  useEffect(() => setNavOpen(false), [location.pathname]);
  // So does Escape.
  useEffect(() => {
    if (!navOpen) return;
    const onKey = (e: KeyboardEvent) => {
      if (e.key === 'Escape') setNavOpen(false);
    };
    document.addEventListener('keydown', onKey);
    return () => document.removeEventListener('keydown', onKey);
  }, [navOpen]);

  return (
    <div className={navOpen ? 'shell nav-open' : 'shell'}>
      <a className="skip-link" href="#main">
        Skip to content
      </a>
      <header className="topbar">
        <button
          type="button"
          className="btn btn-icon nav-toggle"
          aria-expanded={navOpen}
          aria-controls="sidenav"
          onClick={() => setNavOpen((o) => !o)}
        >
          <span aria-hidden="true">☰</span>
          <span className="visually-hidden">Menu</span>
        </button>
        <NavLink to="/" className="brand">
          <span className="brand-mark" aria-hidden="true" />
          Cloud
        </NavLink>
        <ProjectSwitcher current={project} />
        <div className="topbar-spacer" />
        <UserMenu />
      </header>
      <nav id="sidenav" className="sidenav" aria-label="Main">
        {project ? (
          <>
            <div className="nav-section">Project {project}</div>
            {PROJECT_PAGES.map((p) => (
              <NavLink key={p.path} to={`/projects/${encodeURIComponent(project)}/${p.path}`}>
                {p.label}
              </NavLink>
            ))}
          </>
        ) : (
          <NavLink to="/">Projects</NavLink>
        )}
        {whoami.is_operator && (
          <>
            <div className="nav-section">Fleet</div>
            <NavLink to="/hosts">Hosts</NavLink>
          </>
        )}
      </nav>
      <main id="main" className="content" tabIndex={-1}>
        <Outlet />
      </main>
    </div>
  );
}

function ProjectSwitcher({ current }: { current: string | null }) {
  const whoami = useWhoami();
  const navigate = useNavigate();
  const location = useLocation();
  const id = useId();
  if (whoami.projects.length === 0) return null;
  const change = (name: string) => {
    rememberProject(name);
    // Same kind of page in the other project (lists, not one resource of the old project).
    const section = /^\/projects\/[^/]+\/([^/]+)/.exec(location.pathname)?.[1] ?? 'instances';
    navigate(`/projects/${encodeURIComponent(name)}/${section}`);
  };
  return (
    <div className="project-switcher">
      <label htmlFor={id}>Project</label>
      <select id={id} value={current ?? ''} onChange={(e) => change(e.target.value)}>
        {current === null && <option value="">Choose…</option>}
        {whoami.projects.map((p) => (
          <option key={p.id} value={p.name}>
            {p.name} ({p.role})
          </option>
        ))}
        {current !== null && !whoami.projects.some((p) => p.name === current) && <option value={current}>{current}</option>}
      </select>
    </div>
  );
}

function UserMenu() {
  const whoami = useWhoami();
  const { signOut } = useAuth();
  const [open, setOpen] = useState(false);
  const ref = useRef<HTMLDivElement>(null);
  const menuId = useId();
  useEffect(() => {
    if (!open) return;
    const onDown = (e: MouseEvent) => {
      if (ref.current && !ref.current.contains(e.target as Node)) setOpen(false);
    };
    const onKey = (e: KeyboardEvent) => {
      if (e.key === 'Escape') setOpen(false);
    };
    document.addEventListener('mousedown', onDown);
    document.addEventListener('keydown', onKey);
    return () => {
      document.removeEventListener('mousedown', onDown);
      document.removeEventListener('keydown', onKey);
    };
  }, [open]);
  const initials = whoami.user.name.slice(0, 2).toUpperCase();
  return (
    <div className="user-menu" ref={ref}>
      <button
        type="button"
        className="btn btn-ghost user-button"
        aria-haspopup="true"
        aria-expanded={open}
        aria-controls={menuId}
        onClick={() => setOpen((o) => !o)}
      >
        <span className="avatar" aria-hidden="true">
          {initials}
        </span>
        <span className="user-name">{whoami.user.name}</span>
      </button>
      {open && (
        <div className="menu" id={menuId}>
          <div className="menu-info">
            <strong>{whoami.user.name}</strong>
            {whoami.user.email && <span>{whoami.user.email}</span>}
            {whoami.is_operator && <span className="badge badge-busy">operator</span>}
          </div>
          <button type="button" className="menu-item" onClick={() => void signOut()}>
            Sign out
          </button>
        </div>
      )}
    </div>
  );
}
