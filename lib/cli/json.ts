// The CLI's JSON: exact for 64-bit values.

/**
 * JSON of `value`, two-space indented, with a newline. A bigint (an inode, device number or
 * diskseq past 2^53) is written as its exact digits, a JSON number as long as it needs to be:
 * parsers that keep big integers (Python's, jq 1.7's) read it exactly.
 */
export function toJson(value: unknown): string {
  const marked = JSON.stringify(value, (_key, item: unknown) => (typeof item === 'bigint' ? `${BIGINT_MARK}${item}` : item), 2);
  return `${marked.replace(BIGINT_MARKED, '$1')}\n`;
}
const BIGINT_MARK = '\u0000bigint:';
const BIGINT_MARKED = /"\\u0000bigint:(\d+)"/g;

