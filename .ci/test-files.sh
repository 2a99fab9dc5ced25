# Sourced by .ci/run and .ci/guests: the test files of pure code, which give the same answer on
# every kernel, machine and Node version (parsers and their fuzz tests, retry policy over fakes,
# the tarball's types, the addon's argument layout read from the sources). The host's first run
# (Node 20) runs them; the reruns on other Nodes and the arm64 guest leave them out.
# shellcheck disable=SC2034
PURE_FILES=(test/fstype.test.ts test/fuzz-dissect.test.ts test/fuzz-fstype.test.ts test/fuzz-partition-table.test.ts
  test/partition-table.test.ts test/partition-types.test.ts test/retry.test.ts test/types.test.ts test/addon-layout.test.ts)
EXCLUDE_PURE=()
for file in "${PURE_FILES[@]}"; do EXCLUDE_PURE+=(--exclude "$file"); done
