//! The car shown when a user enters a room (`user_car_gift`).
//!
//! Among the request's `cars`, a candidate has `gift_type` 2 and an
//! `expire_time` that is 0 (never expires) or in the future by the host's
//! clock. The candidate with the highest `show_rank` wins; on a tie the
//! first in the list. `expire_time` is unix seconds like every time in the
//! protocol; a value of 10^11 or more (year 5138 in seconds, 1973 in
//! milliseconds) is read as unix milliseconds, so a backend sending either
//! unit gets the right answer. A missing `expire_time` or `show_rank` counts
//! as 0, a missing `gift_type` as not a car.
//!
//! The winner is shown with all the fields it was sent with; an empty or
//! missing `notice_content` is filled from the configured template.

use chorus_plugin_sdk::{Error, Payload};
use serde_json::Value;

/// The default of config key `car_notice_template`.
pub const DEFAULT_NOTICE_TEMPLATE: &str = "{nickname} 驾驶 {car_name} 进入了房间";

/// The `gift_type` of a car (1 is an ordinary gift).
const GIFT_TYPE_CAR: i64 = 2;

/// From this value on, an `expire_time` is read as milliseconds.
const MILLISECONDS_FROM: i64 = 100_000_000_000;

/// The car to show among `cars` at `now_ms`, if any.
pub fn choose(cars: &[Payload], now_ms: u64) -> Result<Option<&Payload>, Error> {
    let mut best: Option<(&Payload, i64)> = None;
    for car in cars {
        if car.opt_i64("gift_type")? != Some(GIFT_TYPE_CAR) {
            continue;
        }
        let expire_time = car.opt_i64("expire_time")?.unwrap_or(0);
        let show_rank = car.opt_i64("show_rank")?.unwrap_or(0);
        let live = expire_time == 0 || expires_after(expire_time, now_ms);
        if live && best.is_none_or(|(_, rank)| show_rank > rank) {
            best = Some((car, show_rank));
        }
    }
    Ok(best.map(|(car, _)| car))
}

/// Whether a non-zero `expire_time` lies after `now_ms`.
fn expires_after(expire_time: i64, now_ms: u64) -> bool {
    let expire_ms = if expire_time >= MILLISECONDS_FROM {
        i128::from(expire_time)
    } else {
        i128::from(expire_time) * 1000
    };
    expire_ms > i128::from(now_ms)
}

/// The car as shown in `enter_room`: its own fields, with `notice_content`
/// rendered from `template` when empty or missing.
pub fn present(car: &Payload, nickname: &str, template: &str) -> Result<Value, Error> {
    let car_name = car.opt_string("name")?.unwrap_or_default();
    let notice = car.opt_string("notice_content")?.unwrap_or_default();
    let mut shown = car.fields().clone();
    if notice.is_empty() {
        let rendered = render(template, nickname, &car_name);
        shown.insert("notice_content".into(), rendered.into());
    }
    Ok(Value::Object(shown))
}

/// Replaces `{nickname}` and `{car_name}` in `template`, in one pass so a
/// nickname that itself contains `{car_name}` is left as it is.
fn render(template: &str, nickname: &str, car_name: &str) -> String {
    let mut out = String::with_capacity(template.len() + nickname.len() + car_name.len());
    let mut rest = template;
    while let Some(start) = rest.find('{') {
        out.push_str(&rest[..start]);
        let tail = &rest[start..];
        if let Some(after) = tail.strip_prefix("{nickname}") {
            out.push_str(nickname);
            rest = after;
        } else if let Some(after) = tail.strip_prefix("{car_name}") {
            out.push_str(car_name);
            rest = after;
        } else {
            out.push('{');
            rest = &tail[1..];
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW_MS: u64 = 1_764_134_400_000;

    fn cars(json: &str) -> Vec<Payload> {
        Payload::parse(&format!(r#"{{"cars":{json}}}"#))
            .unwrap()
            .opt_objects("cars")
            .unwrap()
            .unwrap()
    }

    fn chosen_name(json: &str) -> Option<String> {
        let cars = cars(json);
        choose(&cars, NOW_MS)
            .unwrap()
            .map(|car| car.string("name").unwrap())
    }

    #[test]
    fn picks_the_highest_live_car() {
        let json = r#"[
            {"name":"gift","gift_type":1,"show_rank":99,"expire_time":0},
            {"name":"old","gift_type":2,"show_rank":50,"expire_time":1764134399},
            {"name":"old-ms","gift_type":2,"show_rank":40,"expire_time":1764134399999},
            {"name":"low","gift_type":2,"show_rank":1,"expire_time":0},
            {"name":"first","gift_type":2,"show_rank":7,"expire_time":1764134401},
            {"name":"second","gift_type":2,"show_rank":7,"expire_time":1764134400001}
        ]"#;
        assert_eq!(chosen_name(json).as_deref(), Some("first"));
    }

    #[test]
    fn no_live_car_is_none() {
        assert_eq!(chosen_name("[]"), None);
        let json = r#"[{"name":"old","gift_type":2,"show_rank":5,"expire_time":100}]"#;
        assert_eq!(chosen_name(json), None);
    }

    #[test]
    fn fills_an_empty_notice_and_keeps_other_fields() {
        let cars = cars(
            r#"[{"name":"跑车","gift_type":2,"svga_image_name":"a.png","notice_content":""}]"#,
        );
        let shown = present(&cars[0], "小明", DEFAULT_NOTICE_TEMPLATE).unwrap();
        assert_eq!(shown["notice_content"], "小明 驾驶 跑车 进入了房间");
        assert_eq!(shown["svga_image_name"], "a.png");
        let cars = cars_with_notice();
        let shown = present(&cars[0], "小明", DEFAULT_NOTICE_TEMPLATE).unwrap();
        assert_eq!(shown["notice_content"], "custom");
    }

    fn cars_with_notice() -> Vec<Payload> {
        cars(r#"[{"name":"x","gift_type":2,"notice_content":"custom"}]"#)
    }

    #[test]
    fn renders_placeholders_once() {
        assert_eq!(
            render("{nickname}/{car_name}/{x}{", "{car_name}", "c"),
            "{car_name}/c/{x}{"
        );
    }
}
