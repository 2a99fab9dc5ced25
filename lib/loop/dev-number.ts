// Device numbers as Linux packs them: pure arithmetic, so the CLI can print major:minor without
// loading the library's runtime (it must answer --help where the addon cannot load).

/** Splits a Linux dev_t (as in fs.Stats rdev, or a LoopInfo's backingDevice, exact) into major and minor. */
export function splitDev(dev: number | bigint): { major: number; minor: number } {
  const low = Number(BigInt(dev) & 0xffffffffn);
  const high = Number(BigInt(dev) >> 32n);
  return {
    major: ((low >>> 8) & 0xfff) | (high & 0xfffff000),
    minor: (low & 0xff) | ((low >>> 12) & 0xfff00) | ((high & 0xfff) << 20),
  };
}
