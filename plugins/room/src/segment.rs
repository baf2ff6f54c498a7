//! The display names of the user segments (`i_segment`).

/// The Chinese name the seed gives `segment`, used as `i_segment_text` when
/// the request leaves it out; an unknown segment is shown as itself.
pub fn default_text(segment: &str) -> &str {
    match segment {
        "newcomer" => "新人",
        "talented" => "人才",
        "professional" => "专家",
        "stars" => "明星",
        "millionaire" => "百万富翁",
        "VIP" => "VIP",
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_known_segments_and_echoes_others() {
        assert_eq!(default_text("millionaire"), "百万富翁");
        assert_eq!(default_text("VIP"), "VIP");
        assert_eq!(default_text("legend"), "legend");
    }
}
