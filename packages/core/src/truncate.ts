const MARKER = '…[truncated]';
const MARKER_BYTES = Buffer.byteLength(MARKER, 'utf8');

/**
 * `text` cut to at most `maxBytes` bytes of UTF-8, never inside a character, with a marker
 * when cut. Broker headers are limited in bytes, not characters, hence bytes.
 */
export function truncateUtf8(text: string, maxBytes: number): string {
  // Every UTF-16 unit takes at most 3 bytes: most texts are short enough to skip counting.
  if (text.length * 3 <= maxBytes || Buffer.byteLength(text, 'utf8') <= maxBytes) return text;
  const room = maxBytes - MARKER_BYTES;
  let cut = Buffer.from(text, 'utf8').subarray(0, Math.max(0, room)).toString('utf8');
  // A cut inside a multi-byte character decodes to U+FFFD; drop it.
  if (cut.endsWith('\uFFFD')) cut = cut.slice(0, -1);
  return cut + MARKER;
}
