// `diffusion-lens serve RUN_DIR [--port N] [--host H]`: the report with annotation mode, until Ctrl-C.
import type { Command } from 'commander';
import { InvalidArgumentError } from 'commander';
import { DEFAULT_HOST, isLoopback, startReportServer } from '../serve/index.js';

function parsePort(value: string): number {
  const port = Number(value);
  if (!/^\d+$/.test(value) || port > 65535) throw new InvalidArgumentError('must be a port number, 0..65535');
  return port;
}

export function addServeCommand(program: Command, setExitCode: (code: number) => void): void {
  program
    .command('serve')
    .summary('serve the report locally, with annotation mode')
    .description(
      "Serve DIR's report over HTTP on this machine, with annotation mode (the Annotate tab): one image at a " +
        'time, y / n per question of its prompt, u to undo, s to skip. Each answer is written at once to ' +
        "DIR/annotations/<annotator>.jsonl. Only the run folders' images are served. Stop with Ctrl-C.",
    )
    .argument('<dir>', 'a run folder (with manifest.json) or a study folder (with study.json)')
    .option('--compare <dir>', 'another run or study folder, shown beside it')
    .option('-p, --port <n>', 'port to listen on (default: a free one)', parsePort)
    .option(
      '--host <host>',
      `address to listen on (default: ${DEFAULT_HOST}, this machine only); anything else lets other machines ` +
        'read the images and write answers',
    )
    .action(async (dir: string, options: { compare?: string; port?: number; host?: string }) => {
      const server = await startReportServer({
        dir,
        compare: options.compare,
        port: options.port,
        host: options.host,
      });
      // Ctrl-C (or SIGTERM) stops it; listening before anything is printed, so that a caller who reads
      // the address and stops the server at once stops it cleanly.
      const stopped = new Promise<void>((resolve) => {
        const stop = () => {
          process.off('SIGINT', stop);
          process.off('SIGTERM', stop);
          resolve();
        };
        process.on('SIGINT', stop);
        process.on('SIGTERM', stop);
      });
      if (!isLoopback(server.host)) {
        process.stderr.write(
          `warning: listening on ${server.host}, not this machine's loopback: anyone who can reach it can see ` +
            'the images and write answers (there is no login)\n',
        );
      }
      process.stdout.write(
        `serving ${dir} at ${server.url}  (annotate: ${server.url}#annotate; Ctrl-C stops)\n`,
      );
      await stopped;
      await server.close();
      setExitCode(0);
    });
}
