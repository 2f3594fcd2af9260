// The cloudctl command equivalent to a form (syntax of cloudctl/README.md), quoted for sh.

/** A word as sh reads it: bare when safe, else in single quotes. */
export function shQuote(word: string): string {
  if (word !== '' && /^[A-Za-z0-9_@%+=:,./-]+$/.test(word)) return word;
  return `'${word.replace(/'/g, `'\\''`)}'`;
}

/** One command line from its words (each quoted). */
export function commandLine(words: string[]): string {
  return words.map(shQuote).join(' ');
}

export interface InstanceCreateCommand {
  project: string;
  name: string;
  image: string;
  vcpus: number;
  memoryMib: number;
  diskGib: number;
  sshKeys: string[];
  userData: string;
  antiAffinityGroup: string;
  drPriority: number | null;
}

/** `cloudctl --project P instance create …`, and `instance dr set …` when a DR policy is asked. */
export function instanceCreateCommand(c: InstanceCreateCommand): string {
  const words = ['cloudctl', '--project', c.project, 'instance', 'create', c.name || 'NAME'];
  words.push('--image', c.image || 'IMAGE', '--vcpus', String(c.vcpus), '--memory', `${c.memoryMib}MiB`);
  if (c.diskGib > 0) words.push('--disk', `${c.diskGib}GiB`);
  for (const key of c.sshKeys) words.push('--ssh-key', key);
  if (c.userData !== '') words.push('--user-data', c.userData);
  if (c.antiAffinityGroup !== '') words.push('--anti-affinity-group', c.antiAffinityGroup);
  let line = commandLine(words);
  if (c.drPriority !== null) {
    line += ` \\\n  && ${commandLine(['cloudctl', '--project', c.project, 'instance', 'dr', 'set', c.name || 'NAME', '--priority', String(c.drPriority)])}`;
  }
  return line;
}
