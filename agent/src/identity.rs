//! The agent's identity: its id appears in every report and names its default spool
//! directory (`<tmp>/vantage-spool-<id>`), so an id must be a plain file-name component.
//! [`parse_agent_id`] is the one check, used where `vantage agent --agent-id` is parsed, for
//! the id the fleet file gives, and again by [`daemon::check`](crate::daemon::check).

/// Longest agent id accepted, as in the fleet file.
pub const AGENT_ID_MAX_LEN: usize = 64;

/// Why a text cannot be an agent id. The messages are one line and say what is allowed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AgentIdError {
    #[error("agent id is empty; use letters, digits, '.', '_' and '-'")]
    Empty,
    #[error("agent id is longer than {AGENT_ID_MAX_LEN} characters")]
    TooLong,
    #[error("agent id {0:?} may only hold letters, digits, '.', '_' and '-'")]
    Characters(String),
    #[error("agent id {0:?} names a directory; use letters, digits, '.', '_' and '-' with at least one that is not '.'")]
    Dots(String),
}

/// `text` as an agent id: 1 to 64 characters from `[A-Za-z0-9._-]`, and neither `.` nor `..`.
pub fn parse_agent_id(text: &str) -> Result<String, AgentIdError> {
    if text.is_empty() {
        return Err(AgentIdError::Empty);
    }
    // Length first, so an error never quotes an unbounded text.
    if text.len() > AGENT_ID_MAX_LEN {
        return Err(AgentIdError::TooLong);
    }
    if !text
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
    {
        return Err(AgentIdError::Characters(text.to_owned()));
    }
    if text == "." || text == ".." {
        return Err(AgentIdError::Dots(text.to_owned()));
    }
    Ok(text.to_owned())
}
