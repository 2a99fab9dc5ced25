import { configDefaults, defineConfig } from 'vitest/config';

// In a guest without KVM (`npm run vm`, docs/vm.md) every instruction is emulated: tests get
// ten times the time there (test/helpers/kernel.ts testTime() for a test's own limits), and
// two files run at once, since one at a time leaves a vCPU idle.
const emulated = process.env.LOOPDEV_GUEST_EMULATED === '1';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    // Tests of other tools' behaviour that need them installed and a kernel with udev: they run
    // in a guest (.ci/guests), where the variable says the tool is there.
    exclude: [
      ...configDefaults.exclude,
      ...(process.env.LOOPDEV_PODMAN === '1' ? [] : ['test/podman.test.ts']),
      ...(process.env.LOOPDEV_SYSTEMD_DISSECT === '1' ? [] : ['test/systemd-dissect.test.ts']),
    ],
    // Integration tests share one kernel; files run in parallel workers but each test
    // only touches the devices it attached itself.
    testTimeout: emulated ? 600_000 : 60_000,
    hookTimeout: emulated ? 600_000 : 60_000,
    ...(emulated ? { maxWorkers: 2 } : {}),
    pool: 'forks',
    globalSetup: ['test/global-setup.ts'],
  },
});
