// `diffusion-lens doctor` without --json: the report as aligned lines, each problem with its fix.
import type { FamilyCapabilities } from '../bridge/index.js';
import type { DoctorReport } from '../doctor.js';
import { optionValueText } from '../experiment/index.js';

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
  for (const family of report.families) out.push(...familyLines(family));
  if (report.ok) out.push('ok: everything the worker needs is there');
  else {
    out.push(`${report.problems.length} problem${report.problems.length === 1 ? '' : 's'}:`);
    for (const problem of report.problems) out.push(`  - ${problem.what}\n    fix: ${problem.fix}`);
  }
  return `${out.join('\n')}\n`;
}

/** `property (type, default: value): description` for each option of a family's options schema. */
function optionLines(schema: Record<string, unknown>): string[] {
  const properties = (schema.properties ?? {}) as Record<string, Record<string, unknown>>;
  return Object.entries(properties).map(([name, spec]) => {
    const type = [spec.type].flat().join(' | ');
    const shown = 'default' in spec ? `, default: ${optionValueText(spec.default)}` : '';
    const description = typeof spec.description === 'string' ? `: ${spec.description}` : '';
    return `${name} (${type}${shown})${description}`;
  });
}

const OPTION_SECTIONS = { load: 'model', sample: 'sampler', stage2: 'stage2' } as const;

/** A family's capabilities: stages, guidance, schedulers, and its options under their config sections. */
function familyLines(family: FamilyCapabilities): string[] {
  const lines = [
    `family ${family.name.padEnd(7)}${family.pipeline_classes.join(', ')}; ${family.stages} stage${family.stages === 1 ? '' : 's'}, ` +
      `${family.guidance === 'cfg' ? 'classifier-free guidance' : 'guidance-distilled'}`,
    `  schedulers  ${family.schedulers.join(', ')}`,
  ];
  for (const [kind, section] of Object.entries(OPTION_SECTIONS)) {
    for (const line of optionLines(family.options[kind as keyof typeof OPTION_SECTIONS])) {
      lines.push(`  option      ${section}.family_options.${line}`);
    }
  }
  return lines;
}
