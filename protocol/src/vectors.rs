//! The test vectors of `PROTOCOL.md` sections 2 and 8, shared by the unit
//! tests of every module.

/// The example `app_secret`.
pub(crate) const APP_SECRET: &[u8] = b"chorus-example-secret";

/// The example sid: user 1233, expiring at 1893456000, nonce `n0nce42`.
pub(crate) const SID: &str =
    "1233.1893456000.n0nce42.113f02893d3a9df7ae1493cd250b28abcef50284bee04fa747fb7726a018b81e";

/// The sign_key derived from [`SID`].
pub(crate) const SIGN_KEY: &str =
    "721d45f92762f0347a1022b66b7fe05c2dde787ebab49d5ee7e040d515855b7d";

/// The example online_token.
pub(crate) const ONLINE_TOKEN: &str = "3f9a0c1e5b7d4a2c8e6f1a3b5c7d9e0f";

/// The first example frame, a `ping`, without its sign.
pub(crate) fn frame1() -> String {
    format!(
        r#"{{"action":"ping","online_token":"{ONLINE_TOKEN}","timestamp":1764134400,"sid":"{SID}"}}"#
    )
}

/// The canonical string of [`frame1`].
pub(crate) fn canonical1() -> String {
    format!("action=ping&online_token={ONLINE_TOKEN}&sid={SID}&timestamp=1764134400")
}

/// The sign of [`frame1`].
pub(crate) const SIGN1: &str = "47bfc2a7de9cf662c88a97acc7c2a55433719e508162f6ceefde7ba958d2353c";

/// The second example frame, with nested values, null and a bool.
pub(crate) fn frame2() -> String {
    format!(
        r#"{{"action":"lucky_draw","online_token":"{ONLINE_TOKEN}","timestamp":1764134401,"sid":"{SID}","user_id":1233,"channel_name":"room_88","extra":{{"z":1,"a":"点赞","b":[2,1]}},"note":null,"vip":true}}"#
    )
}

/// The canonical string of [`frame2`].
pub(crate) fn canonical2() -> String {
    format!(
        r#"action=lucky_draw&channel_name=room_88&extra={{"a":"点赞","b":[2,1],"z":1}}&note=&online_token={ONLINE_TOKEN}&sid={SID}&timestamp=1764134401&user_id=1233&vip=true"#
    )
}

/// The sign of [`frame2`].
pub(crate) const SIGN2: &str = "dfdf19be10efb158916a2903c514cbce46a5163bff41b1a64fddafa990f4376b";

/// The sign of the query `user_id=1233, sid=<sid>, timestamp=1764134400`.
pub(crate) const QUERY_SIGN: &str =
    "8f90a99b7663dfdfe3a3970f03b7048a1c4cf9fd237ef6d8eeb74c26180c5218";
