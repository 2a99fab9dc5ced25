// loopdev/testing: disk images on real loop devices for integration tests (see testing/).
export * from './testing/fixture';
