// `diffusion-lens keys DIR [--add-client NAME] [--force]`: makes the ZeroMQ CURVE key pairs of a remote
// worker and its clients (src/bridge/keys.ts writes them).
import { relative } from 'node:path';
import type { Command } from 'commander';
import {
  AUTHORIZED_DIR,
  addClient,
  CLIENT_SECRET,
  type MadeKeys,
  makeKeys,
  WORKER_PUBLIC,
  WORKER_SECRET,
} from '../bridge/index.js';

interface KeysFlags {
  addClient?: string;
  force?: boolean;
  json?: boolean;
}

/** What to copy where, after the keys are made. */
export function keysText(made: MadeKeys, dirArg: string, clientName?: string): string {
  const shown = (file: string): string => {
    const rel = relative(process.cwd(), file);
    return rel.startsWith('..') ? file : rel;
  };
  const lines = ['Wrote:', ...made.files.map((file) => `  ${shown(file)}`), ''];
  const clientDir = shown(made.clientDir);
  if (clientName === undefined) {
    lines.push(
      `The worker host needs ${dirArg}/${WORKER_SECRET} and ${dirArg}/${AUTHORIZED_DIR}/ (copy the folder, or just those):`,
      `  diffusion-lens worker --bind tcp://0.0.0.0:5555 --keys ${dirArg} --model MODEL`,
      `Each client needs ${dirArg}/${CLIENT_SECRET} and ${dirArg}/${WORKER_PUBLIC}:`,
      `  diffusion-lens lens "a prompt" --worker tcp://WORKER-HOST:5555 --keys ${dirArg} --out runs/x`,
      `Another client gets its own pair: diffusion-lens keys ${dirArg} --add-client NAME`,
    );
  } else {
    lines.push(
      `Client ${JSON.stringify(clientName)} is authorized in ${dirArg}/${AUTHORIZED_DIR}/: copy that file to the ` +
        'worker host (a running worker reads authorized/ when it starts: restart it).',
      `Copy the folder ${clientDir} (${CLIENT_SECRET} and ${WORKER_PUBLIC}) to the client, and there:`,
      `  diffusion-lens lens "a prompt" --worker tcp://WORKER-HOST:5555 --keys ${clientDir} --out runs/x`,
    );
  }
  lines.push(
    'Secret files (*.key_secret, mode 600) stay on their host: copy them only over a secure channel ' +
      '(scp, ssh), never into a repository; *.key files are public.',
  );
  return `${lines.join('\n')}\n`;
}

/** Adds `keys` to the program. */
export function addKeysCommand(program: Command): void {
  program
    .command('keys')
    .summary('make ZeroMQ CURVE keys for remote workers')
    .description(
      'Make the ZeroMQ CURVE key pairs that authenticate and encrypt the link between a remote worker ' +
        '(`diffusion-lens worker --keys DIR`) and its clients (`--worker ENDPOINT --keys DIR`), as ' +
        'czmq/pyzmq certificate files in DIR (below). Existing keys are kept unless --force.',
    )
    .argument('<dir>', 'the keys folder (created, mode 700, when missing)')
    .option(
      '--add-client <name>',
      'make one more client pair in DIR/clients/NAME/ (with a copy of worker.key: the folder that client ' +
        'needs) and authorize it as DIR/authorized/NAME.key; DIR must hold keys already',
    )
    .option('--force', 'replace existing keys (every holder of the old ones is locked out) (default: refuse)')
    .option('--json', 'print what was written as JSON (default: text)')
    .addHelpText(
      'after',
      '\nFiles:\n' +
        `  ${WORKER_PUBLIC}              the worker's public key\n` +
        `  ${WORKER_SECRET}       the worker's key pair (secret, mode 600): the worker host needs it\n` +
        "  client.key              the client's public key\n" +
        `  ${CLIENT_SECRET}       the client's key pair (secret, mode 600): each client needs it, and ${WORKER_PUBLIC}\n` +
        `  ${AUTHORIZED_DIR}/*.key        the clients the worker answers (client.key, NAME.key)\n` +
        `  clients/NAME/           --add-client NAME: that client's folder (its pair and ${WORKER_PUBLIC})\n` +
        '\nExamples:\n' +
        '  diffusion-lens keys ~/.diffusion-lens/keys\n' +
        '  diffusion-lens keys ~/.diffusion-lens/keys --add-client laptop',
    )
    .action((dir: string, flags: KeysFlags) => {
      const made =
        flags.addClient === undefined
          ? makeKeys(dir, { force: flags.force })
          : addClient(dir, flags.addClient, { force: flags.force });
      if (flags.json) {
        process.stdout.write(`${JSON.stringify(made)}\n`);
        return;
      }
      process.stdout.write(keysText(made, dir.replace(/\/+$/, '') || dir, flags.addClient));
    });
}
