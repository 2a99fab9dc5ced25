// Each step's argument order is defined once, in native/layout.h, and the addon exports it as
// layout.arguments. lib/core/addon.ts types the same calls as labelled tuples; those labels are
// read here with the TypeScript compiler and held to the export, name by name and in order, so
// that an argument moved or renamed on one side fails the suite instead of passing a value into
// the wrong place. Needs no privilege: it only loads the addon.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import ts from 'typescript';
import { beforeAll, describe, expect, it } from 'vitest';

import { addon, argumentIndex, byName, positional } from '../lib/core/addon';

const ADDON_TS = join(__dirname, '..', 'lib', 'core', 'addon.ts');

/** Every step typed in addon.ts (a `{ sync, async }` property of `Addon`) -> its argument labels in order. */
function typedArguments(source = readFileSync(ADDON_TS, 'utf8')): Map<string, string[]> {
  const options: ts.CompilerOptions = { strict: true, target: ts.ScriptTarget.ES2022, module: ts.ModuleKind.Node16, moduleResolution: ts.ModuleResolutionKind.Node16, types: ['node'], skipLibCheck: true, noEmit: true };
  const host = ts.createCompilerHost(options);
  const read = host.getSourceFile.bind(host);
  // The file as given (the test below hands it an edited copy), everything else from disk.
  host.getSourceFile = (name, version, ...rest) => (name === ADDON_TS ? ts.createSourceFile(name, source, version) : read(name, version, ...rest));
  const program = ts.createProgram([ADDON_TS], options, host);
  const checker = program.getTypeChecker();
  const file = program.getSourceFile(ADDON_TS)!;
  const alias = file.statements.find((node): node is ts.TypeAliasDeclaration => ts.isTypeAliasDeclaration(node) && node.name.text === 'Addon');
  if (!alias) throw new Error('lib/core/addon.ts declares no type Addon');
  const steps = new Map<string, string[]>();
  for (const property of checker.getPropertiesOfType(checker.getTypeAtLocation(alias.name))) {
    const sync = checker.getTypeOfSymbolAtLocation(property, alias).getProperty('sync');
    if (!sync) continue;
    // sync: (...args: Args) => Result, Args a tuple whose labels are the argument names.
    const [rest] = checker.getTypeOfSymbolAtLocation(sync, alias).getCallSignatures()[0]!.parameters;
    const tuple = rest ? (checker.getTypeOfSymbolAtLocation(rest, alias) as ts.TypeReference) : undefined;
    const elements = tuple ? checker.getTypeArguments(tuple).length : 0;
    const labels = (tuple?.target as ts.TupleType | undefined)?.labeledElementDeclarations ?? [];
    const names = labels.map((declaration) => (declaration && ts.isNamedTupleMember(declaration) ? declaration.name.text : '(unlabelled)'));
    if (names.length !== elements) throw new Error(`${property.name}: every argument in addon.ts needs a label (${elements} arguments, ${names.length} labels)`);
    steps.set(property.name, names);
  }
  return steps;
}

describe("each step's argument layout", () => {
  const exported = addon.layout.arguments;
  // A compiler program per check: seconds on a loaded machine, which nothing here judges.
  const COMPILE_MS = 120_000;
  let typed: Map<string, string[]>;
  beforeAll(() => {
    typed = typedArguments();
  }, COMPILE_MS);

  it('the addon exports a layout for exactly the steps it exports, and addon.ts types exactly those', () => {
    const steps = Object.keys(addon).filter((key) => typeof (addon as unknown as Record<string, { sync?: unknown }>)[key]?.sync === 'function');
    expect(Object.keys(exported).sort()).toEqual(steps.sort());
    expect([...typed.keys()].sort()).toEqual(steps.sort());
  });

  it("addon.ts's tuple labels are the addon's argument names, in order, for every step", () => {
    expect(typed.get('attach')).toContain('backingFd');
    for (const [step, names] of typed) expect(names, step).toEqual(exported[step]);
  });

  it('an argument moved in addon.ts is found', () => {
    // The check itself, on an edited copy: attach's offset and sizeLimit have the same type, so
    // only their names can tell a swap.
    const source = readFileSync(ADDON_TS, 'utf8');
    const swapped = source.replace('offset: number | bigint, sizeLimit: number | bigint, flags: number, sectorSize', 'sizeLimit: number | bigint, offset: number | bigint, flags: number, sectorSize');
    expect(swapped).not.toBe(source);
    expect(typedArguments(swapped).get('attach')).not.toEqual(exported.attach);
  }, COMPILE_MS);

  it('a call built by name puts each value at its position, and reads back the same', () => {
    const values = Object.fromEntries(exported.detach!.map((name) => [name, `value of ${name}`]));
    const args = positional('detach', values);
    for (const name of exported.detach!) expect(args[argumentIndex('detach', name)]).toBe(`value of ${name}`);
    expect(byName('detach', args)).toEqual(values);
  });

  it('a call built by name refuses a missing or unknown argument, and no position is given for a name the step lacks', () => {
    expect(() => positional('closeHeld', { fd: 3 })).toThrow(/number missing/);
    expect(() => positional('closeHeld', { fd: 3, number: 1, extra: 0 })).toThrow(/extra unknown/);
    expect(() => argumentIndex('attach', 'blockSize')).toThrow(/attach takes no argument blockSize/);
  });
});
