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
 * are found with `indexOf` and taken by one loop, which is what replay needs to keep up with a file
 * (text with CRs in it takes a regular expression, as readline does).
 *
 * A line longer than `maxLineChars` is given cut to one character more than that, and the rest of
 * it is not kept: what a line costs in memory is bounded, however long the input goes without an
 * end of line (a file that is not JSON lines at all).
 */
export async function* lineBatches(
  input: AsyncIterable<Buffer | string>,
  options: {
    readonly onChunk?: (bytes: number) => void;
    readonly maxLineChars?: number;
    /** The input ended inside a line (no line end after its last text): called before that line is yielded. */
    readonly onUnterminated?: () => void;
  } = {},
): AsyncGenerator<string[], void, undefined> {
  const { onChunk, maxLineChars = Infinity, onUnterminated } = options;
  const decoder = new StringDecoder('utf8');
  /** The line begun and not ended yet, cut one character past the bound. */
  let carry = '';
  /** The last text ended with a CR: a LF that starts the next one belongs to the same line end. */
  let afterCR = false;
  /** No text yet: a byte order mark that starts it is not part of the first line. */
  let atStart = true;
  const extend = (text: string): void => {
    if (carry.length > maxLineChars) return; // cut already: the rest of the line is not kept
    carry += text;
    if (carry.length > maxLineChars) carry = carry.slice(0, maxLineChars + 1);
  };
  /**
   * Add the lines that `text` completes after what is carried over; keep the rest. Only the new
   * text is searched, so a line that spans many chunks costs its length once, not once per chunk.
   */
  const split = (text: string, lines: string[]): void => {
    if (text === '') return;
    let start = 0;
    if (atStart) {
      atStart = false;
      if (text.charCodeAt(0) === 0xfeff) start = 1;
    }
    if (afterCR) {
      afterCR = false;
      if (text.charCodeAt(0) === 10) start = 1;
    }
    const end = (at: number): void => {
      extend(text.slice(start, at));
      lines.push(carry);
      carry = '';
    };
    if (text.indexOf('\r', start) === -1) {
      for (let nl = text.indexOf('\n', start); nl !== -1; nl = text.indexOf('\n', start)) {
        end(nl);
        start = nl + 1;
      }
    } else {
      const lineEnd = /\r\n?|\n/g;
      lineEnd.lastIndex = start;
      for (let m = lineEnd.exec(text); m !== null; m = lineEnd.exec(text)) {
        end(m.index);
        start = m.index + m[0].length;
        if (m[0] === '\r' && start === text.length) afterCR = true;
      }
    }
    extend(text.slice(start));
  };
  for await (const chunk of input) {
    onChunk?.(chunk.length);
    const lines: string[] = [];
    if (typeof chunk === 'string') split(chunk, lines);
    else for (let at = 0; at < chunk.length; at += DECODE_PIECE_BYTES) split(decoder.write(chunk.subarray(at, at + DECODE_PIECE_BYTES)), lines);
    if (lines.length > 0) yield lines;
  }
  const lines: string[] = [];
  split(decoder.end(), lines);
  if (carry !== '') {
    onUnterminated?.();
    lines.push(carry);
  }
  if (lines.length > 0) yield lines;
}
