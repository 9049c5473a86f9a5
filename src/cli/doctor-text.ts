// `diffusion-lens doctor` without --json: the report as aligned lines, each problem with its fix.
import type { DoctorReport } from '../doctor.js';

const MAIN_PACKAGES = ['torch', 'diffusers', 'transformers'];

export function doctorText(report: DoctorReport): string {
  const out: string[] = [
    `diffusion-lens ${report.tool}`,
    `node          ${report.node}`,
    `python        ${report.python ?? 'not working'} (${report.executable ?? report.pythonPath})`,
  ];
  for (const name of MAIN_PACKAGES) out.push(`${name.padEnd(14)}${report.packages[name] ?? 'missing'}`);
  const others = Object.entries(report.packages).filter(([name]) => !MAIN_PACKAGES.includes(name));
  if (others.length > 0) {
    out.push(`${'other'.padEnd(14)}${others.map(([n, v]) => `${n} ${v ?? 'missing'}`).join(', ')}`);
  }
  const gpus = report.cuda?.devices.length ? ` (${report.cuda.devices.join(', ')})` : '';
  out.push(`device        ${report.device ?? 'unknown'}${gpus}`);
  if (report.ok) out.push('ok: everything the worker needs is there');
  else {
    out.push(`${report.problems.length} problem${report.problems.length === 1 ? '' : 's'}:`);
    for (const problem of report.problems) out.push(`  - ${problem.what}\n    fix: ${problem.fix}`);
  }
  return `${out.join('\n')}\n`;
}
