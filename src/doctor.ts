// `diffusion-lens doctor`: is everything the worker needs there? Runs `python -m diffusion_lens.doctor`
// with the interpreter the worker would use and turns its report into problems with fixes.
import { execa } from 'execa';
import { type FamilyCapabilities, findPython, pythonDir } from './bridge/index.js';
import { TOOL_VERSION } from './version.js';

export interface DoctorProblem {
  what: string;
  fix: string;
}

export interface DoctorReport {
  tool: string;
  node: string;
  /** The interpreter the worker runs with (DIFFUSION_LENS_PYTHON, python/.venv, or python3). */
  pythonPath: string;
  python: string | null;
  executable: string | null;
  packages: Record<string, string | null>;
  device: string | null;
  cuda: { available: boolean; devices: string[] } | null;
  /** What each pipeline family of the worker can do, as the worker reports it in `ready`. */
  families: FamilyCapabilities[];
  problems: DoctorProblem[];
  ok: boolean;
}

const MIN_NODE: [number, number] = [20, 19];
const MIN_PYTHON: [number, number] = [3, 10];
const SETUP_FIX =
  'run `npm install` (it creates python/.venv from python/requirements.txt), or set DIFFUSION_LENS_PYTHON ' +
  'to a Python >= 3.10 that has python/requirements.txt installed';

function olderThan(version: string, min: [number, number]): boolean {
  const [major = 0, minor = 0] = version.replace(/^v/, '').split('.').map(Number);
  return major < min[0] || (major === min[0] && minor < min[1]);
}

interface PythonReport {
  python: string;
  executable: string;
  packages: Record<string, string | null>;
  device: string;
  cuda: { available: boolean; devices: string[] };
  families?: FamilyCapabilities[];
  problems: string[];
}

/** Checks Node, the worker's Python and its packages. Never throws for a broken set-up: reports it. */
export async function runDoctor(
  options: { python?: string; env?: NodeJS.ProcessEnv } = {},
): Promise<DoctorReport> {
  const pythonPath = options.python ?? findPython(options.env);
  const problems: DoctorProblem[] = [];
  const node = process.versions.node;
  if (olderThan(node, MIN_NODE)) {
    problems.push({
      what: `Node.js ${node} is too old (need >= ${MIN_NODE.join('.')})`,
      fix: 'install Node.js 20.19 or newer',
    });
  }
  const report: DoctorReport = {
    tool: TOOL_VERSION,
    node,
    pythonPath,
    python: null,
    executable: null,
    packages: {},
    device: null,
    cuda: null,
    families: [],
    problems,
    ok: false,
  };
  const result = await execa(pythonPath, ['-m', 'diffusion_lens.doctor'], {
    cwd: pythonDir,
    env: options.env,
    reject: false,
    timeout: 180_000,
  });
  if (result.failed || result.exitCode !== 0) {
    const notFound = (result.cause as NodeJS.ErrnoException | undefined)?.code === 'ENOENT';
    const why = notFound
      ? `Python interpreter "${pythonPath}" not found`
      : `"${pythonPath} -m diffusion_lens.doctor" failed: ${
          String(result.stderr ?? '')
            .trim()
            .split('\n')
            .slice(-3)
            .join(' | ') || result.shortMessage
        }`;
    problems.push({ what: why, fix: SETUP_FIX });
    return report;
  }
  let parsed: PythonReport;
  try {
    parsed = JSON.parse(String(result.stdout).trim().split('\n').pop() ?? '') as PythonReport;
  } catch {
    problems.push({
      what: `the Python doctor printed no JSON: ${String(result.stdout).slice(0, 200)}`,
      fix: SETUP_FIX,
    });
    return report;
  }
  report.python = parsed.python;
  report.executable = parsed.executable;
  report.packages = parsed.packages ?? {};
  report.device = parsed.device;
  report.cuda = parsed.cuda;
  report.families = parsed.families ?? [];
  if (olderThan(parsed.python, MIN_PYTHON)) {
    problems.push({ what: `Python ${parsed.python} is too old (need >= 3.10)`, fix: SETUP_FIX });
  }
  for (const line of parsed.problems ?? []) {
    const [what = line, fix] = line.split('; fix: ');
    problems.push({
      what,
      fix: fix ? `${fix} (into ${parsed.executable}), or ${SETUP_FIX}` : SETUP_FIX,
    });
  }
  report.ok = problems.length === 0;
  return report;
}
