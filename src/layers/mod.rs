//! The public face's middleware, one layer per file, composed in `app::public_stack`.
//! Outermost first: trace, rescue, metrics, identity, rate limit, router.

pub mod identity;
pub mod metrics;
pub mod rate_limit;
pub mod rescue;
pub mod trace;
