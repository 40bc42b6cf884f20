//! Errors as one line for people: hyper's and the AWS SDK's top-level messages ("client error
//! (Connect)", "dispatch failure") hide the useful part in their sources.

use std::error::Error;

/// An error and its sources, "outer: inner: innermost", without repeating a message the text
/// already holds (many wrappers display their source themselves).
pub fn chain(e: &(dyn Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut next = e.source();
    while let Some(source) = next {
        let part = source.to_string();
        if !part.is_empty() && !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        next = source.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("{text}")]
    struct Layer {
        text: &'static str,
        #[source]
        inner: Option<Box<Layer>>,
    }

    fn layer(text: &'static str, inner: Option<Layer>) -> Layer {
        Layer {
            text,
            inner: inner.map(Box::new),
        }
    }

    #[test]
    fn sources_are_joined_once() {
        let e = layer(
            "client error (Connect)",
            Some(layer(
                "tcp connect error: Connection refused",
                Some(layer("Connection refused", None)),
            )),
        );
        assert_eq!(
            chain(&e),
            "client error (Connect): tcp connect error: Connection refused"
        );
    }

    #[test]
    fn empty_sources_add_nothing() {
        let e = layer("outer", Some(layer("", None)));
        assert_eq!(chain(&e), "outer");
    }
}
