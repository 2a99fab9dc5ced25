import js from '@eslint/js';
import tseslint from 'typescript-eslint';

// The direction of imports between lib/'s layers: each may import only the ones before it
// (core <- partitions <- loop <- mount <- dissect <- testing, cli). The entry files (lib/*.ts) import anything.
const LAYERS = ['core', 'partitions', 'loop', 'mount', 'dissect', 'testing', 'cli'];
const allowed = { core: [], partitions: ['core'], loop: ['core', 'partitions'], mount: ['core', 'partitions', 'loop'], dissect: ['core', 'partitions', 'loop', 'mount'], testing: ['core', 'partitions', 'loop', 'mount'], cli: ['core', 'partitions', 'loop', 'mount', 'dissect'] };
const layerRules = LAYERS.map((layer) => ({
  files: [`lib/${layer}/**/*.ts`],
  rules: {
    'no-restricted-imports': [
      'error',
      {
        patterns: [
          ...LAYERS.filter((other) => other !== layer && !allowed[layer].includes(other)).map((other) => ({
            group: [`../${other}/*`, `../${other}`],
            message: allowed[layer].length ? `lib/${layer}/ may import only ${allowed[layer].map((l) => `lib/${l}/`).join(', ')}` : `lib/${layer}/ imports nothing else of lib/`,
          })),
          { group: ['../index', '../testing', '../cli'], message: 'the entry files are for users, not for lib/ itself' },
        ],
      },
    ],
  },
}));

export default tseslint.config(
  { ignores: ['dist/', 'build/', 'node_modules/', 'prebuilds/', 'coverage/'] },
  js.configs.recommended,
  ...tseslint.configs.strict,
  {
    languageOptions: {
      globals: { process: 'readonly', console: 'readonly', require: 'readonly', module: 'writable', __dirname: 'readonly', Buffer: 'readonly', setTimeout: 'readonly', clearTimeout: 'readonly', setImmediate: 'readonly', AbortSignal: 'readonly', AbortController: 'readonly' },
    },
    rules: {
      '@typescript-eslint/no-explicit-any': 'error',
      '@typescript-eslint/no-require-imports': 'off',
      '@typescript-eslint/no-non-null-assertion': 'off',
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_' }],
    },
  },
  ...layerRules,
);
