//! One module per subcommand.
pub mod apply;
pub mod attach;
pub mod check;
pub mod crds;
pub mod daemon;
pub mod debug;
pub mod detach;
pub mod list;
pub mod meta;
pub mod record;
pub mod tail;
