/**
 * The canonical string that is signed (PROTOCOL section 2).
 *
 * `canonical(M)`: drop `sign`, sort the remaining keys by their UTF-8
 * bytes, render each as `key=value`, join with `&`. A value renders as: a
 * string as-is, an integer in decimal, `true`/`false`, `null` as the empty
 * string, an object or array as compact JSON with object keys sorted
 * recursively, non-ASCII unescaped, strings escaped as `serde_json` does.
 * A float anywhere is an error: send decimals as strings.
 *
 * @module
 */

/** A JSON value that may appear in a signed frame. `bigint` carries ids
 * beyond 2^53; `undefined` members are left out, as `JSON.stringify` does. */
export type FrameValue =
  | string
  | number
  | bigint
  | boolean
  | null
  | undefined
  | FrameValue[]
  | { [key: string]: FrameValue };

/** A client frame or a set of query parameters, before signing. */
export type Frame = { [key: string]: FrameValue };

/** A value has no canonical form (a float, NaN, or something not JSON). */
export class CanonicalError extends Error {
  /** Where the value sits, like `extra.b[1]`. */
  readonly path: string;

  constructor(path: string, what: string) {
    super(`field \`${path}\` ${what}; send decimals as strings`);
    this.name = "CanonicalError";
    this.path = path;
  }
}

/** The key that holds a signature, left out of the canonical string. */
export const SIGN_FIELD = "sign";

/**
 * Orders two strings by their UTF-8 bytes, which is code point order. The
 * default `sort` compares UTF-16 code units, which puts U+E000..U+FFFF
 * after the astral planes; UTF-8 (and the server) does not.
 */
export function compareUtf8(a: string, b: string): number {
  let i = 0;
  let j = 0;
  while (i < a.length && j < b.length) {
    const ca = a.codePointAt(i)!;
    const cb = b.codePointAt(j)!;
    if (ca !== cb) return ca < cb ? -1 : 1;
    i += ca > 0xffff ? 2 : 1;
    j += cb > 0xffff ? 2 : 1;
  }
  return a.length - i === b.length - j ? 0 : i < a.length ? 1 : -1;
}

/** The members of an object that are present, sorted by UTF-8 bytes. */
function sortedEntries(object: { [key: string]: FrameValue }): [string, FrameValue][] {
  return Object.entries(object)
    .filter(([, value]) => value !== undefined)
    .sort(([a], [b]) => compareUtf8(a, b));
}

/** The canonical string of a client frame (PROTOCOL section 2). */
export function canonicalFrame(frame: Frame): string {
  return sortedEntries(frame)
    .filter(([key]) => key !== SIGN_FIELD)
    .map(([key, value]) => `${key}=${fieldValue(value, key)}`)
    .join("&");
}

/** The canonical string of query parameters (all values strings). */
export function canonicalQuery(params: Record<string, string>): string {
  return canonicalFrame(params);
}

/** A top-level value: strings as-is, null empty, the rest as JSON. */
function fieldValue(value: FrameValue, path: string): string {
  if (value === null) return "";
  if (typeof value === "string") return value;
  return canonicalJson(value, path);
}

/**
 * `value` as compact JSON with object keys sorted by their UTF-8 bytes,
 * recursively; integers only.
 */
export function canonicalJson(value: FrameValue, path = ""): string {
  if (value === null) return "null";
  switch (typeof value) {
    case "boolean":
      return value ? "true" : "false";
    case "string":
      // JSON.stringify escapes exactly what serde_json escapes: `"`, `\`
      // and control characters (\b \f \n \r \t, the rest as \u00xx in
      // lowercase); non-ASCII and `/` stay as they are.
      return JSON.stringify(value);
    case "bigint":
      return value.toString();
    case "number":
      return integer(value, path);
    case "object":
      return Array.isArray(value) ? array(value, path) : object(value, path);
    default:
      throw new CanonicalError(path, `is a ${typeof value}, not JSON`);
  }
}

function integer(value: number, path: string): string {
  if (!Number.isSafeInteger(value) || Object.is(value, -0)) {
    throw new CanonicalError(path, "is a float or beyond 2^53 (use a bigint)");
  }
  return value.toString();
}

function array(items: FrameValue[], path: string): string {
  // Inside an array `undefined` becomes null, as in JSON.stringify.
  const rendered = items.map((item, index) =>
    canonicalJson(item === undefined ? null : item, `${path}[${index}]`),
  );
  return `[${rendered.join(",")}]`;
}

function object(members: { [key: string]: FrameValue }, path: string): string {
  const rendered = sortedEntries(members).map(
    ([key, value]) =>
      `${JSON.stringify(key)}:${canonicalJson(value, path ? `${path}.${key}` : key)}`,
  );
  return `{${rendered.join(",")}}`;
}

/**
 * A frame as the JSON text that is sent: like `JSON.stringify`, with
 * `bigint` members written as plain integers.
 */
export function frameToJson(frame: Frame): string {
  const marked = JSON.stringify(frame, (_key, value: unknown) =>
    typeof value === "bigint" ? `\u0000bigint:${value.toString()}\u0000` : value,
  );
  return marked.replace(/"\\u0000bigint:(-?\d+)\\u0000"/g, "$1");
}
