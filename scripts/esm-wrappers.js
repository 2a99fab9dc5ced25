// Writes dist/*.mjs next to the CommonJS build so that `import` gets named exports too.
'use strict';
const { chmodSync, existsSync, writeFileSync } = require('node:fs');
const { join } = require('node:path');

const dist = join(__dirname, '..', 'dist');
for (const entry of ['index', 'testing']) {
  let names;
  try {
    names = Object.keys(require(join(dist, `${entry}.js`)));
  } catch (error) {
    if (error.code === 'MODULE_NOT_FOUND' && entry !== 'index') continue;
    throw error;
  }
  const body = [
    `import cjs from './${entry}.js';`,
    `export const { ${names.join(', ')} } = cjs;`,
    'export default cjs;',
    '',
  ].join('\n');
  writeFileSync(join(dist, `${entry}.mjs`), body);
  // The types of `import` must be ESM (.d.mts) or TypeScript treats the whole entry as CJS
  // under node16 ("masquerading as CJS"); they mirror the wrapper: the names and a default.
  writeFileSync(join(dist, `${entry}.d.mts`), [`export * from './${entry}.js';`, `import cjs from './${entry}.js';`, 'export default cjs;', ''].join('\n'));
}

// The CLI runs straight from a checkout too (npm sets the bit for installed packages).
if (existsSync(join(dist, 'cli.js'))) chmodSync(join(dist, 'cli.js'), 0o755);
