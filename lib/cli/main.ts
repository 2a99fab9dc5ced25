// The `loopdev` command: losetup's everyday jobs plus mount and umount, through the library's
// ioctls; it never spawns a shell, losetup or mount. Here: parse the command line (parse.ts,
// from the tables in spec.ts), run the command (commands.ts), print a failure (format.ts), and
// answer with an exit status: 0 done, 1 the command failed, 2 a wrong command line.
import { LoopError } from '../core/errors';
import { Reported, runCommand, type Output } from './commands';
import { describeCommand, formatFailure, usageHint } from './format';
import { parseCommand, UsageError, type Command } from './parse';

export const EXIT_OK = 0;
/** A command ran and failed (the kernel or the library said no). */
export const EXIT_FAILURE = 1;
/** The command line itself is wrong: unknown command or option, missing argument, bad number. */
export const EXIT_USAGE = 2;

const processOutput: Output = {
  stdout: (text) => void process.stdout.write(text),
  stderr: (text) => void process.stderr.write(text),
};

/** Runs the CLI; resolves to the exit status (0, 1 or 2). Never throws. */
export async function main(argv: readonly string[], output: Output = processOutput): Promise<number> {
  let command: Command;
  try {
    command = parseCommand(argv);
  } catch (error) {
    if (!(error instanceof UsageError)) {
      output.stderr(formatFailure('parsing the command line', error, 'list'));
      return EXIT_FAILURE;
    }
    const where = error.command === null ? '' : `${error.command}: `;
    output.stderr(`loopdev: ${where}${error.message}\n${usageHint(error.command)}\n`);
    return EXIT_USAGE;
  }
  try {
    await runCommand(command, output);
    return EXIT_OK;
  } catch (error) {
    if (error instanceof Reported) return EXIT_FAILURE;
    const name = command.name === 'help' || command.name === 'version' ? 'list' : command.name;
    output.stderr(formatFailure(describeCommand(command), error, name));
    // The library checks its options before it does anything: one it refuses (a -o word
    // mount() does not take) is a wrong command line too.
    if (error instanceof LoopError && error.code === 'ERR_LOOP_INVALID_OPTION') {
      output.stderr(`${usageHint(name)}\n`);
      return EXIT_USAGE;
    }
    return EXIT_FAILURE;
  }
}

/** Runs the command line of this process (the `loopdev` binary). */
export function runMain(): void {
  // `loopdev list | head -1`: a closed pipe ends the output, quietly.
  process.stdout.on('error', (error: NodeJS.ErrnoException) => {
    if (error.code === 'EPIPE') process.exit(process.exitCode ?? EXIT_OK);
    throw error;
  });
  main(process.argv.slice(2)).then((status) => {
    process.exitCode = status;
  });
}
