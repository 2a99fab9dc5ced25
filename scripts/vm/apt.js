// Debian packages for any architecture without touching the host's dpkg: an apt with its own
// state, cache and source list (APT::Architecture set to the guest's), fed from the mirror
// the host's own apt configuration names. No mirror is written into the repository.
'use strict';
const { existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } = require('node:fs');
const { join } = require('node:path');

const { capture, retry, run } = require('./host');

// The Debian releases a guest can run (--release), oldest first, and the default one.
const RELEASES = ['bullseye', 'bookworm', 'trixie'];
const DEFAULT_RELEASE = 'bookworm';
const DEFAULT_KEYRING = '/usr/share/keyrings/debian-archive-keyring.gpg';

/** Deb822 stanzas (.sources files) and one-line entries (sources.list) as {uris, suites, signedBy}. */
function hostSources() {
  const entries = [];
  const dir = '/etc/apt/sources.list.d';
  const files = existsSync(dir) ? readdirSync(dir).map((name) => join(dir, name)) : [];
  for (const file of files.filter((f) => f.endsWith('.sources'))) {
    for (const stanza of readFileSync(file, 'utf8').split(/\n\s*\n/)) {
      const field = (name) => (new RegExp(`^${name}:[ \\t]*(.*)$`, 'mi').exec(stanza)?.[1] ?? '').trim();
      if (!/\bdeb\b/.test(field('Types')) || /^no$/i.test(field('Enabled'))) continue;
      entries.push({ uris: field('URIs').split(/\s+/), suites: field('Suites').split(/\s+/), signedBy: field('Signed-By') || DEFAULT_KEYRING });
    }
  }
  for (const file of ['/etc/apt/sources.list', ...files.filter((f) => f.endsWith('.list'))]) {
    if (!existsSync(file)) continue;
    for (const line of readFileSync(file, 'utf8').split('\n')) {
      const match = /^\s*deb\s+(?:\[([^\]]*)\]\s+)?(\S+)\s+(\S+)/.exec(line);
      if (!match) continue;
      const signedBy = /signed-by=(\S+)/.exec(match[1] ?? '')?.[1] ?? DEFAULT_KEYRING;
      entries.push({ uris: [match[2]], suites: [match[3]], signedBy });
    }
  }
  return entries;
}

/** A suite name as release and suffix: 'bookworm-updates' -> ['bookworm', '-updates']; null for another distribution's. */
function splitSuite(suite) {
  const match = /^([a-z]+)(-[a-z-]+)?$/.exec(suite);
  return match && RELEASES.includes(match[1]) ? [match[1], match[2] ?? ''] : null;
}

/**
 * The host's Debian mirror for `release`: the first URI that serves that release itself, else
 * the first that serves another Debian release (a Debian mirror serves all of them; a host on
 * bookworm names only bookworm).
 */
function debianMirror(release) {
  const entries = hostSources();
  const serves = (entry, wanted) => entry.uris[0] && entry.suites.some((suite) => splitSuite(suite)?.[1] === '' && (wanted === undefined || suite === wanted));
  const entry = entries.find((e) => serves(e, release)) ?? entries.find((e) => serves(e));
  if (entry) return entry.uris[0];
  throw new Error(`the host's apt configuration names no Debian mirror (/etc/apt/sources.list.d/*.sources or /etc/apt/sources.list)`);
}

/**
 * Source lines for `release` and its -updates/-security companions: every host entry of a
 * Debian release, with that release's name put in (the security archive included).
 */
function sourceLines(release) {
  const lines = [];
  for (const entry of hostSources()) {
    for (const suite of entry.suites) {
      const parts = splitSuite(suite);
      if (!parts) continue;
      for (const uri of entry.uris) lines.push(`deb [signed-by=${entry.signedBy}] ${uri} ${release}${parts[1]} main`);
    }
  }
  return [...new Set(lines)];
}

/**
 * An apt for `debArch` and Debian `release` whose every directory lies under `dir`. Its lists are fetched once per
 * directory (the guest build that uses it is cached as a whole).
 */
async function privateApt(dir, debArch, release) {
  for (const sub of ['state/lists/partial', 'cache/archives/partial', 'etc/sources.list.d', 'etc/preferences.d']) {
    mkdirSync(join(dir, sub), { recursive: true });
  }
  writeFileSync(join(dir, 'status'), '');
  writeFileSync(join(dir, 'etc/sources.list'), `${sourceLines(release).join('\n')}\n`);
  const options = [
    `Dir::State=${dir}/state`,
    `Dir::State::status=${dir}/status`,
    `Dir::Cache=${dir}/cache`,
    `Dir::Etc::SourceList=${dir}/etc/sources.list`,
    `Dir::Etc::SourceParts=${dir}/etc/sources.list.d`,
    `Dir::Etc::Preferences=${dir}/etc/preferences`,
    `Dir::Etc::PreferencesParts=${dir}/etc/preferences.d`,
    `APT::Architecture=${debArch}`,
    `APT::Architectures=${debArch}`,
    'Acquire::Languages=none',
    // apt drops to the _apt user to download, which cannot write to our directories.
    'APT::Sandbox::User=root',
  ].flatMap((option) => ['-o', option]);
  await retry('apt-get update', 3, () => run('apt-get', [...options, '-qq', 'update']));
  return {
    /** The candidate version's Depends (for a meta package: the real package). */
    depends(pkg) {
      const info = capture('apt-cache', [...options, 'show', '--no-all-versions', pkg]);
      return /^Depends: (.*)$/m.exec(info)?.[1] ?? '';
    },
    /** Downloads `pkg` into `dest`; returns the .deb's path. */
    async download(pkg, dest) {
      await retry(`apt-get download ${pkg}`, 3, () => run('apt-get', [...options, '-qq', 'download', pkg], { cwd: dest }));
      const deb = readdirSync(dest).find((name) => name.startsWith(`${pkg}_`) && name.endsWith('.deb'));
      if (!deb) throw new Error(`apt-get download ${pkg} left no .deb in ${dest}`);
      return join(dest, deb);
    },
  };
}

module.exports = { RELEASES, DEFAULT_RELEASE, debianMirror, privateApt };
