// The command line: options, then `--`, then COMMAND.
'use strict';
const { DEFAULT_RELEASE, RELEASES } = require('./apt');
const { ARCH_NAMES } = require('./arch');

const USAGE = `usage: npm run vm -- [options] -- COMMAND [ARGS...]
  Runs COMMAND as root in the repository root inside a Debian guest (its stock kernel, under
  qemu), with the repository at the same path, and exits with its status.

  --arch ${ARCH_NAMES.join('|')}   the guest's architecture (default: ${process.arch === 'arm64' ? 'arm64' : 'x64'})
  --release ${RELEASES.join('|')}   the Debian release (default: ${DEFAULT_RELEASE})
  --no-udev         do not start systemd-udevd before COMMAND
  --append ARGS     more kernel command line arguments, e.g. "loop.max_part=8" (repeatable)
  --timeout SECS    stop the guest after this long (default 3600)
  --prepare         build (or find in the cache) the guest's image, boot nothing; no COMMAND
  --verbose         print the commands run, the console log's path and the boot time
  -h, --help        this text

  Cache: $LOOPDEV_VM_CACHE, default \${XDG_CACHE_HOME:-$HOME/.cache}/loopdev-vm (see docs/vm.md)`;

class UsageError extends Error {}

function parseOptions(argv) {
  const options = { arch: process.arch === 'arm64' ? 'arm64' : 'x64', release: DEFAULT_RELEASE, udev: true, append: [], timeout: 3600, verbose: false, help: false, prepare: false, command: [] };
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    const value = () => {
      if (i + 1 >= argv.length) throw new UsageError(`${arg} needs a value`);
      return argv[++i];
    };
    if (arg === '--') {
      options.command = argv.slice(i + 1);
      break;
    } else if (arg === '--arch') options.arch = value();
    else if (arg.startsWith('--arch=')) options.arch = arg.slice('--arch='.length);
    else if (arg === '--release') options.release = value();
    else if (arg.startsWith('--release=')) options.release = arg.slice('--release='.length);
    else if (arg === '--no-udev') options.udev = false;
    else if (arg === '--append') options.append.push(...value().split(/\s+/).filter(Boolean));
    else if (arg === '--timeout') options.timeout = Number(value());
    else if (arg === '--verbose' || arg === '-v') options.verbose = true;
    else if (arg === '--prepare') options.prepare = true;
    else if (arg === '--help' || arg === '-h') options.help = true;
    else if (arg.startsWith('-')) throw new UsageError(`unknown option ${arg}`);
    else {
      // No `--`: COMMAND starts at the first word that is not an option.
      options.command = argv.slice(i);
      break;
    }
  }
  if (!ARCH_NAMES.includes(options.arch)) throw new UsageError(`--arch must be one of ${ARCH_NAMES.join(', ')}`);
  if (!RELEASES.includes(options.release)) throw new UsageError(`--release must be one of ${RELEASES.join(', ')}`);
  if (!(options.timeout > 0)) throw new UsageError('--timeout needs a positive number of seconds');
  if (options.prepare && options.command.length > 0) throw new UsageError('--prepare takes no COMMAND');
  if (!options.help && !options.prepare && options.command.length === 0) throw new UsageError('no COMMAND given');
  return options;
}

module.exports = { parseOptions, UsageError, USAGE };
