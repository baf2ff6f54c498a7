// The canonical form beyond the vectors: sorting, escaping, integers.
import { test } from "node:test";
import assert from "node:assert/strict";
import { createHash, createHmac } from "node:crypto";
import {
  CanonicalError,
  canonicalFrame,
  canonicalJson,
  compareUtf8,
  frameToJson,
  hmacSha256,
  sha256,
  toHex,
  backoffDelay,
  mayReconnect,
  reportFor,
} from "../../dist/index.js";

test("keys sort by UTF-8 bytes, not UTF-16 code units", () => {
  // U+FF21 (3 UTF-8 bytes, EF BC A1) sorts before U+1F600 (F0 9F 98 80),
  // while UTF-16 puts the surrogate D83D first.
  const keys = ["\u{1F600}", "\uFF21", "b", "B", "ab", "a"];
  assert.deepEqual([...keys].sort(compareUtf8), ["B", "a", "ab", "b", "\uFF21", "\u{1F600}"]);
  const bytes = (s) => Buffer.from(s, "utf8");
  assert.deepEqual(
    [...keys].sort(compareUtf8),
    [...keys].sort((x, y) => Buffer.compare(bytes(x), bytes(y))),
  );
});

test("strings escape as serde_json escapes them", () => {
  assert.equal(canonicalJson('q"\\/\n\t\u0001é'), '"q\\"\\\\/\\n\\t\\u0001é"');
  // A top-level string is taken as-is.
  assert.equal(canonicalFrame({ a: 'x"y&z=1' }), 'a=x"y&z=1');
});

test("floats are refused wherever they are; integers and bigints pass", () => {
  assert.throws(() => canonicalFrame({ a: 1.5 }), CanonicalError);
  assert.throws(() => canonicalFrame({ a: { b: [1, 2.25] } }), /a\.b\[1\]/);
  assert.throws(() => canonicalFrame({ a: Number.NaN }), CanonicalError);
  assert.equal(canonicalFrame({ a: -3, b: 18446744073709551615n }), "a=-3&b=18446744073709551615");
  assert.equal(frameToJson({ id: 18446744073709551615n, s: "x" }), '{"id":18446744073709551615,"s":"x"}');
});

test("undefined members are left out; sign is dropped", () => {
  assert.equal(canonicalFrame({ b: undefined, a: 1, sign: "zz" }), "a=1");
  assert.equal(canonicalJson({ b: undefined, a: [undefined] }), '{"a":[null]}');
});

test("the software SHA-256 and HMAC match node:crypto", () => {
  for (const size of [0, 1, 55, 56, 63, 64, 65, 200, 1000]) {
    const data = new Uint8Array(size).map((_, i) => (i * 31 + 7) & 255);
    assert.equal(toHex(sha256(data)), createHash("sha256").update(data).digest("hex"));
    const key = data.slice(0, Math.min(size, 100));
    assert.equal(
      toHex(hmacSha256(key, data)),
      createHmac("sha256", key).update(data).digest("hex"),
    );
  }
});

test("backoff grows exponentially, is capped, and jitters within [b/2, b)", () => {
  assert.equal(backoffDelay(0, {}, () => 0), 250);
  assert.equal(backoffDelay(3, {}, () => 0), 2000);
  assert.equal(backoffDelay(30, {}, () => 0.999999), 30_000);
  for (let attempt = 0; attempt < 10; attempt++) {
    const bound = Math.min(30_000, 500 * 2 ** attempt);
    const d = backoffDelay(attempt);
    assert.ok(d >= bound / 2 && d <= bound, `${d} within [${bound / 2}, ${bound}]`);
  }
});

test("close verdicts follow protocol/src/codes.rs", () => {
  for (const code of [1001, 1006, 4000, 4011]) assert.equal(mayReconnect(code), true, `${code}`);
  for (const code of [1009, 4001, 4008, 4009, 4010]) assert.equal(mayReconnect(code), false, `${code}`);
});

test("reports name the subject, and up reports as up_deport", () => {
  assert.deepEqual(reportFor({ action: "up", room_seat: { user_id: 7 } }), { action: "up_deport", user_id: 7 });
  assert.deepEqual(reportFor({ action: "down", user_id: 8 }), { action: "down_report", user_id: 8 });
  assert.deepEqual(reportFor({ action: "send_gift", gift: { sender_id: 9 } }), { action: "send_gift_report", user_id: 9 });
  for (const action of ["enter_room", "exit_room", "send_topic_msg", "hang_up"]) {
    assert.deepEqual(reportFor({ action, user_id: 1 }), { action: `${action}_report`, user_id: 1 });
  }
  assert.equal(reportFor({ action: "room_notice" }), null);
});
