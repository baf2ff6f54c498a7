//! The path of a value inside a JSON document, for error messages.
//!
//! Validation walks the whole document; keeping the path as a stack of
//! borrowed segments costs nothing until an error needs it rendered.

use std::fmt::Write as _;

/// One step from a container to one of its values.
enum Segment<'a> {
    /// A member of an object.
    Key(&'a str),
    /// An element of an array.
    Index(usize),
}

/// Where the walk is, as a stack of segments from the top-level object.
#[derive(Default)]
pub(crate) struct FieldPath<'a> {
    /// Segments from the outermost to the innermost.
    segments: Vec<Segment<'a>>,
}

impl<'a> FieldPath<'a> {
    /// Enters the object member `key`.
    pub(crate) fn push_key(&mut self, key: &'a str) {
        self.segments.push(Segment::Key(key));
    }

    /// Enters the array element at `index`.
    pub(crate) fn push_index(&mut self, index: usize) {
        self.segments.push(Segment::Index(index));
    }

    /// Leaves the innermost segment.
    pub(crate) fn pop(&mut self) {
        self.segments.pop();
    }

    /// True when the walk is inside a nested object or array.
    pub(crate) fn is_nested(&self) -> bool {
        self.segments.len() > 1
    }

    /// Renders the path as `gift.num` or `cars[0].expire_time`.
    pub(crate) fn render(&self) -> String {
        let mut out = String::new();
        for segment in &self.segments {
            match segment {
                Segment::Key(key) if out.is_empty() => out.push_str(key),
                Segment::Key(key) => {
                    out.push('.');
                    out.push_str(key);
                }
                // Writing to a String cannot fail.
                Segment::Index(index) => {
                    let _ = write!(out, "[{index}]");
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_keys_and_indices() {
        let mut path = FieldPath::default();
        path.push_key("cars");
        assert!(!path.is_nested());
        path.push_index(0);
        path.push_key("expire_time");
        assert!(path.is_nested());
        assert_eq!(path.render(), "cars[0].expire_time");
        path.pop();
        path.pop();
        assert_eq!(path.render(), "cars");
    }
}
