// The project the user works in: in the URL (/projects/:project/…), remembered in localStorage
// for the next visit.
import { useParams } from 'react-router-dom';
import type { WhoAmI } from '../api/client';
import { useWhoami } from '../auth';

const KEY = 'cloud-console.project';

export function rememberProject(name: string): void {
  try {
    window.localStorage.setItem(KEY, name);
  } catch {
    // Storage refused (private mode): the URL still carries the project.
  }
}

export function rememberedProject(): string | null {
  try {
    return window.localStorage.getItem(KEY);
  } catch {
    return null;
  }
}

/** The project to open when the URL names none: the remembered one if still a member, else the first. */
export function defaultProject(whoami: WhoAmI): string | null {
  const remembered = rememberedProject();
  if (remembered && whoami.projects.some((p) => p.name === remembered)) return remembered;
  return whoami.projects[0]?.name ?? null;
}

/** The :project of the current route. */
export function useProject(): string {
  const { project } = useParams();
  if (!project) throw new Error('useProject outside /projects/:project');
  return project;
}

/** Whether the signed-in user may change the project's resources (members and admins may; viewers read). */
export function canChange(whoami: WhoAmI, project: string): boolean {
  const role = whoami.projects.find((p) => p.name === project || p.id === project)?.role;
  return role === 'member' || role === 'admin';
}

export interface ProjectPage {
  /** The :project of the route. */
  project: string;
  whoami: WhoAmI;
  /** Whether the user may change the project's resources (see canChange). */
  writable: boolean;
  /** The URL of the project's pages: `${base}/instances`. */
  base: string;
}

/** What every page of a project starts with. */
export function useProjectPage(): ProjectPage {
  const project = useProject();
  const whoami = useWhoami();
  return { project, whoami, writable: canChange(whoami, project), base: `/projects/${encodeURIComponent(project)}` };
}
