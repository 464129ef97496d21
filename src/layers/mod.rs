//! The public face's middleware, one layer per file, composed in `app::public_stack`.
//! Outermost first: trace, rescue, metrics, overload, identity, rate limit, router.

pub(crate) mod access;
pub mod identity;
pub(crate) mod metrics;
pub(crate) mod overload;
pub mod rate_limit;
pub(crate) mod rescue;
pub(crate) mod trace;
