// Every test vector of PROTOCOL.md (sections 1, 2 and 8), with both HMAC
// implementations the SDK ships.
import { test } from "node:test";
import assert from "node:assert/strict";
import {
  canonicalFrame,
  canonicalQuery,
  softwareHmac,
  webCryptoHmac,
  Signer,
} from "../../dist/index.js";
import { mintSid, signKeyFor, serverApiSignature } from "../../dist/backend.js";

const APP_SECRET = "chorus-example-secret";
const SID =
  "1233.1893456000.n0nce42.113f02893d3a9df7ae1493cd250b28abcef50284bee04fa747fb7726a018b81e";
const SIGN_KEY = "721d45f92762f0347a1022b66b7fe05c2dde787ebab49d5ee7e040d515855b7d";
const TOKEN = "3f9a0c1e5b7d4a2c8e6f1a3b5c7d9e0f";

const frame1 = { action: "ping", online_token: TOKEN, timestamp: 1764134400, sid: SID };
const canonical1 = `action=ping&online_token=${TOKEN}&sid=${SID}&timestamp=1764134400`;
const sign1 = "47bfc2a7de9cf662c88a97acc7c2a55433719e508162f6ceefde7ba958d2353c";

// Parsed from the JSON text, as the vector is written (key order kept).
const frame2 = JSON.parse(
  `{"action":"lucky_draw","online_token":"${TOKEN}","timestamp":1764134401,` +
    `"sid":"${SID}","user_id":1233,"channel_name":"room_88","extra":{"z":1,"a":"点赞","b":[2,1]},"note":null,"vip":true}`,
);
const canonical2 =
  `action=lucky_draw&channel_name=room_88&extra={"a":"点赞","b":[2,1],"z":1}&note=` +
  `&online_token=${TOKEN}&sid=${SID}&timestamp=1764134401&user_id=1233&vip=true`;
const sign2 = "dfdf19be10efb158916a2903c514cbce46a5163bff41b1a64fddafa990f4376b";
const querySign = "8f90a99b7663dfdfe3a3970f03b7048a1c4cf9fd237ef6d8eeb74c26180c5218";

for (const [name, hmac] of [
  ["webcrypto", webCryptoHmac()],
  ["software", softwareHmac],
]) {
  test(`${name}: sid and sign_key`, async () => {
    assert.equal(await mintSid(APP_SECRET, 1233, 1893456000, "n0nce42", hmac), SID);
    assert.equal(await signKeyFor(APP_SECRET, SID, hmac), SIGN_KEY);
  });

  test(`${name}: frame 1 (ping)`, async () => {
    assert.equal(canonicalFrame(frame1), canonical1);
    assert.equal(await hmac(SIGN_KEY, canonical1), sign1);
  });

  test(`${name}: frame 2 (nested object, null, bool, non-ASCII)`, async () => {
    assert.equal(canonicalFrame(frame2), canonical2);
    assert.equal(await hmac(SIGN_KEY, canonical2), sign2);
  });

  test(`${name}: the signed query`, async () => {
    const params = { user_id: "1233", sid: SID, timestamp: "1764134400" };
    assert.equal(canonicalQuery(params), `sid=${SID}&timestamp=1764134400&user_id=1233`);
    assert.equal(await hmac(SIGN_KEY, canonicalQuery(params)), querySign);
    const signer = new Signer({ userId: 1233, sid: SID, signKey: SIGN_KEY }, hmac);
    const query = new URLSearchParams(await signer.query(1764134400));
    assert.equal(query.get("sign"), querySign);
    assert.equal(query.get("sid"), SID);
  });

  test(`${name}: server API signatures`, async () => {
    const body =
      '{"action":"send_topic_msg","user_id":1233,"channel_name":"room_88","content":"hi"}';
    assert.equal(
      await serverApiSignature(APP_SECRET, "1764134400", "a1b2c3d4", "POST", "/api/v1/actions", body, hmac),
      "4d510a3734c855bb0d50533df137bd24b6da41c653958de9f7ec14fb4a9c8212",
    );
    assert.equal(
      await serverApiSignature(APP_SECRET, "1764134400", "a1b2c3d4", "GET", "/api/v1/users/1233", "", hmac),
      "82ca21a4fc61cac255b7c06ffd960f4701eb585304ddc591b41ac8bc2e2934fd",
    );
  });
}

test("the Signer signs frame 1 exactly as the vector", async () => {
  const signer = new Signer({ userId: 1233, sid: SID, signKey: SIGN_KEY }, webCryptoHmac());
  const signed = await signer.frame({ action: "ping" }, TOKEN, 1764134400);
  assert.equal(signed.sign, sign1);
  assert.equal(signed.nonce, undefined);
});

test("a frame repeated within its second gets a nonce, and a different sign", async () => {
  const signer = new Signer({ userId: 1233, sid: SID, signKey: SIGN_KEY }, webCryptoHmac());
  const first = await signer.frame({ action: "ping" }, TOKEN, 1764134400);
  const second = await signer.frame({ action: "ping" }, TOKEN, 1764134400);
  assert.equal(first.nonce, undefined);
  assert.equal(typeof second.nonce, "string");
  assert.notEqual(second.sign, first.sign);
  const nextSecond = await signer.frame({ action: "ping" }, TOKEN, 1764134401);
  assert.equal(nextSecond.nonce, undefined);
});
