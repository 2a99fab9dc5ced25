// Version order of partition labels, for the A/B choice between root (or /usr) partitions:
// the comparison of the UAPI Version Format Specification (UAPI.10), which systemd implements
// as strverscmp_improved() and uses for the same choice.

const isDigit = (c: string | undefined): boolean => c !== undefined && c >= '0' && c <= '9';
const isLetter = (c: string | undefined): boolean => c !== undefined && ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'));
const SEPARATORS = ['-', '^', '.'];
const isValid = (c: string): boolean => isDigit(c) || isLetter(c) || c === '-' || c === '.' || c === '~' || c === '^';

/** Compares two versions: negative when `a` is older than `b`, 0 when equal, positive when newer. */
export function compareVersions(a: string, b: string): number {
  let i = 0;
  let j = 0;
  for (;;) {
    // 1. characters outside the set are skipped in both strings
    while (i < a.length && !isValid(a[i]!)) i++;
    while (j < b.length && !isValid(b[j]!)) j++;
    // 2. '~' sorts before anything, the end included
    if (a[i] === '~' || b[j] === '~') {
      if (a[i] !== '~') return 1;
      if (b[j] !== '~') return -1;
      i++;
      j++;
      continue;
    }
    // 3. the longer string is the newer
    if (i >= a.length || j >= b.length) return Number(i < a.length) - Number(j < b.length);
    // 4-6. '-', then '^', then '.' sort before the other characters (and before each other in that order)
    const separator = SEPARATORS.find((c) => a[i] === c || b[j] === c);
    if (separator !== undefined) {
      if (a[i] !== separator) return 1;
      if (b[j] !== separator) return -1;
      i++;
      j++;
      continue;
    }
    // 7. numbers compare numerically, leading zeroes skipped, an empty number being 0
    if (isDigit(a[i]) || isDigit(b[j])) {
      while (a[i] === '0') i++;
      while (b[j] === '0') j++;
      const startA = i;
      const startB = j;
      while (isDigit(a[i])) i++;
      while (isDigit(b[j])) j++;
      const numberA = a.slice(startA, i);
      const numberB = b.slice(startB, j);
      if (numberA.length !== numberB.length) return numberA.length - numberB.length;
      if (numberA !== numberB) return numberA < numberB ? -1 : 1;
      continue;
    }
    // 8. letters compare one by one (capitals before lower case: ASCII order), the longer run newer
    if (isLetter(a[i]) || isLetter(b[j])) {
      while (isLetter(a[i]) && isLetter(b[j])) {
        if (a[i] !== b[j]) return a[i]! < b[j]! ? -1 : 1;
        i++;
        j++;
      }
      if (isLetter(a[i])) return 1;
      if (isLetter(b[j])) return -1;
    }
  }
}
