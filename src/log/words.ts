/**
 * A count and its noun, as text for people says it: `1 line`, `2 lines`, `1,024 spans` (`en-US`
 * digit groups with `grouped`). `many` for a noun whose plural is not `word + s`.
 */
export function plural(n: number, word: string, options: { readonly many?: string; readonly grouped?: boolean } = {}): string {
  const shown = options.grouped === true ? n.toLocaleString('en-US') : String(n);
  return `${shown} ${n === 1 ? word : (options.many ?? `${word}s`)}`;
}
