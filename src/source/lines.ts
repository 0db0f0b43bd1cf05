import { StringDecoder } from 'node:string_decoder';

/**
 * How much to read from a file at a time. With the stream's default 64 KB, the next read is only
 * started once about 30 lines have been taken, and waiting for it left replay idle for about 8 % of
 * its time whenever the export thread or the garbage collector had the other core.
 */
export const READ_CHUNK_BYTES = 1 << 20;

/**
 * Text is decoded at most this many bytes at a time, however large the chunks read: a string of a
 * megabyte is allocated outside V8's young generation, and decoding and slicing one cost about
 * twice what the same bytes cost in 64 KB pieces.
 */
const DECODE_PIECE_BYTES = 64 * 1024;

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
  /**
   * Add the lines that `text` completes after what is carried over; keep the rest. Only the new
   * text is searched, so a line that spans many chunks costs its length once, not once per chunk.
   */
  const split = (text: string, lines: string[]): void => {
    let nl = text.indexOf('\n');
    if (nl === -1) {
      carry += text;
      return;
    }
    push(lines, carry + text.slice(0, nl));
    let start = nl + 1;
    for (nl = text.indexOf('\n', start); nl !== -1; nl = text.indexOf('\n', start)) {
      push(lines, text.slice(start, nl));
      start = nl + 1;
    }
    carry = text.slice(start);
  };
  for await (const chunk of input) {
    onChunk?.(chunk.length);
    const lines: string[] = [];
    if (typeof chunk === 'string') split(chunk, lines);
    else for (let at = 0; at < chunk.length; at += DECODE_PIECE_BYTES) split(decoder.write(chunk.subarray(at, at + DECODE_PIECE_BYTES)), lines);
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
