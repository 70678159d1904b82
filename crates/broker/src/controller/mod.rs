//! The controller: decides which broker leads each partition (RFC 0004).

pub mod assignment;
