#!/usr/bin/env node
// The `loopdev` binary (package.json "bin"); the command line itself lives in cli/.
import { runMain } from './cli/main';

runMain();
