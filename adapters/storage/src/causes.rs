//! An error with its causes, for logs and `503`s.

/// An error followed by each cause beneath it that its text does not already hold. OpenDAL
/// names one cause ("error sending request"); what an operator acts on (a certificate not
/// trusted, a connection refused) lies further down.
pub(crate) struct WithCauses<'a>(pub(crate) &'a dyn std::error::Error);

impl std::fmt::Display for WithCauses<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut text = self.0.to_string();
        let mut cause = self.0.source();
        while let Some(e) = cause {
            let said = e.to_string();
            if !text.contains(&said) {
                text = format!("{text}: {said}");
            }
            cause = e.source();
        }
        f.write_str(&text)
    }
}

#[cfg(test)]
mod tests {
    use super::WithCauses;

    /// An error with a message and, perhaps, a cause.
    #[derive(Debug, thiserror::Error)]
    #[error("{message}")]
    struct Layer {
        message: String,
        #[source]
        cause: Option<Box<Layer>>,
    }

    fn layers(messages: &[&str]) -> Layer {
        messages
            .iter()
            .rev()
            .fold(None, |cause, message| {
                Some(Layer {
                    message: (*message).to_owned(),
                    cause: cause.map(Box::new),
                })
            })
            .expect("one layer at least")
    }

    #[test]
    fn every_cause_is_named_once() {
        let e = layers(&[
            "Unexpected at write => source: error sending request",
            "error sending request",
            "client error (Connect)",
            "invalid peer certificate: UnknownIssuer",
        ]);
        assert_eq!(
            WithCauses(&e).to_string(),
            "Unexpected at write => source: error sending request: client error (Connect): \
             invalid peer certificate: UnknownIssuer"
        );
        assert_eq!(WithCauses(&layers(&["disk full"])).to_string(), "disk full");
    }
}
