import { StringDecoder } from 'node:string_decoder';

/**
 * The lines of a stream of UTF-8 text, a chunk at a time: each batch holds the lines the chunk
 * completed. Lines end as readline ends them: at LF, CRLF or a lone CR; a last line without an
 * end is given too. A multi-byte character or a CRLF cut between two chunks is put back together.
 *
 * `readline` makes a promise per line and splits with a regular expression; here a chunk's lines
 * are found with `indexOf` and taken by one loop, which is what replay needs to keep up with a file.
 */
export async function* lineBatches(input: AsyncIterable<Buffer | string>, onChunk?: (bytes: number) => void): AsyncGenerator<string[], void, undefined> {
  const decoder = new StringDecoder('utf8');
  let carry = '';
  for await (const chunk of input) {
    onChunk?.(chunk.length);
    const text = carry + (typeof chunk === 'string' ? chunk : decoder.write(chunk));
    const lines: string[] = [];
    let start = 0;
    for (let nl = text.indexOf('\n'); nl !== -1; nl = text.indexOf('\n', start)) {
      push(lines, text.slice(start, nl));
      start = nl + 1;
    }
    carry = text.slice(start);
    if (lines.length > 0) yield lines;
  }
  carry += decoder.end();
  if (carry !== '') {
    const lines: string[] = [];
    push(lines, carry);
    yield lines;
  }
}

/** Add a line that ended at LF (or at the end of the input): without the CR of a CRLF, cut at any lone CR. */
function push(lines: string[], line: string): void {
  if (line.length > 0 && line.charCodeAt(line.length - 1) === 13) line = line.slice(0, -1);
  if (line.indexOf('\r') === -1) lines.push(line);
  else for (const part of line.split('\r')) lines.push(part);
}
